/* epoll around a connect that is raced, checked against what the kernel
 * does without libresil (run.sh runs every subtest plain and preloaded).
 *
 * The connect goes to a live listener whose one-slot accept queue is full,
 * so its SYN is dropped; the test then empties the queue, and the SYN
 * retransmitted after 1 s (TCP_TIMEOUT_INIT) connects. Plain, that is a
 * connect that completes late; preloaded (127.0.0.1 has the dead
 * alternate 127.0.0.66) it is a race whose winner is swapped onto the fd
 * about 1 s later, the program's socket parked until then.
 *
 *   share_*     issue 6 defect 4: a pipe shares the racing socket's data
 *               (data.ptr or data.u64), level- or edge-triggered; the
 *               pipe's EPOLLHUP arrives as in a plain run, epoll_wait does
 *               not spin, and the socket connects.
 *   oneshot_*   defect 12: an EPOLLONESHOT registration the program
 *               consumed stays disarmed across the swap (one wake-up for two
 *               worker threads), and ADD/MOD/DEL on it answer as they do on
 *               the disarmed registration.
 */
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "drv.h"

/* a listener on 127.0.0.1 whose accept queue is full */
struct slow {
    int lfd, filler, port;
};

static void slow_start(struct slow *sl)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, 0, &ss);

    sl->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sl->lfd < 0 || bind(sl->lfd, (void *)&ss, l) < 0 ||
        listen(sl->lfd, 0) < 0 || getsockname(sl->lfd, (void *)&ss, &l) < 0)
        exit(2);
    sa_str(&ss, (char[64]){0}, 64, NULL, &sl->port);
    /* blocking, completes at once: takes the only slot (backlog 0) */
    sl->filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(sl->filler, (void *)&ss, l) < 0)
        exit(2);
}

/* empty the queue: the next SYN (the retransmit at 1 s) is accepted */
static void slow_open(struct slow *sl)
{
    int c = accept(sl->lfd, NULL, NULL);
    if (c < 0)
        exit(2);
    close(c);
}

static void slow_connect(struct slow *sl, int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, sl->port, &ss);
    errno = 0;
    int rc = connect(fd, (void *)&ss, l), e = errno;
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s, want EINPROGRESS",
          rc, ename(e));
}

static void connected(struct slow *sl, int fd)
{
    char buf[64], want[64];
    snprintf(want, sizeof(want), "%s:%d", DRV_LIVE, sl->port);
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- defect 4: a pipe sharing the racing socket's data ---- */

static struct session {
    int id;
} sess = {1};

static void share(bool ptr, bool et)
{
    struct slow sl;
    struct epoll_event ev = {0}, got[8];
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2], fd, n, hups = 0, zeros = 0;
    const int calls = 5, tmo = et ? 50 : 200;

    if (ptr)
        ev.data.ptr = &sess;
    else
        ev.data.u64 = 42;
    slow_start(&sl);
    REQUIRE(pipe2(p, O_CLOEXEC) == 0, "pipe");
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ev.events = EPOLLIN | EPOLLRDHUP | (et ? EPOLLET : 0);
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0, "ADD pipe");
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | (et ? EPOLLET : 0);
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "ADD socket");
    slow_connect(&sl, fd);
    double t0 = now_ms();
    n = epoll_wait(ep, got, 8, 100);
    CHECK(n == 0, "%d events (first 0x%x) before anything happened", n,
          n > 0 ? got[0].events : 0);
    /* the pipe hangs up while the socket still connects */
    close(p[1]);
    double c0 = cpu_ms(), w0 = now_ms();
    for (int i = 0; i < calls; i++) {
        n = epoll_wait(ep, got, 8, tmo);
        if (n == 0)
            zeros++;
        for (int k = 0; k < n; k++) {
            CHECK(got[k].events == EPOLLHUP &&
                      got[k].data.u64 == (ptr ? (uint64_t)(uintptr_t)&sess
                                              : 42u),
                  "call %d: event 0x%x data %llx", i, got[k].events,
                  (unsigned long long)got[k].data.u64);
            hups += got[k].events == EPOLLHUP;
        }
    }
    double cpu = cpu_ms() - c0, wall = now_ms() - w0;
    /* level-triggered: the hang-up at every call, at once; edge: once */
    CHECK(hups == (et ? 1 : calls), "%d EPOLLHUP in %d calls, want %d", hups,
          calls, et ? 1 : calls);
    CHECK(zeros == (et ? calls - 1 : 0), "%d calls returned nothing", zeros);
    CHECK(et || wall < 100, "%d level-triggered calls took %.0f ms", calls,
          wall);
    /* a busy loop would burn the timeouts on the CPU */
    CHECK(cpu < 50, "%.0f ms CPU for %d calls (%.0f ms wall)", cpu, calls,
          wall);
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0, "DEL pipe");
    close(p[0]);
    CHECK(now_ms() - t0 < 800, "too slow to test: %.0f ms", now_ms() - t0);
    slow_open(&sl);
    /* the socket still connects, and reports it */
    bool out = false;
    while (!out && now_ms() - t0 < 3000) {
        n = epoll_wait(ep, got, 8, 3000);
        for (int k = 0; k < n; k++) {
            CHECK(!(got[k].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)),
                  "socket event 0x%x", got[k].events);
            out |= (got[k].events & EPOLLOUT) != 0;
        }
        if (n <= 0)
            break;
    }
    CHECK(out, "no EPOLLOUT after %.0f ms", now_ms() - t0);
    connected(&sl, fd);
    close(fd);
    close(ep);
}

