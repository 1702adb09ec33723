/* The health cache and the name cache. */
#include <string.h>

#include "common.h"

TestSuite(health, .init = unit_setup);
TestSuite(names, .init = unit_setup);

Test(health, tiers_and_ttl)
{
    struct resil_ip a = ip_of("10.0.0.1"), b = ip_of("fd00::1");
    uint64_t rtt = 0;
    resil_health_set_ttl(1000 * MS_NS);
    cr_expect_eq(resil_health_tier(&a, 5, NULL), RESIL_TIER_NEUTRAL);
    resil_health_fail(&a, 100 * MS_NS);
    cr_expect_eq(resil_health_tier(&a, 200 * MS_NS, NULL), RESIL_TIER_BAD);
    cr_expect_eq(resil_health_tier(&a, 1101 * MS_NS, NULL),
                 RESIL_TIER_NEUTRAL);
    resil_health_win(&a, 3 * MS_NS, 1200 * MS_NS);
    cr_expect_eq(resil_health_tier(&a, 1300 * MS_NS, &rtt), RESIL_TIER_GOOD);
    cr_expect_eq(rtt, 3 * MS_NS);
    cr_expect_eq(resil_health_tier(&b, 1300 * MS_NS, NULL),
                 RESIL_TIER_NEUTRAL);
    /* a failure after a win: bad again */
    resil_health_fail(&a, 1400 * MS_NS);
    cr_expect_eq(resil_health_tier(&a, 1401 * MS_NS, NULL), RESIL_TIER_BAD);
    resil_health_set_ttl(30000 * MS_NS);
}

Test(health, table_full_replaces_least_recent)
{
    char s[32];
    for (int i = 0; i < RESIL_HEALTH_SLOTS + 10; i++) {
        snprintf(s, sizeof(s), "10.1.%d.%d", i / 250, i % 250 + 1);
        struct resil_ip ip = ip_of(s);
        resil_health_fail(&ip, (uint64_t)(i + 1) * MS_NS);
    }
    struct resil_ip first = ip_of("10.1.0.1"), last;
    snprintf(s, sizeof(s), "10.1.%d.%d", (RESIL_HEALTH_SLOTS + 9) / 250,
             (RESIL_HEALTH_SLOTS + 9) % 250 + 1);
    last = ip_of(s);
    uint64_t now = 400 * MS_NS;
    cr_expect_eq(resil_health_tier(&first, now, NULL), RESIL_TIER_NEUTRAL,
                 "oldest entry should have been replaced");
    cr_expect_eq(resil_health_tier(&last, now, NULL), RESIL_TIER_BAD);
}

Test(names, record_and_lookup)
{
    struct resil_ip ips[3] = {ip_of("fd00:1::2"), ip_of("10.0.1.2"),
                              ip_of("10.0.2.2")};
    struct resil_ip out[16];
    char name[RESIL_NAME_LEN];
    resil_names_record("svc.example", ips, 3, 1);
    int n = resil_names_lookup(&ips[2], name, sizeof(name), out, 16);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(name, "svc.example");
    cr_expect(resil_ip_equal(&out[0], &ips[0]));
    struct resil_ip other = ip_of("10.9.9.9");
    cr_expect_eq(resil_names_lookup(&other, name, sizeof(name), out, 16), 0);
    /* a v4-mapped form of the same address matches */
    struct resil_ip mapped = ip_of("::ffff:10.0.1.2");
    cr_expect_eq(resil_names_lookup(&mapped, name, sizeof(name), out, 16), 3);
}

Test(names, newest_name_wins_and_numeric_ignored)
{
    struct resil_ip a = ip_of("10.0.0.1"), b = ip_of("10.0.0.2");
    struct resil_ip both[2] = {a, b}, out[16];
    char name[RESIL_NAME_LEN];
    resil_names_record("old.example", &a, 1, 1);
    resil_names_record("new.example", both, 2, 2);
    cr_expect_eq(resil_names_lookup(&a, name, sizeof(name), out, 16), 2);
    cr_expect_str_eq(name, "new.example");
    resil_names_record("10.0.0.7", &a, 1, 3);
    cr_expect_str_eq((resil_names_lookup(&a, name, sizeof(name), out, 16),
                      name),
                     "new.example");
    /* re-recording a name replaces its list, duplicates dropped */
    struct resil_ip dup[3] = {b, b, a};
    resil_names_record("new.example", dup, 3, 4);
    cr_expect_eq(resil_names_lookup(&b, name, sizeof(name), out, 16), 2);
    cr_expect_eq(resil_names_lookup(&b, name, sizeof(name), out, 1), 1);
}

Test(names, capacity)
{
    char name[64];
    struct resil_ip ip, out[16];
    for (int i = 0; i < RESIL_NAMES_SLOTS + 3; i++) {
        snprintf(name, sizeof(name), "n%d.example", i);
        char a[32];
        snprintf(a, sizeof(a), "10.2.%d.%d", i / 250, i % 250 + 1);
        ip = ip_of(a);
        resil_names_record(name, &ip, 1, (uint64_t)i + 1);
    }
    ip = ip_of("10.2.0.1");
    cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 0);
    ip = ip_of("10.2.0.130");
    cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 1);
}

