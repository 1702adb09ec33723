#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
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
#include "fds.h"
#include "health.h"
#include "log.h"
#include "monitor.h"
#include "names.h"
#include "race.h"
#include "session.h"
#include "swap.h"
#include "sys.h"

/* include/net/tcp_states.h; netinet/tcp.h clashes with linux/tcp.h */
#define TCP_ESTABLISHED 1
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
    int refs;                  /* engine list + waiters + DNS queries */
    struct resil_sock *s;      /* a reference */
    struct resil_race r;
    int fds[RESIL_RACE_MAX];   /* attempt sockets, -1 when none */
    uint32_t optseq[RESIL_RACE_MAX]; /* s->opt_seq when each attempt began:
                                        later options are set at the swap */
    struct att_watch aw[RESIL_RACE_MAX];
    uint16_t port;
    int donefd;                /* eventfd: written once when finished */
    atomic_int done_pins;      /* waiters using donefd unlocked (fds.h) */
    bool finished, cancelled, rerace;
    int result;                /* 0 or errno */
    int won_err;               /* the winner was reset right after its
                                  handshake: its error, read by us */
    bool won_connecting;       /* and it is still SS_CONNECTING */
    int waiters;               /* threads in a blocking connect() for it */
    int kept;                  /* the failed attempt whose socket stays
                                  open for the program (its errno is the
                                  race's: resil_race_error_att), or -1 */
    bool kept_connecting;      /* it failed a connect in progress */
    /* a re-race: the dead connection, put back when the re-race fails,
     * with the error its data call met */
    int orig_fd, orig_err;
    enum resil_sock_state orig_state;
    uint32_t orig_optseq;
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
atomic_int resil_conn_errors;

static int gather(const struct resil_ip *target, char *name, size_t namelen,
                  struct resil_ip *out, int max);
static void dns_start(struct resil_race_ctx *c);
static void attempt_event(struct resil_watch *w, uint32_t events,
                          uint64_t now);

/* Cancellation stays off in our code (conn.h): restored at the end of the
 * block that used NO_CANCEL, and only the waits turn it back on. */
static inline void cancel_restore(const int *old)
{
    pthread_setcancelstate(*old, NULL);
}
#define NO_CANCEL(old)                                                         \
    int old __attribute__((cleanup(cancel_restore)));                          \
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old)

/* The emulated sk_err of s, counted for the data hooks. Written with
 * s->mu held; an atomic so that a hook may glance at it without the lock
 * (a process with one such socket must not make every call on every
 * other managed socket take a lock). */
static void set_pending(struct resil_sock *s, int err)
{
    int was = atomic_load_explicit(&s->pending_err, memory_order_relaxed);
    if (was == 0 && err != 0)
        atomic_fetch_add(&resil_conn_errors, 1);
    else if (was != 0 && err == 0)
        atomic_fetch_sub(&resil_conn_errors, 1);
    atomic_store_explicit(&s->pending_err, err, memory_order_relaxed);
}

static int take_pending(struct resil_sock *s)
{
    int e = atomic_load_explicit(&s->pending_err, memory_order_relaxed);
    set_pending(s, 0);
    return e;
}

static bool has_pending(struct resil_sock *s)
{
    return atomic_load_explicit(&s->pending_err, memory_order_relaxed) != 0;
}

