/* Blocking connect() through libresil (DESIGN 3.1), and the plain-kernel
 * behaviour of the test bed's dead address. Subtests: see DRV_MAIN. */
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>

#include "drv.h"

/* Blocking connect to dead:port, where the alternates group makes live the
 * winner. Checks time, getpeername, data. */
static void dead_first_to(const char *dead, const char *live)
{
    int port = echo_start(live);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(dead, port, &ss);
    char buf[128], want[128];
    int fd = socket(fam_of(dead), SOCK_STREAM, 0);
    double t0 = now_ms();
    int rc = connect(fd, (void *)&ss, l);
    double dt = now_ms() - t0;

    REQUIRE(rc == 0, "connect to %s:%d returned %d", dead, port, rc);
    CHECK(dt < 1000, "connect took %.0f ms (want < 1000)", dt);
    /* RFC 8305: the dead first attempt gets its 250 ms head start */
    CHECK(dt >= 150, "connect took only %.0f ms: dead address not tried "
          "first?", dt);
    snprintf(want, sizeof(want), strchr(live, ':') ? "%s:%d" : "%s:%d", live,
             port);
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    CHECK(echo_roundtrip(fd, "hello through the race\n", 3000), "echo");
    printf("connected to %s in %.0f ms\n", buf, dt);
    close(fd);
}

static void dead_first(void)
{
    dead_first_to(DRV_DEAD, DRV_LIVE);
}

static void dead_first6(void)
{
    dead_first_to(DRV_DEAD6, DRV_LIVE6);
}

/* Connecting to the live member first: no delay at all. */
static void live_first(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_ms();
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect");
    CHECK(now_ms() - t0 < 150, "live-first connect took %.0f ms",
          now_ms() - t0);
    CHECK(echo_roundtrip(fd, "x", 3000), "echo");
    close(fd);
}

/* bind(ip, port 0) before connect is replayed on the winning attempt. */
static void bind_to(const char *src)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss, bs;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss), bl = mk_sa(src, 0, &bs);
    char buf[128];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    REQUIRE(bind(fd, (void *)&bs, bl) == 0, "bind %s:0", src);
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect");
    name_of(fd, false, buf, sizeof(buf));
    CHECK(strncmp(buf, src, strlen(src)) == 0 && buf[strlen(src)] == ':',
          "getsockname %s, want %s:*", buf, src);
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strncmp(buf, DRV_LIVE ":", strlen(DRV_LIVE) + 1) == 0,
          "getpeername %s", buf);
    CHECK(echo_roundtrip(fd, "bound\n", 3000), "echo");
    close(fd);
}

static void bind_lo(void)
{
    bind_to("127.0.0.1");
}

/* 127.0.0.1 is the default source anyway; 127.0.0.9 proves the bind. */
static void bind_other(void)
{
    bind_to("127.0.0.9");
}

/* Options set before connect are on the connected socket. */
static void sockopts(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss), ol;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, rcv = 40000,
        snd = 50000, cnt = 7, before[3], v;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    ol = sizeof(v);
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &before[0], &ol);
    ol = sizeof(v);
    getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &before[1], &ol);
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect");
    name_of(fd, true, (char[64]){0}, 64);
    OPT_IS(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    OPT_IS(fd, SOL_SOCKET, SO_RCVBUF, before[0]);
    OPT_IS(fd, SOL_SOCKET, SO_SNDBUF, before[1]);
    OPT_IS(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    OPT_IS(fd, IPPROTO_TCP, TCP_KEEPCNT, 7);
    CHECK(echo_roundtrip(fd, "opts\n", 3000), "echo");
    close(fd);
}

/* After a blocking connect succeeded: connect again gives EISCONN. */
static void again(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect");
    errno = 0;
    int rc = connect(fd, (void *)&ss, l);
    CHECK(rc == -1 && errno == EISCONN, "second connect: %d", rc);
    CHECK(echo_roundtrip(fd, "again\n", 3000), "echo");
    close(fd);
}

/* SO_SNDTIMEO shorter than the race: -1 EINPROGRESS at the timeout
 * (socket(7)); the connect goes on, so a second connect says EALREADY.
 * Also the plain kernel's behaviour toward one dead address (the test bed
 * really drops it) and libresil's with RESIL_RACE=0. */
static void sndtimeo_to(const char *dead, int ms)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(dead, 9, &ss);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    int fd = socket(fam_of(dead), SOCK_STREAM, 0);

    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    double dt = now_ms() - t0;
    CHECK(rc == -1 && e == EINPROGRESS, "connect %s: %d %s, want EINPROGRESS",
          dead, rc, ename(e));
    CHECK(dt >= ms - 50 && dt < ms + 700, "returned after %.0f ms, want ~%d",
          dt, ms);
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    /* the kernel keeps SYN_SENT: EALREADY (after waiting SO_SNDTIMEO
     * again, since the socket is blocking) */
    CHECK(rc == -1 && e == EALREADY, "second connect: %d %s, want EALREADY",
          rc, ename(e));
    CHECK(poll1(fd, POLLOUT, 0) == 0, "socket writable while connecting");
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    printf("connect gave %s after %.0f ms\n", ename(e), dt);
    close(fd);
}

