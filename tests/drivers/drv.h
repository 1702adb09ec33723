/* Shared helpers for the preload drivers (the .c files next to it).
 *
 * A driver is one program with named subtests: `driver NAME` runs one and
 * exits 0 only when every CHECK held, printing each failed one to stderr.
 * run.sh runs every subtest as its own process (the per-process address
 * health cache would otherwise let one subtest change the next one's race
 * order) inside a network namespace where:
 *   DRV_LIVE   127.0.0.1    listeners live here
 *   DRV_DEAD   127.0.0.66   SYNs silently dropped (nft output rule)
 *   DRV_DEAD2  127.0.0.67   dropped too (two-dead group)
 *   DRV_DEAD3  127.0.0.68   dropped too
 *   DRV_REF1/2 127.0.0.2/3  local, nothing listens: connect is refused
 *   DRV_LIVE6  ::1, DRV_DEAD6 fd00:66::1 (local on lo, dropped)
 * and RESIL_ALTERNATES groups them as run.sh says (DRV_ALT).
 */
#ifndef DRV_H
#define DRV_H

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DRV_LIVE "127.0.0.1"
#define DRV_DEAD "127.0.0.66"
#define DRV_DEAD2 "127.0.0.67"
#define DRV_DEAD3 "127.0.0.68"
#define DRV_REF1 "127.0.0.2"
#define DRV_REF2 "127.0.0.3"
#define DRV_LIVE6 "::1"
#define DRV_DEAD6 "fd00:66::1"

__attribute__((unused)) static int drv_failures;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            int e_ = errno;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, " (errno %s)\n", strerrorname_np(e_) ?: "0");     \
            drv_failures++;                                                    \
        }                                                                      \
    } while (0)

/* A CHECK whose failure makes the rest of the subtest meaningless. */
#define REQUIRE(cond, ...)                                                     \
    do {                                                                       \
        int f_ = drv_failures;                                                 \
        CHECK(cond, __VA_ARGS__);                                              \
        if (drv_failures != f_)                                                \
            return;                                                            \
    } while (0)

/* CHECK that the int socket option lvl/name of fd reads want. */
#define OPT_IS(fd, lvl, name, want)                                            \
    do {                                                                       \
        int v_ = -1;                                                           \
        socklen_t l_ = sizeof(v_);                                             \
        CHECK(getsockopt((fd), (lvl), (name), &v_, &l_) == 0 && v_ == (want),  \
              #name " is %d, want %d", v_, (int)(want));                       \
    } while (0)

static inline const char *ename(int e)
{
    return e ? (strerrorname_np(e) ?: "?") : "0";
}

static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline socklen_t mk_sa(const char *ip, int port,
                              struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
            abort();
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
        abort();
    return sizeof(*s4);
}

static inline int fam_of(const char *ip)
{
    return strchr(ip, ':') ? AF_INET6 : AF_INET;
}

/* "ip:port" of a sockaddr into buf (ip alone into ipbuf when not NULL). */
static inline const char *sa_str(const struct sockaddr_storage *ss, char *buf,
                                 size_t len, char *ipbuf, int *port)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int p = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        p = ntohs(s4->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        p = ntohs(s6->sin6_port);
    }
    snprintf(buf, len, "%s:%d", ip, p);
    if (ipbuf)
        strcpy(ipbuf, ip);
    if (port)
        *port = p;
    return buf;
}

/* The peer (or local) address of fd as "ip:port". */
static inline const char *name_of(int fd, bool peer, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if ((peer ? getpeername(fd, (void *)&ss, &l)
              : getsockname(fd, (void *)&ss, &l)) < 0) {
        snprintf(buf, len, "(error %s)", ename(errno));
        return buf;
    }
    return sa_str(&ss, buf, len, NULL, NULL);
}

static inline int sockerr(int fd)
{
    int e = -1;
    socklen_t l = sizeof(e);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
        return -errno;
    return e;
}

static inline int poll1(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, timeout_ms);
    return rc <= 0 ? rc : p.revents;
}

/* ---- echo server: a thread accepting on ip:0, one thread per client,
 * echoing every byte back until EOF ---- */

struct echo_srv {
    int lfd, port;
};

__attribute__((unused)) static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        ssize_t o = 0;
        while (o < n) {
            ssize_t w = write(fd, buf + o, (size_t)(n - o));
            if (w <= 0)
                goto out;
            o += w;
        }
    }
out:
    close(fd);
    return NULL;
}

