/* libresil: per-process address health cache.
 *
 * An address that failed within the TTL is tried last; one that won within
 * the TTL is tried first, lowest connect RTT first (the "previously used"
 * and "lower RTT" rules HEv3 adds between RFC 6724 rules 8 and 9).
 * Fixed-size table, least recently touched entry replaced; leaf lock.
 */
#ifndef RESIL_HEALTH_H
#define RESIL_HEALTH_H

#include <stdint.h>

#include "addr.h"

#define RESIL_HEALTH_SLOTS 256

enum resil_health_tier {
    RESIL_TIER_GOOD = 0, /* won recently */
    RESIL_TIER_NEUTRAL = 1,
    RESIL_TIER_BAD = 2,  /* failed recently */
};

void resil_health_set_ttl(uint64_t ttl_ns);
void resil_health_fail(const struct resil_ip *ip, uint64_t now_ns);
void resil_health_win(const struct resil_ip *ip, uint64_t rtt_ns,
                      uint64_t now_ns);
/* Tier of ip at now; *rtt_ns gets the last winning RTT for GOOD. */
enum resil_health_tier resil_health_tier(const struct resil_ip *ip,
                                         uint64_t now_ns, uint64_t *rtt_ns);
void resil_health_clear(void);
/* Hold / release the lock across fork(). */
void resil_health_lock(void);
void resil_health_unlock(void);

#endif
