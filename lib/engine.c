#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
/* include/net/tcp_states.h; netinet/tcp.h clashes with linux/tcp.h */
#define TCP_ESTABLISHED 1
#define TCP_CLOSE 7
#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "names.h"
#include "race.h"
#include "sys.h"

#define MS 1000000ull

struct resil_race_ctx {
    struct resil_race_ctx *next;
    int refs;                  /* engine list + waiter + DNS queries */
    struct resil_sock *s;      /* a reference */
    struct resil_race r;
    int fds[RESIL_RACE_MAX];   /* attempt sockets, -1 when none */
    uint16_t port;
    int donefd;                /* eventfd: written once when finished */
    bool finished, cancelled, rerace;
    int result;                /* 0 or errno */
    uint64_t start_ns;
    char name[RESIL_NAME_LEN];
    /* RFC 8305 section 3: A answers wait for AAAA up to the resolution
     * delay. */
    struct resil_ip held[RESIL_NAME_ADDRS];
    int n_held;
    bool aaaa_pending;
    uint64_t held_until;
};

static struct {
    pthread_mutex_t mu;        /* everything below */
    const struct resil_config *cfg;
    bool running;
    unsigned gen;              /* bumped per engine thread started */
    pid_t pid;
    int epfd, wakefd;
    struct resil_race_ctx *races;
    struct resil_sock *mon;    /* monitored sockets, linked by mon_next */
    ares_channel ch;
    bool ares_ok;
    int park_lfd[2], park_filler[2]; /* [0] IPv4, [1] IPv6 */
    struct sockaddr_storage park_sa[2];
    socklen_t park_len[2];
} E = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .epfd = -1,
       .wakefd = -1,
       .park_lfd = {-1, -1},
       .park_filler = {-1, -1}};

static struct resil_config default_cfg;
atomic_int resil_races_active;

static int engine_start(void);

uint64_t resil_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void resil_engine_configure(const struct resil_config *cfg)
{
    E.cfg = cfg;
    resil_health_set_ttl((uint64_t)cfg->health_ttl_ms * MS);
}

const struct resil_config *resil_engine_config(void)
{
    if (E.cfg == NULL) {
        resil_config_defaults(&default_cfg);
        E.cfg = &default_cfg;
    }
    return E.cfg;
}

static void wake_engine(void)
{
    uint64_t one = 1;
    if (E.wakefd >= 0)
        (void)!resil_sys.write(E.wakefd, &one, sizeof(one));
}

/* ---- c-ares gets the real socket functions (c-ares 1.18 API) ---- */

static ares_socket_t a_socket(int d, int t, int p, void *u)
{
    (void)u;
    int fd = resil_sys.socket(d, t | SOCK_CLOEXEC, p);
    return fd < 0 ? ARES_SOCKET_BAD : resil_fd_high(fd);
}
static int a_close(ares_socket_t fd, void *u)
{
    (void)u;
    return resil_sys.close(fd);
}
static int a_connect(ares_socket_t fd, const struct sockaddr *sa,
                     ares_socklen_t len, void *u)
{
    (void)u;
    return resil_sys.connect(fd, sa, len);
}
static ares_ssize_t a_recvfrom(ares_socket_t fd, void *b, size_t n, int fl,
                               struct sockaddr *sa, ares_socklen_t *len,
                               void *u)
{
    (void)u;
    return resil_sys.recvfrom(fd, b, n, fl, sa, len);
}
static ares_ssize_t a_sendv(ares_socket_t fd, const struct iovec *v, int n,
                            void *u)
{
    struct msghdr m = {.msg_iov = (struct iovec *)v, .msg_iovlen = (size_t)n};
    (void)u;
    return resil_sys.sendmsg(fd, &m, MSG_NOSIGNAL);
}
static const struct ares_socket_functions ares_funcs = {
    a_socket, a_close, a_connect, a_recvfrom, a_sendv};

static void ares_setup(void)
{
    struct ares_options o;
    int mask = ARES_OPT_LOOKUPS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    int rc;

    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return;
    memset(&o, 0, sizeof(o));
    /* DNS before the hosts file: the point is to learn addresses the
     * program's own resolver (hosts first) may not have given it. */
    o.lookups = (char *)"bf";
    o.timeout = 1000;
    o.tries = 2;
    rc = ares_init_options(&E.ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        rwarn("c-ares init failed: %s; racing uses the program's own "
              "addresses only", ares_strerror(rc));
        return;
    }
    ares_set_socket_functions(E.ch, &ares_funcs, NULL);
    E.ares_ok = true;
}

/* ---- parking: keeps a non-blocking app socket in SYN_SENT ----
 * The app's socket connects to our own loopback listener whose one-slot
 * accept queue is already full, so the SYN is dropped: the socket is not
 * writable and SO_ERROR reads 0, exactly like a connect in progress, until
 * the winner is swapped onto the fd (pitfalls note 3.5). */

static int park_setup(int v6)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int lfd = -1, cfd = -1;

    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s4);
    }
    lfd = resil_sys.socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        goto fail;
    lfd = resil_fd_high(lfd);
    if (resil_sys.bind(lfd, (struct sockaddr *)&ss, len) < 0 ||
        resil_sys.listen(lfd, 0) < 0 ||
        resil_sys.getsockname(lfd, (struct sockaddr *)&ss, &len) < 0)
        goto fail;
    cfd = resil_sys.socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0)
        goto fail;
    cfd = resil_fd_high(cfd);
    /* blocking: completes at once, filling the only queue slot */
    if (resil_sys.connect(cfd, (struct sockaddr *)&ss, len) < 0)
        goto fail;
    E.park_lfd[v6] = lfd;
    E.park_filler[v6] = cfd;
    E.park_sa[v6] = ss;
    E.park_len[v6] = len;
    return 0;
fail:
    rdebug("parking listener (%s) unavailable: %s", v6 ? "IPv6" : "IPv4",
           strerror(errno));
    if (lfd >= 0)
        resil_sys.close(lfd);
    if (cfd >= 0)
        resil_sys.close(cfd);
    return -1;
}