static void ctx_unref(struct resil_race_ctx *c) /* engine lock held */
{
    if (--c->refs > 0)
        return;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        resil_fds_close(&c->fds[i]);
    resil_fds_close(&c->donefd);
    resil_fds_close(&c->orig_fd);
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

/* Stop race c (engine lock held): whoever waits for it gets result. */
static void cancel_ctx(struct resil_race_ctx *c, int result)
{
    uint64_t one = 1;

    if (!c->finished && !c->cancelled)
        atomic_fetch_sub(&resil_races_active, 1);
    c->cancelled = true;
    c->result = result;
    (void)!real.write(c->donefd, &one, sizeof(one));
    if (c->s->race == c)
        c->s->race = NULL;
}

/* Stop s's race, if any (engine lock held). */
static bool cancel_race(struct resil_sock *s, int result)
{
    if (s->race == NULL)
        return false;
    cancel_ctx(s->race, result);
    return true;
}

static void close_attempt(struct resil_race_ctx *c, int i)
{
    if (c->fds[i] >= 0) {
        resil_engine_del(c->fds[i]);
        resil_fds_close(&c->fds[i]);
    }
}

/* Attempt i failed with err. Only the socket of the attempt whose errno a
 * failed race reports is kept: it goes onto the program's fd then, and is
 * the kernel's own failed socket (poll, read and write after the error, as
 * a plain failed connect gives them); a fresh socket would not be. */
static void attempt_failed(struct resil_race_ctx *c, int i, int err,
                           uint64_t now, bool connecting)
{
    resil_race_failed(&c->r, i, err, now);
    if (c->fds[i] < 0)
        return;
    if (resil_race_error_att(&c->r) != i) {
        close_attempt(c, i);
        return;
    }
    resil_engine_del(c->fds[i]);
    if (c->kept >= 0)
        close_attempt(c, c->kept);
    c->kept = i;
    c->kept_connecting = connecting;
}

/* Set the options the program recorded after seq `since` on fd, in its
 * order. s->mu held. */
static void replay_opts(struct resil_sock *s, int fd, uint32_t since)
{
    for (struct resil_sockopt *o = s->opts; o; o = o->next)
        if (o->seq > since &&
            real.setsockopt(fd, o->level, o->name, o->val, o->len) < 0)
            rdebug("fd %d: replaying option %d/%d: %s", s->fd, o->level,
                   o->name, strerror(errno));
}

/* The program's own SO_REUSEADDR (0 unless it set one). s->mu held. */
static int app_reuseaddr(const struct resil_sock *s)
{
    for (const struct resil_sockopt *o = s->opts; o; o = o->next)
        if (o->level == SOL_SOCKET && o->name == SO_REUSEADDR &&
            o->len >= sizeof(int))
            return *(const int *)o->val != 0;
    return 0;
}

/* Bind attempt socket fd where the program bound its socket. After
 * bind(addr, 0) that is the port bind() gave the program's socket too
 * (s->bind_shared), so that getsockname() before and after the connect,
 * and the peer, see one port, as with one socket. Sockets may share a
 * local port when each has SO_REUSEADDR and none listens (the 4-tuples
 * differ): the attempts keep it until the swap (then the program's value
 * comes back), the program's socket, parked and still holding the port,
 * has it only for the instant of each bind (s->mu held, like its
 * setsockopt hook). After a re-race the port may have been taken
 * meanwhile: the attempt then takes any port. */
static int bind_attempt(struct resil_race_ctx *c, int fd)
{
    struct resil_sock *s = c->s;
    struct sockaddr_storage any;
    socklen_t l = sizeof(int);
    int one = 1, prev = 1, rc, e;
    bool toggle;

    if (!s->bind_shared)
        return real.bind(fd, (struct sockaddr *)&s->bind_sa, s->bind_len);
    real.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    toggle = !c->rerace && resil_sock_is_ours(s) &&
             real.getsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &prev, &l) == 0 &&
             !prev;
    if (toggle)
        real.setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    rc = real.bind(fd, (struct sockaddr *)&s->bind_sa, s->bind_len);
    e = errno;
    if (toggle)
        real.setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &prev, sizeof(prev));
    if (rc < 0 && e == EADDRINUSE) {
        rdebug("fd %d: source port taken; this attempt uses another", s->fd);
        any = s->bind_sa;
        if (any.ss_family == AF_INET)
            ((struct sockaddr_in *)&any)->sin_port = 0;
        else
            ((struct sockaddr_in6 *)&any)->sin6_port = 0;
        rc = real.bind(fd, (struct sockaddr *)&any, s->bind_len);
        e = errno;
    }
    errno = e;
    return rc;
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

/* The race is decided. engine lock held; takes s->mu for the swap. What
 * goes onto the program's fd: the winner; when every attempt failed, the
 * kept failed attempt (its error pending, emulated); when a re-race
 * failed, the program's own dead connection, with the error its data
 * call met pending: the error and the socket the program would have had
 * without libresil. */
/* A session destination's winner: the HELLO goes out first (session.h).
 * s->mu held. */
static void hello(struct resil_sock *s, int fd)
{
    if (resil_sess_attach(s, RESIL_ROLE_CLIENT) != RESIL_OK ||
        resil_sess_client_hello(s->sess, fd) != RESIL_OK) {
        rwarn("fd %d: cannot send the session HELLO (%s); plain TCP", s->fd,
              strerror(errno));
        if (s->sess)
            resil_sess_set_state(s->sess, RESIL_SESS_PLAIN);
    }
}

