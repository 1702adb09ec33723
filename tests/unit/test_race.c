/* The race state machine, driven by a fake clock. */
#include <errno.h>

#include "common.h"
#include "race.h"

TestSuite(race, .init = unit_setup);

static const uint64_t D = 250 * MS_NS;

static int start(struct resil_race *r, uint64_t now)
{
    uint64_t wake;
    return resil_race_next(r, now, &wake);
}

static void add(struct resil_race *r, const char *s)
{
    struct resil_ip ip = ip_of(s);
    resil_race_add(r, &ip, 0);
}

static const char *at(struct resil_race *r, int i, char *buf)
{
    return resil_ip_format(&r->att[i].ip, -1, buf, RESIL_ADDRSTRLEN);
}

Test(race, stagger_and_winner)
{
    struct resil_race r;
    uint64_t wake;
    char b[RESIL_ADDRSTRLEN];

    resil_race_init(&r, AF_INET, false, D, 0);
    add(&r, "10.0.1.2");
    add(&r, "10.0.2.2");
    add(&r, "10.0.3.2");
    cr_assert_eq(r.n, 3);
    cr_expect_str_eq(at(&r, 0, b), "10.0.1.2"); /* program's choice first */
    cr_expect_eq(resil_race_next(&r, 0, &wake), 0);
    cr_expect_eq(wake, D);
    cr_expect_eq(resil_race_next(&r, D - 1, &wake), -1, "started early");
    cr_expect_eq(wake, D);
    cr_expect_eq(resil_race_next(&r, D, &wake), 1);
    cr_expect_eq(wake, 2 * D);
    /* attempt 0 keeps running while 1 runs: it may still win */
    cr_expect_eq(r.att[0].state, RESIL_ATT_RUNNING);
    resil_race_won(&r, 0, D + 5);
    cr_expect(resil_race_finished(&r));
    cr_expect_eq(r.winner, 0);
    cr_expect_eq(resil_race_errno(&r), 0);
    cr_expect_eq(resil_race_next(&r, 10 * D, &wake), -1);
    /* a second win is ignored */
    resil_race_won(&r, 1, D + 6);
    cr_expect_eq(r.winner, 0);
}

Test(race, failure_starts_next_at_once)
{
    struct resil_race r;
    uint64_t wake;
    resil_race_init(&r, AF_INET, false, D, 0);
    add(&r, "10.0.1.2");
    add(&r, "10.0.2.2");
    cr_expect_eq(start(&r, 0), 0);
    resil_race_failed(&r, 0, ECONNREFUSED, 10 * MS_NS);
    cr_expect_eq(resil_race_next(&r, 10 * MS_NS, &wake), 1);
    cr_expect_not(resil_race_finished(&r));
    resil_race_won(&r, 1, 20 * MS_NS);
    cr_expect_eq(r.winner, 1);
}

Test(race, family_interleaving)
{
    struct resil_race r;
    char b[RESIL_ADDRSTRLEN];
    const char *want[] = {"fd00::1", "10.0.0.1", "fd00::2", "10.0.0.2",
                          "10.0.0.3"};
    resil_race_init(&r, AF_INET6, false, D, 0);
    add(&r, "fd00::1");
    add(&r, "fd00::2");
    add(&r, "10.0.0.1");
    add(&r, "10.0.0.2");
    add(&r, "10.0.0.3");
    cr_assert_eq(r.n, 5);
    for (int i = 0; i < 5; i++)
        cr_expect_str_eq(at(&r, i, b), want[i], "position %d", i);
}

Test(race, program_choice_v4_leads_interleave)
{
    struct resil_race r;
    char b[RESIL_ADDRSTRLEN];
    resil_race_init(&r, AF_INET6, false, D, 0);
    add(&r, "10.0.0.1");
    add(&r, "fd00::1");
    add(&r, "fd00::2");
    cr_expect_str_eq(at(&r, 0, b), "10.0.0.1");
    cr_expect_str_eq(at(&r, 1, b), "fd00::1");
    cr_expect_str_eq(at(&r, 2, b), "fd00::2");
}

Test(race, socket_family_limits_candidates)
{
    struct resil_race r;
    resil_race_init(&r, AF_INET, false, D, 0);
    add(&r, "10.0.0.1");
    add(&r, "fd00::1");
    add(&r, "10.0.0.1"); /* duplicate */
    cr_expect_eq(r.n, 1);
    resil_race_init(&r, AF_INET6, true, D, 0);
    add(&r, "fd00::1");
    add(&r, "10.0.0.1"); /* V6ONLY: no v4-mapped */
    cr_expect_eq(r.n, 1);
    resil_race_init(&r, AF_INET6, false, D, 0);
    add(&r, "fd00::1");
    add(&r, "::ffff:10.0.0.1");
    cr_expect_eq(r.n, 2);
}

