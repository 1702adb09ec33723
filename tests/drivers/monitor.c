/* The dead-path monitor and keepalive (DESIGN 3.2). run.sh runs every
 * subtest twice: preloaded with the alternates group SRV_A,SRV_B, and
 * plain, where each one checks what the kernel alone does (for a dead
 * path: nothing within the bound, since the plain program would wait for
 * minutes or hours). RESIL_EVENTS names the events file in both runs; only
 * libresil writes it. The subtests of dead paths and keepalive run with
 * RESIL_FAIL_TIMEOUT_MS=3000; the healthy ones with the default bound, whose
 * keepalive idles 5 s: with a 1 s keepalive the probes' ACKs would hide a
 * false stall after a 1.5 s pause.
 *
 * A dead path is made by an nftables rule dropping every packet to SRV_A
 * on its way in (this process is root in run.sh's namespace): the sender's
 * kernel sends it, as across a network (a drop on the way out would be a
 * local error, which TCP handles otherwise). blackhole() removes the rule
 * again, and each subtest that adds it clears any left by a killed one.
 *
 * Subtests:
 *   idle_request   healthy connection idle 1.5 s, then requests: no
 *                  path_stall (defect 11: the age of the last ACK counted
 *                  the idle time as a stall)
 *   busy_requests  a steady request/response loop: no path_stall
 *   bulk           a bulk transfer: no path_stall
 *   dead_path      bytes in flight on a dead path: path_stall within
 *                  stall_ms + two ticks, ETIMEDOUT within the bound
 *   ka_app_on      the program sets only SO_KEEPALIVE: the kernel's
 *                  keepalive timing is sized to the bound (defect 18)
 *   ka_app_idle    ... and its own TCP_KEEPIDLE, which is kept
 *   ka_after_connect  keepalive off at connect, on after it with the
 *                  program's own TCP_KEEPCNT
 *   ka_wait_reply  the program's SO_KEEPALIVE, a request answered by
 *                  nothing, the path dies: recv() gets ETIMEDOUT within
 *                  the bound (defect 18)
 *   ka_mark_down   an idle connection killed by keepalive, seen by recv():
 *                  the reconnect goes to the live alternate at once
 *                  (defect 19)
 *   pollerr_mark_down  the same, seen by poll() and closed without a read
 */
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "drv.h"

#define SRV_A "127.0.0.9"  /* the address whose path dies */
#define SRV_B "127.0.0.10" /* its alternate under libresil */
#define SRV_C "127.0.0.11" /* no alternates: a plain (direct) connect */

#define FAIL_MS 3000  /* RESIL_FAIL_TIMEOUT_MS in run.sh, see bound_set */
#define STALL_MS 1000 /* the default stall_ms */
#define SLACK_MS 1500

static bool preloaded(void)
{
    const char *p = getenv("DRV_PRELOADED");
    return p && p[0] == '1';
}

/* The subtests that count on FAIL_MS under libresil check it first. */
static bool bound_set(void)
{
    const char *p = getenv("RESIL_FAIL_TIMEOUT_MS");
    return !preloaded() || (p && atoi(p) == FAIL_MS);
}
#define NEED_BOUND()                                                           \
    REQUIRE(bound_set(), "run with RESIL_FAIL_TIMEOUT_MS=%d", FAIL_MS)

/* ---- the events file ---- */

static off_t ev_size(void)
{
    const char *p = getenv("RESIL_EVENTS");
    struct stat st;
    return p && stat(p, &st) == 0 ? st.st_size : 0;
}

/* Lines of the events file past offset `from` that name event `type`. */
static int ev_count(off_t from, const char *type)
{
    const char *p = getenv("RESIL_EVENTS");
    char line[4096], want[64];
    FILE *f;
    int n = 0;

    if (p == NULL || (f = fopen(p, "r")) == NULL)
        return 0;
    snprintf(want, sizeof(want), "\"event\":\"%s\"", type);
    if (fseeko(f, from, SEEK_SET) == 0)
        while (fgets(line, sizeof(line), f))
            n += strstr(line, want) != NULL;
    fclose(f);
    return n;
}

/* ---- a dead path ---- */

