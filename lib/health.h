/* libresil: per-process address health cache.
 *
 * An address that failed within the TTL is tried last; one that won within
 * the TTL is tried first, lowest RTT first (the "previously used" and
 * "lower RTT" rules HEv3 adds between RFC 6724 rules 8 and 9).
 *
 * Paths (path.h): a failure that says the way to an address is dead (a
 * timeout, an unreachable) marks its path down too, and the other
 * addresses on that path (its siblings: the same uplink) go after every
 * address on another path, before the ones that failed themselves
 * (RESIL_TIER_SUSPECT), until an address on that path answers again or the
 * TTL passes. A refusal says the opposite: the path works.
 *
 * RTT samples (the time a connect took, and the kernel's smoothed RTT of
 * live connections, tcpi_rtt) are smoothed per address as TCP does (RFC
 * 6298: srtt, rttvar); they size the race's Connection Attempt Delay
 * (race.h) for as long as they are younger than the TTL.
 *
 * Fixed-size tables, least recently touched entry replaced; leaf lock
 * (path.h's lock is never taken inside it).
 */
#ifndef RESIL_HEALTH_H
#define RESIL_HEALTH_H

#include <stdint.h>

#include "addr.h"

#define RESIL_HEALTH_SLOTS 256
#define RESIL_HEALTH_PATHS 32

enum resil_health_tier {
    RESIL_TIER_GOOD = 0, /* won recently */
    RESIL_TIER_NEUTRAL = 1,
    RESIL_TIER_SUSPECT = 2, /* its path lost another address recently */
    RESIL_TIER_BAD = 3,     /* failed recently */
};

/* What the cache knows of an address. */
struct resil_health_info {
    enum resil_health_tier tier;
    uint64_t srtt_ns;   /* smoothed RTT; 0: no sample within the TTL */
    uint64_t rttvar_ns; /* its variation (meaningful when srtt_ns) */
};

void resil_health_set_ttl(uint64_t ttl_ns);

/* ip failed in a way that says its path may be dead (a timeout, an
 * unreachable): tried last, and its path (path, or 0 for the one path.h
 * last knew) is marked down. */
void resil_health_fail(const struct resil_ip *ip, uint64_t now_ns);
void resil_health_fail_path(const struct resil_ip *ip, uint32_t path,
                            uint64_t now_ns);

/* ip failed, but its path answered (a refusal): tried last; its path is
 * known to work. Also for local errors, with path 0: nothing is learnt
 * about the path then. */
void resil_health_refused(const struct resil_ip *ip, uint32_t path,
                          uint64_t now_ns);

/* ip won a race (its connect took rtt_ns; 0: no sample): tried first, and
 * its path works. */
void resil_health_win(const struct resil_ip *ip, uint64_t rtt_ns,
                      uint64_t now_ns);
void resil_health_win_path(const struct resil_ip *ip, uint32_t path,
                           uint64_t rtt_ns, uint64_t now_ns);

/* An RTT sample of a live connection to ip (the kernel's tcpi_rtt): it
 * sizes the attempt delay, and changes no tier. */
void resil_health_rtt(const struct resil_ip *ip, uint64_t rtt_ns,
                      uint64_t now_ns);

/* Tier of ip at now (its path: the one path.h last knew); *rtt_ns, when
 * not NULL, gets the smoothed RTT for GOOD. */
enum resil_health_tier resil_health_tier(const struct resil_ip *ip,
                                         uint64_t now_ns, uint64_t *rtt_ns);

/* Everything the cache knows of ip on path (0: unknown) at now. */
void resil_health_look(const struct resil_ip *ip, uint32_t path,
                       uint64_t now_ns, struct resil_health_info *out);
/* The same for ip[i] on path[i], i in [0, n), under one lock. */
void resil_health_look_n(const struct resil_ip *ip, const uint32_t *path,
                         int n, uint64_t now_ns,
                         struct resil_health_info *out);

void resil_health_clear(void);
/* Hold / release the lock across fork(). */
void resil_health_lock(void);
void resil_health_unlock(void);

#endif
