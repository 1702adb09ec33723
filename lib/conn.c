#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */

#include "config.h"
#include "conn.h"
#include "dns.h"
#include "engine.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "monitor.h"
#include "names.h"
#include "race.h"
#include "swap.h"
#include "sys.h"

/* include/net/tcp_states.h; netinet/tcp.h clashes with linux/tcp.h */
#define TCP_CLOSE 7
#define MS RESIL_MS

struct resil_race_ctx;

/* The engine's watcher of one attempt socket. */
struct att_watch {
    struct resil_watch w;
    struct resil_race_ctx *c;
    int i;
};

struct resil_race_ctx {
    struct resil_race_ctx *next;
    int refs;                  /* engine list + waiter + DNS queries */
    struct resil_sock *s;      /* a reference */
    struct resil_race r;
    int fds[RESIL_RACE_MAX];   /* attempt sockets, -1 when none */
    struct att_watch aw[RESIL_RACE_MAX];
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

static struct resil_race_ctx *races; /* engine lock */
atomic_int resil_races_active;

static int gather(const struct resil_ip *target, char *name, size_t namelen,
                  struct resil_ip *out, int max);
static void dns_start(struct resil_race_ctx *c);
static void attempt_event(struct resil_watch *w, uint32_t events,
                          uint64_t now);

static void ctx_unref(struct resil_race_ctx *c) /* engine lock held */
{
    if (--c->refs > 0)
        return;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        if (c->fds[i] >= 0)
            real.close(c->fds[i]);
    if (c->donefd >= 0)
        real.close(c->donefd);
    resil_sock_unref(c->s);
    free(c);
}

static void list_remove(struct resil_race_ctx *c) /* engine lock held */
{
    for (struct resil_race_ctx **pp = &races; *pp; pp = &(*pp)->next)
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
        resil_engine_del(c->fds[i]);
        real.close(c->fds[i]);
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

/* The race is decided. engine lock held; takes s->mu for the swap. */
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
        resil_engine_del(fd);
    } else {
        err = resil_race_errno(&c->r);
        /* a fresh unconnected socket polls writable (POLLOUT|POLLHUP), so
         * waiters wake; SO_ERROR then reports race_errno (shim) */
        fd = real.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        if (fd >= 0)
            real.close(fd);
    } else if (fd >= 0 && resil_swap_in(s, fd) == RESIL_OK) {
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
    (void)!real.write(c->donefd, &one, sizeof(one));
}

static void start_attempt(struct resil_race_ctx *c, int i, uint64_t now)
{
    struct resil_sock *s = c->s;
    struct sockaddr_storage sa;
    socklen_t len;
    int fd;

    len = resil_ip_to_sa(&c->r.att[i].ip, c->port, s->family, &sa);
    fd = real.socket(s->family,
                          SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || len == 0) {
        resil_race_failed(&c->r, i, fd < 0 ? errno : EAFNOSUPPORT, now);
        if (fd >= 0)
            real.close(fd);
        return;
    }
    fd = resil_fd_high(fd);
    pthread_mutex_lock(&s->mu);
    for (struct resil_sockopt *o = s->opts; o; o = o->next)
        if (real.setsockopt(fd, o->level, o->name, o->val, o->len) < 0)
            rdebug("fd %d: replaying option %d/%d: %s", s->fd, o->level,
                   o->name, strerror(errno));
    if (s->bound &&
        real.bind(fd, (struct sockaddr *)&s->bind_sa, s->bind_len) < 0) {
        int e = errno;
        pthread_mutex_unlock(&s->mu);
        real.close(fd);
        resil_race_failed(&c->r, i, e, now);
        return;
    }
    resil_monitor_tune(s, fd);
    pthread_mutex_unlock(&s->mu);
    c->fds[i] = fd;
    if (real.connect(fd, (struct sockaddr *)&sa, len) == 0) {
        resil_race_won(&c->r, i, now);
        return;
    }
    if (errno != EINPROGRESS) {
        int e = errno;
        close_attempt(c, i);
        resil_race_failed(&c->r, i, e, now);
        return;
    }
    c->aw[i].c = c;
    c->aw[i].i = i;
    c->aw[i].w.fn = attempt_event;
    resil_engine_add(fd, EPOLLOUT, &c->aw[i].w);
    if (resil_log_level >= RESIL_LOG_DEBUG) {
        char a[RESIL_ADDRSTRLEN];
        rdebug("fd %d: attempt %d to %s", s->fd, i,
               resil_ip_format(&c->r.att[i].ip, c->port, a, sizeof(a)));
    }
}

/* Advance one race; returns its next wake time. engine lock held. */
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
    g = resil_config_alt_find(resil_config_get(), target);
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
        if (real.read(c->donefd, &v, sizeof(v)) < 0)
            return errno;
        /* put it back: another thread may wait for this race too */
        (void)!real.write(c->donefd, &v, sizeof(v));
        return 0;
    }
    rc = real.poll(&p, 1, timeout_ms);
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

    if (real.getsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) == 0 &&
        (tv.tv_sec || tv.tv_usec))
        timeout_ms = (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
    err = wait_done(c, timeout_ms);
    if (err == EINPROGRESS)
        err = timeout_err;
    resil_engine_lock();
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
            real.connect(s->fd, sa, len);
        }
        pthread_mutex_unlock(&s->mu);
    }
    ctx_unref(c);
    resil_engine_unlock();
    return err;
}

