/* Racing made for fabrics (issue 9), driven by a fake clock and a fake
 * routing table: path grouping, interleaving across paths and families,
 * sibling demotion, the attempt delay from RTT history and its clamps,
 * the path cache and the kernel's answer. */
#include <errno.h>
#include <net/if.h>
#include <string.h>

#include "common.h"
#include "race.h"

TestSuite(fabric, .init = unit_setup);

static const uint64_t D = 250 * MS_NS;
#define T0 (1000 * MS_NS) /* a clock that does not start at 0 */

/* The test bed's shape: a server with two uplinks, each with an IPv4 and
 * an IPv6 address (10.0.N.x, fd00:N::x leave by interface 10 + N), a third
 * uplink for three-path tests, and addresses with no route. */
static int route_calls;
static resil_status_t fake_route(const struct resil_ip *dst,
                                 struct resil_route *out)
{
    int n;

    route_calls++;
    memset(out, 0, sizeof(*out));
    if (dst->family == AF_INET)
        n = ((const uint8_t *)&dst->u.v4)[2];
    else
        n = dst->u.v6.s6_addr[3];
    if (n < 1 || n > 3)
        return RESIL_ENOENT;
    out->oif = 10 + (uint32_t)n;
    snprintf(out->ifname, sizeof(out->ifname), "up%d", n);
    return RESIL_OK;
}

static void fabric(void)
{
    resil_path_set_backend(fake_route);
    route_calls = 0;
}

static const char *at(const struct resil_race *r, int i, char *buf)
{
    return resil_ip_format(&r->att[i].ip, -1, buf, RESIL_ADDRSTRLEN);
}

static void race_of(struct resil_race *r, int family, const char *const *c,
                    int n, uint64_t now)
{
    resil_race_init(r, family, false, D, now);
    for (int i = 0; i < n; i++) {
        struct resil_ip ip = ip_of(c[i]);
        resil_race_add(r, &ip, now);
    }
}

static void expect_order(const struct resil_race *r, const char *const *want,
                         int n)
{
    char b[RESIL_ADDRSTRLEN];
    cr_assert_eq(r->n, n, "%d candidates, want %d", r->n, n);
    for (int i = 0; i < n; i++)
        cr_expect_str_eq(at(r, i, b), want[i], "position %d", i);
}

/* glibc's order on the bed: both IPv6 first (RFC 6724), each uplink's
 * address first. */
static const char *const bed[] = {"fd00:1::2", "fd00:2::2", "10.0.1.2",
                                  "10.0.2.2"};

Test(fabric, paths_group_candidates)
{
    struct resil_race r;

    fabric();
    race_of(&r, AF_INET6, bed, 4, T0);
    for (int i = 0; i < r.n; i++) {
        struct resil_ip ip = r.att[i].ip;
        uint32_t want = ip.family == AF_INET
                            ? 10u + ((const uint8_t *)&ip.u.v4)[2]
                            : 10u + ip.u.v6.s6_addr[3];
        cr_expect_eq(r.att[i].path, want, "attempt %d path %u", i,
                     r.att[i].path);
    }
    /* one look-up per address, then the cache */
    cr_expect_eq(route_calls, 4);
    race_of(&r, AF_INET6, bed, 4, T0 + 1000 * MS_NS);
    cr_expect_eq(route_calls, 4);
    /* an address with no route: path unknown */
    struct resil_ip none = ip_of("10.0.9.2");
    cr_expect_eq(resil_path_of(&none, T0), 0);
}

/* Uplink 1 dead: the second attempt already leaves by uplink 2, and the
 * families still alternate (today's family-only order reached uplink 2
 * on the third attempt). */
