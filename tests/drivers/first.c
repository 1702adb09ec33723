/* The race's first attempt runs on the program's own socket (conn.h): a
 * blocking connect() waits for it in the kernel with SO_SNDTIMEO set to
 * the attempt delay for that one call, a non-blocking one goes on alone
 * until the engine looks at it. What the program sees must stay what the
 * kernel shows without libresil: run.sh runs every subtest preloaded and
 * plain (SUFFIX=/plain), with the same expectations.
 *
 * Groups (run.sh adds them to DRV_ALT for this driver):
 *   DRV_DEAD2,DRV_DEAD3  both dead: a connect blocks in both runs
 *   SLOW,DRV_DEAD3       SLOW (127.0.0.7) is live, but its SYNs are dropped
 *                        (nftables, this process is root in run.sh's
 *                        namespace) until the subtest lets them through:
 *                        the first attempt answers only after the race
 *                        started, on its SYN retransmission at 1 s.
 *
 * Subtests:
 *   restart_then_eintr  a handler with SA_RESTART during the first attempt
 *                  (before the attempt delay): the connect goes on; then
 *                  one without (after it): EINTR (signal(7))
 *   eintr_first    a handler without SA_RESTART during the first attempt:
 *                  EINTR at once; connect() again waits for the connect in
 *                  progress: EALREADY at the program's SO_SNDTIMEO
 *   stop_cont      SIGSTOP and SIGCONT (no handler) during the first
 *                  attempt: the connect goes on (the kernel restarts it)
 *   sndtimeo_short the program's SO_SNDTIMEO shorter than the attempt
 *                  delay: EINPROGRESS at its expiry, and SO_SNDTIMEO reads
 *                  the program's value throughout
 *   sndtimeo_long  ... longer than the attempt delay: EINPROGRESS at its
 *                  expiry (not at the delay), the program's value kept
 *   late_win       the first attempt answers after the race started: it
 *                  wins on the program's own socket (SO_COOKIE unchanged)
 *   late_win_nb    the same, non-blocking: writable, SO_ERROR 0, connect()
 *                  says 0 then EISCONN
 */
#include <signal.h>
#include <sys/time.h>

#include "drv.h"

#define SLOW "127.0.0.7"

static bool preloaded(void)
{
    const char *p = getenv("DRV_PRELOADED");
    return p && p[0] == '1';
}

/* ---- SYNs to SLOW:port dropped until slow_open() ---- */

static void slow_drop(int port)
{
    char cmd[256];
    (void)!system("nft delete table ip drv_first 2>/dev/null");
    snprintf(cmd, sizeof(cmd),
             "nft 'add table ip drv_first; add chain ip drv_first out "
             "{ type filter hook output priority 0; }; add rule ip drv_first "
             "out ip daddr %s tcp dport %d drop'",
             SLOW, port);
    if (system(cmd) != 0) {
        fprintf(stderr, "nft failed (root in the drivers' namespace?)\n");
        exit(2);
    }
}

static void slow_open(void)
{
    (void)!system("nft delete table ip drv_first 2>/dev/null");
}

static uint64_t cookie(int fd)
{
    uint64_t c = 0;
    socklen_t l = sizeof(c);
    getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l);
    return c;
}

static int sndtimeo_ms(int fd)
{
    struct timeval tv = {0};
    socklen_t l = sizeof(tv);
    getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &l);
    return (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
}

