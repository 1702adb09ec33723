/* libresil micro-benchmarks: one program, one subcommand per measure.
 *
 * run.sh starts the servers plain and the clients with or without
 * LD_PRELOAD, inside its own network namespace, and turns the numbers each
 * client prints on stdout (one line, space-separated) into the table.
 *
 *   serve PORT close|echo|sink     a plain server on 0.0.0.0:PORT
 *   serve PORT hold                the same, single-threaded (epoll): holds
 *                                  every connection open and echoes (its
 *                                  RLIMIT_NOFILE raised to SCALE_NOFILE)
 *   waitport PORT                  until 127.0.0.1:PORT accepts (2 s max)
 *   connect ADDR PORT TMO_MS K     K blocking connects, SO_SNDTIMEO TMO_MS:
 *                                  prints "ms:errno" per connect
 *   connrate ADDR PORT N [nb]      N connect+close: prints connects/s
 *                                  (nb: non-blocking connect, then poll
 *                                  for POLLOUT and read SO_ERROR)
 *   loop N                         N pipe write+read pairs and nothing
 *                                  else (for callgrind: instructions per
 *                                  call = difference of two runs / calls)
 *   unmanaged N                    prints ns/call for pipe write+read,
 *                                  poll() on a readable pipe, UDP send+recv
 *   managed ADDR PORT N            on a connected TCP socket (managed when
 *                                  preloaded): ns/call for recv() answering
 *                                  EAGAIN, epoll_ctl ADD+DEL (per call),
 *                                  epoll_ctl MOD between EPOLLIN and
 *                                  EPOLLIN|EPOLLOUT (per call)
 *   mloop ADDR PORT N recv|ctl|mod N iterations of one of those and nothing
 *                                  else (for callgrind, like loop)
 *   pingpong ADDR PORT N           N 1-byte round trips: prints RT/s
 *   bulk ADDR PORT MIB             MIB MiB in 64 KiB writes: prints MiB/s
 *   serve PORT stream              send 64 KiB chunks to each client until
 *                                  it closes
 *   failover ADDR PORT rr|rx|idle  the time a session takes to carry bytes
 *                                  again after its path dies (ADDR must be
 *                                  in the nft set resil_bench/dead, which
 *                                  this adds it to): rr a client in a 1-byte
 *                                  request/response loop, rx a client only
 *                                  receiving (the server streams), idle a
 *                                  client that sends its next request after
 *                                  the failure; prints ms (max gap / time to
 *                                  the reply)
 *   scale ADDR PORT N              N blocking connects held open at once
 *                                  (RLIMIT_NOFILE raised), then 1 byte
 *                                  echoed on each through one epoll set:
 *                                  prints "open_ms anon_rss_bytes_per_conn
 *                                  echo_ms failures"
 *
 * Errors go to stderr and exit non-zero: run.sh treats that as "could not
 * be measured".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)
/* RLIMIT_NOFILE for the scale client and its server (root may raise the
 * hard limit; up to fs.nr_open) */
#define SCALE_NOFILE 30000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static struct sockaddr_in addr_of(const char *ip, const char *port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench: bad address %s\n", ip);
        exit(2);
    }
    return sa;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int dial(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
        die("connect");
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_full(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- servers (always run without the preload) ---- */

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t r;

    nodelay(fd);
    while ((r = read(fd, buf, sizeof(buf))) > 0)
        if (write_all(fd, buf, (size_t)r) < 0)
            break;
    close(fd);
    return NULL;
}

/* Reads to EOF, then answers with the byte count so that the client's clock
 * stops only when every byte has arrived. */
static void *sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static __thread char buf[CHUNK];
    uint64_t total = 0;
    ssize_t r;

    while ((r = read(fd, buf, sizeof(buf))) > 0)
        total += (uint64_t)r;
    (void)write_all(fd, (const char *)&total, sizeof(total));
    close(fd);
    return NULL;
}

/* Raise RLIMIT_NOFILE to n (the hard limit too when allowed, else the soft
 * limit up to the hard one). Returns the soft limit now in force. */
static rlim_t raise_nofile(rlim_t n)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    if (rl.rlim_cur >= n)
        return rl.rlim_cur;
    if (rl.rlim_max < n) {
        struct rlimit want = {n, n};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            return n;
        n = rl.rlim_max;
    }
    rl.rlim_cur = n;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
    return n;
}