static void dead_hang(void)
{
    sndtimeo_to(DRV_DEAD, 1000);
}

static void dead_hang6(void)
{
    sndtimeo_to(DRV_DEAD6, 1000);
}

/* two dead alternates (DRV_DEAD2, DRV_DEAD3), timeout shorter than the
 * second attempt's delay plus anything */
static void sndtimeo_race(void)
{
    sndtimeo_to(DRV_DEAD2, 400);
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* A signal whose handler has SA_RESTART arrives during a blocking connect:
 * the kernel restarts connect() (signal(7)), so the program never sees
 * EINTR; the connect returns 0 once the race is won. */
static void restart(void)
{
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    struct itimerval it = {.it_value = {.tv_usec = 100000}};
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == 0, "connect: %d %s, want 0 (SA_RESTART)", rc, ename(e));
    if (rc == 0)
        CHECK(echo_roundtrip(fd, "restarted\n", 3000), "echo");
    close(fd);
}

/* Out of descriptors after the program's socket(): libresil cannot start
 * a race (no eventfd) and must leave the socket as it found it, so that
 * the real connect() works. */
static void emfile(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    struct timeval tv = {.tv_sec = 1};
    struct rlimit rl, low;
    int fd, fds[64], n = 0;

    /* one race first: engine thread and parking listener exist */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "first connect");
    close(fd);
    /* let the echo thread see EOF and close its end: no descriptor may be
     * freed behind our back once the table is full */
    usleep(200000);
    getrlimit(RLIMIT_NOFILE, &rl);
    /* leave exactly one free descriptor below the limit */
    low = rl;
    low.rlim_cur = (rlim_t)dup(0) + 1;
    close((int)low.rlim_cur - 1);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0, "setrlimit");
    while (n < 64 && (fds[n] = dup(0)) >= 0)
        n++;
    REQUIRE(n > 0, "no descriptor to free");
    close(fds[--n]);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0, "socket");
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    l = mk_sa(DRV_LIVE, port, &ss);
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == 0, "connect with no descriptor left: %d %s, want 0", rc,
          ename(e));
    close(fd);
    while (n > 0)
        close(fds[--n]);
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* The program closes every descriptor from 3 up (close_range, as daemons
 * and linux-pam do) while libresil's engine runs: the old engine thread
 * must not spin on its closed descriptors, and the next race must work. */
static double cpu_ms(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e3 +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e3;
}

static void closed_range(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    REQUIRE(connect(fd, (void *)&ss, l) == 0, "first connect");
    REQUIRE(close_range(3, ~0U, 0) == 0, "close_range");
    double c0 = cpu_ms();
    usleep(500 * 1000);
    double spent = cpu_ms() - c0;
    CHECK(spent < 100, "%.0f ms of CPU in the 500 ms after close_range: a "
          "thread spins", spent);
    port = echo_start(DRV_LIVE);
    l = mk_sa(DRV_DEAD, port, &ss);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_ms();
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect after close_range");
    CHECK(now_ms() - t0 < 1000, "took %.0f ms", now_ms() - t0);
    CHECK(echo_roundtrip(fd, "range\n", 3000), "echo");
    close(fd);
}

/* dup2() with a bad oldfd onto a managed socket fails with EBADF and must
 * leave the socket managed: its connect still races. */
static void dup2_badfd(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 2};

    errno = 0;
    CHECK(dup2(9999, fd) == -1 && errno == EBADF, "dup2 of a bad fd");
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    double t0 = now_ms();
    REQUIRE(connect(fd, (void *)&ss, l) == 0,
            "connect after the failed dup2 (still racing?)");
    CHECK(now_ms() - t0 < 1000, "took %.0f ms", now_ms() - t0);
    close(fd);
}

DRV_MAIN({"dead_first", dead_first}, {"dead_first6", dead_first6},
         {"live_first", live_first}, {"bind_lo", bind_lo},
         {"bind_other", bind_other}, {"sockopts", sockopts},
         {"again", again}, {"dead_hang", dead_hang},
         {"dead_hang6", dead_hang6}, {"sndtimeo_race", sndtimeo_race},
         {"restart", restart}, {"emfile", emfile},
         {"closed_range", closed_range}, {"dup2_badfd", dup2_badfd})
