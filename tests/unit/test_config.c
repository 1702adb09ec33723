#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "log.h"

static char errs[16][512];
static int nerr;

static void collect(const char *where, const char *msg)
{
    if (nerr < 16)
        snprintf(errs[nerr], sizeof(errs[0]), "%s: %s", where, msg);
    nerr++;
}

static void setup(void)
{
    unit_setup();
    nerr = 0;
    memset(errs, 0, sizeof(errs));
}

TestSuite(config, .init = setup);

Test(config, defaults)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_expect_eq(c.race, 1);
    cr_expect_eq(c.attempt_delay_ms, 250);
    cr_expect_eq(c.resolution_delay_ms, 50);
    cr_expect_eq(c.fail_timeout_ms, 10000);
    cr_expect_eq(c.log_level, RESIL_LOG_WARN);
    cr_expect_eq(c.n_alt, 0);
}

Test(config, good_file)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_assert_eq(resil_config_file(&c, "tests/unit/fixtures/good.conf",
                                   collect),
                 RESIL_OK, "first error: %s", errs[0]);
    cr_expect_eq(nerr, 0);
    cr_expect_eq(c.attempt_delay_ms, 100);
    cr_expect_eq(c.resolution_delay_ms, 20);
    cr_expect_eq(c.fail_timeout_ms, 3000);
    cr_expect_eq(c.log_level, RESIL_LOG_DEBUG);
    cr_expect_str_eq(c.events_file, "/tmp/resil-events.jsonl");
    cr_assert_eq(c.n_alt, 2);
    cr_expect_eq(c.alt[0].n, 3);
    cr_expect_eq(c.alt[1].n, 2);
    struct resil_ip probe = ip_of("fd00::2");
    const struct resil_alt_group *g = resil_config_alt_find(&c, &probe);
    cr_assert_not_null(g);
    cr_expect_eq(g, &c.alt[0]);
    probe = ip_of("10.9.9.9");
    cr_expect_null(resil_config_alt_find(&c, &probe));
}

Test(config, bad_file_names_key_and_line_keeps_defaults)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_assert_eq(resil_config_file(&c, "tests/unit/fixtures/bad.conf",
                                   collect),
                 RESIL_EINVAL);
    cr_assert_eq(nerr, 8, "got %d errors", nerr);
    cr_expect(strstr(errs[0], "bad.conf:1: race: 'maybe' is not a boolean"),
              "%s", errs[0]);
    /* below the RFC 8305 floor: clamped to 10 with a message */
    cr_expect(strstr(errs[1], ":2: attempt_delay_ms: 5 is outside [10, "
                              "2000]; using 10"), "%s", errs[1]);
    cr_expect(strstr(errs[2], ":3: unknown key 'no_such_key'"), "%s",
              errs[2]);
    cr_expect(strstr(errs[3], ":4: fail_timeout_ms: missing value"), "%s",
              errs[3]);
    cr_expect(strstr(errs[4], "at least two addresses"), "%s", errs[4]);
    cr_expect(strstr(errs[5], "'not-an-ip' is not a numeric"), "%s", errs[5]);
    cr_expect(strstr(errs[6], ":7: log_level: 'loud'"), "%s", errs[6]);
    cr_expect(strstr(errs[7], ":8: stall_ms: '12abc' is not a decimal"),
              "%s", errs[7]);
    /* the good lines still applied, the bad ones left defaults */
    cr_expect_eq(c.race, 1);
    cr_expect_eq(c.attempt_delay_ms, 300);
    cr_expect_eq(c.fail_timeout_ms, RESIL_DEF_FAIL_TIMEOUT_MS);
    cr_expect_eq(c.stall_ms, RESIL_DEF_STALL_MS);
    cr_expect_eq(c.log_level, RESIL_LOG_WARN);
    cr_expect_eq(c.n_alt, 0);
}

Test(config, nul_byte_line_rejected)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_expect_eq(resil_config_file(&c, "tests/unit/fixtures/nul.conf",
                                   collect),
                 RESIL_EINVAL);
    cr_expect_eq(nerr, 1);
    cr_expect(strstr(errs[0], "nul.conf:1: NUL byte"), "%s", errs[0]);
    cr_expect_eq(c.attempt_delay_ms, 250);
    cr_expect_eq(c.race, 0);
}

Test(config, missing_file)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_expect_eq(resil_config_file(&c, "/nonexistent/libresil.conf",
                                   collect),
                 RESIL_ESYS);
}

Test(config, overlong_line_and_value)
{
    struct resil_config c;
    char line[2048], err[256];
    resil_config_defaults(&c);
    memset(line, 'a', sizeof(line));
    memcpy(line, "log_file ", 9);
    line[sizeof(line) - 1] = '\0';
    cr_expect_eq(resil_config_line(&c, line, err, sizeof(err)), RESIL_ERANGE);
    cr_expect(strstr(err, "log_file"), "%s", err);
    cr_expect_str_eq(c.log_file, "");
}