/* The scale server: one thread, one epoll set, every connection held open
 * and echoed until the client closes it. */
static void __attribute__((noreturn)) serve_hold(int lfd)
{
    struct epoll_event ev = {.events = EPOLLIN}, evs[1024];
    int ep = epoll_create1(0);
    char buf[4096];

    raise_nofile(SCALE_NOFILE);
    if (ep < 0)
        die("epoll_create1");
    ev.data.fd = lfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll_ctl");
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            ssize_t r;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    ev.data.fd = c;
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
                        close(c);
                }
                if (errno != EAGAIN && errno != EINTR &&
                    errno != ECONNABORTED) {
                    /* EMFILE: the client sees its connects unanswered */
                    fprintf(stderr, "bench: hold accept: %s\n",
                            strerror(errno));
                    usleep(1000);
                }
                continue;
            }
            r = read(fd, buf, sizeof(buf));
            if (r > 0) {
                if (write(fd, buf, (size_t)r) == r)
                    continue;
            } else if (r < 0 && errno == EAGAIN) {
                continue;
            }
            close(fd); /* EOF, error, or a short echo */
        }
    }
}

/* Streams until the client goes away. */
static void *stream_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static __thread char buf[CHUNK];
    while (write_all(fd, buf, sizeof(buf)) == 0)
        ;
    close(fd);
    return NULL;
}

static int serve(const char *port, const char *mode)
{
    struct sockaddr_in sa = addr_of("0.0.0.0", port);
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
    void *(*fn)(void *) = NULL;

    if (strcmp(mode, "echo") == 0)
        fn = echo_conn;
    else if (strcmp(mode, "stream") == 0)
        fn = stream_conn;
    else if (strcmp(mode, "sink") == 0)
        fn = sink_conn;
    else if (strcmp(mode, "close") != 0 && strcmp(mode, "hold") != 0) {
        fprintf(stderr, "bench: unknown server mode %s\n", mode);
        return 2;
    }
    if (lfd < 0)
        die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    if (strcmp(mode, "hold") == 0) {
        if (fcntl(lfd, F_SETFL, O_NONBLOCK | fcntl(lfd, F_GETFL)) < 0)
            die("fcntl");
        serve_hold(lfd);
    }
    for (;;) {
        pthread_t t;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept");
        }
        if (fn == NULL) {
            close(fd);
            continue;
        }
        if (pthread_create(&t, NULL, fn, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(t);
    }
}

static int waitport(const char *port)
{
    struct sockaddr_in sa = addr_of("127.0.0.1", port);
    for (int i = 0; i < 200; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            return 0;
        usleep(10000);
    }
    fprintf(stderr, "bench: nothing listens on port %s\n", port);
    return 2;
}

/* ---- clients (run with and without the preload) ---- */

static int do_connect(const char *ip, const char *port, int tmo_ms, int k)
{
    struct sockaddr_in sa = addr_of(ip, port);
    struct timeval tv = {tmo_ms / 1000, (tmo_ms % 1000) * 1000};

    for (int i = 0; i < k; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), rc, err;
        double t0;
        if (fd < 0)
            die("socket");
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
            die("setsockopt");
        t0 = now_s();
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        err = rc == 0 ? 0 : errno;
        printf("%s%.3f:%d", i ? " " : "", (now_s() - t0) * 1e3, err);
        close(fd);
    }
    printf("\n");
    return 0;
}

/* The way event loops connect: EINPROGRESS, wait for POLLOUT, SO_ERROR. */
static int dial_nb(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), err = 0;
    socklen_t l = sizeof(err);
    struct pollfd p = {.events = POLLOUT};

    if (fd < 0)
        die("socket");
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
        if (errno != EINPROGRESS)
            die("connect");
        p.fd = fd;
        if (poll(&p, 1, 5000) != 1)
            die("poll for the connect");
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
            errno = err;
            die("non-blocking connect");
        }
    }
    return fd;
}

