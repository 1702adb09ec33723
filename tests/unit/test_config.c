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
