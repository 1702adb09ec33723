/* Non-blocking connect() through libresil (DESIGN 3.1, pitfalls 2 and 3):
 * EINPROGRESS, not writable until the race is decided, then writable with
 * SO_ERROR 0 under poll, select and epoll (LT and ET, registered before the
 * connect); threads already asleep on the fd wake; flags and options kept;
 * EALREADY/0/EISCONN; a close during the race never touches a reused fd. */
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>

#include "drv.h"

#define MAGIC 0x5eed5eed12345678ull

static int port;

/* socket(), connect to dead:port; returns fd after checking EINPROGRESS */
static int start(const char *dead, int type_flags)
{
    struct sockaddr_storage ss;
    socklen_t l;
    int fd;

    if (port == 0)
        port = echo_start(fam_of(dead) == AF_INET6 ? DRV_LIVE6 : DRV_LIVE);
    l = mk_sa(dead, port, &ss);
    fd = socket(fam_of(dead), SOCK_STREAM | type_flags, 0);
    if (!(type_flags & SOCK_NONBLOCK))
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s, want EINPROGRESS",
          rc, ename(e));
    return fd;
}

/* after writable: SO_ERROR 0, the live peer, data */
static void connected_ok(int fd, const char *live)
{
    char buf[128], want[128];
    snprintf(want, sizeof(want), "%s:%d", live, port);
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
    CHECK(echo_roundtrip(fd, "non-blocking hello\n", 3000), "echo");
}

static void with_poll(const char *dead, const char *live)
{
    int fd = start(dead, SOCK_NONBLOCK), r;
    double t0 = now_ms();

    r = poll1(fd, POLLOUT, 100);
    CHECK(r == 0, "writable (revents 0x%x) 100 ms into a race whose first "
          "attempt is dead", r);
    char nm[64];
    errno = 0;
    CHECK(getpeername(fd, (void *)&(struct sockaddr_storage){0},
                      &(socklen_t){sizeof(struct sockaddr_storage)}) == -1 &&
              errno == ENOTCONN,
          "getpeername while connecting: %s", name_of(fd, true, nm, 64));
    CHECK(sockerr(fd) == 0, "SO_ERROR while connecting");
    r = poll1(fd, POLLOUT, 3000);
    double dt = now_ms() - t0;
    CHECK(r > 0 && (r & POLLOUT) && !(r & (POLLERR | POLLHUP)),
          "revents 0x%x after %.0f ms", r, dt);
    CHECK(dt < 1000, "writable after %.0f ms", dt);
    connected_ok(fd, live);
    close(fd);
}

static void poll4(void)
{
    with_poll(DRV_DEAD, DRV_LIVE);
}

static void poll6(void)
{
    with_poll(DRV_DEAD6, DRV_LIVE6);
}

static void with_select(void)
{
    int fd = start(DRV_DEAD, SOCK_NONBLOCK);
    fd_set w, e;
    struct timeval tv = {.tv_usec = 100000};
    double t0 = now_ms();

    FD_ZERO(&w);
    FD_SET(fd, &w);
    FD_ZERO(&e);
    FD_SET(fd, &e);
    CHECK(select(fd + 1, NULL, &w, &e, &tv) == 0,
          "select: ready 100 ms into the race");
    FD_ZERO(&w);
    FD_SET(fd, &w);
    FD_ZERO(&e);
    FD_SET(fd, &e);
    tv = (struct timeval){.tv_sec = 3};
    int rc = select(fd + 1, NULL, &w, &e, &tv);
    CHECK(rc == 1 && FD_ISSET(fd, &w) && !FD_ISSET(fd, &e),
          "select rc %d w %d e %d", rc, FD_ISSET(fd, &w), FD_ISSET(fd, &e));
    CHECK(now_ms() - t0 < 1000, "writable after %.0f ms", now_ms() - t0);
    connected_ok(fd, DRV_LIVE);
    close(fd);
}

/* epoll registered before connect (Boost.Asio does this, pitfalls 2.8),
 * or right after it while the race runs. */
