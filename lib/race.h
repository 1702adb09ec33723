/* libresil: the connection race (RFC 8305 Happy Eyeballs v2, HEv3 draft),
 * made for fabrics: servers with two or more uplinks, each with its own
 * IPv4 and IPv6 address, where the failure that matters kills a whole
 * uplink.
 *
 * Pure logic, no I/O: the engine feeds it the clock and the outcome of each
 * attempt, and it says which attempt to start when. Driven by a fake clock
 * in the unit tests. It reads the health cache (health.h) and the path
 * cache (path.h, whose look-up the tests replace).
 *
 * Rules implemented:
 *  - candidates are ordered: recent winners first (lowest RTT first), then
 *    the program's own choice and the rest in resolver order, then the
 *    siblings of an address that just died with its path (health.h), then
 *    addresses that failed recently;
 *  - within each of those groups the attempts are interleaved by path and
 *    by family: each attempt leaves by another path (the route's outgoing
 *    interface, path.h) than the one before it while another is left, and
 *    within that alternates the families (RFC 8305 section 4), starting
 *    with the family of the first candidate. With one uplink dead, the
 *    second attempt already goes out through another one;
 *  - a new attempt starts every Connection Attempt Delay (section 5) or at
 *    once when the previous one fails; earlier attempts keep running. The
 *    delay follows the RTT history of the destination's addresses when
 *    the health cache has some (section 5 allows it): see
 *    resil_race_delay_rule; without history it is the configured one;
 *  - an attempt that fails with a path error (timeout, unreachable) pushes
 *    the waiting candidates on its path behind the others;
 *  - the first attempt to complete wins, the engine cancels the rest;
 *  - candidates that arrive late (DNS) join the race in order;
 *  - when every attempt failed and no more candidates can come, the race
 *    fails with the errno of the most relevant attempt (see race.c).
 *
 * Why the delay cannot make a storm of attempts: it never goes below
 * RESIL_RACE_DELAY_MIN_NS (RFC 8305's floor), every candidate is attempted
 * at most once per race (at most RESIL_RACE_MAX, and the engine closes the
 * losers as soon as one wins), and the RTT comes only from handshakes that
 * completed: a lossy path gives no sample, so loss never shortens it.
 */
#ifndef RESIL_RACE_H
#define RESIL_RACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

#define RESIL_RACE_MAX 32

enum resil_att_state {
    RESIL_ATT_WAITING = 0, /* not started */
    RESIL_ATT_RUNNING,
    RESIL_ATT_FAILED,
    RESIL_ATT_WON,
};

/* RFC 8305 section 5: "MUST NOT be less than 10 ms" */
#define RESIL_RACE_DELAY_MIN_NS (10ull * 1000000ull)
/* added to the RTT-derived delay: the engine's own turn-around (waking up
 * for the attempt's completion) is in every connect time, and a server
 * answering a SYN later than usual is no failure */
#define RESIL_RACE_DELAY_MARGIN_NS (5ull * 1000000ull)

struct resil_attempt {
    struct resil_ip ip;
    enum resil_att_state state;
    int err;
    int tier;        /* resil_health_tier at sort time, SUSPECT when a
                        sibling died with the path in this race */
    uint32_t path;   /* path.h: the route's interface, 0 unknown */
    uint64_t rtt_ns; /* smoothed RTT from the health cache, 0: none */
    uint64_t rttvar_ns;
    uint64_t delay_ns; /* the attempt delay armed when it started */
    uint64_t started_ns, ended_ns;
};

struct resil_race {
    int family;        /* the program's socket family */
    bool v6only;       /* AF_INET6 socket that cannot reach IPv4 */
    uint64_t delay_ns; /* the configured delay: the most any attempt waits
                          for the one before it */
    uint64_t next_ns;  /* earliest start of the next waiting attempt */
    int n;             /* candidates */
    int started;       /* attempts [0, started) have been started */
    int winner;        /* -1 while undecided */
    int more_coming;   /* outstanding resolutions that may add candidates */
    struct resil_attempt att[RESIL_RACE_MAX];
};