resil_status_t resil_conn_wait(struct resil_sock *s, const struct sockaddr *sa,
                               socklen_t len, int *err)
{
    struct resil_race_ctx *c;

    resil_engine_lock();
    c = s->race;
    if (c == NULL || c->rerace) {
        resil_engine_unlock();
        return RESIL_ENOENT;
    }
    c->refs++;
    resil_engine_unlock();
    /* the kernel: EALREADY when SO_SNDTIMEO expires on a connect already
     * in progress */
    *err = race_wait(s, c, sa, len, EALREADY);
    return RESIL_OK;
}

/* Start a race for s toward ip:port. engine lock held. On success s is RS_RACING
 * and *out (when not NULL) holds a reference to the ctx for waiting. */
static resil_status_t race_begin(struct resil_sock *s,
                                 const struct resil_ip *ip, uint16_t port,
                                 bool rerace, struct resil_race_ctx **out)
{
    struct resil_ip cand[RESIL_RACE_MAX];
    struct resil_race_ctx *c;
    uint64_t now = resil_now_ns();
    int n;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return RESIL_ENOMEM;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        c->fds[i] = -1;
    /* blocking: wait_done() reads it (and writes it back) */
    c->donefd = eventfd(0, EFD_CLOEXEC);
    if (c->donefd < 0) {
        free(c);
        return RESIL_ESYS;
    }
    c->donefd = resil_fd_high(c->donefd);
    n = gather(ip, c->name, sizeof(c->name), cand, RESIL_RACE_MAX);
    resil_race_init(&c->r, s->family, s->v6only,
                    (uint64_t)resil_config_get()->attempt_delay_ms * MS, now);
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
    c->next = races;
    races = c;
    dns_start(c);
    if (out)
        *out = c;
    resil_engine_wake();
    return RESIL_OK;
}

