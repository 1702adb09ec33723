/* libresil: IP address helpers. */
#ifndef RESIL_ADDR_H
#define RESIL_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* An IP address without a port; v4-mapped IPv6 is stored as IPv4. */
struct resil_ip {
    sa_family_t family; /* AF_INET or AF_INET6 */
    union {
        struct in_addr v4;
        struct in6_addr v6;
    } u;
};

#define RESIL_ADDRSTRLEN 64 /* "[v6]:port" fits */

/* Extract the IP and port of an AF_INET/AF_INET6 sockaddr (v4-mapped becomes
 * AF_INET). Returns false for any other family or a short length. */
bool resil_ip_from_sa(const struct sockaddr *sa, socklen_t len,
                      struct resil_ip *ip, uint16_t *port);

/* Build a sockaddr for ip:port usable on a socket of `family`: an AF_INET6
 * socket gets IPv4 addresses as v4-mapped. Returns the length, or 0 when the
 * address cannot be used on that family (IPv6 on an AF_INET socket). */
socklen_t resil_ip_to_sa(const struct resil_ip *ip, uint16_t port, int family,
                         struct sockaddr_storage *out);

bool resil_ip_equal(const struct resil_ip *a, const struct resil_ip *b);

/* Parse a numeric IPv4 or IPv6 literal. Returns false on anything else. */
bool resil_ip_parse(const char *s, struct resil_ip *ip);

/* Format ip (and port when port >= 0) into buf; returns buf. */
char *resil_ip_format(const struct resil_ip *ip, int port, char *buf,
                      size_t len);

#endif
