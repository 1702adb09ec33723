/* The monitor's keepalive sizing (resil_monitor_tune) and the program's own
 * timing knobs (resil_monitor_app_opt), on real unconnected TCP sockets:
 * the kernel keeps the values, so getsockopt shows what was set. */
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/tcp.h>

#include "common.h"
#include "config.h"
#include "monitor.h"
#include "table.h"

static struct resil_config cfg;

static void setup(void)
{
    unit_setup();
    resil_config_defaults(&cfg);
    cfg.fail_timeout_ms = 10000;
    resil_config_set(&cfg);
}

TestSuite(monitor, .init = setup);

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof(v);
    cr_assert_eq(getsockopt(fd, level, name, &v, &l), 0);
    return v;
}

/* A fresh socket entry on a new TCP socket. */
static struct resil_sock *sock(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct resil_sock *s = resil_sock_new(fd, AF_INET, SOCK_STREAM);
    cr_assert_not_null(s);
    return s;
}

static void done(struct resil_sock *s)
{
    close(s->fd);
    resil_sock_unref(s);
}

/* The program's setsockopt, as the shim hook does it: the real call, then
 * the record (s stays RS_FRESH: nothing is sized again here). */
static void app_set(struct resil_sock *s, int level, int name, int v)
{
    cr_assert_eq(setsockopt(s->fd, level, name, &v, sizeof(v)), 0);
    resil_monitor_app_opt(s, level, name, &v, sizeof(v));
}

static void expect_ka(int fd, int on, int idle, int intvl, int cnt)
{
    cr_expect_eq(opt(fd, SOL_SOCKET, SO_KEEPALIVE) != 0, on);
    cr_expect_eq(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), idle, "idle %d",
                 opt(fd, IPPROTO_TCP, TCP_KEEPIDLE));
    cr_expect_eq(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), intvl, "intvl %d",
                 opt(fd, IPPROTO_TCP, TCP_KEEPINTVL));
    cr_expect_eq(opt(fd, IPPROTO_TCP, TCP_KEEPCNT), cnt, "cnt %d",
                 opt(fd, IPPROTO_TCP, TCP_KEEPCNT));
}

/* fail_timeout 10 s: 5 s idle, then two probes 2 s apart (9 s). */
Test(monitor, tune_sizes_everything_by_default)
{
    struct resil_sock *s = sock();
    resil_monitor_tune(s, s->fd);
    expect_ka(s->fd, 1, 5, 2, 2);
    done(s);
}

Test(monitor, tune_small_bound)
{
    cfg.fail_timeout_ms = 3000;
    struct resil_sock *s = sock();
    resil_monitor_tune(s, s->fd);
    expect_ka(s->fd, 1, 1, 1, 2);
    done(s);
}

/* libpq: SO_KEEPALIVE alone chooses no timing. */
Test(monitor, app_keepalive_on_is_not_timing)
{
    struct resil_sock *s = sock();
    app_set(s, SOL_SOCKET, SO_KEEPALIVE, 1);
    resil_monitor_tune(s, s->fd);
    expect_ka(s->fd, 1, 5, 2, 2);
    done(s);
}

Test(monitor, app_keepalive_off_is_kept)
{
    struct resil_sock *s = sock();
    int idle = opt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE);
    app_set(s, SOL_SOCKET, SO_KEEPALIVE, 0);
    resil_monitor_tune(s, s->fd);
    cr_expect_eq(opt(s->fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    cr_expect_eq(opt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE), idle);
    done(s);
}

Test(monitor, app_idle_kept_probes_sized)
{
    struct resil_sock *s = sock();
    app_set(s, IPPROTO_TCP, TCP_KEEPIDLE, 60);
    resil_monitor_tune(s, s->fd);
    /* no time left in the bound after the program's idle: 1 s probes */
    expect_ka(s->fd, 1, 60, 1, 2);
    done(s);
}

Test(monitor, app_interval_sizes_count)
{
    struct resil_sock *s = sock();
    app_set(s, IPPROTO_TCP, TCP_KEEPINTVL, 2);
    resil_monitor_tune(s, s->fd);
    /* 5 s idle, then as many 2 s probes as fit in the other 5 s */
    expect_ka(s->fd, 1, 5, 2, 2);
    app_set(s, IPPROTO_TCP, TCP_KEEPINTVL, 1);
    resil_monitor_tune(s, s->fd);
    expect_ka(s->fd, 1, 5, 1, 5);
    done(s);
}

Test(monitor, app_count_sizes_interval)
{
    struct resil_sock *s = sock();
    app_set(s, IPPROTO_TCP, TCP_KEEPCNT, 5);
    resil_monitor_tune(s, s->fd);
    expect_ka(s->fd, 1, 5, 1, 5);
    done(s);
}

/* The program's TCP_USER_TIMEOUT wins over one the monitor armed. */
Test(monitor, app_user_timeout_wins)
{
    struct resil_sock *s = sock();
    unsigned ours = 3000;
    setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ours, sizeof(ours));
    s->mon.ut_armed = true;
    resil_sock_set_state(s, RS_DIRECT);
    /* the program's real call ran first, then the monitor's landed */
    int v = 12345;
    cr_assert_eq(
        setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v)), 0);
    setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ours, sizeof(ours));
    resil_monitor_app_opt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v));
    cr_expect_eq(opt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 12345);
    cr_expect_not(s->mon.ut_armed);
    cr_expect(s->app_opts & RESIL_APP_USER_TIMEOUT);
    resil_sock_set_state(s, RS_FRESH);
    done(s);
}