static void blackhole(bool on)
{
    /* nft's own sockets are netlink ones: libresil leaves them alone */
    (void)!system("nft delete table ip drv_monitor 2>/dev/null");
    if (on && system("nft 'add table ip drv_monitor; "
                     "add chain ip drv_monitor in "
                     "{ type filter hook prerouting priority -300; }; "
                     "add rule ip drv_monitor in ip daddr " SRV_A
                     " drop'") != 0) {
        fprintf(stderr, "cannot add the nftables rule\n");
        exit(2);
    }
}

/* ---- a server on every address, one thread per connection ---- */

enum srv_mode {
    S_ECHO,   /* echo each read after delay_ms, delaying its ACKs */
    S_SINK,   /* read and drop */
    S_SILENT, /* read and never answer */
};

static struct {
    int lfd, port;
    enum srv_mode mode;
    int delay_ms;
} srv;

static void *srv_conn(void *arg)
{
    int fd = (int)(intptr_t)arg, zero = 0;
    static char buf[1 << 16];
    char *b = srv.mode == S_SINK ? buf : malloc(4096);
    ssize_t n;

    for (;;) {
        /* delayed ACKs (quickack off): a request stays unacknowledged
         * for a while, as across a real network */
        if (srv.mode == S_ECHO)
            setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero));
        n = read(fd, b, srv.mode == S_SINK ? sizeof(buf) : 4096);
        if (n <= 0)
            break;
        if (srv.mode != S_ECHO)
            continue;
        if (srv.delay_ms)
            usleep((useconds_t)srv.delay_ms * 1000);
        if (write(fd, b, (size_t)n) != n)
            break;
    }
    if (b != buf)
        free(b);
    close(fd);
    return NULL;
}

static void *srv_accept(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(srv.lfd, NULL, NULL);
        pthread_t t;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        if (pthread_create(&t, NULL, srv_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
}

static void srv_start(enum srv_mode mode, int delay_ms)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa("0.0.0.0", 0, &ss);
    int one = 1;
    pthread_t t;

    srv.mode = mode;
    srv.delay_ms = delay_ms;
    srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (srv.lfd < 0 || bind(srv.lfd, (void *)&ss, l) < 0 ||
        listen(srv.lfd, 64) < 0 || getsockname(srv.lfd, (void *)&ss, &l) < 0 ||
        pthread_create(&t, NULL, srv_accept, NULL) != 0) {
        fprintf(stderr, "server: %s\n", strerror(errno));
        exit(2);
    }
    srv.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    pthread_detach(t);
}

/* ---- the client ---- */

/* A blocking connect to ip on the server's port, after the options the
 * program sets first (keepalive < 0: leave SO_KEEPALIVE alone). */
static int cli(const char *ip, int keepalive, int keepidle, double *ms)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(ip, srv.port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_ms();

    if (keepalive >= 0)
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive,
                   sizeof(keepalive));
    if (keepidle > 0)
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepidle,
                   sizeof(keepidle));
    if (connect(fd, (void *)&ss, l) != 0) {
        fprintf(stderr, "connect %s:%d: %s\n", ip, srv.port, ename(errno));
        close(fd);
        return -1;
    }
    if (ms)
        *ms = now_ms() - t0;
    return fd;
}

static bool peer_is(int fd, const char *ip)
{
    char buf[64], want[64];
    snprintf(want, sizeof(want), "%s:%d", ip, srv.port);
    name_of(fd, true, buf, sizeof(buf));
    if (strcmp(buf, want) != 0) {
        fprintf(stderr, "  peer %s, want %s\n", buf, want);
        return false;
    }
    return true;
}

/* One request of n bytes and its echo. */
static bool request(int fd, size_t n)
{
    char msg[4096];
    size_t i;
    if (n >= sizeof(msg))
        return false;
    for (i = 0; i < n; i++)
        msg[i] = (char)('a' + i % 26);
    msg[n] = '\0';
    return echo_roundtrip(fd, msg, 3000);
}

/* Wait until the peer's kernel acknowledged every byte written to fd. */
static bool acked(int fd, int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    int q = -1;
    while (now_ms() < end) {
        if (ioctl(fd, SIOCOUTQ, &q) == 0 && q == 0)
            return true;
        usleep(5000);
    }
    return false;
}

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof(v);
    getsockopt(fd, level, name, &v, &l);
    return v;
}

