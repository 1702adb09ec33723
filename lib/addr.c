#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

bool resil_ip_from_sa(const struct sockaddr *sa, socklen_t len,
                      struct resil_ip *ip, uint16_t *port)
{
    memset(ip, 0, sizeof(*ip));
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        ip->family = AF_INET;
        ip->u.v4 = s->sin_addr;
        if (port)
            *port = ntohs(s->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
            ip->family = AF_INET;
            memcpy(&ip->u.v4, &s->sin6_addr.s6_addr[12], 4);
        } else {
            ip->family = AF_INET6;
            ip->u.v6 = s->sin6_addr;
        }
        if (port)
            *port = ntohs(s->sin6_port);
        return true;
    }
    return false;
}

socklen_t resil_ip_to_sa(const struct resil_ip *ip, uint16_t port, int family,
                         struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)out;
        if (ip->family != AF_INET)
            return 0;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        s->sin_addr = ip->u.v4;
        return sizeof(*s);
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)out;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        if (ip->family == AF_INET6) {
            s->sin6_addr = ip->u.v6;
        } else {
            s->sin6_addr.s6_addr[10] = 0xff;
            s->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&s->sin6_addr.s6_addr[12], &ip->u.v4, 4);
        }
        return sizeof(*s);
    }
    return 0;
}

bool resil_ip_equal(const struct resil_ip *a, const struct resil_ip *b)
{
    if (a->family != b->family)
        return false;
    if (a->family == AF_INET)
        return a->u.v4.s_addr == b->u.v4.s_addr;
    return memcmp(&a->u.v6, &b->u.v6, sizeof(a->u.v6)) == 0;
}

bool resil_ip_parse(const char *s, struct resil_ip *ip)
{
    memset(ip, 0, sizeof(*ip));
    if (inet_pton(AF_INET, s, &ip->u.v4) == 1) {
        ip->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, &ip->u.v6) == 1) {
        ip->family = AF_INET6;
        if (IN6_IS_ADDR_V4MAPPED(&ip->u.v6)) {
            struct in_addr v4;
            memcpy(&v4, &ip->u.v6.s6_addr[12], 4);
            ip->family = AF_INET;
            memset(&ip->u, 0, sizeof(ip->u));
            ip->u.v4 = v4;
        }
        return true;
    }
    return false;
}

char *resil_ip_format(const struct resil_ip *ip, int port, char *buf,
                      size_t len)
{
    char a[INET6_ADDRSTRLEN];
    if (inet_ntop(ip->family, &ip->u, a, sizeof(a)) == NULL)
        snprintf(a, sizeof(a), "?");
    if (port < 0)
        snprintf(buf, len, "%s", a);
    else if (ip->family == AF_INET6)
        snprintf(buf, len, "[%s]:%d", a, port);
    else
        snprintf(buf, len, "%s:%d", a, port);
    return buf;
}