/* Undo park_fd(): disconnect fd from the parking listener (a SYN_SENT
 * socket returns to unconnected), for when no race follows. */
static void unpark(int fd)
{
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    resil_sys.connect(fd, &unspec, sizeof(unspec));
}

/* Start a connect of fd to the parking listener. Caller holds E.mu.
 * Returns 0 when fd is now parked (SYN_SENT). */
static int park_fd(int fd, int family, bool v6only)
{
    struct sockaddr_storage sa;
    socklen_t len;
    int fl, rc, v6 = family == AF_INET6;

    if (E.park_lfd[v6] < 0 && park_setup(v6) < 0) {
        if (!v6 || v6only)
            return -1;
        v6 = 0; /* an AF_INET6 socket may park on 127.0.0.1, v4-mapped */
        if (E.park_lfd[0] < 0 && park_setup(0) < 0)
            return -1;
    }
    sa = E.park_sa[v6];
    len = E.park_len[v6];
    if (family == AF_INET6 && v6 == 0) {
        struct resil_ip ip;
        uint16_t port;
        resil_ip_from_sa((struct sockaddr *)&sa, len, &ip, &port);
        len = resil_ip_to_sa(&ip, port, AF_INET6, &sa);
    }
    fl = resil_sys.fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    if (!(fl & O_NONBLOCK))
        resil_sys.fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    rc = resil_sys.connect(fd, (struct sockaddr *)&sa, len);
    int e = errno;
    if (!(fl & O_NONBLOCK))
        resil_sys.fcntl(fd, F_SETFL, fl);
    if (rc == 0 || e != EINPROGRESS) {
        rdebug("fd %d: parking failed: %s", fd,
               rc == 0 ? "connected at once" : strerror(e));
        return -1;
    }
    return 0;
}

/* ---- the swap: put newfd on s->fd ----
 * DEL from every epoll set the program registered fd in, dup3 (keeping
 * FD_CLOEXEC and O_NONBLOCK as the program has them), ADD back with the
 * saved events, then shut the old socket down so that threads sleeping in
 * poll/select on it wake and re-read the fd table (pitfalls 2.3-2.5).
 * Caller holds s->mu. Consumes newfd. */
static int swap_in(struct resil_sock *s, int newfd)
{
    int fd = s->fd, old, fdfl, fl;

    if (s->closed) {
        resil_sys.close(newfd);
        return -1;
    }
    fdfl = resil_sys.fcntl(fd, F_GETFD);
    fl = resil_sys.fcntl(fd, F_GETFL);
    if (fdfl < 0 || fl < 0) {
        resil_sys.close(newfd);
        return -1;
    }
    old = resil_sys.fcntl(fd, F_DUPFD_CLOEXEC, RESIL_HIGH_FD);
    resil_sock_ep_lock(s);
    for (struct resil_epreg **pp = &s->ep, *e; (e = *pp) != NULL;) {
        if (resil_sys.epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL) == 0) {
            pp = &e->next;
            continue;
        }
        /* not registered there any more: the program closed that epoll
         * set, and its number may now name another one, where fd must
         * never be added */
        *pp = e->next;
        free(e);
    }
    resil_sys.fcntl(newfd, F_SETFL,
                    (resil_sys.fcntl(newfd, F_GETFL) & ~O_NONBLOCK) |
                        (fl & (O_NONBLOCK | O_ASYNC)));
    if (resil_sys.dup3(newfd, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        rwarn("fd %d: dup3 failed: %s", fd, strerror(errno));
        for (struct resil_epreg *e = s->ep; e; e = e->next)
            resil_sys.epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &e->ev);
        resil_sock_ep_unlock(s);
        resil_sys.close(newfd);
        if (old >= 0)
            resil_sys.close(old);
        return -1;
    }
    resil_sys.close(newfd);
    for (struct resil_epreg *e = s->ep; e; e = e->next) {
        struct epoll_event ev = e->ev;
        if (resil_sys.epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            rdebug("fd %d: epoll %d re-add: %s", fd, e->epfd,
                   strerror(errno));
    }
    resil_sock_ep_unlock(s);
    if (old >= 0) {
        resil_sys.shutdown(old, SHUT_RDWR);
        resil_sys.close(old);
    }
    return 0;
}

/* ---- dead-path detection settings ---- */

void resil_engine_tune(struct resil_sock *s, int fd)
{
    const struct resil_config *cfg = resil_engine_config();
    int on = 1, idle, intvl, cnt = 2;

    if (s->app_keepalive)
        return;
    /* keepalive finds a dead idle path in about fail_timeout: half of it
     * idle, then two unanswered probes */
    idle = cfg->fail_timeout_ms / 2000;
    if (idle < 1)
        idle = 1;
    intvl = (cfg->fail_timeout_ms / 1000 - idle) / cnt;
    if (intvl < 1)
        intvl = 1;
    resil_sys.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    resil_sys.setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    resil_sys.setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl,
                         sizeof(intvl));
    resil_sys.setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/* ---- races ---- */

static void ctx_unref(struct resil_race_ctx *c) /* E.mu held */
{
    if (--c->refs > 0)
        return;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        if (c->fds[i] >= 0)
            resil_sys.close(c->fds[i]);
    if (c->donefd >= 0)
        resil_sys.close(c->donefd);
    resil_sock_unref(c->s);
    free(c);
}

static void list_remove(struct resil_race_ctx *c) /* E.mu held */
{
    for (struct resil_race_ctx **pp = &E.races; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            c->next = NULL;
            ctx_unref(c);
            return;
        }
}

static void close_attempt(struct resil_race_ctx *c, int i)
{
    if (c->fds[i] >= 0) {
        resil_sys.epoll_ctl(E.epfd, EPOLL_CTL_DEL, c->fds[i], NULL);
        resil_sys.close(c->fds[i]);
        c->fds[i] = -1;
    }
}