static int connrate(const char *ip, const char *port, int n, bool nb)
{
    struct sockaddr_in sa = addr_of(ip, port);
    /* close with RST: no TIME_WAIT, so thousands of connects in a row do
     * not run out of ephemeral ports */
    struct linger lg = {1, 0};
    double t0 = now_s();

    for (int i = 0; i < n; i++) {
        int fd = nb ? dial_nb(&sa) : dial(&sa);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    printf("%.0f\n", n / (now_s() - t0));
    return 0;
}

static int loop(long n)
{
    int p[2];
    char c = 'x';

    if (pipe(p) < 0)
        die("pipe");
    for (long i = 0; i < n; i++)
        if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
            die("pipe write/read");
    return 0;
}

static int unmanaged(long n)
{
    int p[2], u[2];
    char c = 'x';
    double t0, pipe_ns, poll_ns, udp_ns;
    struct pollfd pfd;
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);

    if (pipe(p) < 0)
        die("pipe");
    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
            die("pipe io");
    pipe_ns = (now_s() - t0) * 1e9 / (2.0 * (double)n);

    if (write(p[1], &c, 1) != 1)
        die("pipe write");
    pfd.fd = p[0];
    pfd.events = POLLIN;
    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (poll(&pfd, 1, 0) != 1)
            die("poll");
    poll_ns = (now_s() - t0) * 1e9 / (double)n;

    /* a connected UDP socket to itself: socket() is hooked, the fd is not
     * managed (not SOCK_STREAM) */
    u[0] = socket(AF_INET, SOCK_DGRAM, 0);
    sa = addr_of("127.0.0.1", "0");
    if (u[0] < 0 || bind(u[0], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(u[0], (struct sockaddr *)&sa, &sl) < 0 ||
        connect(u[0], (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("udp setup");
    u[1] = u[0];
    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (send(u[1], &c, 1, 0) != 1 || recv(u[0], &c, 1, 0) != 1)
            die("udp io");
    udp_ns = (now_s() - t0) * 1e9 / (2.0 * (double)n);
    printf("%.1f %.1f %.1f\n", pipe_ns, poll_ns, udp_ns);
    return 0;
}

/* The calls an event loop makes on its connection between two messages
 * (redis' ae adds and deletes the fd for writing around every request,
 * libuv and libevent switch its interest with MOD). */
static void recv_eagain(int fd, long n)
{
    char c;
    for (long i = 0; i < n; i++)
        if (recv(fd, &c, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN)
            die("recv: expected EAGAIN");
}

static void ctl_add_del(int ep, int fd, long n)
{
    struct epoll_event ev = {.events = EPOLLOUT};
    for (long i = 0; i < n; i++)
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) < 0)
            die("epoll_ctl");
}

static void ctl_mod(int ep, int fd, long n)
{
    struct epoll_event in = {.events = EPOLLIN, .data.fd = fd};
    struct epoll_event out = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &in) < 0)
        die("epoll_ctl ADD");
    for (long i = 0; i < n; i++)
        if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &out) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &in) < 0)
            die("epoll_ctl MOD");
    if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) < 0)
        die("epoll_ctl DEL");
}

static int managed(const char *ip, const char *port, long n)
{
    struct sockaddr_in sa = addr_of(ip, port);
    int fd = dial(&sa), ep = epoll_create1(0);
    double t0, recv_ns, ep_ns, mod_ns;

    if (ep < 0)
        die("epoll_create1");
    t0 = now_s();
    recv_eagain(fd, n);
    recv_ns = (now_s() - t0) * 1e9 / (double)n;
    t0 = now_s();
    ctl_add_del(ep, fd, n);
    ep_ns = (now_s() - t0) * 1e9 / (2.0 * (double)n);
    t0 = now_s();
    ctl_mod(ep, fd, n);
    mod_ns = (now_s() - t0) * 1e9 / (2.0 * (double)n);
    printf("%.1f %.1f %.1f\n", recv_ns, ep_ns, mod_ns);
    close(ep);
    close(fd);
    return 0;
}

static int mloop(const char *ip, const char *port, long n, const char *what)
{
    struct sockaddr_in sa = addr_of(ip, port);
    int fd = dial(&sa), ep = epoll_create1(0);

    if (ep < 0)
        die("epoll_create1");
    if (strcmp(what, "recv") == 0)
        recv_eagain(fd, n);
    else if (strcmp(what, "ctl") == 0)
        ctl_add_del(ep, fd, n);
    else if (strcmp(what, "mod") == 0)
        ctl_mod(ep, fd, n);
    else
        return 2;
    close(ep);
    close(fd);
    return 0;
}

