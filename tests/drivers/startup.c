/* Process start (shim/init.c): libresil takes its configuration once, as
 * the process started, and looks each real function up on its first call.
 *
 *   clearenv_race  the program clears its environment before its first
 *                  socket: the race still knows the alternates the
 *                  environment named at start-up. Preloaded only: without
 *                  libresil the connect to the dead address would hang.
 *   first_calls    threads released at once each make the process's first
 *                  calls of the hooked functions (two threads resolving
 *                  one function at a time); every result is the kernel's.
 *                  Run plain, preloaded, and preloaded with no RESIL_
 *                  variable at all (run.sh: /bare).
 */
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/uio.h>

#include "drv.h"

static void clearenv_race(void)
{
    struct sockaddr_storage ss;
    socklen_t l;
    int fd, port;
    double t0;

    /* before any socket: the listener's would be the first hook to need
     * the configuration */
    REQUIRE(getenv("RESIL_ALTERNATES") != NULL,
            "run.sh names the alternates in the environment");
    REQUIRE(clearenv() == 0, "clearenv");
    REQUIRE(getenv("RESIL_ALTERNATES") == NULL, "environment still set");
    port = echo_start(DRV_LIVE);
    l = mk_sa(DRV_DEAD, port, &ss);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    t0 = now_ms();
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect to %s:%d", DRV_DEAD,
            port);
    CHECK(now_ms() - t0 < 1000, "connect took %.0f ms", now_ms() - t0);
    CHECK(echo_roundtrip(fd, "configured at start-up\n", 3000), "echo");
    close(fd);
}

#define NTHREADS 8

static pthread_barrier_t start;

static int calls(void)
{
    int bad = 0, p[2], q[2] = {-1, -1}, sp[2], ep, fl;
    char buf[16] = "";
    struct iovec iov = {.iov_base = buf, .iov_len = 3};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct pollfd pfd;
    struct epoll_event ev = {.events = EPOLLIN}, got;
    struct timespec zero = {0, 0};
    fd_set rs;
    struct timeval tv = {0, 0};
    socklen_t sl = sizeof(fl);

#define EXPECT(cond)                                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s (errno %s)\n", __FILE__,          \
                    __LINE__, #cond, ename(errno));                            \
            bad++;                                                             \
        }                                                                      \
    } while (0)

    if (pipe(p) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) {
        fprintf(stderr, "FAIL: pipe/socketpair: %s\n", ename(errno));
        return 1;
    }
    EXPECT(write(p[1], "abc", 3) == 3);
    pfd = (struct pollfd){.fd = p[0], .events = POLLIN};
    EXPECT(poll(&pfd, 1, 1000) == 1 && pfd.revents == POLLIN);
    pfd.revents = 0;
    EXPECT(ppoll(&pfd, 1, &zero, NULL) == 1 && pfd.revents == POLLIN);
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    EXPECT(select(p[0] + 1, &rs, NULL, NULL, &tv) == 1 && FD_ISSET(p[0], &rs));
    FD_SET(p[0], &rs);
    EXPECT(pselect(p[0] + 1, &rs, NULL, NULL, &zero, NULL) == 1);
    EXPECT(read(p[0], buf, sizeof(buf)) == 3 && memcmp(buf, "abc", 3) == 0);
    EXPECT(writev(p[1], &iov, 1) == 3 && readv(p[0], &iov, 1) == 3);
    EXPECT((fl = fcntl(p[0], F_GETFL)) >= 0 && !(fl & O_NONBLOCK));
    EXPECT(fcntl(p[0], F_SETFL, fl | O_NONBLOCK) == 0);
    errno = 0;
    EXPECT(read(p[0], buf, 1) == -1 && errno == EAGAIN);
    EXPECT((q[0] = dup(p[0])) >= 0 && (q[1] = dup(p[1])) >= 0);
    EXPECT(dup2(q[0], q[0]) == q[0]);
    errno = 0;
    EXPECT(dup3(q[1], q[1], 0) == -1 && errno == EINVAL);
    /* (no second close to see EBADF: another thread may own the number
     * by then) */
    EXPECT(close(q[0]) == 0 && close(q[1]) == 0);

    EXPECT(send(sp[0], "def", 3, 0) == 3);
    EXPECT(recv(sp[1], buf, sizeof(buf), 0) == 3 && memcmp(buf, "def", 3) == 0);
    EXPECT(sendto(sp[1], "ghi", 3, 0, NULL, 0) == 3);
    EXPECT(recvfrom(sp[0], buf, sizeof(buf), 0, NULL, NULL) == 3);
    EXPECT(sendmsg(sp[0], &mh, 0) == 3 && recvmsg(sp[1], &mh, 0) == 3);
    errno = 0;
    EXPECT(recv(sp[1], buf, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    EXPECT(getsockopt(sp[0], SOL_SOCKET, SO_TYPE, &fl, &sl) == 0 &&
           fl == SOCK_STREAM);
    fl = 1;
    EXPECT(setsockopt(sp[0], SOL_SOCKET, SO_KEEPALIVE, &fl, sizeof(fl)) == 0);

    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.data.fd = sp[1];
    EXPECT(epoll_ctl(ep, EPOLL_CTL_ADD, sp[1], &ev) == 0);
    EXPECT(epoll_wait(ep, &got, 1, 0) == 0);
    EXPECT(write(sp[0], "x", 1) == 1);
    EXPECT(epoll_pwait(ep, &got, 1, 1000, NULL) == 1 && got.data.fd == sp[1]);
    EXPECT(epoll_ctl(ep, EPOLL_CTL_DEL, sp[1], NULL) == 0);
    close(ep);
    close(p[0]);
    close(p[1]);
    close(sp[0]);
    close(sp[1]);
    return bad;
#undef EXPECT
}

static void *first(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&start);
    return (void *)(intptr_t)calls();
}

static void first_calls(void)
{
    pthread_t t[NTHREADS];
    void *bad;

    /* a write to a closed peer is a failed check, not a silent death */
    signal(SIGPIPE, SIG_IGN);
    pthread_barrier_init(&start, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++)
        REQUIRE(pthread_create(&t[i], NULL, first, NULL) == 0,
                "pthread_create");
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], &bad);
        CHECK(bad == NULL, "thread %d: %d calls went wrong", i,
              (int)(intptr_t)bad);
    }
}

DRV_MAIN({"clearenv_race", clearenv_race}, {"first_calls", first_calls})