static void format_tried(struct resil_race_ctx *c, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < c->r.started && o + RESIL_ADDRSTRLEN + 4 < len; i++) {
        char a[RESIL_ADDRSTRLEN];
        resil_ip_format(&c->r.att[i].ip, -1, a, sizeof(a));
        o += (size_t)snprintf(buf + o, len - o, "%s\"%s\"", i ? "," : "", a);
    }
}

/* The race is decided. E.mu held; takes s->mu for the swap. */
static void finish(struct resil_race_ctx *c, int winner_idx, uint64_t now)
{
    struct resil_sock *s = c->s;
    char tried[1024], a[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN];
    char name[2 * RESIL_NAME_LEN];
    int err = 0, fd = -1;

    for (int i = 0; i < c->r.n; i++) {
        if (i == winner_idx)
            continue;
        if (c->r.att[i].state == RESIL_ATT_FAILED)
            resil_health_fail(&c->r.att[i].ip, now);
        close_attempt(c, i);
    }
    if (winner_idx >= 0) {
        struct resil_attempt *w = &c->r.att[winner_idx];
        resil_health_win(&w->ip, now - w->started_ns, now);
        fd = c->fds[winner_idx];
        c->fds[winner_idx] = -1;
        resil_sys.epoll_ctl(E.epfd, EPOLL_CTL_DEL, fd, NULL);
    } else {
        err = resil_race_errno(&c->r);
        /* a fresh unconnected socket polls writable (POLLOUT|POLLHUP), so
         * waiters wake; SO_ERROR then reports race_errno (shim) */
        fd = resil_sys.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        if (fd >= 0)
            resil_sys.close(fd);
    } else if (fd >= 0 && swap_in(s, fd) == 0) {
        if (winner_idx >= 0) {
            s->state = RS_CONNECTED;
            s->cur_ip = c->r.att[winner_idx].ip;
            s->connected_ns = now;
        } else {
            s->state = RS_FAILED;
            s->race_errno = err;
            s->error_reported = false;
        }
    } else {
        s->state = RS_FAILED;
        s->race_errno = err ? err : ECONNABORTED;
        s->error_reported = false;
        err = s->race_errno;
        winner_idx = -1;
    }
    s->race = NULL;
    pthread_mutex_unlock(&s->mu);
    c->finished = true;
    atomic_fetch_sub(&resil_races_active, 1);
    c->result = err;
    format_tried(c, tried, sizeof(tried));
    resil_ip_format(&s->peer_ip, s->peer_port, dst, sizeof(dst));
    resil_json_str(c->name, name, sizeof(name));
    if (winner_idx >= 0) {
        resil_ip_format(&c->r.att[winner_idx].ip, -1, a, sizeof(a));
        rinfo("fd %d: %s %s:%u won after %.1f ms (%d attempts)", s->fd,
              c->rerace ? "re-race" : "race", a, c->port,
              (double)(now - c->start_ns) / 1e6, c->r.started);
        resil_event(c->rerace ? "rerace" : "connect", s->fd,
                    "\"dst\":\"%s\",\"name\":\"%s\",\"port\":%u,"
                    "\"tried\":[%s],\"winner\":\"%s\",\"ms\":%.3f",
                    dst, name, c->port, tried, a,
                    (double)(now - c->start_ns) / 1e6);
    } else {
        rinfo("fd %d: every address failed; reporting %s", s->fd,
              strerror(err));
        resil_event("connect_failed", s->fd,
                    "\"dst\":\"%s\",\"name\":\"%s\",\"port\":%u,"
                    "\"tried\":[%s],\"errno\":\"%s\",\"ms\":%.3f",
                    dst, name, c->port, tried, strerrorname_np(err) ?: "?",
                    (double)(now - c->start_ns) / 1e6);
    }
    uint64_t one = 1;
    (void)!resil_sys.write(c->donefd, &one, sizeof(one));
}

static void start_attempt(struct resil_race_ctx *c, int i, uint64_t now)
{
    struct resil_sock *s = c->s;
    struct sockaddr_storage sa;
    socklen_t len;
    int fd;

    len = resil_ip_to_sa(&c->r.att[i].ip, c->port, s->family, &sa);
    fd = resil_sys.socket(s->family,
                          SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || len == 0) {
        resil_race_failed(&c->r, i, fd < 0 ? errno : EAFNOSUPPORT, now);
        if (fd >= 0)
            resil_sys.close(fd);
        return;
    }
    fd = resil_fd_high(fd);
    pthread_mutex_lock(&s->mu);
    for (struct resil_sockopt *o = s->opts; o; o = o->next)
        if (resil_sys.setsockopt(fd, o->level, o->name, o->val, o->len) < 0)
            rdebug("fd %d: replaying option %d/%d: %s", s->fd, o->level,
                   o->name, strerror(errno));
    if (s->bound &&
        resil_sys.bind(fd, (struct sockaddr *)&s->bind_sa, s->bind_len) < 0) {
        int e = errno;
        pthread_mutex_unlock(&s->mu);
        resil_sys.close(fd);
        resil_race_failed(&c->r, i, e, now);
        return;
    }
    resil_engine_tune(s, fd);
    pthread_mutex_unlock(&s->mu);
    c->fds[i] = fd;
    if (resil_sys.connect(fd, (struct sockaddr *)&sa, len) == 0) {
        resil_race_won(&c->r, i, now);
        return;
    }
    if (errno != EINPROGRESS) {
        int e = errno;
        close_attempt(c, i);
        resil_race_failed(&c->r, i, e, now);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)fd};
    resil_sys.epoll_ctl(E.epfd, EPOLL_CTL_ADD, fd, &ev);
    if (resil_log_level >= RESIL_LOG_DEBUG) {
        char a[RESIL_ADDRSTRLEN];
        rdebug("fd %d: attempt %d to %s", s->fd, i,
               resil_ip_format(&c->r.att[i].ip, c->port, a, sizeof(a)));
    }
}