resil_status_t resil_conn_connect(struct resil_sock *s,
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

    resil_engine_lock();
    n = gather(&ip, name, sizeof(name), cand, RESIL_RACE_MAX);
    if (!resil_config_get()->race || (n == 1 && (name[0] == '\0' || !resil_config_get()->dns))) {
        /* nothing to race: the real connect, plus failure detection */
        resil_engine_unlock();
        pthread_mutex_lock(&s->mu);
        s->state = resil_config_get()->race ? RS_DIRECT : RS_PASSTHRU;
        s->cur_ip = ip;
        if (resil_config_get()->race)
            resil_monitor_tune(s, s->fd);
        pthread_mutex_unlock(&s->mu);
        return RESIL_EUNSUPP;
    }
    if (resil_engine_start() != RESIL_OK ||
        resil_park(s->fd, s->family, s->v6only) != RESIL_OK) {
        resil_engine_unlock();
        goto direct;
    }
    fl = real.fcntl(s->fd, F_GETFL);
    if (fl < 0 || race_begin(s, &ip, port, false,
                             (fl & O_NONBLOCK) ? NULL : &c) != RESIL_OK) {
        /* the real connect would otherwise say EALREADY, or wait for the
         * parking connect to time out */
        resil_unpark(s->fd);
        resil_engine_unlock();
        goto direct;
    }
    resil_engine_unlock();
    if (fl & O_NONBLOCK) {
        *err = EINPROGRESS;
        return RESIL_OK;
    }
    /* blocking connect: wait like the kernel would, SO_SNDTIMEO included
     * (socket(7): it then fails with EINPROGRESS) */
    *err = race_wait(s, c, sa, len, EINPROGRESS);
    return RESIL_OK;

direct:
    if (resil_config_get()->strict) {
        /* strict mode: an internal failure is an error, not plain TCP */
        rerror("fd %d: cannot race (engine or parking unavailable); "
               "failing the connect (strict)", s->fd);
        *err = EAGAIN;
        return RESIL_OK;
    }
    pthread_mutex_lock(&s->mu);
    s->state = RS_DIRECT;
    s->cur_ip = ip;
    resil_monitor_tune(s, s->fd);
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

void resil_conn_forget(struct resil_sock *s)
{
    bool cancelled = false;

    resil_engine_lock();
    if (s->race) {
        cancelled = true;
        uint64_t one = 1;
        if (!s->race->finished && !s->race->cancelled)
            atomic_fetch_sub(&resil_races_active, 1);
        s->race->cancelled = true;
        s->race->result = EBADF;
        (void)!real.write(s->race->donefd, &one, sizeof(one));
        s->race = NULL;
    }
    resil_engine_unlock();
    if (cancelled)
        resil_engine_wake(); /* the engine drops the race */
}

bool resil_conn_path_error(struct resil_sock *s, int err, bool wait)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    struct resil_race_ctx *c = NULL;
    int outq = 0, park;
    bool ok = false;

    if (err != ETIMEDOUT && err != EHOSTUNREACH && err != ENETUNREACH &&
        err != ECONNRESET && err != EPIPE)
        return false;
    resil_engine_lock();
    pthread_mutex_lock(&s->mu);
    if ((s->state != RS_CONNECTED && s->state != RS_DIRECT) || s->eof_seen ||
        s->closed || !resil_config_get()->race) {
        pthread_mutex_unlock(&s->mu);
        resil_engine_unlock();
        return false;
    }
    /* the kernel's counters, not ours: a byte either way rules out a
     * transparent re-race (nothing is ever replayed to an ordinary peer) */
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        ti.tcpi_bytes_received != 0 || ti.tcpi_bytes_acked > 1 ||
        real.ioctl(s->fd, SIOCOUTQ, &outq) < 0 || outq != 0) {
        pthread_mutex_unlock(&s->mu);
        resil_engine_unlock();
        return false;
    }
    resil_health_fail(&s->cur_ip, resil_now_ns());
    /* the engine first: nothing may be left parked on fd without a race */
    park = resil_engine_start() == RESIL_OK
               ? real.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0)
               : -1;
    if (park >= 0) {
        park = resil_fd_high(park);
        if (resil_park(park, s->family, s->v6only) != RESIL_OK) {
            real.close(park);
            park = -1;
        } else if (resil_swap_in(s, park) != RESIL_OK) {
            park = -1;
        }
    }
    if (park >= 0) {
        if (race_begin(s, &s->peer_ip, s->peer_port, true,
                       wait ? &c : NULL) == RESIL_OK) {
            ok = true;
        } else {
            /* the connection is dead anyway; the program gets its error,
             * and later calls ENOTCONN instead of blocking on the parked
             * socket */
            resil_unpark(s->fd);
        }
    }
    pthread_mutex_unlock(&s->mu);
    resil_engine_unlock();
    if (!ok)
        return false;
    rinfo("fd %d: connection died before any byte (%s); re-racing", s->fd,
          strerror(err));
    if (c) {
        wait_done(c, -1);
        resil_engine_lock();
        ctx_unref(c);
        resil_engine_unlock();
    }
    return true;
}