/* The kernel's keepalive settings of fd. */
static void ka_is(int fd, const char *what, int on, int idle, int intvl,
                  int cnt)
{
    int v_on = opt(fd, SOL_SOCKET, SO_KEEPALIVE) != 0;
    int v_idle = opt(fd, IPPROTO_TCP, TCP_KEEPIDLE);
    int v_intvl = opt(fd, IPPROTO_TCP, TCP_KEEPINTVL);
    int v_cnt = opt(fd, IPPROTO_TCP, TCP_KEEPCNT);
    CHECK(v_on == on && v_idle == idle && v_intvl == intvl && v_cnt == cnt,
          "%s: keepalive %d idle %d intvl %d cnt %d, want %d %d %d %d", what,
          v_on, v_idle, v_intvl, v_cnt, on, idle, intvl, cnt);
}

/* ---- no false stalls ---- */

static void idle_request(void)
{
    off_t ev0 = ev_size();
    int fd;

    srv_start(S_ECHO, 100);
    fd = cli(SRV_A, -1, 0, NULL);
    REQUIRE(fd >= 0, "connect");
    for (int i = 0; i < 3; i++)
        CHECK(request(fd, 100), "request %d", i);
    for (int round = 0; round < 2; round++) {
        usleep(1500 * 1000);
        for (int i = 0; i < 2; i++)
            CHECK(request(fd, 100), "request after idle, round %d", round);
    }
    /* a tick to look at the last request */
    usleep(500 * 1000);
    CHECK(ev_count(ev0, "path_stall") == 0,
          "%d path_stall event(s) on a healthy connection",
          ev_count(ev0, "path_stall"));
    close(fd);
}

static void busy_requests(void)
{
    off_t ev0 = ev_size();
    double end;
    int fd, n = 0;

    srv_start(S_ECHO, 2);
    fd = cli(SRV_A, -1, 0, NULL);
    REQUIRE(fd >= 0, "connect");
    for (end = now_ms() + 2000; now_ms() < end; n++)
        REQUIRE(request(fd, 200), "request %d", n);
    CHECK(ev_count(ev0, "path_stall") == 0,
          "%d path_stall event(s) in %d requests", ev_count(ev0, "path_stall"),
          n);
    printf("note: %d requests\n", n);
    close(fd);
}

static void bulk(void)
{
    static char buf[1 << 16];
    off_t ev0 = ev_size();
    double end;
    long long sent = 0;
    int fd;

    srv_start(S_SINK, 0);
    fd = cli(SRV_A, -1, 0, NULL);
    REQUIRE(fd >= 0, "connect");
    memset(buf, 'b', sizeof(buf));
    for (end = now_ms() + 2000; now_ms() < end;) {
        ssize_t w = write(fd, buf, sizeof(buf));
        REQUIRE(w > 0, "write after %lld bytes", sent);
        sent += w;
    }
    CHECK(acked(fd, 3000), "not all acknowledged");
    CHECK(ev_count(ev0, "path_stall") == 0,
          "%d path_stall event(s) in a %lld MiB transfer",
          ev_count(ev0, "path_stall"), sent >> 20);
    printf("note: %lld MiB\n", sent >> 20);
    close(fd);
}

/* ---- a real stall ---- */