Test(fabric, interleave_paths_then_families)
{
    struct resil_race r;
    const char *want[] = {"fd00:1::2", "10.0.2.2", "10.0.1.2", "fd00:2::2"};

    fabric();
    race_of(&r, AF_INET6, bed, 4, T0);
    expect_order(&r, want, 4);

    /* three uplinks, one family: round robin over the uplinks */
    const char *three[] = {"10.0.1.2", "10.0.1.3", "10.0.2.2", "10.0.2.3",
                           "10.0.3.2"};
    const char *want3[] = {"10.0.1.2", "10.0.2.2", "10.0.3.2", "10.0.1.3",
                           "10.0.2.3"};
    race_of(&r, AF_INET, three, 5, T0);
    expect_order(&r, want3, 5);

    /* one path (unknown: no fake routes): RFC 8305's family interleaving
     * exactly as before, the order within each family kept */
    resil_path_set_backend(NULL);
    const char *want1[] = {"fd00:1::2", "10.0.1.2", "fd00:2::2", "10.0.2.2"};
    race_of(&r, AF_INET6, bed, 4, T0);
    expect_order(&r, want1, 4);
}

Test(fabric, dead_uplink_costs_one_delay)
{
    struct resil_race r;
    uint64_t wake;
    char b[RESIL_ADDRSTRLEN];

    fabric();
    race_of(&r, AF_INET6, bed, 4, T0);
    cr_expect_eq(resil_race_next(&r, T0, &wake), 0);
    cr_expect_eq(wake, T0 + D, "no history: the configured delay");
    cr_expect_eq(r.att[0].delay_ns, D);
    cr_expect_eq(resil_race_next(&r, T0 + D, &wake), 1);
    cr_expect_str_eq(at(&r, 1, b), "10.0.2.2");
    cr_expect_neq(r.att[1].path, r.att[0].path);
    resil_race_won(&r, 1, T0 + D + MS_NS / 10);
    cr_expect_eq(r.winner, 1);
}

/* Late candidates (DNS) continue the alternation of paths after the
 * attempts already started. */
Test(fabric, late_candidates_continue_path_alternation)
{
    struct resil_race r;
    uint64_t wake;
    char b[RESIL_ADDRSTRLEN];
    struct resil_ip a1 = ip_of("fd00:1::2"), b1 = ip_of("10.0.1.2"),
                    a2 = ip_of("fd00:2::2");

    fabric();
    resil_race_init(&r, AF_INET6, false, D, T0);
    resil_race_add(&r, &a1, T0);
    r.more_coming = 1;
    cr_expect_eq(resil_race_next(&r, T0, &wake), 0);
    resil_race_add(&r, &b1, T0 + MS_NS);
    resil_race_add(&r, &a2, T0 + MS_NS);
    /* after uplink 1 (IPv6): uplink 2 first, though IPv6 again */
    cr_expect_str_eq(at(&r, 1, b), "fd00:2::2");
    cr_expect_str_eq(at(&r, 2, b), "10.0.1.2");
}

/* A path that just lost an address pushes its other addresses down in
 * the health cache: after every address on another path, before the
 * ones that failed themselves; until the path answers again. */