static void with_epoll(bool et, bool after)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), fd, n;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
                                       (et ? EPOLLET : 0),
                             .data.u64 = MAGIC},
                       got[8];
    struct sockaddr_storage ss;
    socklen_t l;
    char buf[64];

    port = echo_start(DRV_LIVE);
    l = mk_sa(DRV_DEAD, port, &ss);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (!after)
        REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll ADD");
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    REQUIRE(rc == -1 && e == EINPROGRESS, "connect: %d %s", rc, ename(e));
    double t0 = now_ms();
    if (after)
        REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll ADD");
    n = epoll_wait(ep, got, 8, 100);
    CHECK(n == 0, "%d events (0x%x) 100 ms into the race", n,
          n > 0 ? got[0].events : 0);
    n = epoll_wait(ep, got, 8, 3000);
    CHECK(n == 1 && got[0].data.u64 == MAGIC &&
              (got[0].events & EPOLLOUT) &&
              !(got[0].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP | EPOLLIN)),
          "after %.0f ms: %d events, first 0x%x data %llx", now_ms() - t0, n,
          n > 0 ? got[0].events : 0,
          n > 0 ? (unsigned long long)got[0].data.u64 : 0ull);
    CHECK(now_ms() - t0 < 1000, "EPOLLOUT after %.0f ms", now_ms() - t0);
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    if (et) {
        /* edge-triggered: nothing more until something changes (a zombie
         * registration of the parked socket would report its HUP here) */
        n = epoll_wait(ep, got, 8, 100);
        CHECK(n == 0, "ET: %d more events (0x%x) with nothing new", n,
              n > 0 ? got[0].events : 0);
    }
    /* data events after the connect reach the same registration */
    for (int round = 0; round < 2; round++) {
        CHECK(write(fd, "ping", 4) == 4, "write");
        double t1 = now_ms();
        bool in = false;
        while (!in && now_ms() - t1 < 2000) {
            n = epoll_wait(ep, got, 8, 2000);
            for (int i = 0; i < n; i++) {
                CHECK(got[i].data.u64 == MAGIC, "foreign event data");
                CHECK(!(got[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)),
                      "events 0x%x", got[i].events);
                if (got[i].events & EPOLLIN)
                    in = true;
            }
            if (n == 0)
                break;
        }
        CHECK(in, "round %d: no EPOLLIN for the echoed data", round);
        ssize_t r = read(fd, buf, sizeof(buf));
        CHECK(r == 4 && memcmp(buf, "ping", 4) == 0, "read %zd", r);
        r = read(fd, buf, sizeof(buf));
        CHECK(r == -1 && errno == EAGAIN, "drained read %zd", r);
    }
    /* MOD and DEL on the registration still work (it is the real one) */
    ev.events = EPOLLIN;
    CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0, "epoll MOD after race");
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0, "epoll DEL after race");
    close(fd);
    close(ep);
}

static void epoll_lt(void)
{
    with_epoll(false, false);
}

static void epoll_et(void)
{
    with_epoll(true, false);
}

static void epoll_during(void)
{
    with_epoll(false, true);
}

/* ---- a thread already asleep on the fd when the race is won ---- */

enum { W_POLL, W_SELECT, W_EPOLL };
struct waiter {
    int fd, ep, how;
    int result;
    double t_ret;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    if (w->how == W_POLL) {
        w->result = poll1(w->fd, POLLOUT, 5000);
    } else if (w->how == W_SELECT) {
        fd_set ws;
        struct timeval tv = {.tv_sec = 5};
        FD_ZERO(&ws);
        FD_SET(w->fd, &ws);
        w->result = select(w->fd + 1, NULL, &ws, NULL, &tv) == 1 &&
                            FD_ISSET(w->fd, &ws)
                        ? POLLOUT
                        : 0;
    } else {
        struct epoll_event ev;
        int n = epoll_wait(w->ep, &ev, 1, 5000);
        w->result = n == 1 ? (int)ev.events : 0;
    }
    w->t_ret = now_ms();
    return NULL;
}

static void wake(int how)
{
    struct waiter w = {.how = how, .ep = -1};
    pthread_t t;
    double t0;

    port = echo_start(DRV_LIVE);
    if (how == W_EPOLL) {
        struct sockaddr_storage ss;
        socklen_t l = mk_sa(DRV_DEAD, port, &ss);
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = 1};
        w.ep = epoll_create1(0);
        w.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        epoll_ctl(w.ep, EPOLL_CTL_ADD, w.fd, &ev);
        int rc = connect(w.fd, (void *)&ss, l);
        CHECK(rc == -1 && errno == EINPROGRESS, "connect");
    } else {
        w.fd = start(DRV_DEAD, SOCK_NONBLOCK);
    }
    t0 = now_ms();
    pthread_create(&t, NULL, wait_thread, &w);
    pthread_join(t, NULL);
    CHECK(w.result & POLLOUT, "waiter got 0x%x", w.result);
    CHECK(!(w.result & (POLLERR | POLLHUP)), "waiter got 0x%x", w.result);
    CHECK(w.t_ret - t0 < 1000, "waiter woke after %.0f ms", w.t_ret - t0);
    CHECK(w.t_ret - t0 > 150, "waiter woke after only %.0f ms (before the "
          "race could be won)", w.t_ret - t0);
    connected_ok(w.fd, DRV_LIVE);
    close(w.fd);
    if (w.ep >= 0)
        close(w.ep);
}

static void wake_poll(void)
{
    wake(W_POLL);
}

