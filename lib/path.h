/* libresil: the way out to a destination (its path), from the kernel.
 *
 * A server in a layer-3 fabric has two or more uplinks, and the failure
 * that matters is a whole uplink (a switch, a cable): every address behind
 * it dies at once. The race interleaves its attempts across paths
 * (race.h) and the health cache pushes down the addresses that share a
 * path with one that just failed (health.h); both need to know which
 * candidates leave by the same way.
 *
 * A path is the outgoing interface of the kernel's route to the
 * destination (RTM_GETROUTE over netlink, what `ip route get` asks), named
 * by its interface index; 0 means unknown (no route, no netlink). The
 * gateway is looked up too, for the debug log, but does not split a path: an
 * uplink's IPv4 and IPv6 routes name different gateways (the IPv6 one
 * usually link-local) on the same interface, cable and switch.
 *
 * Cost, measured on the test bed (2 vCPU VM): a look-up is a netlink
 * socket, one request and one answer per address, about 20 us. Answers
 * are cached per destination for RESIL_PATH_TTL_NS, so a process that
 * races to the same addresses pays it once per TTL; a connect that does
 * not race (one address) never asks. Leaf lock; the netlink I/O runs
 * outside it.
 */
#ifndef RESIL_PATH_H
#define RESIL_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "status.h"

#define RESIL_PATH_SLOTS 64
#define RESIL_PATH_TTL_NS (5ull * 1000000000ull)

/* A route: its outgoing interface (0: none) and gateway, if any. */
struct resil_route {
    uint32_t oif;
    bool has_gw;
    struct resil_ip gw;
    char ifname[16]; /* IFNAMSIZ; "" when unknown */
};

/* The look-up behind the cache: fills *out for dst; RESIL_OK, RESIL_ENOENT
 * (no route: the path is unknown) or RESIL_ESYS. */
typedef resil_status_t (*resil_route_fn)(const struct resil_ip *dst,
                                         struct resil_route *out);

/* The kernel's answer (netlink). */
resil_status_t resil_path_route_netlink(const struct resil_ip *dst,
                                        struct resil_route *out);

/* Replace the look-up (unit tests: a fake routing table; NULL: none, every
 * path unknown). The default is resil_path_route_netlink. Clears the
 * cache. */
void resil_path_set_backend(resil_route_fn fn);

/* The path of dst (its interface index, 0 when unknown): from the cache
 * while its answer is younger than RESIL_PATH_TTL_NS, else looked up
 * (system calls; the caller may hold the engine lock and a socket's
 * lock, never the health or names lock). */
uint32_t resil_path_of(const struct resil_ip *dst, uint64_t now_ns);

/* The path the cache last knew for dst, however old (0 when never looked
 * up): no system call, for callers that must not do I/O. */
uint32_t resil_path_cached(const struct resil_ip *dst);
/* The same for dst[0, n) into out[0, n), under one lock. */
void resil_path_cached_n(const struct resil_ip *dst, int n, uint32_t *out);

/* The name of path (its interface, "if<N>" when the name is unknown, ""
 * for 0) into buf; returns buf. No system call. */
char *resil_path_name(uint32_t path, char *buf, size_t len);

/* Forget everything (tests). */
void resil_path_clear(void);

/* Hold / release the lock across fork(). */
void resil_path_lock(void);
void resil_path_unlock(void);

#endif