Test(fabric, sibling_demotion_in_health_cache)
{
    struct resil_race r;
    struct resil_ip a1 = ip_of("fd00:1::2"), b1 = ip_of("10.0.1.2");
    struct resil_health_info h;
    const char *want[] = {"fd00:2::2", "10.0.2.2", "10.0.1.2", "fd00:1::2"};

    fabric();
    resil_health_set_ttl(30000 * MS_NS);
    /* a race looked the paths up before (the cache knows them) */
    race_of(&r, AF_INET6, bed, 4, T0);
    resil_health_fail(&a1, T0);
    resil_health_look(&b1, 11, T0 + MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_SUSPECT);
    cr_expect_eq(resil_health_tier(&b1, T0 + MS_NS, NULL), RESIL_TIER_SUSPECT,
                 "the path of b1 comes from the cache");
    cr_expect_eq(resil_health_tier(&a1, T0 + MS_NS, NULL), RESIL_TIER_BAD);
    race_of(&r, AF_INET6, bed, 4, T0 + MS_NS);
    expect_order(&r, want, 4);

    /* a refusal on the path proves it: the sibling is neutral again */
    struct resil_ip b1b = ip_of("10.0.1.3");
    resil_health_refused(&b1b, 11, T0 + 2 * MS_NS);
    resil_health_look(&b1, 11, T0 + 3 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_NEUTRAL);
    /* a local error says nothing about the path */
    resil_health_fail(&a1, T0 + 4 * MS_NS);
    resil_health_refused(&b1b, 0, T0 + 5 * MS_NS);
    resil_health_look(&b1, 11, T0 + 6 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_SUSPECT);
    /* a win on the path: it works; the winner first */
    resil_health_win(&b1, 200000, T0 + 7 * MS_NS);
    resil_health_look(&b1, 11, T0 + 8 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_GOOD);
    resil_health_look(&a1, 11, T0 + 8 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_BAD, "its own failure still counts");
    /* the path loses an address again: the sibling that won before is
     * suspect, until the TTL passes */
    resil_health_fail(&a1, T0 + 10 * MS_NS);
    resil_health_look(&b1, 11, T0 + 20 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_SUSPECT);
    resil_health_look(&b1, 11, T0 + 10 * MS_NS + 30000 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_NEUTRAL);
}

/* Inside one race: an attempt that dies of a path error moves its waiting
 * siblings behind the other paths; a refusal does not. */
Test(fabric, sibling_demotion_in_race)
{
    struct resil_race r;
    uint64_t wake;
    char b[RESIL_ADDRSTRLEN];
    const char *one[] = {"10.0.1.2", "10.0.1.3", "10.0.2.2", "10.0.1.4"};

    fabric();
    /* order: 10.0.1.2, 10.0.2.2, 10.0.1.3, 10.0.1.4 */
    race_of(&r, AF_INET, one, 4, T0);
    cr_expect_str_eq(at(&r, 1, b), "10.0.2.2");
    cr_expect_eq(resil_race_next(&r, T0, &wake), 0);
    cr_expect_eq(resil_race_next(&r, T0 + D, &wake), 1);
    /* 10.0.2.2 is refused: nothing moves */
    resil_race_failed(&r, 1, ECONNREFUSED, T0 + D + MS_NS);
    cr_expect_str_eq(at(&r, 2, b), "10.0.1.3");
    cr_expect_eq(r.att[2].tier, RESIL_TIER_NEUTRAL);

    const char *two[] = {"10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.2.2",
                         "10.0.2.3"};
    race_of(&r, AF_INET, two, 5, T0);
    /* 10.0.1.2, 10.0.2.2, 10.0.1.3, 10.0.2.3, 10.0.1.4 */
    cr_expect_eq(resil_race_next(&r, T0, &wake), 0);
    cr_expect_eq(resil_race_next(&r, T0 + D, &wake), 1);
    cr_expect_str_eq(at(&r, 2, b), "10.0.1.3");
    /* uplink 1's first address times out: its siblings go last */
    resil_race_failed(&r, 0, ETIMEDOUT, T0 + D + MS_NS);
    cr_expect_str_eq(at(&r, 2, b), "10.0.2.3");
    cr_expect_str_eq(at(&r, 3, b), "10.0.1.3");
    cr_expect_str_eq(at(&r, 4, b), "10.0.1.4");
    cr_expect_eq(r.att[3].tier, RESIL_TIER_SUSPECT);
    /* and it starts at once (HEv3: a failure starts the next) */
    cr_expect_eq(resil_race_next(&r, T0 + D + MS_NS, &wake), 2);
    /* a late sibling of the dead path joins behind the others too */
    struct resil_ip late = ip_of("10.0.1.9"), late2 = ip_of("10.0.2.9");
    resil_race_add(&r, &late, T0 + D + 2 * MS_NS);
    resil_race_add(&r, &late2, T0 + D + 2 * MS_NS);
    cr_expect_str_eq(at(&r, 3, b), "10.0.2.9");
}

