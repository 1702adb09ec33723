/* libresil: c-ares, driven by the engine thread.
 *
 * The channel gets the real socket functions (c-ares 1.18's
 * ares_set_socket_functions), so its traffic never meets our hooks, and
 * its sockets are engine watchers (ARES_OPT_SOCK_STATE_CB). Every function
 * here: engine lock held.
 */
#ifndef RESIL_DNS_H
#define RESIL_DNS_H

#include <stdint.h>

#include "addr.h"
#include "names.h"
#include "status.h"

/* An answer: n addresses of `family` (n == 0 on failure, err then says
 * why). Called with the engine lock held, possibly before
 * resil_dns_lookup() returns. */
typedef void (*resil_dns_fn)(void *arg, int family, const struct resil_ip *ips,
                             int n, const char *err);

/* Look name up (family AF_INET or AF_INET6). Returns RESIL_OK when fn will
 * be called, RESIL_EUNSUPP when c-ares is unavailable (fn is not called). */
resil_status_t resil_dns_lookup(const char *name, int family, resil_dns_fn fn,
                                void *arg);

/* Process c-ares timeouts; returns the next deadline (UINT64_MAX: none). */
uint64_t resil_dns_tick(uint64_t now_ns);

/* Cancel every lookup in flight (their callbacks run with no address);
 * c-ares then closes all its sockets. Engine lock held. */
void resil_dns_cancel(void);

/* The child of a fork: the channel's sockets are the parent's; drop it. */
void resil_dns_atfork_child(void);

#endif