/* Advance one race; returns its next wake time. E.mu held. */
static uint64_t step(struct resil_race_ctx *c, uint64_t now)
{
    uint64_t wake = UINT64_MAX, w;
    int i;

    if (c->finished || c->cancelled)
        return UINT64_MAX;
    if (c->n_held && (!c->aaaa_pending || now >= c->held_until)) {
        for (int k = 0; k < c->n_held; k++)
            resil_race_add(&c->r, &c->held[k], now);
        c->n_held = 0;
    }
    if (c->n_held)
        wake = c->held_until;
    while (c->r.winner < 0 && (i = resil_race_next(&c->r, now, &w)) >= 0)
        start_attempt(c, i, now);
    if (c->r.winner < 0 && w < wake)
        wake = w;
    if (resil_race_finished(&c->r) && c->n_held == 0)
        finish(c, c->r.winner, now);
    return c->finished ? UINT64_MAX : wake;
}

static void attempt_event(int fd, uint64_t now)
{
    for (struct resil_race_ctx *c = E.races; c; c = c->next)
        for (int i = 0; i < c->r.n; i++)
            if (c->fds[i] == fd) {
                int err = 0;
                socklen_t l = sizeof(err);
                resil_sys.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err == 0)
                    resil_race_won(&c->r, i, now);
                else {
                    close_attempt(c, i);
                    resil_race_failed(&c->r, i, err, now);
                }
                return;
            }
    resil_sys.epoll_ctl(E.epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void dns_answer(struct resil_race_ctx *c, int family, int status,
                       struct hostent *h)
{
    struct resil_ip ips[RESIL_NAME_ADDRS];
    int n = 0;
    uint64_t now = resil_now_ns();

    c->r.more_coming--;
    if (status == ARES_SUCCESS && h) {
        for (char **p = h->h_addr_list; *p && n < RESIL_NAME_ADDRS; p++) {
            memset(&ips[n], 0, sizeof(ips[n]));
            ips[n].family = (sa_family_t)h->h_addrtype;
            memcpy(&ips[n].u, *p, h->h_addrtype == AF_INET ? 4 : 16);
            n++;
        }
    }
    if (family == AF_INET6)
        c->aaaa_pending = false;
    if (n)
        resil_names_dns(c->name, ips, n, now);
    if (!c->finished) {
        for (int i = 0; i < n; i++) {
            if (ips[i].family == AF_INET && c->aaaa_pending &&
                c->n_held < RESIL_NAME_ADDRS) {
                c->held[c->n_held++] = ips[i];
                c->held_until = now + (uint64_t)E.cfg->resolution_delay_ms * MS;
            } else {
                resil_race_add(&c->r, &ips[i], now);
            }
        }
        if (n)
            rdebug("fd %d: DNS gave %d %s address(es) for %s", c->s->fd, n,
                   family == AF_INET6 ? "IPv6" : "IPv4", c->name);
    }
    if (status != ARES_SUCCESS || h == NULL)
        rdebug("DNS lookup of %s: %s", c->name, ares_strerror(status));
    ctx_unref(c);
}

static void dns_cb6(void *arg, int status, int timeouts, struct hostent *h)
{
    (void)timeouts;
    dns_answer(arg, AF_INET6, status, h);
}

static void dns_cb4(void *arg, int status, int timeouts, struct hostent *h)
{
    (void)timeouts;
    dns_answer(arg, AF_INET, status, h);
}

static void dns_start(struct resil_race_ctx *c)
{
    if (!E.ares_ok || c->name[0] == '\0' || !E.cfg->dns)
        return;
    /* answers younger than dns_refresh_ms are in the names cache already
     * (gather() used them): a busy client must not query per connect */
    if (!resil_names_dns_due(c->name, resil_now_ns(),
                             (uint64_t)E.cfg->dns_refresh_ms * MS))
        return;
    /* RFC 8305 section 3: AAAA first, then A, both in flight at once */
    if (c->s->family == AF_INET6) {
        c->refs++;
        c->r.more_coming++;
        c->aaaa_pending = true;
        ares_gethostbyname(E.ch, c->name, AF_INET6, dns_cb6, c);
    }
    if (c->s->family == AF_INET || !c->r.v6only) {
        c->refs++;
        c->r.more_coming++;
        ares_gethostbyname(E.ch, c->name, AF_INET, dns_cb4, c);
    }
}

/* ---- monitor ---- */

/* Take *pp off the monitor list, dropping the list's reference. */
static void monitor_unlink(struct resil_sock **pp) /* E.mu held */
{
    struct resil_sock *s = *pp;
    *pp = s->mon_next;
    s->mon_next = NULL;
    s->on_monitor = false;
    resil_sock_unref(s);
}

static void monitor_remove(struct resil_sock *s) /* E.mu held */
{
    for (struct resil_sock **pp = &E.mon; *pp; pp = &(*pp)->mon_next)
        if (*pp == s) {
            monitor_unlink(pp);
            return;
        }
}

void resil_engine_watch(struct resil_sock *s)
{
    if (atomic_exchange(&s->dirty, true))
        return;
    pthread_mutex_lock(&E.mu);
    bool added = false;
    if (!s->on_monitor && !s->closed) {
        resil_sock_ref(s);
        s->on_monitor = true;
        s->mon_next = E.mon;
        E.mon = s;
        added = true;
        /* a process that never raced has no engine yet */
        if (engine_start() < 0)
            rwarn("fd %d: no engine thread; dead paths are left to TCP",
                  s->fd);
    }
    pthread_mutex_unlock(&E.mu);
    /* the engine may sleep in poll(-1): it must start ticking */
    if (added)
        wake_engine();
}

static void set_user_timeout(int fd, unsigned ms)
{
    resil_sys.setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
}

/* Check one written-to socket. Returns false when it needs no more
 * watching. E.mu held. */
static bool monitor_one(struct resil_sock *s, uint64_t now)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int outq = 0;

    if (s->closed)
        return false;
    memset(&ti, 0, sizeof(ti));
    if (resil_sys.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        ti.tcpi_state != TCP_ESTABLISHED) {
        /* not ours to watch now; the next write puts it back */
        atomic_store(&s->dirty, false);
        return false;
    }
    resil_sys.ioctl(s->fd, SIOCOUTQ, &outq);
    if (ti.tcpi_unacked == 0 && outq == 0) {
        atomic_store(&s->dirty, false);
        if (s->user_timeout_armed) {
            set_user_timeout(s->fd, 0);
            s->user_timeout_armed = false;
        }
        return false;
    }
    /* A zero window is not a failure: the peer's ACKs to window probes keep
     * last_ack_recv fresh and nothing is unacknowledged. */
    if (ti.tcpi_unacked > 0 && ti.tcpi_last_ack_recv >= (unsigned)E.cfg->stall_ms) {
        if (!s->user_timeout_armed && !s->app_user_timeout) {
            char a[RESIL_ADDRSTRLEN];
            resil_ip_format(&s->cur_ip, s->peer_port, a, sizeof(a));
            /* The kernel aborts the connection with ETIMEDOUT at the
             * user timeout, counted from the first unanswered segment;
             * since 4.19 it clamps the RTO timer to that deadline. */
            set_user_timeout(s->fd, (unsigned)E.cfg->fail_timeout_ms);
            s->user_timeout_armed = true;
            resil_health_fail(&s->cur_ip, now);
            rinfo("fd %d: path to %s stalled (%u bytes unacked, no ACK for "
                  "%u ms); failing within %d ms", s->fd, a, ti.tcpi_unacked,
                  ti.tcpi_last_ack_recv, E.cfg->fail_timeout_ms);
            resil_event("path_stall", s->fd,
                        "\"peer\":\"%s\",\"unacked\":%u,\"last_ack_ms\":%u",
                        a, ti.tcpi_unacked, ti.tcpi_last_ack_recv);
        }
    } else if (s->user_timeout_armed) {
        set_user_timeout(s->fd, 0);
        s->user_timeout_armed = false;
    }
    return true;
}