/* What a finished race leaves in the health cache. */
Test(fabric, race_report)
{
    struct resil_race r;
    uint64_t wake;
    struct resil_health_info h;
    const char *c[] = {"10.0.1.2", "10.0.2.2", "10.0.1.3", "10.0.2.3"};
    struct resil_ip refused = ip_of("10.0.2.2"), dead = ip_of("10.0.1.2"),
                    won = ip_of("10.0.1.3"), sib = ip_of("10.0.1.4");

    fabric();
    race_of(&r, AF_INET, c, 4, T0);
    /* 10.0.1.2, 10.0.2.2, 10.0.1.3, 10.0.2.3 */
    resil_race_next(&r, T0, &wake);
    resil_race_next(&r, T0 + D, &wake);
    resil_race_failed(&r, 1, ECONNREFUSED, T0 + D + MS_NS);
    resil_race_next(&r, T0 + D + MS_NS, &wake);
    resil_race_won(&r, 2, T0 + D + 3 * MS_NS);
    resil_race_report(&r, T0 + D + 3 * MS_NS);
    cr_expect_eq(resil_health_tier(&refused, T0 + D + 4 * MS_NS, NULL),
                 RESIL_TIER_BAD);
    resil_health_look(&won, 11, T0 + D + 4 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_GOOD);
    cr_expect_eq(h.srtt_ns, 2 * MS_NS, "its connect time: %llu",
                 (unsigned long long)h.srtt_ns);
    /* still running when another won: no failure (HEv3) */
    cr_expect_eq(resil_health_tier(&dead, T0 + D + 4 * MS_NS, NULL),
                 RESIL_TIER_NEUTRAL);

    /* a timeout marks the path down: the siblings are suspect */
    race_of(&r, AF_INET, c, 4, T0 + D + 5 * MS_NS);
    resil_race_next(&r, T0 + D + 5 * MS_NS, &wake);
    cr_expect_str_eq(resil_ip_format(&r.att[0].ip, -1, (char[64]){0}, 64),
                     "10.0.1.3");
    resil_race_failed(&r, 0, ETIMEDOUT, T0 + D + 6 * MS_NS);
    resil_race_report(&r, T0 + D + 6 * MS_NS);
    resil_health_look(&sib, 11, T0 + D + 7 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_SUSPECT);
}

Test(fabric, delay_rule_and_clamps)
{
    /* no history: the configured delay, whatever it is */
    cr_expect_eq(resil_race_delay_rule(0, 0, D), D);
    cr_expect_eq(resil_race_delay_rule(0, 0, 2000 * MS_NS), 2000 * MS_NS);
    /* a fabric's RTT: never below 10 ms (RFC 8305 section 5) */
    cr_expect_eq(resil_race_delay_rule(100000, 50000, D),
                 RESIL_RACE_DELAY_MIN_NS);
    cr_expect_eq(resil_race_delay_rule(1, 0, D), RESIL_RACE_DELAY_MIN_NS);
    /* in between: 2 srtt + 4 rttvar + margin */
    cr_expect_eq(resil_race_delay_rule(20 * MS_NS, 5 * MS_NS, D),
                 40 * MS_NS + 20 * MS_NS + RESIL_RACE_DELAY_MARGIN_NS);
    /* a slow path: never above the configured delay */
    cr_expect_eq(resil_race_delay_rule(150 * MS_NS, 10 * MS_NS, D), D);
    cr_expect_eq(resil_race_delay_rule(150 * MS_NS, 10 * MS_NS, 100 * MS_NS),
                 100 * MS_NS);
    /* the configured delay at the floor: the floor */
    cr_expect_eq(resil_race_delay_rule(5 * MS_NS, 0, 10 * MS_NS), 10 * MS_NS);
}

/* With RTT history (a first connect in the process), a dead first address
 * or uplink costs one short delay, not 250 ms. */