bool resil_conn_dead_unused(struct resil_sock *s, bool pollerr)
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
        if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
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
    return resil_conn_path_error(s, ETIMEDOUT, false);
}

/* An attempt socket is writable or failed: the watcher knows which. */
static void attempt_event(struct resil_watch *w, uint32_t events, uint64_t now)
{
    struct att_watch *aw = (struct att_watch *)w;
    struct resil_race_ctx *c = aw->c;
    int i = aw->i, fd = c->fds[i], err = 0;
    socklen_t l = sizeof(err);

    (void)events;
    if (fd < 0 || c->finished || c->cancelled)
        return;
    real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err == 0) {
        resil_race_won(&c->r, i, now);
    } else {
        close_attempt(c, i);
        resil_race_failed(&c->r, i, err, now);
    }
}

static void dns_answer(void *arg, int family, const struct resil_ip *ips,
                       int n, const char *err)
{
    struct resil_race_ctx *c = arg;
    uint64_t now = resil_now_ns();

    c->r.more_coming--;
    if (family == AF_INET6)
        c->aaaa_pending = false;
    if (n)
        resil_names_dns(c->name, ips, n, now);
    if (!c->finished) {
        for (int i = 0; i < n; i++) {
            if (ips[i].family == AF_INET && c->aaaa_pending &&
                c->n_held < RESIL_NAME_ADDRS) {
                c->held[c->n_held++] = ips[i];
                c->held_until =
                    now + (uint64_t)resil_config_get()->resolution_delay_ms *
                              MS;
            } else {
                resil_race_add(&c->r, &ips[i], now);
            }
        }
        if (n)
            rdebug("fd %d: DNS gave %d %s address(es) for %s", c->s->fd, n,
                   family == AF_INET6 ? "IPv6" : "IPv4", c->name);
    }
    if (n == 0)
        rdebug("DNS lookup of %s: %s", c->name, err);
    ctx_unref(c);
}

/* One c-ares query for c; its answer holds a reference to c. */
static void dns_query(struct resil_race_ctx *c, int family)
{
    c->refs++;
    c->r.more_coming++;
    if (family == AF_INET6)
        c->aaaa_pending = true;
    if (resil_dns_lookup(c->name, family, dns_answer, c) == RESIL_OK)
        return;
    c->refs--;
    c->r.more_coming--;
    if (family == AF_INET6)
        c->aaaa_pending = false;
}

static void dns_start(struct resil_race_ctx *c)
{
    const struct resil_config *cfg = resil_config_get();

    if (c->name[0] == '\0' || !cfg->dns)
        return;
    /* answers younger than dns_refresh_ms are in the names cache already
     * (gather() used them): a busy client must not query per connect */
    if (!resil_names_dns_due(c->name, resil_now_ns(),
                             (uint64_t)cfg->dns_refresh_ms * MS))
        return;
    /* RFC 8305 section 3: AAAA first, then A, both in flight at once */
    if (c->s->family == AF_INET6)
        dns_query(c, AF_INET6);
    if (c->s->family == AF_INET || !c->r.v6only)
        dns_query(c, AF_INET);
}

uint64_t resil_conn_tick(uint64_t now)
{
    uint64_t wake = UINT64_MAX;

    for (struct resil_race_ctx *c = races, *nx; c; c = nx) {
        uint64_t w;
        nx = c->next;
        w = step(c, now);
        if (w < wake)
            wake = w;
        if (c->finished || c->cancelled)
            list_remove(c);
    }
    return wake;
}

void resil_conn_atfork_child(void)
{
    for (struct resil_race_ctx *c = races, *nx; c; c = nx) {
        nx = c->next;
        pthread_mutex_init(&c->s->mu, NULL);
        c->s->state = RS_FAILED;
        c->s->race_errno = ECONNABORTED;
        c->s->race = NULL;
        for (int i = 0; i < RESIL_RACE_MAX; i++)
            if (c->fds[i] >= 0)
                real.close(c->fds[i]);
        /* memory of ctx is leaked on purpose: c-ares may point at it */
    }
    races = NULL;
    atomic_store(&resil_races_active, 0);
}