static int pingpong(const char *ip, const char *port, long n)
{
    struct sockaddr_in sa = addr_of(ip, port);
    int fd = dial(&sa);
    char c = 'x';
    double t0;

    nodelay(fd);
    /* warm up: the first round trips pay for slow start and page faults */
    for (int i = 0; i < 100; i++)
        if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1)
            die("pingpong warm-up");
    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1)
            die("pingpong");
    printf("%.0f\n", (double)n / (now_s() - t0));
    close(fd);
    return 0;
}

static int bulk(const char *ip, const char *port, long mib)
{
    struct sockaddr_in sa = addr_of(ip, port);
    static char buf[CHUNK];
    uint64_t want = (uint64_t)mib << 20, got = 0;
    double t0;
    int fd;

    memset(buf, 'b', sizeof(buf));
    fd = dial(&sa);
    t0 = now_s();
    for (uint64_t sent = 0; sent < want; sent += CHUNK)
        if (write_all(fd, buf, CHUNK) < 0)
            die("bulk write");
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown");
    if (read_full(fd, (char *)&got, sizeof(got)) < 0)
        die("bulk reply");
    if (got != want) {
        fprintf(stderr, "bench: sink got %llu of %llu bytes\n",
                (unsigned long long)got, (unsigned long long)want);
        return 2;
    }
    printf("%.0f\n", (double)mib / (now_s() - t0));
    close(fd);
    return 0;
}

/* Anonymous resident memory of this process in bytes, what allocations per
 * connection cost (file-backed pages are code, shared and faulted in 64 KiB
 * at a time whenever a new path runs). From smaps_rollup, which walks the
 * page tables and is exact; RssAnon in /proc/self/status comes from per-CPU
 * counters that lag by up to tens of pages per CPU (the fallback). */
static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    const char *fmt = "Anonymous: %ld kB";
    char line[256];
    long kb = -1;

    if (f == NULL) {
        f = fopen("/proc/self/status", "r");
        fmt = "RssAnon: %ld kB";
    }
    if (f == NULL)
        die("/proc/self/status");
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, fmt, &kb) == 1)
            break;
    fclose(f);
    if (kb < 0) {
        fprintf(stderr, "bench: no RSS in /proc/self\n");
        exit(2);
    }
    return kb * 1024;
}

/* N connections to one address held open in one process: the time to open
 * them all (socket + blocking connect each), the anonymous RSS they add,
 * then 1 byte written on each and its echo collected through one epoll set
 * (what an event loop with N connections does). A failed connect, write or
 * missing echo counts as a failure; the measure goes on. */
/* The path to ip dies now: its address joins the drop set. */
static void kill_path(const char *ip, bool on)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "nft %s element inet resil_bench dead '{ %s }' >/dev/null 2>&1",
             on ? "add" : "delete", ip);
    if (system(cmd) != 0 && on)
        die("nft add element");
}

static int failover(const char *ip, const char *port, const char *how)
{
    struct sockaddr_in sa = addr_of(ip, port);
    int fd = dial(&sa);
    char c = 'x', buf[CHUNK];
    double t_fail = 0, gap = 0, last;

    nodelay(fd);
    if (strcmp(how, "idle") == 0) {
        if (write_all(fd, &c, 1) < 0 || read_full(fd, &c, 1) < 0)
            die("first request");
        usleep(200 * 1000);
        kill_path(ip, true);
        usleep(300 * 1000);
        t_fail = now_s();
        if (write_all(fd, &c, 1) < 0 || read_full(fd, &c, 1) < 0)
            die("request after the failure");
        gap = now_s() - t_fail;
    } else {
        bool rx = strcmp(how, "rx") == 0;
        double t0 = now_s(), end = 0;
        last = t0;
        for (;;) {
            double now;
            if (rx) {
                if (read(fd, buf, sizeof(buf)) <= 0)
                    die("read");
            } else if (write_all(fd, &c, 1) < 0 || read_full(fd, &c, 1) < 0) {
                die("round trip");
            }
            now = now_s();
            if (t_fail && now - last > gap)
                gap = now - last;
            last = now;
            if (!t_fail && now - t0 > 0.3) {
                kill_path(ip, true);
                t_fail = now;
                end = now + 1.5;
            }
            if (t_fail && now > end && gap > 0)
                break;
            if (t_fail && now - t_fail > 20)
                die("no bytes moved for 20 s");
        }
    }
    kill_path(ip, false);
    printf("%.1f\n", gap * 1e3);
    close(fd);
    return 0;
}