static const char *env_vals[][2] = {
    {"RESIL_ATTEMPT_DELAY_MS", "5000"},
    {"RESIL_RACE", "off"},
    {"RESIL_ALTERNATES", "10.0.0.1,10.0.0.2;fd00::1 fd00::2 10.0.0.9;bogus"},
    {"RESIL_LOG_LEVEL", "3"},
    {"RESIL_STALL_MS", "1#2"},
};

static char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < sizeof(env_vals) / sizeof(env_vals[0]); i++)
        if (strcmp(env_vals[i][0], name) == 0)
            return (char *)env_vals[i][1];
    return NULL;
}

Test(config, environment)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_expect_eq(resil_config_env(&c, fake_getenv, collect), RESIL_EINVAL);
    cr_expect_eq(c.attempt_delay_ms, 2000); /* clamped to the RFC maximum */
    cr_expect_eq(c.race, 0);
    cr_expect_eq(c.log_level, 3);
    cr_expect_eq(c.stall_ms, RESIL_DEF_STALL_MS);
    cr_assert_eq(c.n_alt, 2);
    cr_expect_eq(c.alt[1].n, 3);
    cr_expect_eq(nerr, 3, "%d errors; first %s", nerr, errs[0]);
    cr_expect(strstr(errs[0], "RESIL_ATTEMPT_DELAY_MS"), "%s", errs[0]);
}

Test(config, too_many_alternates)
{
    struct resil_config c;
    char err[256];
    resil_config_defaults(&c);
    cr_expect_eq(resil_config_line(&c,
                                   "alternates 10.0.0.1 10.0.0.2 10.0.0.3 "
                                   "10.0.0.4 10.0.0.5 10.0.0.6 10.0.0.7 "
                                   "10.0.0.8 10.0.0.9",
                                   err, sizeof(err)),
                 RESIL_ERANGE);
    cr_expect(strstr(err, "more than 8"), "%s", err);
    for (int i = 0; i < RESIL_MAX_ALT_GROUPS; i++)
        cr_assert_eq(resil_config_line(&c, "alternates 10.0.0.1 10.0.0.2", err,
                                       sizeof(err)),
                     RESIL_OK);
    cr_expect_eq(resil_config_line(&c, "alternates 10.0.0.1 10.0.0.2", err,
                                   sizeof(err)),
                 RESIL_ERANGE);
}

/* ---- issue 6, defect 15: RESIL_ALTERNATES past 1,023 bytes ---- */

static char big_alt[16384];
static const char *alt_value;

static char *alt_getenv(const char *name)
{
    return strcmp(name, "RESIL_ALTERNATES") == 0 ? (char *)alt_value : NULL;
}

/* n groups of 8 IPv6 addresses of the longest form (45 bytes each). */
static const char *long_groups(int n)
{
    size_t o = 0;
    for (int g = 0; g < n; g++)
        for (int i = 0; i < RESIL_MAX_ALT_ADDRS; i++)
            o += (size_t)snprintf(big_alt + o, sizeof(big_alt) - o,
                                  "%sffff:ffff:ffff:ffff:ffff:ffff:10.%d.%d.%d",
                                  i ? "," : (g ? ";" : ""), 100 + g, 100 + i,
                                  200 + g);
    return big_alt;
}

Test(config, environment_alternates_32_groups_of_8_ipv6)
{
    struct resil_config c;
    resil_config_defaults(&c);
    alt_value = long_groups(RESIL_MAX_ALT_GROUPS);
    cr_assert_gt(strlen(alt_value), 1023);
    cr_expect_eq(resil_config_env(&c, alt_getenv, collect), RESIL_OK,
                 "first error: %s", errs[0]);
    cr_expect_eq(nerr, 0);
    cr_assert_eq(c.n_alt, RESIL_MAX_ALT_GROUPS);
    for (int g = 0; g < c.n_alt; g++)
        cr_expect_eq(c.alt[g].n, RESIL_MAX_ALT_ADDRS, "group %d", g);
    struct resil_ip probe =
        ip_of("ffff:ffff:ffff:ffff:ffff:ffff:10.131.107.231");
    cr_expect_eq(resil_config_alt_find(&c, &probe), &c.alt[31]);
}

Test(config, environment_alternates_33rd_group_refused)
{
    struct resil_config c;
    resil_config_defaults(&c);
    alt_value = long_groups(RESIL_MAX_ALT_GROUPS + 1);
    cr_expect_eq(resil_config_env(&c, alt_getenv, collect), RESIL_EINVAL);
    cr_expect_eq(nerr, 1);
    cr_expect(strstr(errs[0], "more than 32 groups"), "%s", errs[0]);
    cr_expect_eq(c.n_alt, RESIL_MAX_ALT_GROUPS);
}