static void set_sndtimeo(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ---- signals ---- */

static volatile sig_atomic_t alarms, usr1s;

static void on_usr1(int sig)
{
    (void)sig;
    usr1s++;
}

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

/* SIGUSR1 to thread `to` after ms, its handler (without SA_RESTART)
 * installed only then: while the first attempt runs, every handler has
 * SA_RESTART (libresil cannot tell which signal interrupted its timed
 * connect: with handlers of both kinds installed it reports EINTR,
 * README) */
struct later {
    pthread_t to;
    int ms;
};

static void *usr1_later(void *arg)
{
    struct later *l = arg;
    struct sigaction sa = {.sa_handler = on_usr1};
    usleep((useconds_t)l->ms * 1000);
    sigaction(SIGUSR1, &sa, NULL);
    pthread_kill(l->to, SIGUSR1);
    return NULL;
}

static int dead_group_socket(struct sockaddr_storage *ss, socklen_t *l)
{
    *l = mk_sa(DRV_DEAD2, 9, ss);
    return socket(AF_INET, SOCK_STREAM, 0);
}

static void restart_then_eintr(void)
{
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    struct itimerval it = {.it_value = {.tv_usec = 100 * 1000}};
    struct later l = {.to = pthread_self(), .ms = 450};
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd = dead_group_socket(&ss, &sl);
    pthread_t t;

    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    pthread_create(&t, NULL, usr1_later, &l);
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, sl), e = errno;
    double dt = now_ms() - t0;
    pthread_join(t, NULL);
    CHECK(alarms == 1, "%d SIGALRM handled", (int)alarms);
    CHECK(usr1s == 1, "%d SIGUSR1 handled", (int)usr1s);
    CHECK(rc == -1 && e == EINTR && dt >= 400 && dt < 1000,
          "connect: %d %s after %.0f ms, want EINTR at the SIGUSR1 (450 ms; "
          "the SIGALRM at 100 ms restarts it)", rc, ename(e), dt);
    CHECK(sndtimeo_ms(fd) == 0, "SO_SNDTIMEO %d ms, the program set none",
          sndtimeo_ms(fd));
    close(fd);
}

static void eintr_first(void)
{
    struct sigaction sa = {.sa_handler = on_alarm};
    struct itimerval it = {.it_value = {.tv_usec = 100 * 1000}};
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd = dead_group_socket(&ss, &sl);

    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, sl), e = errno;
    double dt = now_ms() - t0;
    CHECK(rc == -1 && e == EINTR && dt < 200,
          "connect: %d %s after %.0f ms, want EINTR at about 100 ms", rc,
          ename(e), dt);
    CHECK(sndtimeo_ms(fd) == 0, "SO_SNDTIMEO %d ms after EINTR, the program "
          "set none", sndtimeo_ms(fd));
    CHECK(poll1(fd, POLLOUT, 0) == 0, "writable: the connect goes on");
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    /* the usual retry: a blocking connect on a connect in progress waits
     * for it, EALREADY at SO_SNDTIMEO */
    set_sndtimeo(fd, 300);
    t0 = now_ms();
    errno = 0;
    rc = connect(fd, (void *)&ss, sl);
    e = errno;
    dt = now_ms() - t0;
    CHECK(rc == -1 && e == EALREADY && dt >= 250 && dt < 800,
          "connect again: %d %s after %.0f ms, want EALREADY at 300 ms", rc,
          ename(e), dt);
    CHECK(sndtimeo_ms(fd) == 300, "SO_SNDTIMEO %d ms, want 300",
          sndtimeo_ms(fd));
    close(fd);
}

/* A child connects to the dead group and says when connect() returns; the
 * parent stops and continues it during the first attempt. */
static void stop_cont(void)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int p[2];
    char b[64] = "";
    pid_t pid;

    REQUIRE(pipe(p) == 0, "pipe");
    pid = fork();
    if (pid == 0) {
        int fd = dead_group_socket(&ss, &sl), rc, e;
        close(p[0]);
        errno = 0;
        rc = connect(fd, (void *)&ss, sl);
        e = errno;
        dprintf(p[1], "connect %d %s\n", rc, ename(e));
        _exit(0);
    }
    close(p[1]);
    usleep(100 * 1000);
    kill(pid, SIGSTOP);
    usleep(50 * 1000);
    kill(pid, SIGCONT);
    /* past the attempt delay and more: still connecting */
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    int r = poll(&pf, 1, 600);
    if (r > 0)
        (void)!read(p[0], b, sizeof(b) - 1);
    CHECK(r == 0, "the child's connect returned after a stop and continue: "
          "%s", b);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(p[0]);
}