Test(race, health_cache_orders_candidates)
{
    struct resil_race r;
    char b[RESIL_ADDRSTRLEN];
    struct resil_ip dead = ip_of("10.0.1.2"), fast = ip_of("10.0.3.2"),
                    slow = ip_of("10.0.4.2");
    uint64_t now = 1000 * MS_NS;

    resil_health_fail(&dead, now);
    resil_health_win(&slow, 9 * MS_NS, now);
    resil_health_win(&fast, 1 * MS_NS, now);
    resil_race_init(&r, AF_INET, false, D, now);
    resil_race_add(&r, &dead, now); /* the program's choice, but it failed */
    struct resil_ip other = ip_of("10.0.2.2");
    resil_race_add(&r, &other, now);
    resil_race_add(&r, &slow, now);
    resil_race_add(&r, &fast, now);
    cr_expect_str_eq(at(&r, 0, b), "10.0.3.2"); /* recent, lowest RTT */
    cr_expect_str_eq(at(&r, 1, b), "10.0.4.2");
    cr_expect_str_eq(at(&r, 2, b), "10.0.2.2");
    cr_expect_str_eq(at(&r, 3, b), "10.0.1.2"); /* failed: last */
    /* once the TTL passes the failure is forgotten */
    resil_health_set_ttl(30000 * MS_NS);
    uint64_t later = now + 31000 * MS_NS;
    cr_expect_eq(resil_health_tier(&dead, later, NULL), RESIL_TIER_NEUTRAL);
}

Test(race, late_candidates_join_in_order)
{
    struct resil_race r;
    uint64_t wake;
    char b[RESIL_ADDRSTRLEN];
    resil_race_init(&r, AF_INET6, false, D, 0);
    add(&r, "fd00::1");
    r.more_coming = 1;
    cr_expect_eq(start(&r, 0), 0);
    resil_race_failed(&r, 0, ETIMEDOUT, 5 * MS_NS);
    /* DNS still out: not finished although every attempt failed */
    cr_expect_not(resil_race_finished(&r));
    cr_expect_eq(resil_race_next(&r, 6 * MS_NS, &wake), -1);
    cr_expect_eq(resil_race_errno(&r), 0);
    struct resil_ip a = ip_of("fd00::2"), c = ip_of("10.0.0.2");
    resil_race_add(&r, &c, 7 * MS_NS);
    resil_race_add(&r, &a, 7 * MS_NS);
    r.more_coming = 0;
    /* the last started attempt was IPv6, so IPv4 goes next */
    cr_expect_str_eq(at(&r, 1, b), "10.0.0.2");
    cr_expect_eq(resil_race_next(&r, 7 * MS_NS, &wake), 1);
    cr_expect_eq(resil_race_next(&r, 7 * MS_NS + D, &wake), 2);
    resil_race_won(&r, 2, 7 * MS_NS + D + 1);
    cr_expect_str_eq(at(&r, r.winner, b), "fd00::2");
}

Test(race, all_fail_reports_most_relevant_errno)
{
    struct resil_race r;
    resil_race_init(&r, AF_INET, false, 10 * MS_NS, 0);
    add(&r, "10.0.1.2");
    add(&r, "10.0.2.2");
    add(&r, "10.0.3.2");
    cr_expect_eq(start(&r, 0), 0);
    cr_expect_eq(start(&r, 10 * MS_NS), 1);
    cr_expect_eq(start(&r, 20 * MS_NS), 2);
    resil_race_failed(&r, 0, ENETUNREACH, 21 * MS_NS);
    resil_race_failed(&r, 2, ETIMEDOUT, 22 * MS_NS);
    cr_expect_not(resil_race_finished(&r));
    cr_expect_eq(resil_race_errno(&r), 0);
    resil_race_failed(&r, 1, EHOSTUNREACH, 23 * MS_NS);
    cr_expect(resil_race_finished(&r));
    cr_expect_eq(resil_race_errno(&r), ETIMEDOUT);

    resil_race_init(&r, AF_INET, false, 10 * MS_NS, 0);
    add(&r, "10.0.1.2");
    add(&r, "10.0.2.2");
    start(&r, 0);
    start(&r, 10 * MS_NS);
    resil_race_failed(&r, 0, ETIMEDOUT, 11 * MS_NS);
    resil_race_failed(&r, 1, ECONNREFUSED, 12 * MS_NS);
    cr_expect_eq(resil_race_errno(&r), ECONNREFUSED);

    /* ties: the earliest attempt, i.e. what plain TCP would have said */
    resil_race_init(&r, AF_INET, false, 10 * MS_NS, 0);
    add(&r, "10.0.1.2");
    add(&r, "10.0.2.2");
    start(&r, 0);
    start(&r, 10 * MS_NS);
    resil_race_failed(&r, 1, EADDRNOTAVAIL, 11 * MS_NS);
    resil_race_failed(&r, 0, EACCES, 12 * MS_NS);
    cr_expect_eq(resil_race_errno(&r), EACCES);
}

/* The attempt whose errno a failed race reports is known while the race
 * runs (the engine keeps that attempt's socket for the program). */
