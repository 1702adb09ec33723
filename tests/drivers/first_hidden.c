/* The race's first attempt runs on the program's own socket (conn.h);
 * when it fails while other attempts may still win, the program must
 * never see that failure: every hook that could show it first (poll,
 * epoll, select, SO_ERROR, a data call, connect again) finds the fd
 * holding a connect in progress instead, as the engine does when it sees
 * the failure itself. No plain run: without libresil the program sees
 * exactly the refusal these hide (refused.c checks it, plain).
 *
 * Groups (run.sh adds them to DRV_ALT for this driver):
 *   REFUSE,DRV_DEAD3,DRV_LIVE  the first refuses at once (nothing listens
 *                on 127.0.0.4), the second never answers, the third wins
 *                an attempt delay later
 *   SLOW,DRV_DEAD3  SLOW (127.0.0.7) drops SYNs until the subtest makes it
 *                refuse them (nftables, root in run.sh's namespace): the
 *                first attempt fails after the race started, while the
 *                dead one still runs
 *   SLOW2,DROP,R1..3,DRV_LIVE  the same first attempt (127.0.0.13), one
 *                whose SYNs the subtest drops (127.0.0.8), three that
 *                refuse at once (nothing listens on .9, .11, .12), then
 *                the live one. run.sh sets a 750 ms attempt delay for the
 *                subtest: the race starts at 750 ms (the dropped one), the
 *                third attempt's turn comes at 1500 ms, and each refusal
 *                starts the next at once; so the live one wins at 1500 ms,
 *                or at once when the first attempt fails (1 s, its SYN's
 *                retransmission), which must be seen by the engine with
 *                nobody looking at the socket. (With 250 ms and four
 *                dropped ones, the fifth attempt's turn came at 1000 ms
 *                too, and which of the two the engine saw first decided
 *                the outcome; seen failing in CI.)
 *
 * Subtests (non-blocking unless named blocking):
 *   blocking     connect() returns 0 from the live one, ~ the delay later
 *   poll         not writable before the live one wins, then POLLOUT only
 *   epoll_et     registered before connect: no event before, EPOLLOUT only
 *   select       not ready before, then writable only
 *   sockerr      SO_ERROR 0 while racing
 *   again        connect() again: EALREADY while racing, then 0, EISCONN
 *   read         read(): EAGAIN while racing
 *   blocking_read  a blocking read() on it waits for the race, then for
 *                the echo
 *   late_fail    the first attempt is refused after the race started: the
 *                connect stays in progress (poll, SO_ERROR, connect again)
 *   late_fail_engine  ... while the program looks at nothing: the engine
 *                sees it and starts the next attempt at once (HEv3: a
 *                failure starts the next one)
 */
#include <sys/epoll.h>
#include <sys/select.h>

#include "drv.h"

#define REFUSE "127.0.0.4"
#define SLOW "127.0.0.7"
#define SLOW2 "127.0.0.13"

static int port;

static int start(int type_flags)
{
    struct sockaddr_storage ss;
    socklen_t l;
    int fd;

    if (port == 0)
        port = echo_start(DRV_LIVE);
    l = mk_sa(REFUSE, port, &ss);
    fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s, want EINPROGRESS",
          rc, ename(e));
    return fd;
}

static void connected_ok(int fd, double t0)
{
    char buf[64], want[64];
    double dt = now_ms() - t0;

    CHECK(dt >= 150 && dt < 1000, "connected after %.0f ms, want the "
          "attempt delay", dt);
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    snprintf(want, sizeof(want), "%s:%d", DRV_LIVE, port);
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
    CHECK(echo_roundtrip(fd, "after the refusal\n", 3000), "echo");
}

static void blocking(void)
{
    struct sockaddr_storage ss;
    socklen_t l;
    int fd;

    port = echo_start(DRV_LIVE);
    l = mk_sa(REFUSE, port, &ss);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == 0, "connect: %d %s, want 0 from the live one", rc, ename(e));
    connected_ok(fd, t0);
    close(fd);
}