/* a full table of v4 and v6 names, with DNS answers kept apart: each
 * address finds its own name (the look-up reads only the entries whose
 * summary may hold it), an address nobody resolved finds none */
Test(names, every_entry_found)
{
    char name[64], want[64], a[64];
    struct resil_ip ip, out[16];
    for (int i = 0; i < RESIL_NAMES_SLOTS; i++) {
        snprintf(name, sizeof(name), "m%d.example", i);
        snprintf(a, sizeof(a), i % 2 ? "fd00:7::%x" : "10.7.%d.1", i);
        ip = ip_of(a);
        resil_names_record(name, &ip, 1, (uint64_t)i + 1);
        snprintf(a, sizeof(a), "10.8.%d.1", i);
        ip = ip_of(a);
        resil_names_dns(name, &ip, 1, (uint64_t)i + 1);
    }
    for (int i = 0; i < RESIL_NAMES_SLOTS; i++) {
        snprintf(want, sizeof(want), "m%d.example", i);
        snprintf(a, sizeof(a), i % 2 ? "fd00:7::%x" : "10.7.%d.1", i);
        ip = ip_of(a);
        cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 2,
                     "%s", a);
        cr_expect_str_eq(name, want);
        snprintf(a, sizeof(a), "10.8.%d.1", i);
        ip = ip_of(a);
        cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 2,
                     "%s", a);
        cr_expect_str_eq(name, want);
    }
    ip = ip_of("10.9.0.1");
    cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 0);
    ip = ip_of("fd00:7::1:0");
    cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 0);
    resil_names_clear();
    ip = ip_of("10.7.0.1");
    cr_expect_eq(resil_names_lookup(&ip, name, sizeof(name), out, 16), 0);
}

Test(addr, sockaddr_round_trip)
{
    struct sockaddr_storage ss;
    struct resil_ip ip = ip_of("10.0.0.1"), back;
    uint16_t port = 0;
    socklen_t len = resil_ip_to_sa(&ip, 8080, AF_INET6, &ss);
    cr_expect_eq(len, sizeof(struct sockaddr_in6));
    cr_expect(resil_ip_from_sa((struct sockaddr *)&ss, len, &back, &port));
    cr_expect_eq(back.family, AF_INET); /* v4-mapped comes back as IPv4 */
    cr_expect_eq(port, 8080);
    struct resil_ip v6 = ip_of("fd00::5");
    cr_expect_eq(resil_ip_to_sa(&v6, 1, AF_INET, &ss), 0);
    cr_expect_not(resil_ip_from_sa((struct sockaddr *)&ss, 4, &back, &port));
    cr_expect_not(resil_ip_from_sa(NULL, 16, &back, &port));
    char buf[RESIL_ADDRSTRLEN];
    cr_expect_str_eq(resil_ip_format(&v6, 443, buf, sizeof(buf)),
                     "[fd00::5]:443");
    cr_expect_str_eq(resil_ip_format(&ip, -1, buf, sizeof(buf)), "10.0.0.1");
    cr_expect_not(resil_ip_parse("10.0.0.256", &back));
    cr_expect_not(resil_ip_parse("svc.example", &back));
    cr_expect_not(resil_ip_parse("", &back));
}

Test(names, dns_answers_join_and_survive_a_new_program_answer)
{
    struct resil_ip dead = ip_of("fd00:1::2"), v4 = ip_of("10.0.2.2"),
                    v6 = ip_of("fd00:2::2"), out[16];
    struct resil_ip dnsips[3] = {dead, v4, v6};
    char name[RESIL_NAME_LEN];
    const uint64_t s = 1000 * MS_NS;

    resil_names_record("one.example", &dead, 1, 1 * s);
    cr_expect(resil_names_dns_due("one.example", 2 * s, 30 * s));
    /* claimed: a second race in the same second does not query again */
    cr_expect_not(resil_names_dns_due("one.example", 2 * s, 30 * s));
    resil_names_dns("one.example", dnsips, 3, 2 * s);
    int n = resil_names_lookup(&dead, name, sizeof(name), out, 16);
    cr_assert_eq(n, 3);
    cr_expect(resil_ip_equal(&out[0], &dead)); /* the program's first */
    /* a DNS-only address finds the name too */
    cr_expect_eq(resil_names_lookup(&v6, name, sizeof(name), out, 16), 3);
    cr_expect_str_eq(name, "one.example");
    /* the program resolves again: its list is replaced, DNS's kept */
    resil_names_record("one.example", &dead, 1, 3 * s);
    cr_expect_eq(resil_names_lookup(&dead, name, sizeof(name), out, 16), 3);
    cr_expect_not(resil_names_dns_due("one.example", 31 * s, 30 * s));
    cr_expect(resil_names_dns_due("one.example", 32 * s, 30 * s));
    /* interval 0: every race may query */
    cr_expect(resil_names_dns_due("one.example", 32 * s, 0));
    cr_expect_not(resil_names_dns_due("10.0.0.1", 40 * s, 0));
}
