/* libresil micro-benchmarks: one program, one subcommand per measure.
 *
 * run.sh starts the servers plain and the clients with or without
 * LD_PRELOAD, inside its own network namespace, and turns the numbers each
 * client prints on stdout (one line, space-separated) into the table.
 *
 *   serve PORT close|echo|sink     a plain server on 0.0.0.0:PORT
 *   waitport PORT                  until 127.0.0.1:PORT accepts (2 s max)
 *   connect ADDR PORT TMO_MS K     K blocking connects, SO_SNDTIMEO TMO_MS:
 *                                  prints "ms:errno" per connect
 *   connrate ADDR PORT N           N connect+close: prints connects/s
 *   unmanaged N                    prints ns/call for pipe write+read,
 *                                  poll() on a readable pipe, UDP send+recv
 *   managed ADDR PORT N            on a connected TCP socket (managed when
 *                                  preloaded): ns/call for recv() answering
 *                                  EAGAIN, epoll_ctl ADD+DEL (per call)
 *   pingpong ADDR PORT N           N 1-byte round trips: prints RT/s
 *   bulk ADDR PORT MIB             MIB MiB in 64 KiB writes: prints MiB/s
 *
 * Errors go to stderr and exit non-zero: run.sh treats that as "could not
 * be measured".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

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

static int serve(const char *port, const char *mode)
{
    struct sockaddr_in sa = addr_of("0.0.0.0", port);
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
    void *(*fn)(void *) = NULL;

    if (strcmp(mode, "echo") == 0)
        fn = echo_conn;
    else if (strcmp(mode, "sink") == 0)
        fn = sink_conn;
    else if (strcmp(mode, "close") != 0) {
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

static int connrate(const char *ip, const char *port, int n)
{
    struct sockaddr_in sa = addr_of(ip, port);
    /* close with RST: no TIME_WAIT, so thousands of connects in a row do
     * not run out of ephemeral ports */
    struct linger lg = {1, 0};
    double t0 = now_s();

    for (int i = 0; i < n; i++) {
        int fd = dial(&sa);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    printf("%.0f\n", n / (now_s() - t0));
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
 * (redis' ae adds and deletes the fd for writing around every request). */
static int managed(const char *ip, const char *port, long n)
{
    struct sockaddr_in sa = addr_of(ip, port);
    struct epoll_event ev = {.events = EPOLLOUT};
    int fd = dial(&sa), ep = epoll_create1(0);
    double t0, recv_ns, ep_ns;
    char c;

    if (ep < 0)
        die("epoll_create1");
    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (recv(fd, &c, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN)
            die("recv: expected EAGAIN");
    recv_ns = (now_s() - t0) * 1e9 / (double)n;
    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) < 0)
            die("epoll_ctl");
    ep_ns = (now_s() - t0) * 1e9 / (2.0 * (double)n);
    printf("%.1f %.1f\n", recv_ns, ep_ns);
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
    if (strcmp(cmd, "connrate") == 0 && argc == 5)
        return connrate(argv[2], argv[3], atoi(argv[4]));
    if (strcmp(cmd, "unmanaged") == 0 && argc == 3)
        return unmanaged(atol(argv[2]));
    if (strcmp(cmd, "managed") == 0 && argc == 5)
        return managed(argv[2], argv[3], atol(argv[4]));
    if (strcmp(cmd, "pingpong") == 0 && argc == 5)
        return pingpong(argv[2], argv[3], atol(argv[4]));
    if (strcmp(cmd, "bulk") == 0 && argc == 5)
        return bulk(argv[2], argv[3], atol(argv[4]));
    fprintf(stderr, "usage: see the comment at the top of bench.c\n");
    return 2;
}