static void with_poll(void)
{
    double t0 = now_ms();
    int fd = start(SOCK_NONBLOCK), r;

    r = poll1(fd, POLLIN | POLLOUT, 100);
    CHECK(r == 0, "revents 0x%x 100 ms into the race (the refusal)", r);
    r = poll1(fd, POLLIN | POLLOUT, 3000);
    CHECK(r == POLLOUT, "revents 0x%x, want POLLOUT", r);
    connected_ok(fd, t0);
    close(fd);
}

static void epoll_et(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), n;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
                                       EPOLLET,
                             .data.u64 = 42},
                       got[4];
    struct sockaddr_storage ss;
    socklen_t l;

    port = echo_start(DRV_LIVE);
    l = mk_sa(REFUSE, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll ADD");
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s", rc, ename(e));
    n = epoll_wait(ep, got, 4, 100);
    CHECK(n == 0, "%d events (0x%x) 100 ms into the race", n,
          n > 0 ? got[0].events : 0);
    n = epoll_wait(ep, got, 4, 3000);
    CHECK(n == 1 && got[0].data.u64 == 42 && got[0].events == EPOLLOUT,
          "%d events, first 0x%x, want EPOLLOUT", n,
          n > 0 ? got[0].events : 0);
    connected_ok(fd, t0);
    close(fd);
    close(ep);
}

static void with_select(void)
{
    double t0 = now_ms();
    int fd = start(SOCK_NONBLOCK), rc;
    fd_set r, w, x;
    struct timeval tv = {.tv_usec = 100 * 1000};

    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&x);
    FD_SET(fd, &r);
    FD_SET(fd, &w);
    FD_SET(fd, &x);
    rc = select(fd + 1, &r, &w, &x, &tv);
    CHECK(rc == 0, "select %d 100 ms into the race (the refusal)", rc);
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(fd, &r);
    FD_SET(fd, &w);
    tv = (struct timeval){.tv_sec = 3};
    rc = select(fd + 1, &r, &w, NULL, &tv);
    CHECK(rc == 1 && FD_ISSET(fd, &w) && !FD_ISSET(fd, &r),
          "select %d r %d w %d, want writable only", rc, FD_ISSET(fd, &r),
          FD_ISSET(fd, &w));
    connected_ok(fd, t0);
    close(fd);
}

static void with_sockerr(void)
{
    double t0 = now_ms();
    int fd = start(SOCK_NONBLOCK), r;

    usleep(50 * 1000); /* the refusal came */
    CHECK(sockerr(fd) == 0, "SO_ERROR %s while racing", ename(sockerr(fd)));
    CHECK(poll1(fd, POLLOUT, 0) == 0, "writable while racing");
    r = poll1(fd, POLLOUT, 3000);
    CHECK(r == POLLOUT, "revents 0x%x", r);
    connected_ok(fd, t0);
    close(fd);
}

static void again(void)
{
    double t0 = now_ms();
    int fd = start(SOCK_NONBLOCK), rc, e;
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(REFUSE, port, &ss);

    usleep(50 * 1000);
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EALREADY, "connect while racing: %d %s, want "
          "EALREADY", rc, ename(e));
    REQUIRE(poll1(fd, POLLOUT, 3000) == POLLOUT, "never writable");
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == 0, "connect after the race: %d %s, want 0", rc, ename(e));
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EISCONN, "connect again: %d %s, want EISCONN", rc,
          ename(e));
    connected_ok(fd, t0);
    close(fd);
}

static void with_read(void)
{
    double t0 = now_ms();
    int fd = start(SOCK_NONBLOCK);
    char b[8];

    usleep(50 * 1000);
    errno = 0;
    ssize_t n = read(fd, b, sizeof(b));
    CHECK(n == -1 && errno == EAGAIN, "read while racing: %zd %s, want "
          "EAGAIN", n, ename(errno));
    REQUIRE(poll1(fd, POLLOUT, 3000) == POLLOUT, "never writable");
    connected_ok(fd, t0);
    close(fd);
}