Test(fabric, delay_from_history)
{
    struct resil_race r;
    uint64_t wake;
    char b[RESIL_ADDRSTRLEN];
    struct resil_ip a1 = ip_of("fd00:1::2");

    fabric();
    resil_health_set_ttl(30000 * MS_NS);
    /* the first connect won on uplink 1 in 0.2 ms */
    resil_health_win(&a1, 200000, T0);
    race_of(&r, AF_INET6, bed, 4, T0 + 1000 * MS_NS);
    cr_expect_str_eq(at(&r, 0, b), "fd00:1::2", "the winner first");
    cr_expect_eq(resil_race_next(&r, T0 + 1000 * MS_NS, &wake), 0);
    cr_expect_eq(r.att[0].delay_ns, RESIL_RACE_DELAY_MIN_NS);
    cr_expect_eq(wake, T0 + 1000 * MS_NS + RESIL_RACE_DELAY_MIN_NS);
    /* uplink 1 died meanwhile: uplink 2 10 ms later */
    cr_expect_eq(resil_race_next(&r, wake, &wake), 1);
    cr_expect_str_eq(at(&r, 1, b), "10.0.2.2");
    /* no history of its own: the destination's (its other address) */
    cr_expect_eq(r.att[1].delay_ns, RESIL_RACE_DELAY_MIN_NS);

    /* history of a slow destination: 2 * 40 + 4 * 20 + 5 ms, and
     * clamped to the configured delay */
    struct resil_ip s = ip_of("10.0.3.2"), s2 = ip_of("10.0.3.3");
    resil_health_win(&s, 40 * MS_NS, T0);
    resil_race_init(&r, AF_INET, false, D, T0);
    resil_race_add(&r, &s, T0);
    resil_race_add(&r, &s2, T0);
    resil_race_next(&r, T0, &wake);
    cr_expect_eq(r.att[0].delay_ns, 165 * MS_NS, "%llu",
                 (unsigned long long)r.att[0].delay_ns);
    resil_race_init(&r, AF_INET, false, 100 * MS_NS, T0);
    resil_race_add(&r, &s, T0);
    resil_race_next(&r, T0, &wake);
    cr_expect_eq(r.att[0].delay_ns, 100 * MS_NS);

    /* the history expires with the health TTL: the configured delay */
    race_of(&r, AF_INET6, bed, 4, T0 + 31000 * MS_NS);
    resil_race_next(&r, T0 + 31000 * MS_NS, &wake);
    cr_expect_eq(r.att[0].delay_ns, D);
    /* and before any race is built (a first attempt of its own) */
    struct resil_ip c[2] = {ip_of("fd00:1::2"), ip_of("10.0.2.2")};
    cr_expect_eq(resil_race_delay_for(c, 2, 1, D, T0 + MS_NS),
                 RESIL_RACE_DELAY_MIN_NS);
    cr_expect_eq(resil_race_delay_for(c, 2, 1, D, T0 + 31000 * MS_NS), D);
}

/* A candidate with history joins while the first attempt waits on the
 * configured delay: the delay follows the new history (a later DNS
 * answer, a first attempt started before the others were known). */
Test(fabric, joining_history_rearms_delay)
{
    struct resil_race r;
    uint64_t wake;
    struct resil_ip a1 = ip_of("fd00:1::2"), b2 = ip_of("10.0.2.2");

    fabric();
    resil_health_win(&b2, 300000, T0);
    resil_race_init(&r, AF_INET6, false, D, T0);
    resil_race_add(&r, &a1, T0);
    cr_expect_eq(resil_race_next(&r, T0, &wake), 0);
    cr_expect_eq(r.att[0].delay_ns, D, "no history yet");
    resil_race_add(&r, &b2, T0 + MS_NS);
    cr_expect_eq(r.att[0].delay_ns, RESIL_RACE_DELAY_MIN_NS);
    cr_expect_eq(resil_race_next(&r, T0 + 9 * MS_NS, &wake), -1);
    cr_expect_eq(wake, T0 + RESIL_RACE_DELAY_MIN_NS);
    cr_expect_eq(resil_race_next(&r, T0 + RESIL_RACE_DELAY_MIN_NS, &wake), 1);
}