static void finish(struct resil_race_ctx *c, int winner_idx, uint64_t now)
{
    struct resil_sock *s = c->s;
    char tried[1024], a[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN];
    char name[2 * RESIL_NAME_LEN];
    int err = 0, fd = -1, pend = 0, keep, swap_err = 0;
    uint32_t since = 0;
    bool connecting = false, restore = false, gone;
    resil_status_t st = RESIL_ESYS; /* nothing put on the fd yet */

    /* the attempt socket that goes onto the fd; a failed re-race puts
     * the dead connection back instead */
    keep = winner_idx >= 0                  ? winner_idx
           : c->rerace && c->orig_fd >= 0 ? -1
                                            : c->kept;
    for (int i = 0; i < c->r.n; i++) {
        if (c->r.att[i].state == RESIL_ATT_FAILED)
            resil_health_fail(&c->r.att[i].ip, now);
        if (i != keep)
            close_attempt(c, i);
    }
    if (winner_idx >= 0) {
        struct resil_attempt *w = &c->r.att[winner_idx];
        resil_health_win(&w->ip, now - w->started_ns, now);
        fd = resil_fds_take(&c->fds[winner_idx]);
        since = c->optseq[winner_idx];
        resil_engine_del(fd);
    } else {
        err = resil_race_errno(&c->r);
        if (c->rerace && c->orig_fd >= 0) {
            fd = resil_fds_take(&c->orig_fd);
            since = c->orig_optseq;
            pend = c->orig_err;
            restore = true;
        } else if (c->kept >= 0) {
            fd = resil_fds_take(&c->fds[c->kept]);
            since = c->optseq[c->kept];
            connecting = c->kept_connecting;
            pend = err;
        } else {
            /* no attempt got as far as a socket: a fresh one polls
             * writable (POLLOUT|POLLHUP), so waiters wake */
            int fresh = -1;
            fd = real.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd >= 0 &&
                resil_fds_own(&fresh, fd, RESIL_FD_SOCK, NULL) == RESIL_OK)
                fd = resil_fds_take(&fresh);
            else
                fd = -1;
            pend = err;
        }
    }
    /* reported before the program can see the outcome: a program that
     * exits right after using its connection still leaves its event */
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
        if (restore)
            rinfo("fd %d: re-race failed (%s); the program gets %s", s->fd,
                  strerror(err), pend ? strerror(pend) : "its socket back");
        else
            rinfo("fd %d: every address failed; reporting %s", s->fd,
                  strerror(err));
        resil_event("connect_failed", s->fd,
                    "\"dst\":\"%s\",\"name\":\"%s\",\"port\":%u,"
                    "\"tried\":[%s],\"errno\":\"%s\",\"rerace\":%s,"
                    "\"ms\":%.3f",
                    dst, name, c->port, tried, strerrorname_np(err) ?: "?",
                    c->rerace ? "true" : "false",
                    (double)(now - c->start_ns) / 1e6);
    }
    pthread_mutex_lock(&s->mu);
    gone = resil_sock_closed(s);
    if (fd >= 0 && !gone) {
        replay_opts(s, fd, since);
        if (s->bind_shared && !restore) {
            int v = app_reuseaddr(s);
            real.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof(v));
        }
        /* held before the socket is on the fd: a thread woken by the swap
         * may ask SO_ERROR at once, without our lock (the error is taken
         * away again below when the swap fails) */
        set_pending(s, winner_idx >= 0 ? c->won_err : pend);
        if (winner_idx >= 0 && s->want_sess && c->won_err == 0)
            hello(s, fd);
        st = resil_swap_in(s, fd);
        swap_err = errno;
    } else {
        resil_fds_close_fd(fd);
        if (gone)
            st = RESIL_ENOENT;
    }
    s->rerace = false;
    if (st == RESIL_OK && winner_idx >= 0) {
        resil_sock_set_state(s, RS_CONNECTED);
        s->cur_ip = c->r.att[winner_idx].ip;
        s->connected_ns = now;
        s->fail_connecting = c->won_connecting;
        set_pending(s, c->won_err);
    } else if (st == RESIL_OK && restore) {
        resil_sock_set_state(s, c->orig_state);
        set_pending(s, pend);
    } else if (st == RESIL_OK) {
        resil_sock_set_state(s, RS_FAILED);
        s->fail_connecting = connecting;
        set_pending(s, pend);
    } else {
        if (st == RESIL_ESYS) {
            /* fd still holds the parked socket: disconnected, it polls
             * as an unconnected socket and nobody waits on it for ever */
            resil_unpark(s->fd);
            resil_sock_set_state(s, RS_FRESH);
        }
        set_pending(s, 0);
        if (gone)
            err = EBADF; /* as when close() cancels the race first */
        else if (err == 0)
            err = ECONNABORTED;
    }
    s->race = NULL;
    pthread_mutex_unlock(&s->mu);
    c->finished = true;
    atomic_fetch_sub(&resil_races_active, 1);
    c->result = err;
    /* logged after s->mu: a close() waits on it */
    if (st == RESIL_ENOENT && gone)
        rdebug("fd %d: race over; the program closed the socket", s->fd);
    else if (st == RESIL_ENOENT)
        rinfo("fd %d: closed behind libresil's back (the number may be "
              "reused); forgetting it", s->fd);
    else if (st != RESIL_OK)
        rwarn("fd %d: cannot put the race's socket on the fd (%s); the "
              "program gets %s", s->fd,
              fd >= 0 ? strerror(swap_err) : "no socket", strerror(err));
    uint64_t one = 1;
    (void)!real.write(c->donefd, &one, sizeof(one));
}

static int tcp_state(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        return -1;
    return ti.tcpi_state;
}

/* Attempt i completed its handshake. A blocking connect() waiting for the
 * race, or a re-race (the program's connect() returned long ago), must
 * leave the kernel's socket SS_CONNECTED as its own blocking connect does
 * (the attempt's non-blocking connect left it SS_CONNECTING: a connect()
 * now would say 0, not EISCONN): one more connect() does that at once. A
 * non-blocking program connects it itself with its next connect(). A
 * connection reset already is not touched (that connect() would consume
 * its error and disconnect it): it still won, and dies like any
 * connection (the program's connect() returned 0 on the handshake).
 * Returns 0, or the error of a connection reset since its handshake;
 * *connecting tells whether the socket is still SS_CONNECTING then. */
static int settle(struct resil_race_ctx *c, int i, bool *connecting)
{
    struct sockaddr_storage sa;
    socklen_t len, l = sizeof(int);
    int fd = c->fds[i], err = 0;

    *connecting = true;
    if (tcp_state(fd) == TCP_CLOSE) {
        real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        return err ? err : ECONNRESET;
    }
    if (c->waiters == 0 && !c->rerace)
        return 0;
    len = resil_ip_to_sa(&c->r.att[i].ip, c->port, c->s->family, &sa);
    if (real.connect(fd, (struct sockaddr *)&sa, len) == 0 ||
        errno == EISCONN)
        return 0;
    *connecting = false; /* reset in between: the kernel disconnected it */
    return errno;
}