static void wake_select(void)
{
    wake(W_SELECT);
}

static void wake_epoll(void)
{
    wake(W_EPOLL);
}

/* ---- fd flags, fd number and options across the swap ---- */

static void flags_case(int type_flags, bool cloexec_by_fcntl)
{
    int one = 1, rcv = 30000, v, before_rcv;
    socklen_t ol = sizeof(v);
    int fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);
    struct sockaddr_storage ss;
    socklen_t l;

    if (port == 0)
        port = echo_start(DRV_LIVE);
    l = mk_sa(DRV_DEAD, port, &ss);
    if (cloexec_by_fcntl)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &before_rcv, &ol);
    int fdfl = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL);
    int rc = connect(fd, (void *)&ss, l);
    CHECK(rc == -1 && errno == EINPROGRESS, "connect");
    int r = poll1(fd, POLLOUT, 3000);
    REQUIRE(r & POLLOUT, "not writable: 0x%x", r);
    CHECK(fcntl(fd, F_GETFD) == fdfl, "FD flags 0x%x, were 0x%x",
          fcntl(fd, F_GETFD), fdfl);
    CHECK(fcntl(fd, F_GETFL) == fl, "FL flags 0x%x, were 0x%x",
          fcntl(fd, F_GETFL), fl);
    OPT_IS(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    OPT_IS(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    OPT_IS(fd, SOL_SOCKET, SO_RCVBUF, before_rcv);
    /* the fd number the program holds names the connected socket */
    connected_ok(fd, DRV_LIVE);
    char c;
    CHECK(read(fd, &c, 1) == -1 && errno == EAGAIN, "read on idle socket");
    close(fd);
}

static void flags(void)
{
    flags_case(SOCK_NONBLOCK | SOCK_CLOEXEC, false);
    flags_case(0, false);
    flags_case(0, true);
    flags_case(SOCK_NONBLOCK, false);
}

/* EALREADY while racing; after: 0 once then EISCONN (pitfalls 3.2) */
static void again(void)
{
    int fd = start(DRV_DEAD, SOCK_NONBLOCK);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int rc, e;

    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EALREADY, "connect while racing: %d %s", rc,
          ename(e));
    REQUIRE(poll1(fd, POLLOUT, 3000) & POLLOUT, "never writable");
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == 0 || (rc == -1 && e == EISCONN),
          "connect after the race: %d %s", rc, ename(e));
    if (rc != 0)
        printf("note: connect after the race gave EISCONN; the kernel gives "
               "0 once\n");
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EISCONN, "connect again: %d %s", rc, ename(e));
    connected_ok(fd, DRV_LIVE);
    close(fd);
}

/* close() during the race, the fd number reused at once: the late swap must
 * not land on the new owner of the number. */
static void close_reuse(void)
{
    int fd = start(DRV_DEAD, SOCK_NONBLOCK), p[2];
    close(fd);
    REQUIRE(pipe(p) == 0, "pipe");
    int other = p[0] == fd ? p[1] : p[0];
    CHECK(p[0] == fd || p[1] == fd, "fd %d not reused by pipe (%d,%d)", fd,
          p[0], p[1]);
    usleep(600 * 1000); /* past the live attempt's start */
    CHECK(write(p[1], "abc", 3) == 3, "pipe write");
    char buf[4] = "";
    CHECK(read(p[0], buf, 3) == 3 && memcmp(buf, "abc", 3) == 0,
          "pipe read %s", buf);
    int type = -1;
    socklen_t ol = sizeof(type);
    CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ol) == -1 &&
              errno == ENOTSOCK,
          "fd %d became a socket again", fd);
    (void)other;
    close(p[0]);
    close(p[1]);
}

/* write() while the race runs: like a connecting socket, EAGAIN. */
static void write_early(void)
{
    int fd = start(DRV_DEAD, SOCK_NONBLOCK);
    errno = 0;
    ssize_t w = write(fd, "x", 1);
    int e = errno;
    CHECK(w == -1 && e == EAGAIN, "write while racing: %zd %s", w, ename(e));
    REQUIRE(poll1(fd, POLLOUT, 3000) & POLLOUT, "never writable");
    connected_ok(fd, DRV_LIVE);
    close(fd);
}

/* an AF_INET6 socket connecting to a v4-mapped dead address races the
 * IPv4 group; the winner is named v4-mapped */
static void mapped(void)
{
    port = echo_start(DRV_LIVE);
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa("::ffff:" DRV_DEAD, port, &ss);
    char buf[128], want[128];
    int rc = connect(fd, (void *)&ss, l);
    CHECK(rc == -1 && errno == EINPROGRESS, "connect");
    CHECK(poll1(fd, POLLOUT, 100) == 0, "writable at once");
    int r = poll1(fd, POLLOUT, 3000);
    CHECK(r == POLLOUT, "revents 0x%x", r);
    CHECK(sockerr(fd) == 0, "SO_ERROR");
    snprintf(want, sizeof(want), "::ffff:%s:%d", DRV_LIVE, port);
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
    CHECK(echo_roundtrip(fd, "mapped\n", 3000), "echo");
    close(fd);
}