Test(config, environment_alternates_empty_groups_skipped)
{
    struct resil_config c;
    resil_config_defaults(&c);
    alt_value = ";10.0.0.1,10.0.0.2;; ;10.0.0.3 10.0.0.4;";
    cr_expect_eq(resil_config_env(&c, alt_getenv, collect), RESIL_OK,
                 "%s", errs[0]);
    cr_expect_eq(c.n_alt, 2);
}

/* a file line: 8 addresses of the longest form (367 bytes) */
Test(config, file_line_alternates_8_longest_ipv6)
{
    struct resil_config c;
    char line[1024], err[256];
    size_t o = (size_t)snprintf(line, sizeof(line), "alternates");
    resil_config_defaults(&c);
    for (int i = 0; i < RESIL_MAX_ALT_ADDRS; i++)
        o += (size_t)snprintf(line + o, sizeof(line) - o,
                              " ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.%d",
                              200 + i);
    cr_assert_gt(strlen(line), 360);
    cr_expect_eq(resil_config_line(&c, line, err, sizeof(err)), RESIL_OK,
                 "%s", err);
    cr_expect_eq(c.n_alt, 1);
}

/* ---- defect 20: empty values ---- */

static char *empty_getenv(const char *name)
{
    static const char *const empty[] = {
        "RESIL_EVENTS", "RESIL_LOG_FILE", "RESIL_ATTEMPT_DELAY_MS",
        "RESIL_ALTERNATES", "RESIL_RACE", "RESIL_LOG_LEVEL"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++)
        if (strcmp(name, empty[i]) == 0)
            return (char *)(i % 2 ? "" : "  ");
    return NULL;
}

/* An empty path means off, any other empty value unset (the file's value
 * or the default stays); silently either way. */
Test(config, empty_environment_values_are_silent)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_assert_eq(resil_config_file(&c, "tests/unit/fixtures/good.conf",
                                   collect),
                 RESIL_OK);
    strcpy(c.log_file, "/tmp/some.log");
    cr_expect_eq(resil_config_env(&c, empty_getenv, collect), RESIL_OK);
    cr_expect_eq(nerr, 0, "%s", errs[0]);
    cr_expect_str_eq(c.events_file, "");
    cr_expect_str_eq(c.log_file, "");
    cr_expect_eq(c.attempt_delay_ms, 100);
    cr_expect_eq(c.log_level, RESIL_LOG_DEBUG);
    cr_expect_eq(c.race, 1);
    cr_expect_eq(c.n_alt, 2);
}

/* ---- defect 1: a config file that would block ---- */