static void monitor_tick(uint64_t now)
{
    for (struct resil_sock **pp = &E.mon; *pp;) {
        struct resil_sock *s = *pp;
        if (monitor_one(s, now))
            pp = &s->mon_next;
        else
            monitor_unlink(pp);
    }
}

/* ---- the engine thread ---- */

static void *engine_main(void *arg)
{
    unsigned gen = (unsigned)(uintptr_t)arg;

    resil_in_shim = 1;
    pthread_mutex_lock(&E.mu);
    for (;;) {
        if (E.gen != gen) {
            /* a newer engine replaced this one (close_range took our
             * descriptors): leave the state to it */
            pthread_mutex_unlock(&E.mu);
            return NULL;
        }
        struct pollfd pfd[2 + ARES_GETSOCK_MAXNUM];
        ares_socket_t as[ARES_GETSOCK_MAXNUM];
        uint64_t now = resil_now_ns(), wake = UINT64_MAX;
        int n = 2, bits = 0, timeout;

        for (struct resil_race_ctx *c = E.races, *nx; c; c = nx) {
            nx = c->next;
            uint64_t w = step(c, now);
            if (w < wake)
                wake = w;
            if (c->finished || c->cancelled)
                list_remove(c);
        }
        if (E.mon) {
            monitor_tick(now);
            uint64_t tick = (uint64_t)E.cfg->stall_ms * MS / 4;
            if (now + tick < wake)
                wake = now + tick;
        }
        pfd[0] = (struct pollfd){.fd = E.wakefd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = E.epfd, .events = POLLIN};
        if (E.ares_ok) {
            struct timeval tv, *tvp;
            bits = ares_getsock(E.ch, as, ARES_GETSOCK_MAXNUM);
            for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
                short ev = 0;
                /* not ARES_GETSOCK_WRITABLE: its 1 << 31 (int) for the
                 * last socket is undefined behaviour (UBSan stops there) */
                if ((unsigned)bits & (1u << i))
                    ev |= POLLIN;
                if ((unsigned)bits & (1u << (i + ARES_GETSOCK_MAXNUM)))
                    ev |= POLLOUT;
                if (ev)
                    pfd[n++] = (struct pollfd){.fd = as[i], .events = ev};
            }
            tvp = ares_timeout(E.ch, NULL, &tv);
            if (tvp) {
                uint64_t w = now + (uint64_t)tv.tv_sec * 1000000000ull +
                             (uint64_t)tv.tv_usec * 1000ull;
                if (w < wake)
                    wake = w;
            }
        }
        if (wake == UINT64_MAX)
            timeout = -1;
        else if (wake <= now)
            timeout = 0;
        else
            timeout = (int)((wake - now + MS - 1) / MS);
        pthread_mutex_unlock(&E.mu);
        int rc = resil_sys.poll(pfd, (nfds_t)n, timeout);
        pthread_mutex_lock(&E.mu);
        now = resil_now_ns();
        if (rc > 0 && ((pfd[0].revents | pfd[1].revents) & POLLNVAL)) {
            /* the program closed our descriptors (close_range): this
             * thread is done; the next need starts a fresh engine */
            rwarn("engine descriptors closed by the program; engine "
                  "thread exits");
            if (E.gen == gen) {
                E.running = false;
                E.epfd = E.wakefd = -1; /* not ours any more */
            }
            pthread_mutex_unlock(&E.mu);
            return NULL;
        }
        if (rc > 0 && (pfd[0].revents & POLLIN)) {
            uint64_t v;
            (void)!resil_sys.read(E.wakefd, &v, sizeof(v));
        }
        if (rc > 0 && (pfd[1].revents & POLLIN)) {
            struct epoll_event evs[64];
            int k = resil_sys.epoll_wait(E.epfd, evs, 64, 0);
            for (int i = 0; i < k; i++)
                attempt_event((int)evs[i].data.u64, now);
        }
        if (E.ares_ok) {
            for (int i = 2; i < n; i++)
                ares_process_fd(E.ch,
                                pfd[i].revents & (POLLIN | POLLERR | POLLHUP)
                                    ? pfd[i].fd
                                    : ARES_SOCKET_BAD,
                                pfd[i].revents & POLLOUT ? pfd[i].fd
                                                         : ARES_SOCKET_BAD);
            ares_process_fd(E.ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        }
    }
    return NULL;
}