Test(race, error_attempt)
{
    struct resil_race r;
    resil_race_init(&r, AF_INET, false, 10 * MS_NS, 0);
    add(&r, "10.0.1.2");
    add(&r, "10.0.2.2");
    add(&r, "10.0.3.2");
    cr_expect_eq(resil_race_error_att(&r), -1);
    start(&r, 0);
    start(&r, 10 * MS_NS);
    start(&r, 20 * MS_NS);
    resil_race_failed(&r, 1, EHOSTUNREACH, 21 * MS_NS);
    cr_expect_eq(resil_race_error_att(&r), 1);
    resil_race_failed(&r, 2, ECONNREFUSED, 22 * MS_NS);
    cr_expect_eq(resil_race_error_att(&r), 2);
    /* as telling as the refusal, and earlier: the earlier one wins */
    resil_race_failed(&r, 0, ECONNREFUSED, 23 * MS_NS);
    cr_expect_eq(resil_race_error_att(&r), 0);
    cr_expect_eq(resil_race_errno(&r), ECONNREFUSED);
}

Test(race, capacity)
{
    struct resil_race r;
    char s[32];
    resil_race_init(&r, AF_INET, false, D, 0);
    for (int i = 0; i < RESIL_RACE_MAX + 5; i++) {
        snprintf(s, sizeof(s), "10.0.%d.1", i);
        add(&r, s);
    }
    cr_expect_eq(r.n, RESIL_RACE_MAX);
}

Test(race, bad_indices_ignored)
{
    struct resil_race r;
    resil_race_init(&r, AF_INET, false, D, 0);
    add(&r, "10.0.1.2");
    resil_race_failed(&r, 0, ETIMEDOUT, 1); /* not started */
    resil_race_won(&r, 5, 1);
    resil_race_failed(&r, -1, ETIMEDOUT, 1);
    cr_expect_eq(r.att[0].state, RESIL_ATT_WAITING);
    cr_expect_eq(r.winner, -1);
}

/* resil_race_first() names the candidate a race would start first,
 * without building it (the first attempt of a connect runs on the
 * program's own socket, conn.h). */
static void first_matches_race(const char *const *cands, int n, int family,
                               bool v6only, uint64_t now)
{
    struct resil_race r;
    struct resil_ip ips[8];
    char a[RESIL_ADDRSTRLEN], b[RESIL_ADDRSTRLEN];
    uint64_t pd;
    int fi, pi;

    resil_race_init(&r, family, v6only, D, now);
    for (int i = 0; i < n; i++) {
        ips[i] = ip_of(cands[i]);
        resil_race_add(&r, &ips[i], now);
    }
    fi = resil_race_first(ips, n, family, v6only, now);
    /* the connect's one look-up of both answers the same */
    pi = resil_race_pick(ips, n, family, v6only, D, now, &pd);
    cr_expect_eq(pi, fi, "pick %d, first %d", pi, fi);
    cr_expect_eq(pd, fi < 0 ? D : resil_race_delay_for(ips, n, fi, D, now),
                 "pick's delay %llu", (unsigned long long)pd);
    if (r.n == 0) {
        cr_expect_eq(fi, -1, "nothing reachable, got %d", fi);
        return;
    }
    cr_assert(fi >= 0 && fi < n, "index %d", fi);
    resil_ip_format(&ips[fi], -1, a, sizeof(a));
    at(&r, 0, b);
    cr_expect_str_eq(a, b, "first %s, the race starts %s", a, b);
}

Test(race, first_is_what_the_race_starts)
{
    uint64_t now = 1000 * MS_NS;
    struct resil_ip dead = ip_of("10.0.1.2"), fast = ip_of("10.0.3.2"),
                    slow = ip_of("10.0.4.2"), dead6 = ip_of("fd00::2");
    const char *plain[] = {"10.0.1.2", "10.0.2.2", "10.0.3.2"};
    const char *mixed[] = {"fd00::2", "10.0.1.2", "fd00::3", "10.0.4.2"};
    const char *dups[] = {"10.0.2.2", "10.0.2.2", "10.0.1.2", "10.0.3.2"};
    const char *v6[] = {"10.0.1.2", "fd00::3", "::ffff:10.0.3.2"};

    first_matches_race(plain, 3, AF_INET, false, now);
    resil_health_fail(&dead, now);
    first_matches_race(plain, 3, AF_INET, false, now); /* 10.0.2.2 */
    resil_health_win(&slow, 9 * MS_NS, now);
    resil_health_win(&fast, 1 * MS_NS, now);
    first_matches_race(plain, 3, AF_INET, false, now); /* 10.0.3.2 */
    first_matches_race(mixed, 4, AF_INET6, false, now);
    first_matches_race(mixed, 4, AF_INET, false, now);
    first_matches_race(dups, 4, AF_INET, false, now);
    resil_health_fail(&dead6, now);
    first_matches_race(mixed, 4, AF_INET6, true, now);
    first_matches_race(v6, 3, AF_INET6, true, now);
    first_matches_race(v6, 3, AF_INET6, false, now);
    first_matches_race(v6, 1, AF_INET6, false, now); /* v4 on v6 socket */
    first_matches_race(v6 + 1, 1, AF_INET, false, now); /* unreachable */
}