static void *write_later(void *arg)
{
    int fd = (int)(intptr_t)arg;
    usleep(500 * 1000);
    (void)!send(fd, "y", 1, MSG_NOSIGNAL);
    return NULL;
}

static void blocking_read(void)
{
    int fd = start(SOCK_NONBLOCK);
    pthread_t t;
    char b[8];

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    pthread_create(&t, NULL, write_later, (void *)(intptr_t)fd);
    errno = 0;
    ssize_t n = read(fd, b, sizeof(b));
    CHECK(n == 1 && b[0] == 'y', "read %zd %s, want the echo", n,
          ename(errno));
    pthread_join(t, NULL);
    close(fd);
}

/* ---- the first attempt fails after the race started ---- */

/* SYNs to ip:p get verdict (NULL: the rule goes); with drop1, everything
 * to 127.0.0.8 is dropped too */
static void rule(const char *ip, int p, const char *verdict, bool drop1)
{
    char cmd[400];
    (void)!system("nft delete table ip drv_first 2>/dev/null");
    if (verdict == NULL)
        return;
    snprintf(cmd, sizeof(cmd),
             "nft 'add table ip drv_first; add chain ip drv_first out "
             "{ type filter hook output priority 0; }; add rule ip drv_first "
             "out ip daddr %s tcp dport %d %s%s'",
             ip, p, verdict,
             drop1 ? "; add rule ip drv_first out ip daddr 127.0.0.8 drop"
                   : "");
    if (system(cmd) != 0) {
        fprintf(stderr, "nft failed (root in the drivers' namespace?)\n");
        exit(2);
    }
}

static void slow_rule(int p, const char *verdict)
{
    rule(SLOW, p, verdict, false);
}

static void late_fail(void)
{
    int p = free_port(), r, rc, e;
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(SLOW, p, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    slow_rule(p, "drop");
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s", rc, ename(e));
    usleep(400 * 1000); /* the race started at 250 ms */
    /* its SYN retransmission (1 s after the first) is refused */
    slow_rule(p, "reject with tcp reset");
    r = poll1(fd, POLLIN | POLLOUT, 1500);
    CHECK(r == 0, "revents 0x%x: the first attempt's refusal shown while "
          "another attempt runs", r);
    CHECK(sockerr(fd) == 0, "SO_ERROR %s while racing", ename(sockerr(fd)));
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EALREADY, "connect while racing: %d %s, want "
          "EALREADY", rc, ename(e));
    slow_rule(p, NULL);
    close(fd);
}

static void late_fail_engine(void)
{
    int p = echo_start(DRV_LIVE), r, rc, e;
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(SLOW2, p, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    char buf[64], want[64];

    rule(SLOW2, p, "drop", true);
    double t0 = now_ms();
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s", rc, ename(e));
    usleep(400 * 1000);
    /* its SYN retransmission, at 1 s, is refused */
    rule(SLOW2, p, "reject with tcp reset", true);
    /* the live one's turn would come at 1500 ms: it must have won after
     * the refusal (1 s), with nobody looking at the socket */
    usleep((useconds_t)(1430 - (now_ms() - t0)) * 1000);
    r = poll1(fd, POLLIN | POLLOUT, 0);
    double dt = now_ms() - t0;
    rule(SLOW2, p, NULL, false);
    CHECK(r == POLLOUT, "revents 0x%x at %.0f ms, want POLLOUT: the next "
          "attempt did not start at the first one's failure", r, dt);
    if (r == POLLOUT) {
        CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
        snprintf(want, sizeof(want), "%s:%d", DRV_LIVE, p);
        name_of(fd, true, buf, sizeof(buf));
        CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
    }
    close(fd);
}

DRV_MAIN({"blocking", blocking}, {"poll", with_poll},
         {"epoll_et", epoll_et}, {"select", with_select},
         {"sockerr", with_sockerr}, {"again", again}, {"read", with_read},
         {"blocking_read", blocking_read}, {"late_fail", late_fail},
         {"late_fail_engine", late_fail_engine})