__attribute__((unused)) static void *echo_accept(void *arg)
{
    struct echo_srv *e = arg;
    for (;;) {
        int fd = accept(e->lfd, NULL, NULL);
        pthread_t t;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        if (pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
}

/* Listen on ip, port 0, and echo. Aborts when that fails (test bed bug). */
static inline int echo_start(const char *ip)
{
    struct echo_srv *e = calloc(1, sizeof(*e));
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(ip, 0, &ss);
    int one = 1;
    pthread_t t;

    e->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(e->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (e->lfd < 0 || bind(e->lfd, (void *)&ss, l) < 0 ||
        listen(e->lfd, 128) < 0 || getsockname(e->lfd, (void *)&ss, &l) < 0) {
        fprintf(stderr, "echo_start(%s): %s\n", ip, strerror(errno));
        exit(2);
    }
    sa_str(&ss, (char[64]){0}, 64, NULL, &e->port);
    if (pthread_create(&t, NULL, echo_accept, e) != 0)
        exit(2);
    pthread_detach(t);
    return e->port;
}

/* A port on which nothing listens (bound then closed). */
static inline int free_port(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, 0, &ss);
    int port = 0, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(fd, (void *)&ss, l) == 0 && getsockname(fd, (void *)&ss, &l) == 0)
        sa_str(&ss, (char[64]){0}, 64, NULL, &port);
    close(fd);
    return port;
}

/* Write msg, read the same bytes back within timeout_ms (fd blocking or
 * not). Returns true when they match. */
static inline bool echo_roundtrip(int fd, const char *msg, int timeout_ms)
{
    size_t n = strlen(msg), got = 0, put = 0;
    char buf[4096];
    double end = now_ms() + timeout_ms;

    if (n > sizeof(buf))
        return false;
    while (put < n) {
        if (poll1(fd, POLLOUT, (int)(end - now_ms())) <= 0)
            return false;
        ssize_t w = write(fd, msg + put, n - put);
        if (w < 0 && errno == EAGAIN)
            continue;
        if (w <= 0) {
            fprintf(stderr, "  echo write: %s\n", ename(errno));
            return false;
        }
        put += (size_t)w;
    }
    while (got < n) {
        int left = (int)(end - now_ms());
        if (left <= 0 || poll1(fd, POLLIN, left) <= 0) {
            fprintf(stderr, "  echo: timeout after %zu/%zu bytes\n", got, n);
            return false;
        }
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EAGAIN)
            continue;
        if (r <= 0) {
            fprintf(stderr, "  echo read: %zd %s\n", r, ename(errno));
            return false;
        }
        got += (size_t)r;
    }
    if (memcmp(buf, msg, n) != 0) {
        fprintf(stderr, "  echo: data differ\n");
        return false;
    }
    return true;
}

/* ---- subtest dispatch ---- */

struct drv_test {
    const char *name;
    void (*fn)(void);
};

__attribute__((unused)) static int drv_find_resil(struct dl_phdr_info *info,
                                                  size_t size, void *arg)
{
    (void)size;
    (void)arg;
    return info->dlpi_name && strstr(info->dlpi_name, "libresil") != NULL;
}

static inline int drv_main(int argc, char **argv, const struct drv_test *t,
                           size_t n)
{
    const char *want = getenv("DRV_PRELOADED");
    setvbuf(stdout, NULL, _IONBF, 0);
    /* run.sh says whether libresil must be in this process: a test that
     * passes because the preload silently failed proves nothing */
    if (want && argc == 2 && strcmp(argv[1], "list") != 0 &&
        (dl_iterate_phdr(drv_find_resil, NULL) != 0) != (want[0] == '1')) {
        fprintf(stderr, "FAIL: libresil %s loaded, expected %s\n",
                want[0] == '1' ? "not" : "is", want[0] == '1' ? "it" : "not");
        return 1;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s SUBTEST|list\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(argv[1], "list") == 0)
            printf("%s\n", t[i].name);
    if (strcmp(argv[1], "list") == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(argv[1], t[i].name) == 0) {
            t[i].fn();
            if (drv_failures)
                fprintf(stderr, "%s %s: %d check(s) failed\n", argv[0],
                        argv[1], drv_failures);
            return drv_failures ? 1 : 0;
        }
    fprintf(stderr, "%s: no subtest %s\n", argv[0], argv[1]);
    return 2;
}

#define DRV_MAIN(...)                                                          \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        static const struct drv_test t_[] = {__VA_ARGS__};                     \
        return drv_main(argc, argv, t_, sizeof(t_) / sizeof(t_[0]));           \
    }

#endif