/* The handshake of attempt i completed: it wins, with err when it was
 * reset since (ECONNRESET, or EPIPE after the peer's FIN: a reset of a
 * connection in SYN_SENT is ECONNREFUSED, tcp_reset()). */
static bool handshake_done(int err)
{
    return err == 0 || err == ECONNRESET || err == EPIPE;
}

static void start_attempt(struct resil_race_ctx *c, int i, uint64_t now)
{
    struct resil_sock *s = c->s;
    struct sockaddr_storage sa;
    socklen_t len;
    int fd;

    len = resil_ip_to_sa(&c->r.att[i].ip, c->port, s->family, &sa);
    fd = real.socket(s->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || len == 0) {
        resil_race_failed(&c->r, i, fd < 0 ? errno : EAFNOSUPPORT, now);
        if (fd >= 0)
            real.close(fd);
        return;
    }
    if (resil_fds_own(&c->fds[i], fd, RESIL_FD_SOCK, NULL) != RESIL_OK) {
        resil_race_failed(&c->r, i, errno, now);
        return;
    }
    fd = c->fds[i];
    pthread_mutex_lock(&s->mu);
    replay_opts(s, fd, 0);
    c->optseq[i] = s->opt_seq;
    if (s->bound && bind_attempt(c, fd) < 0) {
        int e = errno;
        pthread_mutex_unlock(&s->mu);
        attempt_failed(c, i, e, now, false);
        return;
    }
    resil_monitor_tune(s, fd);
    pthread_mutex_unlock(&s->mu);
    if (real.connect(fd, (struct sockaddr *)&sa, len) == 0) {
        c->won_err = settle(c, i, &c->won_connecting);
        resil_race_won(&c->r, i, now);
        return;
    }
    if (errno != EINPROGRESS) {
        /* failed at once: the kernel left the socket unconnected */
        attempt_failed(c, i, errno, now, false);
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
    /* the program closed the socket (resil_conn_forget, which wakes us):
     * the race stops here. Without s->mu: a stale false costs one more
     * turn, and finish() looks again under s->mu. */
    if (resil_sock_closed(c->s)) {
        cancel_ctx(c, EBADF);
        return UINT64_MAX;
    }
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

/* donefd: c's, pinned by the caller (the program may dup2 onto the number
 * meanwhile: fds.h) */
static int wait_done(int donefd, int timeout_ms)
{
    struct pollfd p = {.fd = donefd, .events = POLLIN};
    int rc;

    if (timeout_ms < 0) {
        /* a blocking read, not poll(): like a socket call without a
         * timeout, the kernel restarts it after a handler with SA_RESTART
         * and fails it with EINTR otherwise; with a timeout (poll) a
         * socket call fails with EINTR either way (sock_intr_errno) */
        uint64_t v;
        rc = 0;
        if (real.read(p.fd, &v, sizeof(v)) < 0)
            rc = errno;
        else /* put it back: another thread may wait for this race too */
            (void)!real.write(p.fd, &v, sizeof(v));
        return rc;
    }
    rc = real.poll(&p, 1, timeout_ms);
    if (rc < 0)
        return errno;
    if (rc == 0)
        return EINPROGRESS;
    return 0;
}

/* ---- blocking waits (conn.h: outside the recursion guard, cancellable)
 * The guard keeps a signal handler's calls from re-entering our locked
 * bookkeeping; a wait holds no lock and calls only real functions, so
 * there it protects nothing, and a handler's calls during the wait are
 * the program's own, to be hooked like any other.
 * A wait holds a reference to its race. A cancellation drops it (and the
 * waiter count) in wait_cancelled(). A handler that siglongjmps out of the
 * wait cannot be seen; the wait is recorded per thread, and the thread's
 * next entry into this file drops it, once it is sure that the wait's
 * frame is gone (heal()). */
struct waitrec {
    struct resil_race_ctx *c;
    bool counted; /* in c->waiters */
    bool pinned;  /* c->donefd pinned (fds.h) */
};
static __thread struct waitrec jumped;     /* the wait in progress */
static __thread uintptr_t jumped_frame;    /* its stack frame */

static void drop_wait(struct waitrec w)
{
    if (w.pinned)
        resil_fds_unpin(&w.c->done_pins);
    resil_engine_lock();
    if (w.counted)
        w.c->waiters--;
    ctx_unref(w.c);
    resil_engine_unlock();
}

static void wait_cancelled(void *arg)
{
    jumped.c = NULL;
    drop_wait(*(struct waitrec *)arg);
}

/* Drop the reference of a wait a handler jumped out of. Only when this is
 * not a handler running inside that very wait: on the thread's own stack
 * (not a sigaltstack) and above the wait's frame (stacks grow down), the
 * frame is gone. */
static void heal(void)
{
    stack_t ss;
    char here;

    if (jumped.c == NULL || (uintptr_t)&here <= jumped_frame ||
        sigaltstack(NULL, &ss) < 0 || (ss.ss_flags & SS_ONSTACK))
        return;
    struct waitrec w = jumped;
    jumped.c = NULL;
    rdebug("a wait was left by a jump out of a signal handler; dropping "
           "its race");
    drop_wait(w);
}

/* Wait for c (the caller holds a reference; dropped here only when the
 * thread is cancelled). cs: the program's cancel state. Returns 0 when c
 * is done, EINTR, or EINPROGRESS at timeout_ms (-1: none). */
static int wait_race(struct resil_race_ctx *c, int timeout_ms, int cs,
                     bool counted)
{
    struct waitrec w = {.c = c, .counted = counted, .pinned = true}, outer;
    uintptr_t outer_frame;
    int depth = resil_in_shim, err, donefd;

    heal();
    /* unpinned by this function, or by drop_wait() after a cancellation
     * or a jump out of the wait */
    donefd = resil_fds_pin(&c->donefd, &c->done_pins);
    /* a handler may wait too, inside this thread's wait */
    outer = jumped;
    outer_frame = jumped_frame;
    jumped = w;
    jumped_frame = (uintptr_t)&w;
    resil_in_shim = 0;
    pthread_cleanup_push(wait_cancelled, &w);
    pthread_setcancelstate(cs, NULL);
    err = wait_done(donefd, timeout_ms);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_pop(0);
    resil_fds_unpin(&c->done_pins);
    resil_in_shim = depth;
    jumped = outer;
    jumped_frame = outer_frame;
    return err;
}

/* A blocking connect() waits for race c of s (the caller's reference to c,
 * counted in c->waiters, is dropped here). Returns what connect() reports:
 * 0, the race's errno, EINTR, or timeout_err when SO_SNDTIMEO expires
 * first. */
static int race_wait(struct resil_sock *s, struct resil_race_ctx *c,
                     const struct sockaddr *sa, socklen_t len,
                     int timeout_err, int cs)
{
    struct timeval tv;
    socklen_t tl = sizeof(tv);
    int err, timeout_ms = -1;

    if (real.getsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) == 0 &&
        (tv.tv_sec || tv.tv_usec))
        timeout_ms = (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
    err = wait_race(c, timeout_ms, cs, true);
    if (err == EINPROGRESS)
        err = timeout_err;
    resil_engine_lock();
    c->waiters--;
    if (err == 0) {
        err = c->result;
        pthread_mutex_lock(&s->mu);
        if (err && resil_sock_state(s) == RS_FAILED && s->race == NULL) {
            /* connect() reports the error itself (it is not pending any
             * more), and like the kernel's the socket is unconnected
             * again: the next connect() is a new attempt */
            set_pending(s, 0);
            if (s->fail_connecting && resil_sock_is_ours(s))
                real.connect(s->fd, sa, len); /* ECONNABORTED: reset */
            s->fail_connecting = false;
            resil_sock_set_state(s, RS_FRESH);
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
    NO_CANCEL(cs);

    heal();
    resil_engine_lock();
    c = s->race;
    if (c == NULL || c->rerace) {
        resil_engine_unlock();
        return RESIL_ENOENT;
    }
    c->refs++;
    c->waiters++;
    resil_engine_unlock();
    /* the kernel: EALREADY when SO_SNDTIMEO expires on a connect already
     * in progress */
    *err = race_wait(s, c, sa, len, EALREADY, cs);
    return RESIL_OK;
}

resil_status_t resil_conn_connect_failed(struct resil_sock *s,
                                         const struct sockaddr *sa,
                                         socklen_t len, int *err)
{
    int e;
    NO_CANCEL(cs);

    (void)cs;
    pthread_mutex_lock(&s->mu);
    if (resil_sock_state(s) != RS_FAILED &&
        !(resil_sock_state(s) == RS_CONNECTED && s->fail_connecting)) {
        pthread_mutex_unlock(&s->mu);
        return RESIL_ENOENT;
    }
    e = resil_sock_is_ours(s) ? take_pending(s) : 0;
    if (s->fail_connecting && resil_sock_is_ours(s)) {
        /* the kernel's own path for a connect that failed in progress
         * (__inet_stream_connect, sock_error): ECONNABORTED once the error
         * was read, and the socket unconnected again */
        int rc = real.connect(s->fd, sa, len);
        if (e == 0)
            e = rc < 0 ? errno : 0;
    } else if (e == 0) {
        e = ECONNABORTED;
    }
    s->fail_connecting = false;
    resil_sock_set_state(s, RS_FRESH);
    pthread_mutex_unlock(&s->mu);
    *err = e;
    return RESIL_OK;
}

/* Start a race for s toward ip:port. engine lock and s->mu held. On
 * success s is RS_RACING and *out (when not NULL) holds a reference to the
 * ctx for waiting, counted as a blocking connect()'s unless rerace.
 * RESIL_ENOENT when the program closed s meanwhile, else RESIL_ENOMEM or
 * RESIL_ESYS. */
static resil_status_t race_begin(struct resil_sock *s,
                                 const struct resil_ip *ip, uint16_t port,
                                 bool rerace, struct resil_race_ctx **out)
{
    struct resil_ip cand[RESIL_RACE_MAX];
    struct resil_race_ctx *c;
    uint64_t now = resil_now_ns();
    int n;

    /* closed by another thread meanwhile (the program's own race of
     * connect() and close()): no race may outlive the close */
    if (resil_sock_closed(s))
        return RESIL_ENOENT;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return RESIL_ENOMEM;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        c->fds[i] = -1;
    c->kept = -1;
    c->orig_fd = -1;
    /* blocking: wait_done() reads it (and writes it back) */
    c->donefd = eventfd(0, EFD_CLOEXEC);
    if (c->donefd < 0 ||
        resil_fds_own(&c->donefd, c->donefd, RESIL_FD_WAKE, &c->done_pins) !=
            RESIL_OK ||
        !resil_fds_spare(c->donefd)) {
        resil_fds_close(&c->donefd);
        free(c);
        return RESIL_ESYS;
    }
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
    c->waiters = out != NULL && !rerace;
    s->race = c;
    resil_sock_set_state(s, RS_RACING);
    s->rerace = rerace;
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
    resil_status_t st;
    NO_CANCEL(cs);

    heal();
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
    s->reraces = 0;
    /* a connect clears the socket's error (tcp_connect_init) */
    set_pending(s, 0);
    if (s->fastopen) {
        pthread_mutex_unlock(&s->mu);
        goto passthru;
    }
    pthread_mutex_unlock(&s->mu);

    resil_engine_lock();
    n = gather(&ip, name, sizeof(name), cand, RESIL_RACE_MAX);
    /* a session destination always goes through the engine: it writes
     * the HELLO on the winner before the program can write a byte */
    pthread_mutex_lock(&s->mu);
    s->want_sess = resil_sess_wanted(&ip, port, name);
    pthread_mutex_unlock(&s->mu);
    if (!resil_config_get()->race ||
        (n == 1 && !s->want_sess &&
         (name[0] == '\0' || !resil_config_get()->dns))) {
        /* nothing to race: the real connect, plus failure detection */
        resil_engine_unlock();
        pthread_mutex_lock(&s->mu);
        resil_sock_set_state(s, resil_config_get()->race ? RS_DIRECT
                                                         : RS_PASSTHRU);
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
    st = RESIL_ESYS;
    if (fl >= 0) {
        pthread_mutex_lock(&s->mu);
        st = race_begin(s, &ip, port, false, (fl & O_NONBLOCK) ? NULL : &c);
        pthread_mutex_unlock(&s->mu);
    }
    if (st == RESIL_ENOENT) {
        /* another thread closed fd during this connect: the number is no
         * longer this socket's to touch */
        resil_engine_unlock();
        *err = EBADF;
        return RESIL_OK;
    }
    if (st != RESIL_OK) {
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
    *err = race_wait(s, c, sa, len, EINPROGRESS, cs);
    return RESIL_OK;

direct:
    resil_engine_release();
    if (resil_config_get()->strict) {
        /* strict mode: an internal failure is an error, not plain TCP */
        rerror("fd %d: cannot race (engine or parking unavailable); "
               "failing the connect (strict)", s->fd);
        *err = EAGAIN;
        return RESIL_OK;
    }
    pthread_mutex_lock(&s->mu);
    resil_sock_set_state(s, RS_DIRECT);
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
    resil_sock_set_state(s, RS_PASSTHRU);
    pthread_mutex_unlock(&s->mu);
    return RESIL_EUNSUPP;
}

resil_status_t resil_conn_disconnect(struct resil_sock *s,
                                     const struct sockaddr *sa, socklen_t len,
                                     int *err)
{
    bool cancelled, rerace_err = false;
    int rc, e;
    NO_CANCEL(cs);

    (void)cs;
    heal();
    resil_engine_lock();
    pthread_mutex_lock(&s->mu);
    if (resil_sock_state(s) == RS_FRESH ||
        resil_sock_state(s) == RS_PASSTHRU ||
        !resil_sock_is_ours(s)) {
        pthread_mutex_unlock(&s->mu);
        resil_engine_unlock();
        return RESIL_EUNSUPP;
    }
    /* a race stops here (nothing may be swapped onto the fd any more); the
     * kernel's disconnect of the socket on fd (during a race, the parked
     * one in SYN_SENT) gives the program what its own would give. During
     * a re-race the program's socket is the dead connection kept aside:
     * what a disconnect leaves pending is its error, if it still holds
     * one, not the reset the parked socket gets. */
    if (s->race && s->race->rerace) {
        socklen_t l = sizeof(int);
        int old = 0;
        if (s->race->orig_fd >= 0 && s->race->orig_err == 0)
            real.getsockopt(s->race->orig_fd, SOL_SOCKET, SO_ERROR, &old, &l);
        set_pending(s, old);
        rerace_err = true;
    }
    cancelled = cancel_race(s, ECONNRESET);
    rc = real.connect(s->fd, sa, len);
    e = errno;
    if (rerace_err) {
        socklen_t l = sizeof(int);
        int parked;
        real.getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &parked, &l);
    }
    if (rc == 0 || cancelled) {
        resil_sock_set_state(s, RS_FRESH);
        s->rerace = false;
        s->fail_connecting = false;
        s->reraces = 0;
        s->eof_seen = false;
    }
    pthread_mutex_unlock(&s->mu);
    resil_engine_unlock();
    if (cancelled)
        resil_engine_wake(); /* the engine drops the race */
    *err = rc < 0 ? e : 0;
    return RESIL_OK;
}

void resil_conn_forget(struct resil_sock *s)
{
    bool racing;
    NO_CANCEL(cs);

    (void)cs;
    heal();
    /* s->mu only, never the engine lock: a close() must not wait for the
     * engine's turn (its log and event writes, a swap of another socket).
     * A race of s is stopped by the engine itself (step() sees s->closed);
     * none can begin after this (race_begin() looks at s->closed under
     * s->mu), and a race that ends meanwhile finds s->closed in finish(),
     * under s->mu, before it touches the fd. */
    pthread_mutex_lock(&s->mu);
    atomic_store_explicit(&s->closed, true, memory_order_relaxed);
    racing = resil_sock_state(s) == RS_RACING;
    s->rerace = false;
    set_pending(s, 0);
    pthread_mutex_unlock(&s->mu);
    if (racing)
        resil_engine_wake(); /* the engine drops the race */
}

bool resil_conn_take_error(int fd, int *err)
{
    struct resil_sock *s;
    bool took = false;

    if (atomic_load_explicit(&resil_conn_errors, memory_order_relaxed) == 0 ||
        (s = resil_table_get(fd)) == NULL)
        return false;
    if (has_pending(s)) {
        pthread_mutex_lock(&s->mu);
        if (has_pending(s) && resil_sock_is_ours(s)) {
            *err = take_pending(s);
            took = true;
        }
        pthread_mutex_unlock(&s->mu);
    }
    resil_sock_unref(s);
    return took;
}

uint32_t resil_conn_poll_err(int fd)
{
    struct resil_sock *s;
    uint32_t ev = 0;
    RESIL_KEEP_ERRNO();

    if (atomic_load_explicit(&resil_conn_errors, memory_order_relaxed) == 0 ||
        (s = resil_table_get(fd)) == NULL)
        return 0;
    if (has_pending(s)) {
        pthread_mutex_lock(&s->mu);
        if (has_pending(s) && resil_sock_is_ours(s))
            ev = POLLERR;
        pthread_mutex_unlock(&s->mu);
    }
    resil_sock_unref(s);
    return ev;
}

bool resil_conn_swapped(struct resil_sock *s, uint64_t seq)
{
    bool r;
    pthread_mutex_lock(&s->mu);
    r = s->swap_seq > seq;
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Re-race s, whose connection died (err) before carrying a byte; consumed:
 * the error the program's call met (0 when it did not meet one: the dead
 * socket still holds its own). See resil_conn_path_error(). */
static resil_status_t rerace(struct resil_sock *s, int err, int consumed,
                             int wait_ms, int cs, int *res)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    struct resil_race_ctx *c = NULL;
    enum resil_sock_state was;
    uint32_t seq;
    int outq = 0, park = -1, keep = -1, sw_err = 0;
    resil_status_t st = RESIL_EUNSUPP, sw = RESIL_OK;

    if (err != ETIMEDOUT && err != EHOSTUNREACH && err != ENETUNREACH &&
        err != ECONNRESET && err != EPIPE)
        return RESIL_EUNSUPP;
    resil_engine_lock();
    pthread_mutex_lock(&s->mu);
    if (!resil_sock_connected(s) || s->eof_seen || resil_sock_closed(s) ||
        !resil_config_get()->race || s->reraces >= RESIL_RERACE_MAX ||
        !resil_sock_is_ours(s))
        goto out;
    /* the kernel's counters, not ours: a byte either way rules out a
     * transparent re-race (nothing is ever replayed to an ordinary peer) */
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        ti.tcpi_bytes_received != 0 || ti.tcpi_bytes_acked > 1 ||
        real.ioctl(s->fd, SIOCOUTQ, &outq) < 0 || outq != 0)
        goto out;
    /* the engine first: nothing may be left parked on fd without a race */
    if (resil_engine_start() != RESIL_OK)
        goto out;
    /* the dead connection stays open aside: if the re-race fails it goes
     * back, and the program has what it would have had without libresil */
    if (resil_fds_dup(&keep, s->fd, RESIL_FD_SOCK) != RESIL_OK)
        goto out;
    park = real.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (park < 0 || resil_fds_own(&park, park, RESIL_FD_SOCK, NULL) !=
                        RESIL_OK)
        goto out;
    /* the program's options hold on the fd while it re-races (a blocking
     * call there meets its SO_RCVTIMEO, getsockopt its values) */
    replay_opts(s, park, 0);
    if (resil_park(park, s->family, s->v6only) != RESIL_OK)
        goto out;
    was = resil_sock_state(s);
    seq = s->opt_seq;
    if ((sw = resil_swap_in(s, resil_fds_take(&park))) != RESIL_OK) {
        sw_err = errno;
        goto out;
    }
    resil_health_fail(&s->cur_ip, resil_now_ns());
    if (race_begin(s, &s->peer_ip, s->peer_port, true,
                   wait_ms ? &c : NULL) != RESIL_OK) {
        /* the dead socket goes back: the call reports its error */
        resil_swap_in(s, resil_fds_take(&keep));
        goto out;
    }
    /* s->race: c is set only for a caller that waits */
    resil_fds_transfer(&keep, &s->race->orig_fd);
    s->race->orig_err = consumed;
    s->race->orig_state = was;
    s->race->orig_optseq = seq;
    s->reraces++;
    st = RESIL_OK;
out:
    pthread_mutex_unlock(&s->mu);
    resil_engine_unlock();
    resil_fds_close(&park);
    resil_fds_close(&keep);
    /* logged after s->mu: a close() waits on it */
    if (sw == RESIL_ENOENT)
        rinfo("fd %d: closed behind libresil's back (the number may be "
              "reused); forgetting it", s->fd);
    else if (sw != RESIL_OK)
        rwarn("fd %d: cannot re-race: parking the fd failed (%s)", s->fd,
              strerror(sw_err));
    if (st != RESIL_OK)
        return st;
    rinfo("fd %d: connection died before any byte (%s); re-racing", s->fd,
          strerror(err));
    if (c == NULL) {
        /* non-blocking: the fd holds a socket in progress */
        *res = EAGAIN;
        return RESIL_OK;
    }
    int e = wait_race(c, wait_ms, cs, false);
    resil_engine_lock();
    ctx_unref(c);
    resil_engine_unlock();
    /* a timeout is the socket's own (SO_RCVTIMEO, SO_SNDTIMEO): EAGAIN */
    *res = e == EINPROGRESS ? EAGAIN : e;
    return RESIL_OK;
}

resil_status_t resil_conn_path_error(struct resil_sock *s, int err,
                                     int wait_ms, int *res)
{
    NO_CANCEL(cs);

    heal();
    return rerace(s, err, err, wait_ms, cs, res);
}

bool resil_conn_dead_unused(struct resil_sock *s, bool pollerr)
{
    struct tcp_info ti;
    socklen_t l;
    int res;
    bool maybe;
    NO_CANCEL(cs);

    /* a first look (rerace() checks again under the engine lock): only on
     * an error or hang-up event, so the lock costs nothing that counts */
    pthread_mutex_lock(&s->mu);
    maybe = resil_sock_connected(s) && !s->eof_seen &&
            s->reraces < RESIL_RERACE_MAX;
    pthread_mutex_unlock(&s->mu);
    if (!maybe)
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
    /* the errno only selects "a path failure"; the socket keeps its own */
    heal();
    return rerace(s, ETIMEDOUT, 0, 0, cs, &res) == RESIL_OK;
}

/* An attempt socket is writable or failed: the watcher knows which. */
static void attempt_event(struct resil_watch *w, uint32_t events, uint64_t now)
{
    struct att_watch *aw = (struct att_watch *)w;
    struct resil_race_ctx *c = aw->c;
    int i = aw->i, fd = c->fds[i], err = 0;
    socklen_t l = sizeof(err);
    bool connecting = true; /* SO_ERROR leaves it SS_CONNECTING */

    (void)events;
    if (fd < 0 || c->finished || c->cancelled ||
        c->r.att[i].state != RESIL_ATT_RUNNING)
        return;
    real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err == 0)
        err = settle(c, i, &connecting);
    if (handshake_done(err)) {
        c->won_err = err;
        c->won_connecting = connecting;
        resil_race_won(&c->r, i, now);
    } else {
        attempt_failed(c, i, err, now, connecting);
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
    /* a wait the forking thread jumped out of belongs to the parent */
    jumped.c = NULL;
    for (struct resil_race_ctx *c = races, *nx; c; c = nx) {
        nx = c->next;
        pthread_mutex_init(&c->s->mu, NULL);
        resil_sock_set_state(c->s, RS_FAILED);
        c->s->fail_connecting = false;
        c->s->rerace = false;
        set_pending(c->s, ECONNABORTED);
        c->s->race = NULL;
        for (int i = 0; i < RESIL_RACE_MAX; i++)
            resil_fds_close(&c->fds[i]);
        resil_fds_close(&c->orig_fd);
        /* memory of ctx is leaked on purpose: c-ares may point at it */
    }
    races = NULL;
    atomic_store(&resil_races_active, 0);
}

void resil_conn_abort_all(int err)
{
    for (struct resil_race_ctx *c = races; c; c = c->next) {
        struct resil_sock *s = c->s;
        uint64_t one = 1;

        if (c->finished || c->cancelled)
            continue;
        atomic_fetch_sub(&resil_races_active, 1);
        c->cancelled = true;
        c->result = err;
        for (int i = 0; i < RESIL_RACE_MAX; i++)
            close_attempt(c, i);
        pthread_mutex_lock(&s->mu);
        if (s->race == c) {
            s->race = NULL;
            resil_sock_set_state(s, RS_FAILED);
            s->fail_connecting = false;
            s->rerace = false;
            set_pending(s, err);
        }
        pthread_mutex_unlock(&s->mu);
        if (c->donefd >= 0)
            (void)!real.write(c->donefd, &one, sizeof(one));
    }
}

void resil_conn_hold_error(struct resil_sock *s, int err)
{
    set_pending(s, err);
}

bool resil_conn_busy(void)
{
    return races != NULL;
}