/* registered in two epoll sets: both see the connect and the data */
static void epoll_two(void)
{
    int ep[2] = {epoll_create1(0), epoll_create1(0)};
    struct sockaddr_storage ss;
    port = echo_start(DRV_LIVE);
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    for (int i = 0; i < 2; i++) {
        struct epoll_event ev = {.events = EPOLLOUT | (i ? EPOLLET : 0),
                                 .data.u64 = MAGIC + (uint64_t)i};
        epoll_ctl(ep[i], EPOLL_CTL_ADD, fd, &ev);
    }
    CHECK(connect(fd, (void *)&ss, l) == -1 && errno == EINPROGRESS,
          "connect");
    for (int i = 0; i < 2; i++) {
        struct epoll_event got;
        int n = epoll_wait(ep[i], &got, 1, 3000);
        CHECK(n == 1 && got.data.u64 == MAGIC + (uint64_t)i &&
                  got.events == EPOLLOUT,
              "epoll %d: n %d events 0x%x", i, n, n > 0 ? got.events : 0);
    }
    connected_ok(fd, DRV_LIVE);
    close(fd);
    close(ep[0]);
    close(ep[1]);
}

/* the program closes its epoll set (without EPOLL_CTL_DEL, which is fine:
 * the kernel forgets the registration) and a new epoll set gets the same
 * number; the swap must not put the socket into that unrelated set */
static void epoll_closed(void)
{
    int ep = epoll_create1(0), ep2, p[2];
    struct sockaddr_storage ss;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = MAGIC}, got[4];
    port = echo_start(DRV_LIVE);
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    CHECK(connect(fd, (void *)&ss, l) == -1 && errno == EINPROGRESS,
          "connect");
    close(ep);
    ep2 = epoll_create1(0);
    CHECK(ep2 == ep, "epoll fd number not reused (%d, %d)", ep, ep2);
    pipe(p);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 7};
    epoll_ctl(ep2, EPOLL_CTL_ADD, p[0], &ev);
    REQUIRE(poll1(fd, POLLOUT, 3000) & POLLOUT, "never writable");
    int n = epoll_wait(ep2, got, 4, 200);
    CHECK(n == 0, "%d events in the new epoll set, first data %llx events "
          "0x%x", n, n > 0 ? (unsigned long long)got[0].data.u64 : 0ull,
          n > 0 ? got[0].events : 0);
    errno = 0;
    CHECK(epoll_ctl(ep2, EPOLL_CTL_DEL, fd, NULL) == -1 && errno == ENOENT,
          "the socket was put into the new epoll set");
    connected_ok(fd, DRV_LIVE);
    close(fd);
    close(ep2);
    close(p[0]);
    close(p[1]);
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* a signal (no SA_RESTART) interrupts a blocking connect: EINTR, and the
 * connect goes on in the background like the kernel's */
static void eintr(void)
{
    struct sigaction sa = {.sa_handler = on_alarm};
    struct itimerval it = {.it_value = {.tv_usec = 100000}};
    struct sockaddr_storage ss;
    port = echo_start(DRV_LIVE);
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == -1 && e == EINTR, "connect: %d %s, want EINTR", rc,
          ename(e));
    CHECK(now_ms() - t0 < 200, "returned after %.0f ms", now_ms() - t0);
    /* the usual retry after EINTR: a blocking connect on a connecting
     * socket waits for it, like the kernel's (EALREADY is only for
     * non-blocking sockets) */
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == 0, "connect again: %d %s, want 0", rc, ename(e));
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EISCONN, "third connect: %d %s, want EISCONN", rc,
          ename(e));
    int r = poll1(fd, POLLOUT, 3000);
    CHECK(r == POLLOUT, "revents 0x%x", r);
    connected_ok(fd, DRV_LIVE);
    close(fd);
}

DRV_MAIN({"poll4", poll4}, {"mapped", mapped}, {"epoll_two", epoll_two},
         {"epoll_closed", epoll_closed}, {"eintr", eintr}, {"poll6", poll6}, {"select", with_select},
         {"epoll_lt", epoll_lt}, {"epoll_et", epoll_et},
         {"epoll_during", epoll_during}, {"wake_poll", wake_poll},
         {"wake_select", wake_select}, {"wake_epoll", wake_epoll},
         {"flags", flags}, {"again", again}, {"close_reuse", close_reuse},
         {"write_early", write_early})