/* The delay can make no storm: attempts start at least 10 ms apart and
 * each candidate once, however small the history. */
Test(fabric, no_storm)
{
    struct resil_race r;
    uint64_t wake, now = T0, last = 0;
    char s[32];
    int started = 0;

    fabric();
    resil_race_init(&r, AF_INET, false, D, T0);
    for (int i = 0; i < RESIL_RACE_MAX; i++) {
        snprintf(s, sizeof(s), "10.0.%d.%d", 1 + i % 3, 10 + i);
        struct resil_ip ip = ip_of(s);
        resil_health_win(&ip, 1000, T0); /* 1 us */
        resil_race_add(&r, &ip, T0);
    }
    for (; now < T0 + 10000 * MS_NS; now += MS_NS) {
        int i = resil_race_next(&r, now, &wake);
        if (i < 0)
            continue;
        if (started)
            cr_expect_geq(now - last, RESIL_RACE_DELAY_MIN_NS,
                          "attempt %d %llu ns after the one before", i,
                          (unsigned long long)(now - last));
        last = now;
        started++;
    }
    cr_expect_eq(started, RESIL_RACE_MAX, "each candidate once");
}

/* The first attempt a race would start, for a caller that makes it on
 * its own (the program's socket): the race's own order. */
Test(fabric, first_is_the_order_first)
{
    struct resil_race r;
    char a[RESIL_ADDRSTRLEN], b[RESIL_ADDRSTRLEN];
    struct resil_ip c[4];
    struct resil_ip a1 = ip_of("fd00:1::2"), b2 = ip_of("10.0.2.2");

    fabric();
    for (int i = 0; i < 4; i++)
        c[i] = ip_of(bed[i]);
    race_of(&r, AF_INET6, bed, 4, T0);
    for (int step = 0; step < 3; step++) {
        int fi;
        if (step == 1)
            resil_health_fail(&a1, T0); /* uplink 1 suspect */
        if (step == 2)
            resil_health_win(&b2, MS_NS, T0);
        race_of(&r, AF_INET6, bed, 4, T0 + MS_NS);
        fi = resil_race_first(c, 4, AF_INET6, false, T0 + MS_NS);
        cr_assert(fi >= 0);
        cr_expect_str_eq(resil_ip_format(&c[fi], -1, a, sizeof(a)),
                         at(&r, 0, b), "step %d", step);
    }
    cr_expect_eq(resil_race_first(c + 2, 2, AF_INET6, true, T0), -1);
}

Test(fabric, events_name_paths_and_delays)
{
    struct resil_race r;
    uint64_t wake;
    char buf[512];

    fabric();
    race_of(&r, AF_INET6, bed, 4, T0);
    resil_race_json(&r, buf, sizeof(buf));
    cr_expect_str_eq(buf, "\"tried\":[],\"paths\":[],\"delays_ms\":[]");
    resil_race_next(&r, T0, &wake);
    resil_race_next(&r, T0 + D, &wake);
    resil_race_json(&r, buf, sizeof(buf));
    cr_expect_str_eq(buf, "\"tried\":[\"fd00:1::2\",\"10.0.2.2\"],"
                          "\"paths\":[\"up1\",\"up2\"],"
                          "\"delays_ms\":[250.0,250.0]");
    /* too small for both: the lists stay parallel */
    resil_race_json(&r, buf, 60);
    cr_expect_str_eq(buf, "\"tried\":[\"fd00:1::2\"],\"paths\":[\"up1\"],"
                          "\"delays_ms\":[250.0]");
    resil_path_set_backend(NULL);
    race_of(&r, AF_INET, bed + 2, 1, T0);
    resil_race_next(&r, T0, &wake);
    resil_race_json(&r, buf, sizeof(buf));
    cr_expect_str_eq(buf, "\"tried\":[\"10.0.1.2\"],\"paths\":[\"\"],"
                          "\"delays_ms\":[250.0]");
}

/* RFC 6298 smoothing of the samples, and live connections' samples
 * (tcpi_rtt) change no tier. */