/* connect to the dead group with the program's own SO_SNDTIMEO: */
static void sndtimeo(int ms)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd = dead_group_socket(&ss, &sl);

    set_sndtimeo(fd, ms);
    double t0 = now_ms();
    errno = 0;
    int rc = connect(fd, (void *)&ss, sl), e = errno;
    double dt = now_ms() - t0;
    CHECK(rc == -1 && e == EINPROGRESS && dt >= ms - 20 && dt < ms + 300,
          "connect: %d %s after %.0f ms, want EINPROGRESS at %d ms", rc,
          ename(e), dt, ms);
    CHECK(sndtimeo_ms(fd) == ms, "SO_SNDTIMEO %d ms, want the program's %d",
          sndtimeo_ms(fd), ms);
    CHECK(poll1(fd, POLLOUT, 0) == 0, "writable: the connect goes on");
    CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    close(fd);
}

static void sndtimeo_short(void)
{
    sndtimeo(100);
}

static void sndtimeo_long(void)
{
    sndtimeo(700);
}

/* ---- the first attempt wins after the race started ---- */

static int slow_listener(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(SLOW, 0, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 0;

    if (fd < 0 || bind(fd, (void *)&ss, l) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (void *)&ss, &l) < 0) {
        fprintf(stderr, "listener on %s: %s\n", SLOW, strerror(errno));
        exit(2);
    }
    sa_str(&ss, (char[64]){0}, 64, NULL, &port);
    return port;
}

static void *open_later(void *arg)
{
    (void)arg;
    usleep(400 * 1000); /* the race started at 250 ms */
    slow_open();
    return NULL;
}

static void late(bool nb)
{
    int port = slow_listener();
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(SLOW, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0), rc, e;
    uint64_t ck = cookie(fd);
    char want[64], buf[64];
    pthread_t t;

    slow_drop(port);
    pthread_create(&t, NULL, open_later, NULL);
    double t0 = now_ms();
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    if (nb) {
        CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s", rc, ename(e));
        rc = poll1(fd, POLLOUT, 3000);
        CHECK(rc == POLLOUT, "revents 0x%x", rc);
        CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
        rc = 0;
    }
    double dt = now_ms() - t0;
    pthread_join(t, NULL);
    slow_open();
    CHECK(rc == 0, "connect: %d %s", rc, ename(e));
    /* its SYN retransmission, 1 s after the first */
    CHECK(dt >= 800 && dt < 2500, "connected after %.0f ms, want ~1000",
          dt);
    snprintf(want, sizeof(want), "%s:%d", SLOW, port);
    name_of(fd, true, buf, sizeof(buf));
    CHECK(strcmp(buf, want) == 0, "getpeername %s, want %s", buf, want);
    CHECK(cookie(fd) == ck, "another socket on the fd (SO_COOKIE %llx, was "
          "%llx)", (unsigned long long)cookie(fd), (unsigned long long)ck);
    if (nb) {
        errno = 0;
        rc = connect(fd, (void *)&ss, l);
        e = errno;
        CHECK(rc == 0, "connect after it completed: %d %s, want 0", rc,
              ename(e));
    }
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == EISCONN, "connect again: %d %s, want EISCONN",
          rc, ename(e));
    close(fd);
}

static void late_win(void)
{
    late(false);
}

static void late_win_nb(void)
{
    late(true);
}

int main(int argc, char **argv)
{
    static const struct drv_test t[] = {
        {"restart_then_eintr", restart_then_eintr},
        {"eintr_first", eintr_first},
        {"stop_cont", stop_cont},
        {"sndtimeo_short", sndtimeo_short},
        {"sndtimeo_long", sndtimeo_long},
        {"late_win", late_win},
        {"late_win_nb", late_win_nb},
    };
    (void)preloaded;
    return drv_main(argc, argv, t, sizeof(t) / sizeof(t[0]));
}
