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

/* ---- dating bytes in flight (resil_monitor_in_flight) ---- */

#define MS_ 1000000ull
#define T0 (1000 * MS_) /* an arbitrary clock reading */

/* The CI failure this rules out: a tick saw a request in flight (out_since
 * set), its reply's ACK came before the next tick, and the program wrote
 * again 100 ms after that ACK. The stall of the new bytes counts from
 * their write, not from the request before. */
Test(monitor, in_flight_after_progress_is_a_new_episode)
{
    struct resil_sock_mon m = {0};

    /* t0: 100 bytes sent just now, nothing acknowledged yet */
    resil_monitor_in_flight(&m, 1, 5000, 0, T0);
    cr_assert_eq(m.out_since, T0);
    /* t0+250: the request was acknowledged at t0+1 (bytes_acked 101), the
     * next write left at t0+101; the last ACK is 249 ms old */
    resil_monitor_in_flight(&m, 101, 249, 149, T0 + 250 * MS_);
    cr_assert_eq(m.out_since, T0 + 101 * MS_,
                 "dated %lld ms after t0, want the write at +101",
                 (long long)(m.out_since - T0) / (long long)MS_);
    cr_assert_eq(m.acked, 101);
}

Test(monitor, in_flight_without_progress_keeps_its_start)
{
    struct resil_sock_mon m = {0};

    resil_monitor_in_flight(&m, 1, 3000, 10, T0);
    cr_assert_eq(m.out_since, T0 - 10 * MS_);
    /* a retransmission 300 ms later (the last segment sent is younger)
     * does not move the start: no byte was acknowledged */
    resil_monitor_in_flight(&m, 1, 3300, 0, T0 + 300 * MS_);
    cr_assert_eq(m.out_since, T0 - 10 * MS_);
}

/* A bulk writer whose ACKs stop: bytes were in flight all along, so the
 * episode starts at the last ACK (the later of the two ages), not later. */
Test(monitor, in_flight_continuous_counts_from_the_last_ack)
{
    struct resil_sock_mon m = {0};

    resil_monitor_in_flight(&m, 1000, 1, 0, T0);
    resil_monitor_in_flight(&m, 9000, 200, 240, T0 + 250 * MS_);
    cr_assert_eq(m.out_since, T0 + 50 * MS_);
}

/* An idle connection (last ACK minutes ago) that writes: from the write. */
Test(monitor, in_flight_first_seen_after_idle)
{
    struct resil_sock_mon m = {0};

    resil_monitor_in_flight(&m, 7, 600000, 120, T0);
    cr_assert_eq(m.out_since, T0 - 120 * MS_);
}

/* ages beyond the clock reading (a clock near its start) stay non-zero:
 * 0 means nothing in flight */
Test(monitor, in_flight_ages_older_than_the_clock)
{
    struct resil_sock_mon m = {0};

    resil_monitor_in_flight(&m, 7, 600000, 600000, 5 * MS_);
    cr_assert_eq(m.out_since, 1);
}