static int scale(const char *ip, const char *port, int n)
{
    struct sockaddr_in sa = addr_of(ip, port);
    struct linger lg = {1, 0};
    struct epoll_event ev, evs[1024];
    int *fds, ep, opened = 0, pending = 0, failures = 0;
    long rss0, rss1;
    double t0, open_ms, echo_ms, deadline;
    char c = 'x';

    if (raise_nofile(SCALE_NOFILE) < (rlim_t)n + 64) {
        fprintf(stderr, "bench: RLIMIT_NOFILE too low for %d connections\n",
                n);
        return 2;
    }
    fds = calloc((size_t)n, sizeof(*fds));
    ep = epoll_create1(0);
    if (fds == NULL || ep < 0)
        die("scale setup");
    memset(fds, 0xff, (size_t)n * sizeof(*fds)); /* -1, pages touched */
    /* one connection and one RSS read first: one-time costs (libresil's
     * engine thread, first allocations, code pages faulted in) are not per
     * connection */
    {
        int fd = dial(&sa);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    (void)rss_bytes();
    rss0 = rss_bytes();
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            if (failures++ == 0)
                fprintf(stderr, "bench: scale socket #%d: %s\n", i,
                        strerror(errno));
            continue;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            if (failures++ == 0)
                fprintf(stderr, "bench: scale connect #%d: %s\n", i,
                        strerror(errno));
            close(fd);
            continue;
        }
        fds[i] = fd;
        opened++;
    }
    open_ms = (now_s() - t0) * 1e3;
    rss1 = rss_bytes();

    t0 = now_s();
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0)
            continue;
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0 ||
            write(fds[i], &c, 1) != 1) {
            if (failures++ == 0)
                fprintf(stderr, "bench: scale write #%d: %s\n", i,
                        strerror(errno));
            continue;
        }
        pending++;
    }
    deadline = now_s() + 10;
    while (pending > 0 && now_s() < deadline) {
        int k = epoll_wait(ep, evs, 1024, 100);
        if (k < 0 && errno != EINTR)
            die("epoll_wait");
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            char r;
            if (read(fds[i], &r, 1) != 1 || r != c) {
                if (failures++ == 0)
                    fprintf(stderr, "bench: scale echo #%d: %s\n", i,
                            strerror(errno));
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            pending--;
        }
    }
    echo_ms = (now_s() - t0) * 1e3;
    if (pending > 0)
        fprintf(stderr, "bench: scale: %d echoes missing after 10 s\n",
                pending);
    failures += pending;

    /* close with RST: the next run finds no TIME_WAIT ports */
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(fds[i]);
        }
    close(ep);
    free(fds);
    printf("%.1f %.1f %.1f %d\n", open_ms,
           opened ? (double)(rss1 - rss0) / opened : 0.0, echo_ms, failures);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(cmd, "serve") == 0 && argc == 4)
        return serve(argv[2], argv[3]);
    if (strcmp(cmd, "waitport") == 0 && argc == 3)
        return waitport(argv[2]);
    if (strcmp(cmd, "connect") == 0 && argc == 6)
        return do_connect(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if (strcmp(cmd, "connrate") == 0 && (argc == 5 || argc == 6))
        return connrate(argv[2], argv[3], atoi(argv[4]),
                        argc == 6 && strcmp(argv[5], "nb") == 0);
    if (strcmp(cmd, "loop") == 0 && argc == 3)
        return loop(atol(argv[2]));
    if (strcmp(cmd, "unmanaged") == 0 && argc == 3)
        return unmanaged(atol(argv[2]));
    if (strcmp(cmd, "managed") == 0 && argc == 5)
        return managed(argv[2], argv[3], atol(argv[4]));
    if (strcmp(cmd, "mloop") == 0 && argc == 6)
        return mloop(argv[2], argv[3], atol(argv[4]), argv[5]);
    if (strcmp(cmd, "pingpong") == 0 && argc == 5)
        return pingpong(argv[2], argv[3], atol(argv[4]));
    if (strcmp(cmd, "bulk") == 0 && argc == 5)
        return bulk(argv[2], argv[3], atol(argv[4]));
    if (strcmp(cmd, "failover") == 0 && argc == 5)
        return failover(argv[2], argv[3], argv[4]);
    if (strcmp(cmd, "scale") == 0 && argc == 5)
        return scale(argv[2], argv[3], atoi(argv[4]));
    fprintf(stderr, "usage: see the comment at the top of bench.c\n");
    return 2;
}