static void dead_path(void)
{
    off_t ev0 = ev_size();
    double t0, t_stall = -1;
    char b[1000];
    int fd, r;
    ssize_t n;

    NEED_BOUND();
    srv_start(S_ECHO, 0);
    fd = cli(SRV_A, -1, 0, NULL);
    REQUIRE(fd >= 0, "connect");
    REQUIRE(request(fd, 100), "request on the healthy path");
    blackhole(true);
    memset(b, 'd', sizeof(b));
    t0 = now_ms();
    REQUIRE(write(fd, b, sizeof(b)) == (ssize_t)sizeof(b), "write");
    /* the stall is seen within stall_ms and two monitor ticks */
    while (now_ms() - t0 < STALL_MS + SLACK_MS + 1000) {
        if (ev_count(ev0, "path_stall") > 0) {
            t_stall = now_ms() - t0;
            break;
        }
        usleep(20000);
    }
    r = poll1(fd, POLLIN, FAIL_MS + SLACK_MS - (int)(now_ms() - t0));
    errno = 0;
    n = r > 0 ? read(fd, b, sizeof(b)) : 0;
    int e = errno;
    double t_err = now_ms() - t0;
    if (preloaded()) {
        CHECK(t_stall >= STALL_MS - 50 && t_stall <= STALL_MS + SLACK_MS,
              "path_stall after %.0f ms (want %d..%d)", t_stall, STALL_MS,
              STALL_MS + SLACK_MS);
        CHECK(n == -1 && e == ETIMEDOUT && t_err <= FAIL_MS + SLACK_MS,
              "read: %zd %s after %.0f ms (want ETIMEDOUT within %d ms)", n,
              ename(e), t_err, FAIL_MS + SLACK_MS);
        printf("note: path_stall after %.0f ms, %s after %.0f ms\n",
               t_stall, ename(e), t_err);
    } else {
        /* the kernel alone: retransmitting for minutes */
        CHECK(r == 0, "poll: 0x%x after %.0f ms, want nothing yet", r, t_err);
        CHECK(sockerr(fd) == 0, "SO_ERROR %s", ename(sockerr(fd)));
    }
    blackhole(false);
    close(fd);
}

/* ---- keepalive timing (defect 18) ---- */

/* What libresil sizes for FAIL_MS = 3 s: 1 s idle, then two probes 1 s
 * apart; what the kernel has by default (net.ipv4.tcp_keepalive_*). */
#define KA_IDLE 1
#define KA_INTVL 1
#define KA_CNT 2
#define K_IDLE 7200
#define K_INTVL 75
#define K_CNT 9

static void ka_app_on(void)
{
    const char *ips[] = {SRV_A, SRV_C}; /* raced, direct */
    NEED_BOUND();
    srv_start(S_ECHO, 0);
    for (int i = 0; i < 2; i++) {
        int fd = cli(ips[i], 1, 0, NULL);
        REQUIRE(fd >= 0, "connect");
        if (preloaded())
            ka_is(fd, ips[i], 1, KA_IDLE, KA_INTVL, KA_CNT);
        else
            ka_is(fd, ips[i], 1, K_IDLE, K_INTVL, K_CNT);
        CHECK(request(fd, 10), "request");
        close(fd);
    }
}

static void ka_app_idle(void)
{
    const char *ips[] = {SRV_A, SRV_C};
    NEED_BOUND();
    srv_start(S_ECHO, 0);
    for (int i = 0; i < 2; i++) {
        int fd = cli(ips[i], 1, 60, NULL);
        REQUIRE(fd >= 0, "connect");
        /* the program's 60 s stays; the probes are sized after it */
        if (preloaded())
            ka_is(fd, ips[i], 1, 60, KA_INTVL, KA_CNT);
        else
            ka_is(fd, ips[i], 1, 60, K_INTVL, K_CNT);
        close(fd);
    }
}

static void ka_after_connect(void)
{
    const char *ips[] = {SRV_A, SRV_C};
    int one = 1, five = 5;
    NEED_BOUND();
    srv_start(S_ECHO, 0);
    for (int i = 0; i < 2; i++) {
        int fd = cli(ips[i], 0, 0, NULL);
        REQUIRE(fd >= 0, "connect");
        /* switched off by the program: off, and untouched */
        ka_is(fd, ips[i], 0, K_IDLE, K_INTVL, K_CNT);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &five, sizeof(five));
        if (preloaded())
            ka_is(fd, ips[i], 1, KA_IDLE, KA_INTVL, 5);
        else
            ka_is(fd, ips[i], 1, K_IDLE, K_INTVL, 5);
        close(fd);
    }
}

/* ---- keepalive finds the dead path ---- */

/* Wait in recv() on fd (SO_RCVTIMEO as a guard) for the path to be found
 * dead: under libresil ETIMEDOUT within the bound, plain still nothing at
 * the bound. Returns true when the libresil outcome held. */
