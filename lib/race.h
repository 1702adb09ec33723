/* libresil: the connection race (RFC 8305 Happy Eyeballs v2, HEv3 draft).
 *
 * Pure logic, no I/O: the engine feeds it the clock and the outcome of each
 * attempt, and it says which attempt to start when. Driven by a fake clock
 * in the unit tests.
 *
 * Rules implemented:
 *  - candidates are ordered: recent winners first (lowest RTT first), then
 *    the program's own choice and the rest in resolver order, then addresses
 *    that failed recently; within that order the families are interleaved
 *    starting with the family of the first candidate (RFC 8305 section 4);
 *  - a new attempt starts every delay (Connection Attempt Delay, section 5)
 *    or at once when the previous one fails; earlier attempts keep running;
 *  - the first attempt to complete wins, the engine cancels the rest;
 *  - candidates that arrive late (DNS) join the race in order;
 *  - when every attempt failed and no more candidates can come, the race
 *    fails with the errno of the most relevant attempt (see race.c).
 */
#ifndef RESIL_RACE_H
#define RESIL_RACE_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

#define RESIL_RACE_MAX 32

enum resil_att_state {
    RESIL_ATT_WAITING = 0, /* not started */
    RESIL_ATT_RUNNING,
    RESIL_ATT_FAILED,
    RESIL_ATT_WON,
};

struct resil_attempt {
    struct resil_ip ip;
    enum resil_att_state state;
    int err;
    int tier; /* resil_health_tier at sort time */
    uint64_t rtt_ns;
    uint64_t started_ns, ended_ns;
};

struct resil_race {
    int family;        /* the program's socket family */
    bool v6only;       /* AF_INET6 socket that cannot reach IPv4 */
    uint64_t delay_ns;
    uint64_t next_ns;  /* earliest start of the next waiting attempt */
    int n;             /* candidates */
    int started;       /* attempts [0, started) have been started */
    int winner;        /* -1 while undecided */
    int more_coming;   /* outstanding resolutions that may add candidates */
    struct resil_attempt att[RESIL_RACE_MAX];
};

void resil_race_init(struct resil_race *r, int family, bool v6only,
                     uint64_t delay_ns, uint64_t now_ns);

/* Add a candidate; duplicates and addresses the socket family cannot reach
 * are dropped. Waiting candidates are re-sorted (rules above). Returns the
 * index, or -1 when dropped or full. */
int resil_race_add(struct resil_race *r, const struct resil_ip *ip,
                   uint64_t now_ns);

/* The index in c[0, n) of the candidate a race of them would start first
 * (what resil_race_add's order puts first), without building the race;
 * -1 when none is reachable from a socket of family (v6only). Looks up
 * the health cache. */
int resil_race_first(const struct resil_ip *c, int n, int family,
                     bool v6only, uint64_t now_ns);

/* The attempt to start now (marked running), or -1. *wake_ns gets the time
 * the engine should call again (UINT64_MAX: only on an event). */
int resil_race_next(struct resil_race *r, uint64_t now_ns, uint64_t *wake_ns);

void resil_race_failed(struct resil_race *r, int i, int err, uint64_t now_ns);
void resil_race_won(struct resil_race *r, int i, uint64_t now_ns);

/* True when there is a winner, or every candidate failed and none can come.*/
bool resil_race_finished(const struct resil_race *r);

/* The errno to report for a failed race (0 when not failed). */
int resil_race_errno(const struct resil_race *r);

/* The failed attempt whose errno resil_race_errno() reports, judged on the
 * attempts failed so far (the engine keeps that attempt's socket for the
 * program, see conn.c); -1 when none failed. */
int resil_race_error_att(const struct resil_race *r);

#endif