static void share_ptr_lt(void)
{
    share(true, false);
}

static void share_ptr_et(void)
{
    share(true, true);
}

static void share_u64_lt(void)
{
    share(false, false);
}

static void share_u64_et(void)
{
    share(false, true);
}

/* ---- defect 12: EPOLLONESHOT across the swap ---- */

struct pool {
    int ep;
    atomic_int wakes, stop;
    _Atomic uint32_t first;  /* atomics: the main thread reads them while */
    _Atomic double t_last;   /* the workers run (ThreadSanitizer) */
};

static void *worker(void *arg)
{
    struct pool *w = arg;
    while (!atomic_load(&w->stop)) {
        struct epoll_event ev;
        if (epoll_wait(w->ep, &ev, 1, 50) == 1) {
            if (atomic_fetch_add(&w->wakes, 1) == 0)
                atomic_store(&w->first, ev.events);
            atomic_store(&w->t_last, now_ms());
        }
    }
    return NULL;
}

/* Two workers wait on a one-shot registration that fires at once (a fresh
 * socket polls EPOLLOUT|EPOLLHUP: pitfalls 3.1) and is not re-armed. The
 * connect that follows completes about 1 s later: nobody may wake again.
 * Returns the fd, connected, with the registration disarmed, or -1. */
static int oneshot_setup(struct pool *w, struct slow *sl, pthread_t t[2])
{
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT,
                             .data.u64 = 7};
    int fd;

    slow_start(sl);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, w);
    CHECK(epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) == 0, "ADD");
    /* first, not wakes: the worker counts its wake-up before it stores
     * what it got */
    for (double t0 = now_ms(); !atomic_load(&w->first) && now_ms() - t0 < 2000;)
        usleep(1000);
    CHECK(atomic_load(&w->wakes) == 1 &&
              atomic_load(&w->first) == (EPOLLOUT | EPOLLHUP),
          "%d wake-ups, first 0x%x; want 1 with EPOLLOUT|EPOLLHUP",
          atomic_load(&w->wakes), atomic_load(&w->first));
    slow_connect(sl, fd);
    double t0 = now_ms();
    usleep(300 * 1000);
    slow_open(sl);
    /* poll does not touch the epoll registration */
    int r = poll1(fd, POLLOUT, 3000);
    CHECK(r == POLLOUT, "connect: revents 0x%x after %.0f ms", r,
          now_ms() - t0);
    usleep(300 * 1000); /* time for a wrong wake-up */
    atomic_store(&w->stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&w->wakes) == 1,
          "%d wake-ups, want 1 (the last %.0f ms after the connect began)",
          atomic_load(&w->wakes), atomic_load(&w->t_last) - t0);
    connected(sl, fd);
    return r == POLLOUT ? fd : -1;
}