static bool recv_dies(int fd, double t0)
{
    struct timeval tv = {.tv_sec = (FAIL_MS + SLACK_MS) / 1000,
                         .tv_usec = (FAIL_MS + SLACK_MS) % 1000 * 1000};
    char b[16];
    ssize_t n;
    int e;
    double dt;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    errno = 0;
    n = recv(fd, b, sizeof(b), 0);
    e = errno;
    dt = now_ms() - t0;
    if (!preloaded()) {
        CHECK(n == -1 && e == EAGAIN,
              "recv: %zd %s after %.0f ms, want EAGAIN (SO_RCVTIMEO)", n,
              ename(e), dt);
        return false;
    }
    CHECK(n == -1 && e == ETIMEDOUT && dt <= FAIL_MS + SLACK_MS,
          "recv: %zd %s after %.0f ms, want ETIMEDOUT within %d ms", n,
          ename(e), dt, FAIL_MS + SLACK_MS);
    printf("note: recv %s after %.0f ms\n", ename(e), dt);
    return n == -1 && e == ETIMEDOUT;
}

static void ka_wait_reply(void)
{
    int fd;

    NEED_BOUND();
    srv_start(S_SILENT, 0);
    fd = cli(SRV_A, 1, 0, NULL); /* libpq: SO_KEEPALIVE, nothing else */
    REQUIRE(fd >= 0, "connect");
    REQUIRE(write(fd, "SELECT pg_sleep(30);", 20) == 20, "write");
    REQUIRE(acked(fd, 1000), "request not acknowledged");
    blackhole(true);
    recv_dies(fd, now_ms());
    blackhole(false);
    close(fd);
}

/* After the path of fd died: a reconnect to SRV_A by the same process. */
static void reconnect_at_once(void)
{
    double ms;
    int fd = cli(SRV_A, -1, 0, &ms);
    REQUIRE(fd >= 0, "reconnect");
    /* the dead address is tried last: no connection attempt delay */
    CHECK(peer_is(fd, SRV_B), "reconnect");
    CHECK(ms < 150, "reconnect took %.0f ms (the dead address first?)", ms);
    printf("note: reconnected in %.0f ms\n", ms);
    close(fd);
}

static void ka_mark_down(void)
{
    int fd;

    NEED_BOUND();
    srv_start(S_ECHO, 0);
    fd = cli(SRV_A, -1, 0, NULL);
    REQUIRE(fd >= 0, "connect");
    REQUIRE(peer_is(fd, SRV_A), "connect");
    REQUIRE(request(fd, 10), "request");
    REQUIRE(acked(fd, 1000), "not acknowledged");
    blackhole(true);
    if (recv_dies(fd, now_ms())) {
        close(fd);
        reconnect_at_once();
    } else {
        close(fd);
    }
    blackhole(false);
}

static void pollerr_mark_down(void)
{
    double t0;
    int fd, r;

    NEED_BOUND();
    srv_start(S_ECHO, 0);
    fd = cli(SRV_A, -1, 0, NULL);
    REQUIRE(fd >= 0, "connect");
    REQUIRE(peer_is(fd, SRV_A), "connect");
    REQUIRE(request(fd, 10), "request");
    REQUIRE(acked(fd, 1000), "not acknowledged");
    blackhole(true);
    t0 = now_ms();
    r = poll1(fd, POLLIN, FAIL_MS + SLACK_MS);
    double dt = now_ms() - t0;
    /* like nc: an error event, and the socket is closed unread */
    close(fd);
    if (preloaded()) {
        CHECK(r > 0 && (r & POLLERR) && dt <= FAIL_MS + SLACK_MS,
              "poll: 0x%x after %.0f ms, want POLLERR", r, dt);
        if (r > 0 && (r & POLLERR))
            reconnect_at_once();
    } else {
        CHECK(r == 0, "poll: 0x%x after %.0f ms, want nothing", r, dt);
    }
    blackhole(false);
}

DRV_MAIN({"idle_request", idle_request}, {"busy_requests", busy_requests},
         {"bulk", bulk}, {"dead_path", dead_path}, {"ka_app_on", ka_app_on},
         {"ka_app_idle", ka_app_idle},
         {"ka_after_connect", ka_after_connect},
         {"ka_wait_reply", ka_wait_reply}, {"ka_mark_down", ka_mark_down},
         {"pollerr_mark_down", pollerr_mark_down})
