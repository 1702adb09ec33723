/* epoll and a connection re-raced inside epoll_wait (issue 6, defects 4
 * and 12). The server resets the first connection 100 ms after accepting
 * it, before any byte; libresil re-races it (127.0.0.1's alternate is the
 * dead 127.0.0.66, then 127.0.0.1 again) and the second connection gets
 * the banner. Preloaded only: without libresil the program sees the reset,
 * which is the point of the re-race, so there is no plain run to compare
 * with; what is checked is that only the replaced socket's events vanish.
 *
 *   share_sock_first, share_pipe_first
 *       a pipe shares the socket's data.ptr and hangs up while the socket
 *       is dead: the dead socket's event is dropped (re-raced), the pipe's
 *       EPOLLHUP is returned by the same call, whichever was ready first.
 *   share_pwait2
 *       the same through epoll_pwait2 (glibc 2.35), which has to be
 *       interposed like epoll_wait.
 *   oneshot
 *       the registration is EPOLLONESHOT: the dropped event disarmed it in
 *       the kernel, but the program never saw it, so the banner of the new
 *       connection still wakes it.
 */
#include <sys/epoll.h>

#include "drv.h"

static void *rst_server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (int n = 0;; n++) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            return NULL;
        if (n == 0) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            usleep(100 * 1000);
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(c); /* RST */
        } else {
            char b[64];
            if (write(c, "hello\n", 6) != 6)
                close(c);
            /* held open until the client closes */
            while (read(c, b, sizeof(b)) > 0)
                ;
            close(c);
        }
    }
}

static int rst_start(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, 0, &ss);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;
    pthread_t t;

    if (lfd < 0 || bind(lfd, (void *)&ss, l) < 0 || listen(lfd, 8) < 0 ||
        getsockname(lfd, (void *)&ss, &l) < 0)
        exit(2);
    sa_str(&ss, (char[64]){0}, 64, NULL, &port);
    pthread_create(&t, NULL, rst_server, (void *)(intptr_t)lfd);
    pthread_detach(t);
    return port;
}

/* a non-blocking connect to the server, in ep with ev; returns once
 * EPOLLOUT said it is connected (consumed) */
static int connect_in(int ep, struct epoll_event *ev)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, rst_start(), &ss);
    struct epoll_event got[4];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), n;

    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, ev) < 0)
        exit(2);
    errno = 0;
    int rc = connect(fd, (void *)&ss, l);
    CHECK(rc == -1 && errno == EINPROGRESS, "connect: %d %s", rc,
          ename(errno));
    n = epoll_wait(ep, got, 4, 2000);
    CHECK(n == 1 && got[0].events == EPOLLOUT, "connect: %d events, 0x%x", n,
          n > 0 ? got[0].events : 0);
    return fd;
}

/* the banner of the second connection, and nothing else, on fd */
static void banner(int ep, int fd, double t0)
{
    struct epoll_event got[4];
    char buf[16] = "";
    bool in = false;

    while (!in && now_ms() - t0 < 3000) {
        int n = epoll_wait(ep, got, 4, 3000);
        for (int k = 0; k < n; k++) {
            CHECK(got[k].events == EPOLLIN, "socket event 0x%x",
                  got[k].events);
            in |= (got[k].events & EPOLLIN) != 0;
        }
        if (n <= 0)
            break;
    }
    CHECK(in, "no EPOLLIN after %.0f ms", now_ms() - t0);
    CHECK(read(fd, buf, sizeof(buf) - 1) == 6 && strcmp(buf, "hello\n") == 0,
          "read '%s' (%s)", buf, ename(errno));
}

static struct session {
    int id;
} sess;

static int wait2(int ep, struct epoll_event *got, int max, int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    return epoll_pwait2(ep, got, max, &ts, NULL);
}

static void share(bool pipe_first, bool pwait2)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2], fd, n;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &sess}, got[8];

    REQUIRE(pipe2(p, O_CLOEXEC) == 0, "pipe");
    fd = connect_in(ep, &ev);
    ev.events = EPOLLIN | EPOLLRDHUP;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0, "MOD socket");
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0, "ADD pipe");
    if (pipe_first)
        close(p[1]);
    usleep(250 * 1000); /* the reset arrives at 100 ms */
    if (!pipe_first)
        close(p[1]);
    double t0 = now_ms();
    /* the dead socket is re-raced in here; the pipe's hang-up stays */
    n = pwait2 ? wait2(ep, got, 8, 1000) : epoll_wait(ep, got, 8, 1000);
    CHECK(n == 1 && got[0].events == EPOLLHUP && got[0].data.ptr == &sess,
          "%d events, first 0x%x, after %.0f ms; want the pipe's EPOLLHUP",
          n, n > 0 ? got[0].events : 0, now_ms() - t0);
    CHECK(now_ms() - t0 < 100, "returned after %.0f ms", now_ms() - t0);
    /* level-triggered: again, at once, while the socket is raced */
    n = pwait2 ? wait2(ep, got, 8, 1000) : epoll_wait(ep, got, 8, 1000);
    CHECK(n == 1 && got[0].events == EPOLLHUP && now_ms() - t0 < 150,
          "again: %d events, first 0x%x, after %.0f ms", n,
          n > 0 ? got[0].events : 0, now_ms() - t0);
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0, "DEL pipe");
    close(p[0]);
    banner(ep, fd, t0);
    close(fd);
    close(ep);
}

static void share_sock_first(void)
{
    share(false, false);
}

static void share_pipe_first(void)
{
    share(true, false);
}

static void share_pwait2(void)
{
    share(false, true);
}

static void oneshot(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), fd;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT,
                             .data.u64 = 5};

    fd = connect_in(ep, &ev);
    /* the usual re-arm of a worker pool: now wait for the server */
    ev.events = EPOLLIN | EPOLLONESHOT;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0, "MOD");
    banner(ep, fd, now_ms());
    close(fd);
    close(ep);
}

DRV_MAIN({"share_sock_first", share_sock_first},
         {"share_pipe_first", share_pipe_first},
         {"share_pwait2", share_pwait2}, {"oneshot", oneshot})