/* Start the engine thread if this process has none. E.mu held. */
static int engine_start(void)
{
    sigset_t all, old;
    pthread_t t;
    pthread_attr_t at;
    int rc;

    if (E.running && E.pid == getpid())
        return 0;
    resil_engine_config();
    if (E.epfd < 0) {
        E.epfd = epoll_create1(EPOLL_CLOEXEC);
        if (E.epfd >= 0)
            E.epfd = resil_fd_high(E.epfd);
    }
    if (E.wakefd < 0) {
        E.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (E.wakefd >= 0)
            E.wakefd = resil_fd_high(E.wakefd);
    }
    if (E.epfd < 0 || E.wakefd < 0)
        return -1;
    if (!E.ares_ok && E.cfg->dns)
        ares_setup();
    /* the engine thread must never take a signal meant for the program */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    E.gen++;
    rc = pthread_create(&t, &at, engine_main, (void *)(uintptr_t)E.gen);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        rwarn("cannot start the engine thread: %s", strerror(rc));
        return -1;
    }
    E.running = true;
    E.pid = getpid();
    return 0;
}

/* Candidates: the target, the other addresses of its name, its alternate
 * group. Returns the count; name gets the name or "". */
static int gather(const struct resil_ip *target, char *name, size_t namelen,
                  struct resil_ip *out, int max)
{
    int n = 0;
    struct resil_ip tmp[RESIL_NAME_ADDRS];
    const struct resil_alt_group *g;

    out[n++] = *target;
    name[0] = '\0';
    int k = resil_names_lookup(target, name, namelen, tmp, RESIL_NAME_ADDRS);
    for (int i = 0; i < k && n < max; i++)
        out[n++] = tmp[i];
    g = resil_config_alt_find(E.cfg, target);
    for (int i = 0; g && i < g->n && n < max; i++)
        out[n++] = g->ip[i];
    return n;
}

static int wait_done(struct resil_race_ctx *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->donefd, .events = POLLIN};
    int rc;

    if (timeout_ms < 0) {
        /* a blocking read, not poll(): like connect() itself, the kernel
         * restarts it after a handler with SA_RESTART and fails it with
         * EINTR otherwise (poll() always fails with EINTR) */
        uint64_t v;
        if (resil_sys.read(c->donefd, &v, sizeof(v)) < 0)
            return errno;
        /* put it back: another thread may wait for this race too */
        (void)!resil_sys.write(c->donefd, &v, sizeof(v));
        return 0;
    }
    rc = resil_sys.poll(&p, 1, timeout_ms);
    if (rc < 0)
        return errno;
    if (rc == 0)
        return EINPROGRESS;
    return 0;
}

/* A blocking connect() waits for race c of s (the caller's reference to c
 * is dropped here). Returns what connect() reports: 0, the race's errno,
 * EINTR, or timeout_err when SO_SNDTIMEO expires first. */
static int race_wait(struct resil_sock *s, struct resil_race_ctx *c,
                     const struct sockaddr *sa, socklen_t len,
                     int timeout_err)
{
    struct timeval tv;
    socklen_t tl = sizeof(tv);
    int err, timeout_ms = -1;

    if (resil_sys.getsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) == 0 &&
        (tv.tv_sec || tv.tv_usec))
        timeout_ms = (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
    err = wait_done(c, timeout_ms);
    if (err == EINPROGRESS)
        err = timeout_err;
    pthread_mutex_lock(&E.mu);
    if (err == 0) {
        err = c->result;
        pthread_mutex_lock(&s->mu);
        if (err && s->state == RS_FAILED) {
            /* connect() itself reports it; like the kernel's, the socket
             * is unconnected again and the next connect() a new attempt */
            s->state = RS_FRESH;
            s->race_errno = 0;
            s->error_reported = false;
        } else if (err == 0 && s->state == RS_CONNECTED) {
            /* the winner finished a non-blocking connect, so the kernel
             * still has it SS_CONNECTING: one more connect() returns 0 and
             * makes it SS_CONNECTED, so that the program's next connect()
             * gets EISCONN as after a real blocking connect */
            resil_sys.connect(s->fd, sa, len);
        }
        pthread_mutex_unlock(&s->mu);
    }
    ctx_unref(c);
    pthread_mutex_unlock(&E.mu);
    return err;
}

bool resil_engine_connect_wait(struct resil_sock *s, const struct sockaddr *sa,
                               socklen_t len, int *err)
{
    struct resil_race_ctx *c;

    pthread_mutex_lock(&E.mu);
    c = s->race;
    if (c == NULL || c->rerace) {
        pthread_mutex_unlock(&E.mu);
        return false;
    }
    c->refs++;
    pthread_mutex_unlock(&E.mu);
    /* the kernel: EALREADY when SO_SNDTIMEO expires on a connect already
     * in progress */
    *err = race_wait(s, c, sa, len, EALREADY);
    return true;
}

/* Start a race for s toward ip:port. E.mu held. On success s is RS_RACING
 * and *out (when not NULL) holds a reference to the ctx for waiting. */
static int race_begin(struct resil_sock *s, const struct resil_ip *ip,
                      uint16_t port, bool rerace,
                      struct resil_race_ctx **out)
{
    struct resil_ip cand[RESIL_RACE_MAX];
    struct resil_race_ctx *c;
    uint64_t now = resil_now_ns();
    int n;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        c->fds[i] = -1;
    /* blocking: wait_done() reads it (and writes it back) */
    c->donefd = eventfd(0, EFD_CLOEXEC);
    if (c->donefd < 0) {
        free(c);
        return -1;
    }
    c->donefd = resil_fd_high(c->donefd);
    n = gather(ip, c->name, sizeof(c->name), cand, RESIL_RACE_MAX);
    resil_race_init(&c->r, s->family, s->v6only,
                    (uint64_t)E.cfg->attempt_delay_ms * MS, now);
    /* the program's own choice goes in first: it leads unless the health
     * cache says otherwise */
    for (int i = 0; i < n; i++)
        resil_race_add(&c->r, &cand[i], now);
    c->port = port;
    c->start_ns = now;
    c->rerace = rerace;
    c->s = s;
    resil_sock_ref(s);
    c->refs = 1 + (out != NULL);
    s->race = c;
    s->state = RS_RACING;
    atomic_fetch_add(&resil_races_active, 1);
    c->next = E.races;
    E.races = c;
    dns_start(c);
    if (out)
        *out = c;
    wake_engine();
    return 0;
}

