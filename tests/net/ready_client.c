/* A client of tests/net/stream.py that waits for input through one of
 * the readiness calls (tests/net/session.sh, section readiness), the way
 * an event loop does, on a blocking socket (as socat has it):
 *
 *   ready_client HOST PORT MODE N GO
 *     MODE poll | ppoll | select | pselect | epoll | epollet | epolloneshot
 *          | epolllate
 *     (epolloneshot: the registration armed again after each event;
 *     epolllate: poll for step 1, the fd put in an epoll set only in
 *     step 4, after the resume)
 *
 *  1. connect; the server sends nothing yet: the socket must not be
 *     readable for 400 ms (a session's WELCOME is not the program's);
 *  2. ask for N bytes of the stream ("hold N"), print "asked", and wait
 *     for the file GO to exist (the test breaks the path meanwhile, then
 *     creates it);
 *  3. write one byte (the server reads it and sends nothing more: with
 *     the path broken, this byte in flight is what gets the session
 *     resumed, while the N bytes sit unread in the receive queue);
 *  4. sleep 1.5 s (a resume is over by then), then wait for input (5 s at
 *     most) and read the N bytes with non-blocking reads, waiting again
 *     whenever one says EAGAIN; verify them.
 *
 * Prints "ok MODE: ... ready after T ms" or "FAIL MODE: why" (exit 1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *mode;
static int ep = -1;

static int epoll_set(int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    if (strcmp(mode, "epollet") == 0)
        ev.events |= EPOLLET;
    if (strcmp(mode, "epolloneshot") == 0)
        ev.events |= EPOLLONESHOT;
    ep = epoll_create1(0);
    return ep < 0 ? -1 : epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(const char *what)
{
    printf("FAIL %s: %s (%s)\n", mode, what,
           errno ? strerrorname_np(errno) : "-");
    return 1;
}

/* Wait up to ms for fd to be readable: 1 readable, 0 not, -1 error. */
static int wait_in(int fd, int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    struct epoll_event ev;
    fd_set r;
    bool polled = true; /* poll or ppoll: p.revents says what */
    int rc;

    FD_ZERO(&r);
    FD_SET(fd, &r);
    if (strcmp(mode, "poll") == 0 || (ep < 0 && strcmp(mode, "epolllate") == 0))
        rc = poll(&p, 1, ms);
    else if (strcmp(mode, "ppoll") == 0)
        rc = ppoll(&p, 1, &ts, NULL);
    else if ((polled = false), strcmp(mode, "select") == 0)
        rc = select(fd + 1, &r, NULL, NULL, &tv);
    else if (strcmp(mode, "pselect") == 0)
        rc = pselect(fd + 1, &r, NULL, NULL, &ts, NULL);
    else {
        rc = epoll_wait(ep, &ev, 1, ms);
        if (rc == 1 && strcmp(mode, "epolloneshot") == 0) {
            /* the program's own re-arm, as a worker pool does */
            ev.events = EPOLLIN | EPOLLONESHOT;
            ev.data.u64 = 42;
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
    }
    if (rc > 0 && polled && !(p.revents & POLLIN))
        return -1; /* an error or hang-up without data */
    return rc < 0 ? -1 : rc > 0;
}

int main(int argc, char **argv)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    char line[64];
    uint8_t *buf;
    size_t n, got = 0;
    int64_t t0, ready;
    int fd;

    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT MODE N GO\n", argv[0]);
        return 64;
    }
    mode = argv[3];
    n = (size_t)atol(argv[4]);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
        return 65;
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        return fail("connect");
    if (strncmp(mode, "epoll", 5) == 0 && strcmp(mode, "epolllate") != 0 &&
        epoll_set(fd) < 0)
        return fail("epoll");
    errno = 0;
    if (wait_in(fd, 400) != 0)
        return fail("readable before the server sent a byte");
    snprintf(line, sizeof(line), "hold %zu\n", n);
    if (write(fd, line, strlen(line)) != (ssize_t)strlen(line))
        return fail("request");
    printf("asked\n");
    for (int i = 0; access(argv[5], F_OK) != 0; i++) {
        if (i == 500)
            return fail("no go within 10 s");
        usleep(20000);
    }
    if (write(fd, "x", 1) != 1)
        return fail("write");
    sleep(1);
    usleep(500000);
    buf = malloc(n);
    if (strcmp(mode, "epolllate") == 0 && epoll_set(fd) < 0)
        return fail("epoll");
    t0 = now_ms();
    ready = -1;
    while (got < n) {
        ssize_t k;
        int w;
        errno = 0;
        w = wait_in(fd, 5000);
        if (w <= 0)
            return fail(w == 0 ? "not readable within 5 s" : "wait failed");
        if (ready < 0)
            ready = now_ms() - t0;
        k = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (k < 0 && errno == EAGAIN)
            continue;
        if (k <= 0)
            return fail(k == 0 ? "EOF" : "recv");
        got += (size_t)k;
    }
    /* stream.py's stream: 64-bit little-endian counters */
    for (size_t i = 0; i < n; i++)
        if (buf[i] != (uint8_t)(i % 8 == 0 ? (i / 8) & 0xff
                                           : i % 8 == 1 ? (i / 8) >> 8 : 0)) {
            printf("FAIL %s: byte %zu differs\n", mode, i);
            return 1;
        }
    printf("ok %s: %zu bytes, readable after %lld ms\n", mode, n,
           (long long)ready);
    close(fd);
    return 0;
}