/* delay_ns: the configured Connection Attempt Delay (attempt_delay_ms),
 * used as it is when there is no RTT history, and the upper clamp of the
 * delay derived from one. */
void resil_race_init(struct resil_race *r, int family, bool v6only,
                     uint64_t delay_ns, uint64_t now_ns);

/* Add a candidate; duplicates and addresses the socket family cannot reach
 * are dropped. Its path is looked up (path.h: cached, else system calls)
 * and its health read. Waiting candidates are re-sorted (rules above).
 * Returns the index, or -1 when dropped or full. */
int resil_race_add(struct resil_race *r, const struct resil_ip *ip,
                   uint64_t now_ns);

/* Put att[lo, hi) in attempt order (the rules above), continuing the
 * alternation of paths and families after att[lo - 1] when lo > 0. Each
 * attempt's tier, path and rtt_ns must be filled. The race's own order;
 * for a caller that picks the first attempt itself too. */
void resil_race_order(struct resil_attempt *att, int lo, int hi);

/* The index in c[0, n) of the candidate a race of them would start first
 * (resil_race_order's first), without building the race; -1 when none is
 * reachable from a socket of family (v6only). Reads the health cache and
 * the paths path.h knows already (no system call). */
int resil_race_first(const struct resil_ip *c, int n, int family,
                     bool v6only, uint64_t now_ns);

/* The Connection Attempt Delay for an RTT history (srtt_ns 0: none):
 * 2 srtt + 4 rttvar + RESIL_RACE_DELAY_MARGIN_NS, clamped to
 * [RESIL_RACE_DELAY_MIN_NS, max_ns]; max_ns (the configured delay) when
 * there is no history. */
uint64_t resil_race_delay_rule(uint64_t srtt_ns, uint64_t rttvar_ns,
                               uint64_t max_ns);

/* The delay after starting attempt i of r: from i's own RTT history, else
 * from the largest smoothed RTT among r's candidates that have one, else
 * r->delay_ns. */
uint64_t resil_race_delay(const struct resil_race *r, int i);

/* The same for candidate `first` of c[0, n) before any race is built (a
 * connect whose first attempt runs on its own): reads the health cache. */
uint64_t resil_race_delay_for(const struct resil_ip *c, int n, int first,
                              uint64_t max_ns, uint64_t now_ns);

/* resil_race_first and resil_race_delay_for of its answer at once (the
 * candidates looked up once): returns the index, *delay_ns the delay
 * (max_ns when the index is -1). */
int resil_race_pick(const struct resil_ip *c, int n, int family, bool v6only,
                    uint64_t max_ns, uint64_t now_ns, uint64_t *delay_ns);

/* The attempt to start now (marked running), or -1. *wake_ns gets the time
 * the engine should call again (UINT64_MAX: only on an event). */
int resil_race_next(struct resil_race *r, uint64_t now_ns, uint64_t *wake_ns);

void resil_race_failed(struct resil_race *r, int i, int err, uint64_t now_ns);
void resil_race_won(struct resil_race *r, int i, uint64_t now_ns);

/* True when there is a winner, or every candidate failed and none can come.*/
bool resil_race_finished(const struct resil_race *r);

/* Record the race's outcome in the health cache: the winner (its connect
 * time as an RTT sample; its path works), and each failed attempt (tried
 * last; a path error marks its path down, a refusal proves it). Attempts
 * still running when another won are no failure (HEv3). */
void resil_race_report(const struct resil_race *r, uint64_t now_ns);

/* The JSON members describing the attempts started, in order:
 * "tried":["addr",...],"paths":["ifname",...],"delays_ms":[n,...]
 * (the delay armed after each one). Returns buf. */
char *resil_race_json(const struct resil_race *r, char *buf, size_t len);

/* The errno to report for a failed race (0 when not failed). */
int resil_race_errno(const struct resil_race *r);

/* The failed attempt whose errno resil_race_errno() reports, judged on the
 * attempts failed so far (the engine keeps that attempt's socket for the
 * program, see conn.c); -1 when none failed. */
int resil_race_error_att(const struct resil_race *r);

#endif