Test(config, fifo_refused_without_blocking, .timeout = 5)
{
    struct resil_config c;
    char dir[] = "/tmp/resil-unit-XXXXXX", path[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    resil_config_defaults(&c);
    cr_expect_eq(resil_config_file(&c, path, collect), RESIL_EINVAL);
    cr_expect_eq(nerr, 1);
    cr_expect(strstr(errs[0], "is not a regular file"), "%s", errs[0]);
    /* a writer present: the open would not block, the read would */
    int w = open(path, O_RDWR);
    cr_assert_geq(w, 0);
    nerr = 0;
    cr_expect_eq(resil_config_file(&c, path, collect), RESIL_EINVAL);
    cr_expect(strstr(errs[0], "is not a regular file"), "%s", errs[0]);
    close(w);
    unlink(path);
    rmdir(dir);
}

Test(config, directory_refused)
{
    struct resil_config c;
    resil_config_defaults(&c);
    cr_expect_eq(resil_config_file(&c, "tests/unit/fixtures", collect),
                 RESIL_EINVAL);
    cr_expect(strstr(errs[0], "is a directory"), "%s", errs[0]);
}

/* ---- RESIL_SESSION patterns ---- */

static bool matches(const struct resil_config *c, const char *ip,
                    const char *name, int port)
{
    struct resil_ip a = ip_of(ip);
    return resil_config_session_match(c, &a, name, (uint16_t)port);
}

Test(config, session_patterns)
{
    struct resil_config c;
    char err[256];

    resil_config_defaults(&c);
    cr_expect_eq(c.n_session, 0);
    cr_expect_eq(c.session_linger_ms, RESIL_DEF_SESSION_LINGER_MS);
    cr_expect_not(matches(&c, "10.0.0.1", NULL, 6379), "no pattern");
    cr_assert_eq(resil_config_line(&c, "session *:6379,[fd00::/8]:5432 "
                                       "10.1.0.0/16:* db.Example.com:7000",
                                   err, sizeof(err)),
                 RESIL_OK, "%s", err);
    cr_assert_eq(c.n_session, 4);
    cr_expect(matches(&c, "192.0.2.7", NULL, 6379));
    cr_expect_not(matches(&c, "192.0.2.7", NULL, 6380));
    cr_expect(matches(&c, "fd00:1::5", NULL, 5432));
    cr_expect_not(matches(&c, "fe80::5", NULL, 5432), "outside fd00::/8");
    cr_expect_not(matches(&c, "10.0.0.1", NULL, 5432), "family");
    cr_expect(matches(&c, "10.1.255.3", NULL, 1));
    cr_expect_not(matches(&c, "10.2.0.3", NULL, 1), "outside 10.1/16");
    cr_expect(matches(&c, "198.51.100.1", "DB.example.com", 7000),
              "names match case-insensitively");
    cr_expect_not(matches(&c, "198.51.100.1", "db.example.org", 7000));
    cr_expect_not(matches(&c, "198.51.100.1", NULL, 7000), "no name");
    /* a listener on the unspecified address matches any host */
    cr_expect(matches(&c, "0.0.0.0", NULL, 7000));
    cr_expect(matches(&c, "::", NULL, 5432));
}

Test(config, session_prefix_bits)
{
    struct resil_config c;
    char err[256];

    resil_config_defaults(&c);
    cr_assert_eq(resil_config_line(&c, "session 10.1.2.128/25:1", err,
                                   sizeof(err)),
                 RESIL_OK, "%s", err);
    cr_expect(matches(&c, "10.1.2.200", NULL, 1));
    cr_expect_not(matches(&c, "10.1.2.127", NULL, 1));
    cr_assert_eq(resil_config_line(&c, "session 0.0.0.0/0:2", err,
                                   sizeof(err)),
                 RESIL_OK, "%s", err);
    cr_expect(matches(&c, "203.0.113.9", NULL, 2));
}

Test(config, session_bad_patterns)
{
    static const char *const bad[] = {
        "session fd00::1:80",      /* IPv6 without brackets */
        "session 10.0.0.1",        /* no port */
        "session 10.0.0.1:0",      /* port 0 */
        "session 10.0.0.1:65536",
        "session 10.0.0.1:http",
        "session :80",             /* no host */
        "session 10.0.0.0/33:80",
        "session [fd00::/129]:80",
        "session [fd00::1:80",
        "session bad_host!:80",
        "session name/8:80",       /* a prefix on a name */
    };
    struct resil_config c;
    char err[256];

    resil_config_defaults(&c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_expect_neq(resil_config_line(&c, bad[i], err, sizeof(err)),
                      RESIL_OK, "accepted: %s", bad[i]);
        cr_expect(strstr(err, "session") != NULL, "%s: message '%s'",
                  bad[i], err);
    }
    cr_expect_eq(c.n_session, 0, "a bad line adds no pattern");
    /* all or nothing per line */
    cr_expect_neq(resil_config_line(&c, "session *:1 10.0.0.1", err,
                                    sizeof(err)),
                  RESIL_OK);
    cr_expect_eq(c.n_session, 0);
}

Test(config, session_from_environment)
{
    struct resil_config c;
    char big[4096];
    size_t o = 0;

    resil_config_defaults(&c);
    /* 32 patterns of IPv6 prefixes: longer than a config line */
    for (int i = 0; i < RESIL_MAX_SESSION_PATS; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o,
                              "%s[fd00:1234:5678:9abc:def0:%x::/96]:%d",
                              i ? "," : "", i, 1000 + i);
    cr_assert(o > 1024);
    setenv("RESIL_SESSION", big, 1);
    setenv("RESIL_SESSION_LINGER_MS", "2500", 1);
    setenv("RESIL_PSK_FILE", "/etc/libresil/psk", 1);
    cr_expect_eq(resil_config_env(&c, getenv, collect), RESIL_OK,
                 "%s", errs[0]);
    unsetenv("RESIL_SESSION");
    unsetenv("RESIL_SESSION_LINGER_MS");
    unsetenv("RESIL_PSK_FILE");
    cr_expect_eq(c.n_session, RESIL_MAX_SESSION_PATS);
    cr_expect_eq(c.session_linger_ms, 2500);
    cr_expect_str_eq(c.psk_file, "/etc/libresil/psk");
    cr_expect(matches(&c, "fd00:1234:5678:9abc:def0:1f::7", NULL, 1031));
    cr_expect_not(matches(&c, "fd00:1234:5678:9abc:def0:1f::7", NULL, 1030));
    setenv("RESIL_SESSION", "*:1,*:2", 1);
    nerr = 0;
    cr_expect_neq(resil_config_env(&c, getenv, collect), RESIL_OK);
    unsetenv("RESIL_SESSION");
    cr_expect(nerr == 1 && strstr(errs[0], "more than 32"), "%s", errs[0]);
}