resil_status_t resil_engine_connect(struct resil_sock *s,
                                    const struct sockaddr *sa, socklen_t len,
                                    int *err)
{
    struct resil_ip ip, cand[RESIL_RACE_MAX];
    struct resil_race_ctx *c = NULL;
    char name[RESIL_NAME_LEN];
    uint16_t port;
    int fl, n;

    if (!resil_ip_from_sa(sa, len, &ip, &port) || port == 0)
        goto passthru;
    if ((s->family == AF_INET && sa->sa_family != AF_INET) ||
        (s->family == AF_INET6 && sa->sa_family != AF_INET6))
        goto passthru;
    /* a scoped (link-local) address names one interface: nothing to race,
     * and struct resil_ip would lose the scope */
    if (sa->sa_family == AF_INET6 &&
        ((const struct sockaddr_in6 *)sa)->sin6_scope_id != 0)
        goto passthru;
    pthread_mutex_lock(&s->mu);
    s->peer_ip = ip;
    s->peer_port = port;
    if (s->fastopen) {
        pthread_mutex_unlock(&s->mu);
        goto passthru;
    }
    pthread_mutex_unlock(&s->mu);

    pthread_mutex_lock(&E.mu);
    resil_engine_config();
    n = gather(&ip, name, sizeof(name), cand, RESIL_RACE_MAX);
    if (!E.cfg->race || (n == 1 && (name[0] == '\0' || !E.cfg->dns))) {
        /* nothing to race: the real connect, plus failure detection */
        pthread_mutex_unlock(&E.mu);
        pthread_mutex_lock(&s->mu);
        s->state = E.cfg->race ? RS_DIRECT : RS_PASSTHRU;
        s->cur_ip = ip;
        if (E.cfg->race)
            resil_engine_tune(s, s->fd);
        pthread_mutex_unlock(&s->mu);
        return RESIL_EUNSUPP;
    }
    if (engine_start() < 0 || park_fd(s->fd, s->family, s->v6only) < 0) {
        pthread_mutex_unlock(&E.mu);
        goto direct;
    }
    fl = resil_sys.fcntl(s->fd, F_GETFL);
    if (fl < 0 || race_begin(s, &ip, port, false,
                             (fl & O_NONBLOCK) ? NULL : &c) < 0) {
        /* the real connect would otherwise say EALREADY, or wait for the
         * parking connect to time out */
        unpark(s->fd);
        pthread_mutex_unlock(&E.mu);
        goto direct;
    }
    pthread_mutex_unlock(&E.mu);
    if (fl & O_NONBLOCK) {
        *err = EINPROGRESS;
        return RESIL_OK;
    }
    /* blocking connect: wait like the kernel would, SO_SNDTIMEO included
     * (socket(7): it then fails with EINPROGRESS) */
    *err = race_wait(s, c, sa, len, EINPROGRESS);
    return RESIL_OK;

direct:
    if (E.cfg->strict) {
        /* strict mode: an internal failure is an error, not plain TCP */
        rerror("fd %d: cannot race (engine or parking unavailable); "
               "failing the connect (strict)", s->fd);
        *err = EAGAIN;
        return RESIL_OK;
    }
    pthread_mutex_lock(&s->mu);
    s->state = RS_DIRECT;
    s->cur_ip = ip;
    resil_engine_tune(s, s->fd);
    pthread_mutex_unlock(&s->mu);
    rwarn("fd %d: racing unavailable; plain connect", s->fd);
    {
        char d[RESIL_ADDRSTRLEN];
        resil_event("fallback", s->fd,
                    "\"dst\":\"%s\",\"reason\":\"racing unavailable\"",
                    resil_ip_format(&ip, port, d, sizeof(d)));
    }
    return RESIL_EUNSUPP;
passthru:
    pthread_mutex_lock(&s->mu);
    s->state = RS_PASSTHRU;
    pthread_mutex_unlock(&s->mu);
    return RESIL_EUNSUPP;
}

void resil_engine_forget(struct resil_sock *s)
{
    pthread_mutex_lock(&E.mu);
    if (s->race) {
        uint64_t one = 1;
        if (!s->race->finished && !s->race->cancelled)
            atomic_fetch_sub(&resil_races_active, 1);
        s->race->cancelled = true;
        s->race->result = EBADF;
        (void)!resil_sys.write(s->race->donefd, &one, sizeof(one));
        s->race = NULL;
    }
    if (s->on_monitor)
        monitor_remove(s);
    pthread_mutex_unlock(&E.mu);
    wake_engine();
}