/* then ADD (EEXIST) and MOD (re-arms: one event, then nothing) */
static void oneshot_mod(void)
{
    struct pool w = {0};
    struct slow sl;
    pthread_t t[2];
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT,
                             .data.u64 = 8},
                       got[2];
    int fd = oneshot_setup(&w, &sl, t), n;

    REQUIRE(fd >= 0, "setup");
    errno = 0;
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_ADD, fd, &ev) == -1 && errno == EEXIST,
          "ADD of the disarmed registration: want EEXIST");
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_MOD, fd, &ev) == 0, "MOD: %s",
          ename(errno));
    n = epoll_wait(w.ep, got, 2, 1000);
    CHECK(n == 1 && got[0].events == EPOLLOUT && got[0].data.u64 == 8,
          "after MOD: %d events, 0x%x data %llx", n, n > 0 ? got[0].events : 0,
          n > 0 ? (unsigned long long)got[0].data.u64 : 0ull);
    n = epoll_wait(w.ep, got, 2, 100);
    CHECK(n == 0, "%d events after the one-shot fired again", n);
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_DEL, fd, NULL) == 0, "DEL: %s",
          ename(errno));
    close(fd);
    close(w.ep);
}

/* then DEL (0), DEL and MOD (ENOENT), ADD (0, and it fires) */
static void oneshot_del(void)
{
    struct pool w = {0};
    struct slow sl;
    pthread_t t[2];
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = 9}, got[2];
    int fd = oneshot_setup(&w, &sl, t), n;

    REQUIRE(fd >= 0, "setup");
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_DEL, fd, NULL) == 0, "DEL: %s",
          ename(errno));
    errno = 0;
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_DEL, fd, NULL) == -1 && errno == ENOENT,
          "DEL again: want ENOENT");
    errno = 0;
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_MOD, fd, &ev) == -1 && errno == ENOENT,
          "MOD after DEL: want ENOENT");
    CHECK(epoll_ctl(w.ep, EPOLL_CTL_ADD, fd, &ev) == 0, "ADD: %s",
          ename(errno));
    n = epoll_wait(w.ep, got, 2, 1000);
    CHECK(n == 1 && got[0].events == EPOLLOUT && got[0].data.u64 == 9,
          "after ADD: %d events, 0x%x", n, n > 0 ? got[0].events : 0);
    close(fd);
    close(w.ep);
}

/* the disarmed registration's set is closed and its number reused: the
 * socket is in no set, and ADD works there */
static void oneshot_close_set(void)
{
    struct pool w = {0};
    struct slow sl;
    pthread_t t[2];
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = 10}, got[2];
    int fd = oneshot_setup(&w, &sl, t), n, ep2;

    REQUIRE(fd >= 0, "setup");
    close(w.ep);
    ep2 = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep2 == w.ep, "epoll fd number not reused (%d, %d)", w.ep, ep2);
    errno = 0;
    CHECK(epoll_ctl(ep2, EPOLL_CTL_MOD, fd, &ev) == -1 && errno == ENOENT,
          "MOD in the new set: want ENOENT");
    CHECK(epoll_ctl(ep2, EPOLL_CTL_ADD, fd, &ev) == 0, "ADD: %s",
          ename(errno));
    n = epoll_wait(ep2, got, 2, 1000);
    CHECK(n == 1 && got[0].events == EPOLLOUT && got[0].data.u64 == 10,
          "after ADD: %d events, 0x%x", n, n > 0 ? got[0].events : 0);
    close(fd);
    close(ep2);
}

static void oneshot_race(void)
{
    struct pool w = {0};
    struct slow sl;
    pthread_t t[2];
    int fd = oneshot_setup(&w, &sl, t);
    if (fd >= 0)
        close(fd);
    close(w.ep);
}

DRV_MAIN({"share_ptr_lt", share_ptr_lt}, {"share_ptr_et", share_ptr_et},
         {"share_u64_lt", share_u64_lt}, {"share_u64_et", share_u64_et},
         {"oneshot_race", oneshot_race}, {"oneshot_mod", oneshot_mod},
         {"oneshot_del", oneshot_del},
         {"oneshot_close_set", oneshot_close_set})