Test(fabric, rtt_smoothing)
{
    struct resil_ip a = ip_of("10.0.1.2");
    struct resil_health_info h;

    resil_health_set_ttl(30000 * MS_NS);
    resil_health_rtt(&a, 8 * MS_NS, T0);
    resil_health_look(&a, 0, T0, &h);
    cr_expect_eq(h.tier, RESIL_TIER_NEUTRAL);
    cr_expect_eq(h.srtt_ns, 8 * MS_NS);
    cr_expect_eq(h.rttvar_ns, 4 * MS_NS);
    resil_health_rtt(&a, 16 * MS_NS, T0 + MS_NS);
    resil_health_look(&a, 0, T0 + MS_NS, &h);
    cr_expect_eq(h.srtt_ns, 9 * MS_NS);      /* 7/8 8 + 1/8 16 */
    cr_expect_eq(h.rttvar_ns, 5 * MS_NS);    /* 3/4 4 + 1/4 8 */
    resil_health_rtt(&a, 0, T0 + 2 * MS_NS); /* no sample */
    resil_health_look(&a, 0, T0 + 2 * MS_NS, &h);
    cr_expect_eq(h.srtt_ns, 9 * MS_NS);
    /* old samples expire; the next starts afresh */
    resil_health_look(&a, 0, T0 + 31002 * MS_NS, &h);
    cr_expect_eq(h.srtt_ns, 0);
    resil_health_win(&a, 2 * MS_NS, T0 + 31003 * MS_NS);
    resil_health_look(&a, 0, T0 + 31003 * MS_NS, &h);
    cr_expect_eq(h.tier, RESIL_TIER_GOOD);
    cr_expect_eq(h.srtt_ns, 2 * MS_NS);
}

Test(fabric, path_cache_ttl)
{
    struct resil_ip a = ip_of("10.0.2.7");
    char n[16];

    fabric();
    cr_expect_eq(resil_path_cached(&a), 0, "never looked up");
    cr_expect_eq(resil_path_of(&a, T0), 12);
    cr_expect_eq(resil_path_of(&a, T0 + RESIL_PATH_TTL_NS - 1), 12);
    cr_expect_eq(route_calls, 1);
    cr_expect_eq(resil_path_of(&a, T0 + RESIL_PATH_TTL_NS), 12);
    cr_expect_eq(route_calls, 2, "looked up again after the TTL");
    cr_expect_eq(resil_path_cached(&a), 12);
    cr_expect_str_eq(resil_path_name(12, n, sizeof(n)), "up2");
    cr_expect_str_eq(resil_path_name(99, n, sizeof(n)), "if99");
    cr_expect_str_eq(resil_path_name(0, n, sizeof(n)), "");
    /* the table is bounded: the oldest answer goes */
    for (int i = 0; i < RESIL_PATH_SLOTS + 3; i++) {
        char s[32];
        snprintf(s, sizeof(s), "10.0.1.%d", i + 1);
        struct resil_ip ip = ip_of(s);
        resil_path_of(&ip, T0 + RESIL_PATH_TTL_NS + 1 + (uint64_t)i);
    }
    cr_expect_eq(resil_path_cached(&a), 0);
}

/* The kernel's answer: loopback leaves by lo. */
Test(fabric, netlink_route)
{
    struct resil_route rt;
    struct resil_ip lo = ip_of("127.0.0.1");
    char n[16];

    cr_assert_eq(resil_path_route_netlink(&lo, &rt), RESIL_OK);
    cr_expect_eq(rt.oif, if_nametoindex("lo"));
    cr_expect_str_eq(rt.ifname, "lo");
    cr_expect_not(rt.has_gw);
    resil_path_set_backend(resil_path_route_netlink);
    cr_expect_eq(resil_path_of(&lo, T0), if_nametoindex("lo"));
    cr_expect_str_eq(resil_path_name(if_nametoindex("lo"), n, sizeof(n)), "lo");
}