bool resil_engine_path_error(struct resil_sock *s, int err, bool wait)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    struct resil_race_ctx *c = NULL;
    int outq = 0, park;
    bool ok = false;

    if (err != ETIMEDOUT && err != EHOSTUNREACH && err != ENETUNREACH &&
        err != ECONNRESET && err != EPIPE)
        return false;
    pthread_mutex_lock(&E.mu);
    pthread_mutex_lock(&s->mu);
    if ((s->state != RS_CONNECTED && s->state != RS_DIRECT) || s->eof_seen ||
        s->closed || !E.cfg->race) {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&E.mu);
        return false;
    }
    /* the kernel's counters, not ours: a byte either way rules out a
     * transparent re-race (nothing is ever replayed to an ordinary peer) */
    memset(&ti, 0, sizeof(ti));
    if (resil_sys.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        ti.tcpi_bytes_received != 0 || ti.tcpi_bytes_acked > 1 ||
        resil_sys.ioctl(s->fd, SIOCOUTQ, &outq) < 0 || outq != 0) {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&E.mu);
        return false;
    }
    resil_health_fail(&s->cur_ip, resil_now_ns());
    /* the engine first: nothing may be left parked on fd without a race */
    park = engine_start() == 0
               ? resil_sys.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0)
               : -1;
    if (park >= 0) {
        park = resil_fd_high(park);
        if (park_fd(park, s->family, s->v6only) < 0) {
            resil_sys.close(park);
            park = -1;
        } else if (swap_in(s, park) < 0) {
            park = -1;
        }
    }
    if (park >= 0) {
        if (race_begin(s, &s->peer_ip, s->peer_port, true,
                       wait ? &c : NULL) == 0) {
            ok = true;
        } else {
            /* the connection is dead anyway; the program gets its error,
             * and later calls ENOTCONN instead of blocking on the parked
             * socket */
            unpark(s->fd);
        }
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&E.mu);
    if (!ok)
        return false;
    rinfo("fd %d: connection died before any byte (%s); re-racing", s->fd,
          strerror(err));
    if (c) {
        wait_done(c, -1);
        pthread_mutex_lock(&E.mu);
        ctx_unref(c);
        pthread_mutex_unlock(&E.mu);
    }
    return true;
}

static bool in_range(int fd, unsigned first, unsigned last)
{
    return fd >= 0 && (unsigned)fd >= first && (unsigned)fd <= last;
}

void resil_engine_fds_closed(unsigned first, unsigned last)
{
    resil_log_fds_closed(first, last);
    resil_events_fds_closed(first, last);
    pthread_mutex_lock(&E.mu);
    for (int v6 = 0; v6 < 2; v6++)
        if (in_range(E.park_lfd[v6], first, last) ||
            in_range(E.park_filler[v6], first, last))
            E.park_lfd[v6] = E.park_filler[v6] = -1;
    if (in_range(E.epfd, first, last) || in_range(E.wakefd, first, last)) {
        if (E.running && E.pid == getpid())
            rwarn("close_range() closed the engine's descriptors while it "
                  "runs; races in flight will not finish");
        E.epfd = E.wakefd = -1;
        E.running = false;
    }
    pthread_mutex_unlock(&E.mu);
}

bool resil_engine_dead_unused(struct resil_sock *s, bool pollerr)
{
    struct tcp_info ti;
    socklen_t l;

    if ((s->state != RS_CONNECTED && s->state != RS_DIRECT) || s->eof_seen)
        return false;
    /* look, do not touch: SO_ERROR would consume the program's error. The
     * kernel reports the error (waking pollers) just before it moves the
     * socket to CLOSE (tcp_write_err: sk_error_report, then tcp_done), so
     * after POLLERR give it a moment to get there. */
    for (int i = 0;; i++) {
        memset(&ti, 0, sizeof(ti));
        l = sizeof(ti);
        if (resil_sys.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
            ti.tcpi_bytes_received != 0 || ti.tcpi_bytes_acked > 1)
            return false;
        if (ti.tcpi_state == TCP_CLOSE)
            break;
        if (!pollerr || i == 20)
            return false;
        struct timespec d = {.tv_nsec = 100000};
        nanosleep(&d, NULL);
    }
    /* the errno only selects "a path failure"; the socket is replaced */
    return resil_engine_path_error(s, ETIMEDOUT, false);
}

void resil_engine_atfork_prepare(void)
{
    /* hold every global lock across fork, in the documented order, so the
     * child never inherits one locked by a thread that does not exist
     * there (socket mutexes of racing sockets are re-made in the child) */
    pthread_mutex_lock(&E.mu);
    resil_table_lock_all();
    resil_health_lock();
    resil_names_lock();
}

static void atfork_release(void)
{
    resil_names_unlock();
    resil_health_unlock();
    resil_table_unlock_all();
}

void resil_engine_atfork_parent(void)
{
    atfork_release();
    pthread_mutex_unlock(&E.mu);
}

/* In the child only the forking thread exists, and it held no socket lock
 * (fork is called from the program, never from inside a hook): any socket
 * lock held now belonged to a thread that is gone. */
static void reinit_sock_locks(struct resil_sock *s, void *arg)
{
    (void)arg;
    pthread_mutex_init(&s->mu, NULL);
    atomic_flag_clear(&s->ep_lock);
}

void resil_engine_atfork_child(void)
{
    /* Only the forking thread exists now: the engine thread, its races and
     * c-ares state stay with the parent. Races in flight are failed in the
     * child; connected sockets keep working (the monitor restarts on the
     * next write). */
    atfork_release();
    resil_table_foreach(reinit_sock_locks, NULL);
    pthread_mutex_unlock(&E.mu);
    for (struct resil_race_ctx *c = E.races, *nx; c; c = nx) {
        nx = c->next;
        pthread_mutex_init(&c->s->mu, NULL);
        c->s->state = RS_FAILED;
        c->s->race_errno = ECONNABORTED;
        c->s->race = NULL;
        for (int i = 0; i < RESIL_RACE_MAX; i++)
            if (c->fds[i] >= 0)
                resil_sys.close(c->fds[i]);
        /* memory of ctx is leaked on purpose: c-ares may point at it */
    }
    E.races = NULL;
    atomic_store(&resil_races_active, 0);
    for (struct resil_sock *s = E.mon, *nx; s; s = nx) {
        nx = s->mon_next;
        s->on_monitor = false;
        s->mon_next = NULL;
        atomic_store(&s->dirty, false);
    }
    E.mon = NULL;
    E.running = false;
    if (E.ares_ok) {
        /* c-ares sockets are shared with the parent: drop the channel
         * without closing them via the parent's state */
        E.ares_ok = false;
    }
    if (E.epfd >= 0)
        resil_sys.close(E.epfd);
    if (E.wakefd >= 0)
        resil_sys.close(E.wakefd);
    E.epfd = E.wakefd = -1;
}
