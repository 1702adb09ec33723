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
#include "path.h"
#include "race.h"
#include "session.h"
#include "swap.h"
#include "sys.h"

/* include/net/tcp_states.h; netinet/tcp.h clashes with linux/tcp.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
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
    bool inplace;              /* attempt 0 is the program's own socket and
                                  the fd still holds it; fds[0] is our
                                  duplicate of it, which the engine watches
                                  (conn.h) */
    bool dup0;                 /* fds[0] duplicates the program's socket:
                                  its engine registration must be deleted
                                  before it is closed (epoll keys on the
                                  file, which lives on) */
    bool att0_held;            /* attempt 0's error was read by us and never
                                  shown: emulated if its socket is kept */
    bool att0_unknown;         /* attempt 0 failed while a data call was in
                                  flight on it, which reports the errno
                                  (resil_conn_first_failed) */
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
atomic_int resil_conn_inplace;

/* What attempt 0 on the program's own socket has come to (first_settle). */
enum first_res {
    FIRST_RUNNING, /* still connecting, or nothing to do */
    FIRST_WON,     /* connected: s is RS_CONNECTED, or its race is won */
    FIRST_PARKED,  /* failed, the race goes on: the fd holds a socket in
                      progress */
    FIRST_FAILED,  /* failed, and that is the outcome: the fd holds it */
};

static int gather(const struct resil_ip *target, char *name, size_t namelen,
                  struct resil_ip *out, int max);
static void dns_start(struct resil_race_ctx *c);
static void attempt_event(struct resil_watch *w, uint32_t events,
                          uint64_t now);
static void pend_push(struct resil_sock *s, bool engine_locked);
static void hello_unwatch(struct resil_sock *s);
static struct hello_w *hello_ws; /* every HELLO watch (engine lock) */
static void hello_watch_locked(struct resil_sock *s);
static bool signal_restarts(void);
static enum first_res first_settle(struct resil_sock *s, int err, bool shown,
                                   bool disconnected, uint64_t now);
static void heal(void);

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

atomic_int resil_conn_hellos;

/* s->hello_here, counted for the data hooks. s->mu held. */
static void set_hello(struct resil_sock *s, bool on)
{
    if (s->hello_here == on)
        return;
    s->hello_here = on;
    if (on)
        atomic_fetch_add(&resil_conn_hellos, 1);
    else
        atomic_fetch_sub(&resil_conn_hellos, 1);
}

/* s->inplace, counted for the hooks. s->mu held. */
static void set_inplace(struct resil_sock *s, bool on)
{
    if (atomic_load_explicit(&s->inplace, memory_order_relaxed) == on)
        return;
    atomic_store(&s->inplace, on);
    if (on)
        atomic_fetch_add(&resil_conn_inplace, 1);
    else
        atomic_fetch_sub(&resil_conn_inplace, 1);
}

static void ctx_unref(struct resil_race_ctx *c) /* engine lock held */
{
    if (--c->refs > 0)
        return;
    if (c->dup0 && c->fds[0] >= 0)
        resil_engine_del(c->fds[0]);
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
    /* only now: a data hook that sees none owed goes by the session, and
     * its bytes after the HELLO (resil_conn_hello_due) */
    set_hello(s, false);
}

/* A session destination's first attempt, on the program's fd, connected:
 * the HELLO, unless its connection is gone or bytes moved on it through a
 * path no hook sees (unhooked calls, the server's first bytes read): then
 * no session, plain TCP, as a HELLO now would come after them. s->mu
 * held. */
static void hello_with(struct resil_sock *s, const struct tcp_info *ti)
{
    if ((ti->tcpi_state == TCP_ESTABLISHED ||
         ti->tcpi_state == TCP_CLOSE_WAIT) &&
        ti->tcpi_bytes_sent == 0 && ti->tcpi_bytes_received == 0) {
        hello(s, s->fd);
        return;
    }
    set_hello(s, false);
    rdebug("fd %d: connected, but no session: %s", s->fd,
           ti->tcpi_bytes_sent || ti->tcpi_bytes_received
               ? "bytes moved before the HELLO could go"
               : "the connection is gone");
}

static void hello_now(struct resil_sock *s)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);

    if (!s->hello_here)
        return;
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        ti.tcpi_state = TCP_CLOSE;
    hello_with(s, &ti);
}

/* The race is decided. engine lock held; takes s->mu for the swap. What
 * goes onto the program's fd: the winner; when every attempt failed, the
 * kept failed attempt (its error pending, emulated); when a re-race
 * failed, the program's own dead connection, with the error its data
 * call met pending: the error and the socket the program would have had
 * without libresil. Attempt 0 still on the fd (c->inplace) stays there
 * when it is the one that goes there (never a session destination's:
 * those always race from a parked fd, resil_conn_connect). */
static void finish(struct resil_race_ctx *c, int winner_idx, uint64_t now)
{
    struct resil_sock *s = c->s;
    char tried[2048], a[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN];
    char name[2 * RESIL_NAME_LEN];
    int err = 0, fd = -1, pend = 0, keep, swap_err = 0;
    uint32_t since = 0;
    bool connecting = false, restore = false, stay = false, gone;
    resil_status_t st = RESIL_ESYS; /* nothing put on the fd yet */

    /* the attempt socket that goes onto the fd; a failed re-race puts
     * the dead connection back instead */
    keep = winner_idx >= 0                  ? winner_idx
           : c->rerace && c->orig_fd >= 0 ? -1
                                            : c->kept;
    resil_race_report(&c->r, now);
    for (int i = 0; i < c->r.n; i++)
        if (i != keep)
            close_attempt(c, i);
    if (winner_idx >= 0) {
        if (winner_idx == 0 && c->inplace) {
            /* the program's own socket won: it is on the fd already */
            stay = true;
            close_attempt(c, 0);
        } else {
            fd = resil_fds_take(&c->fds[winner_idx]);
            since = c->optseq[winner_idx];
            resil_engine_del(fd);
        }
    } else {
        err = resil_race_errno(&c->r);
        if (c->kept == 0 && c->inplace) {
            /* attempt 0 failed on the fd, and its error is the race's:
             * the program's own failed socket stays; the error is pending
             * unless the call that met it shows it */
            stay = true;
            connecting = c->kept_connecting;
            pend = c->att0_held ? err : 0;
            close_attempt(c, 0);
        } else if (c->rerace && c->orig_fd >= 0) {
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
            int fresh;
            fd = resil_fds_socket(&fresh, s->family,
                                  SOCK_STREAM | SOCK_CLOEXEC, 0,
                                  RESIL_FD_SOCK, NULL) == RESIL_OK
                     ? resil_fds_take(&fresh)
                     : -1;
            pend = err;
        }
    }
    /* reported before the program can see the outcome: a program that
     * exits right after using its connection still leaves its event */
    tried[0] = '\0'; /* only the events file shows the attempts */
    if (resil_events_enabled())
        resil_race_json(&c->r, tried, sizeof(tried));
    resil_ip_format(&s->peer_ip, s->peer_port, dst, sizeof(dst));
    resil_json_str(c->name, name, sizeof(name));
    if (winner_idx >= 0) {
        resil_ip_format(&c->r.att[winner_idx].ip, -1, a, sizeof(a));
        rinfo("fd %d: %s %s:%u won after %.1f ms (%d attempts)", s->fd,
              c->rerace ? "re-race" : "race", a, c->port,
              (double)(now - c->start_ns) / 1e6, c->r.started);
        resil_event(c->rerace ? "rerace" : "connect", s->fd,
                    "\"dst\":\"%s\",\"name\":\"%s\",\"port\":%u,"
                    "%s,\"winner\":\"%s\",\"ms\":%.3f",
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
                    "%s,\"errno\":\"%s\",\"rerace\":%s,"
                    "\"ms\":%.3f",
                    dst, name, c->port, tried, strerrorname_np(err) ?: "?",
                    c->rerace ? "true" : "false",
                    (double)(now - c->start_ns) / 1e6);
    }
    pthread_mutex_lock(&s->mu);
    gone = resil_sock_closed(s);
    if (stay && !gone) {
        if (resil_sock_is_ours(s)) {
            st = RESIL_OK;
            /* a session destination's first attempt, in place, won: the
             * HELLO goes before any byte of the program can (the data
             * hooks wait for it: resil_conn_hello_due) */
            if (winner_idx == 0 && c->won_err == 0)
                hello_now(s);
        } else {
            /* closed behind our back: the number is not ours to touch
             * (logged below, after s->mu) */
            atomic_store_explicit(&s->closed, true, memory_order_relaxed);
            resil_table_take_if(s->fd, s);
            st = RESIL_ENOENT;
        }
    } else if (fd >= 0 && !gone) {
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
        if (fd >= 0)
            resil_fds_close_fd(fd);
        if (gone)
            st = RESIL_ENOENT;
    }
    s->rerace = false;
    set_inplace(s, false);
    set_hello(s, false); /* sent, or no connection to send it on */
    if (st == RESIL_OK && winner_idx >= 0) {
        resil_sock_set_state(s, RS_CONNECTED);
        s->cur_ip = c->r.att[winner_idx].ip;
        s->connected_ns = now;
        /* a winner reset right after its handshake goes through the
         * kernel's error path on the next connect(); a clean one's next
         * connect() is the kernel's own (0 once, then EISCONN) */
        s->fail_connecting = c->won_err != 0 && c->won_connecting;
        set_pending(s, c->won_err);
        /* a connection that took a race: sized now (conn.h) */
        atomic_store(&s->ka_due, false);
        resil_monitor_tune(s, s->fd);
    } else if (st == RESIL_OK && restore) {
        resil_sock_set_state(s, c->orig_state);
        set_pending(s, pend);
    } else if (st == RESIL_OK) {
        resil_sock_set_state(s, RS_FAILED);
        s->fail_connecting = connecting;
        set_pending(s, pend);
    } else {
        if (st == RESIL_ESYS) {
            /* fd still holds the parked socket (or attempt 0, still
             * connecting): disconnected, it polls as an unconnected socket
             * and nobody waits on it for ever */
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
    if (resil_fds_socket(&c->fds[i], s->family,
                         SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                         RESIL_FD_SOCK, NULL) != RESIL_OK ||
        len == 0) {
        resil_race_failed(&c->r, i, c->fds[i] < 0 ? errno : EAFNOSUPPORT,
                          now);
        resil_fds_close(&c->fds[i]);
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
        char a[RESIL_ADDRSTRLEN], p[24];
        rdebug("fd %d: attempt %d to %s via %s, next in %.1f ms", s->fd, i,
               resil_ip_format(&c->r.att[i].ip, c->port, a, sizeof(a)),
               resil_path_name(c->r.att[i].path, p, sizeof(p)),
               (double)c->r.att[i].delay_ns / 1e6);
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
/* The first attempt of a blocking connect() in progress on this thread,
 * with SO_SNDTIMEO set to the attempt delay: a cancellation or a handler
 * that siglongjmps out of it leaves it to the engine (fast_abandon), the
 * way the engine takes a non-blocking one. */
struct fastrec {
    struct resil_sock *s;
    bool restore;       /* SO_SNDTIMEO to put back */
    struct timeval app; /* the program's (zero: none) */
};
static __thread struct fastrec fast;
static __thread uintptr_t fast_frame;
static void fast_abandon(struct fastrec r);

static void heal(void)
{
    stack_t ss;
    char here;
    bool w, f;

    w = jumped.c != NULL && (uintptr_t)&here > jumped_frame;
    f = fast.s != NULL && (uintptr_t)&here > fast_frame;
    if ((!w && !f) || sigaltstack(NULL, &ss) < 0 ||
        (ss.ss_flags & SS_ONSTACK))
        return;
    if (w) {
        struct waitrec wr = jumped;
        jumped.c = NULL;
        rdebug("a wait was left by a jump out of a signal handler; "
               "dropping its race");
        drop_wait(wr);
    }
    if (f) {
        struct fastrec fr = fast;
        fast.s = NULL;
        rdebug("fd %d: a connect was left by a jump out of a signal "
               "handler; the engine takes it", fr.s->fd);
        fast_abandon(fr);
    }
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

/* fd's SO_SNDTIMEO in ms, -1 for none. */
static int sndtimeo_ms(int fd)
{
    struct timeval tv;
    socklen_t tl = sizeof(tv);

    if (real.getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) == 0 &&
        (tv.tv_sec || tv.tv_usec))
        return (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
    return -1;
}

/* A blocking connect() waits for race c of s (the caller's reference to c,
 * counted in c->waiters, is dropped here) at most timeout_ms (-1: no
 * limit). Returns what connect() reports: 0, the race's errno, EINTR, or
 * timeout_err when the time is up first. */
static int race_wait(struct resil_sock *s, struct resil_race_ctx *c,
                     const struct sockaddr *sa, socklen_t len,
                     int timeout_err, int timeout_ms, int cs)
{
    int err;

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
    *err = race_wait(s, c, sa, len, EALREADY, sndtimeo_ms(s->fd), cs);
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

/* A new race context for s toward port (engine lock and s->mu held), no
 * candidate added yet. NULL when it cannot be made: no memory, or no
 * descriptor for its done eventfd and one attempt. */
static struct resil_race_ctx *ctx_new(struct resil_sock *s, uint16_t port,
                                      bool rerace, uint64_t start_ns)
{
    struct resil_race_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    for (int i = 0; i < RESIL_RACE_MAX; i++)
        c->fds[i] = -1;
    c->kept = -1;
    c->orig_fd = -1;
    /* blocking: wait_done() reads it (and writes it back) */
    resil_fds_making();
    if (resil_fds_own_made(&c->donefd, eventfd(0, EFD_CLOEXEC),
                           RESIL_FD_WAKE, &c->done_pins) != RESIL_OK ||
        !resil_fds_spare(c->donefd)) {
        resil_fds_close(&c->donefd);
        free(c);
        return NULL;
    }
    c->port = port;
    c->start_ns = start_ns;
    c->rerace = rerace;
    c->s = s;
    resil_sock_ref(s);
    c->refs = 1;
    return c;
}

/* c runs: on s, in the engine's list (engine lock and s->mu held), its
 * DNS lookup started unless dns is false (the caller did). *out (when not
 * NULL) gets a reference for waiting, counted as a blocking connect()'s
 * unless c re-races. */
static void ctx_start(struct resil_race_ctx *c, struct resil_race_ctx **out,
                      bool dns)
{
    struct resil_sock *s = c->s;

    c->refs += out != NULL;
    c->waiters = out != NULL && !c->rerace;
    s->race = c;
    resil_sock_set_state(s, RS_RACING);
    s->rerace = c->rerace;
    atomic_fetch_add(&resil_races_active, 1);
    c->next = races;
    races = c;
    if (dns)
        dns_start(c);
    if (out)
        *out = c;
    resil_engine_wake();
}

/* Start a race for s toward ip:port, every attempt on a socket of our own
 * (the fd holds a parked socket: a re-race, a session destination).
 * engine lock and s->mu held. On success s is RS_RACING and *out (when
 * not NULL) holds a reference to the ctx for waiting. RESIL_ENOENT when
 * the program closed s meanwhile, else RESIL_ESYS. */
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
    c = ctx_new(s, port, rerace, now);
    if (c == NULL)
        return RESIL_ESYS;
    n = gather(ip, c->name, sizeof(c->name), cand, RESIL_RACE_MAX);
    resil_race_init(&c->r, s->family, s->v6only,
                    (uint64_t)resil_config_get()->attempt_delay_ms * MS, now);
    /* the program's own choice goes in first: it leads unless the health
     * cache says otherwise */
    for (int i = 0; i < n; i++)
        resil_race_add(&c->r, &cand[i], now);
    ctx_start(c, out, true);
    return RESIL_OK;
}

/* Attempt 0, the program's own socket, failed (engine lock and s->mu
 * held): put a socket in progress on the fd, so that the program sees a
 * connect in progress while the other attempts run; the failed one stays
 * open in c->fds[0] when it is kept. A fresh socket with the program's
 * options (and its bind), parked (swap.h). */
static resil_status_t park_fd(struct resil_race_ctx *c)
{
    struct resil_sock *s = c->s;
    int park;

    if (resil_fds_socket(&park, s->family, SOCK_STREAM | SOCK_CLOEXEC, 0,
                         RESIL_FD_SOCK, NULL) != RESIL_OK)
        return RESIL_ESYS;
    replay_opts(s, park, 0);
    /* getsockname() names the program's bound address while it races */
    if (s->bound && bind_attempt(c, park) == 0 && s->bind_shared) {
        int v = app_reuseaddr(s);
        real.setsockopt(park, SOL_SOCKET, SO_REUSEADDR, &v, sizeof(v));
    }
    if (resil_park(park, s->family, s->v6only) != RESIL_OK) {
        resil_fds_close(&park);
        return RESIL_ESYS;
    }
    if (resil_swap_in_keep(s, resil_fds_take(&park)) != RESIL_OK)
        return RESIL_ESYS;
    c->inplace = false;
    set_inplace(s, false);
    return RESIL_OK;
}

/* Give up the other attempts of c (engine lock held): attempt 0's failure
 * on the fd could not be hidden, so it is the outcome. */
static void give_up(struct resil_race_ctx *c, uint64_t now)
{
    for (int i = 1; i < c->r.started; i++)
        if (c->r.att[i].state == RESIL_ATT_RUNNING) {
            close_attempt(c, i);
            resil_race_failed(&c->r, i, ECONNABORTED, now);
        }
    c->r.n = c->r.started;
    c->r.more_coming = 0;
    c->n_held = 0;
}

/* Attempt 0 of c failed on the fd (engine lock and s->mu held) with err,
 * 0 when its error is still in the socket; held: the program has not seen
 * err. The fd is parked first, then the error read (through our
 * duplicate): the swap must see the failed socket as the program's
 * readiness call saw it (a stale report, epoll.h), and a data call in
 * flight on it must find the error, not a closed socket (a write would
 * get EPIPE and SIGPIPE); with one in flight it is left for that call to
 * report (resil_conn_first_failed). Returns FIRST_PARKED, or FIRST_FAILED
 * when that ends the race (the caller finishes it, s->mu released). */
static enum first_res att0_fail(struct resil_race_ctx *c, int err, bool held,
                                bool connecting, uint64_t now)
{
    struct resil_sock *s = c->s;
    enum first_res res = FIRST_PARKED;
    socklen_t l = sizeof(int);
    int best;

    /* an unknown errno ranks last until it is known */
    resil_race_failed(&c->r, 0, err ? err : ECONNABORTED, now);
    resil_engine_del(c->fds[0]);
    if (resil_race_finished(&c->r) && c->n_held == 0) {
        res = FIRST_FAILED;
    } else if (park_fd(c) != RESIL_OK) {
        rwarn("fd %d: cannot park the socket after its first attempt "
              "failed; the other attempts are given up", s->fd);
        give_up(c, now);
        res = FIRST_FAILED;
    }
    /* parked, or the outcome of a running race (whose waiters need its
     * errno): read it; a failed start (parking failed) leaves it to the
     * program */
    if (err == 0 && c->fds[0] >= 0 && atomic_load(&s->io_busy) == 0 &&
        (res == FIRST_PARKED || s->race == c) &&
        real.getsockopt(c->fds[0], SOL_SOCKET, SO_ERROR, &err, &l) == 0 &&
        err != 0) {
        held = true;
        c->r.att[0].err = err;
    }
    c->att0_unknown = err == 0;
    c->att0_held = held && err != 0;
    /* only the socket of the attempt whose errno is reported stays */
    best = resil_race_error_att(&c->r);
    if (best == 0) {
        if (c->kept > 0)
            close_attempt(c, c->kept);
        c->kept = 0;
        c->kept_connecting = connecting;
    } else {
        close_attempt(c, 0); /* our duplicate; the fd is the program's */
    }
    return res;
}

/* Start the race of s with attempt 0 on the program's own socket, which
 * connect()ed to s->cur_ip at t0 and is still connecting (err0 < 0), or
 * failed with err0 (0: unknown; held0: the program has not seen it;
 * connecting0: still SS_CONNECTING). engine lock and s->mu held. The
 * others start an attempt delay after t0, or at once when attempt 0
 * failed. RESIL_OK (s is RS_RACING; *out, when not NULL, holds a
 * reference for waiting), RESIL_EUNSUPP (nothing else can win: the
 * program's connect is the whole story) or RESIL_ESYS. */
static resil_status_t race_inplace(struct resil_sock *s, uint64_t t0, int err0,
                                   bool held0, bool connecting0,
                                   struct resil_race_ctx **out)
{
    const struct resil_config *cfg = resil_config_get();
    struct resil_ip cand[RESIL_RACE_MAX];
    struct resil_race_ctx *c;
    uint64_t now = resil_now_ns(), w;
    int n;

    if (resil_sock_closed(s) || !cfg->race)
        return RESIL_EUNSUPP;
    if (resil_engine_start() != RESIL_OK)
        return RESIL_ESYS;
    c = ctx_new(s, s->peer_port, false, t0);
    if (c == NULL)
        return RESIL_ESYS;
    resil_race_init(&c->r, s->family, s->v6only,
                    (uint64_t)cfg->attempt_delay_ms * MS, t0);
    resil_race_add(&c->r, &s->cur_ip, t0);
    (void)resil_race_next(&c->r, t0, &w); /* attempt 0: since t0 */
    n = gather(&s->peer_ip, c->name, sizeof(c->name), cand, RESIL_RACE_MAX);
    for (int i = 0; i < n; i++)
        resil_race_add(&c->r, &cand[i], now);
    if (c->r.n == 1 && (c->name[0] == '\0' || !cfg->dns) && err0 < 0) {
        ctx_unref(c);
        return RESIL_EUNSUPP;
    }
    /* its identity, read here where fd is the program's socket for sure */
    if (s->cookie == 0)
        s->cookie = resil_sock_cookie(s->fd);
    if (resil_fds_dup(&c->fds[0], s->fd, RESIL_FD_SOCK) != RESIL_OK) {
        ctx_unref(c);
        return RESIL_ESYS;
    }
    c->dup0 = true;
    c->optseq[0] = s->opt_seq;
    c->inplace = true;
    set_inplace(s, true);
    c->aw[0].c = c;
    c->aw[0].i = 0;
    c->aw[0].w.fn = attempt_event;
    /* late answers may save a connect whose only known address failed */
    dns_start(c);
    if (c->r.n == 1 && c->r.more_coming == 0 && err0 >= 0) {
        /* nothing else to try: attempt 0's failure is the outcome */
        c->inplace = false;
        close_attempt(c, 0);
        ctx_unref(c);
        return RESIL_EUNSUPP;
    }
    if (err0 < 0) {
        if (resil_engine_add(c->fds[0], EPOLLOUT, &c->aw[0].w) != RESIL_OK) {
            ctx_unref(c);
            return RESIL_ESYS;
        }
    } else if (att0_fail(c, err0, held0, connecting0, now) != FIRST_PARKED) {
        /* nothing else to try, or no parking: the program sees attempt
         * 0's failure */
        c->inplace = false;
        c->cancelled = true; /* for DNS answers still to come */
        close_attempt(c, 0);
        ctx_unref(c);
        return RESIL_EUNSUPP;
    }
    ctx_start(c, out, false);
    if (resil_log_level >= RESIL_LOG_DEBUG) {
        char a[RESIL_ADDRSTRLEN];
        rdebug("fd %d: first attempt to %s %s after %.1f ms; racing %d "
               "candidates", s->fd,
               resil_ip_format(&s->cur_ip, s->peer_port, a, sizeof(a)),
               err0 < 0 ? "still connecting" : "failed",
               (double)(now - t0) / 1e6, c->r.n);
    }
    return RESIL_OK;
}

/* The racing-unavailable fallback: a plain connect from now on. release:
 * give our descriptors back (engine lock not held). */
static void fallback(struct resil_sock *s, bool release)
{
    char d[RESIL_ADDRSTRLEN];

    if (release)
        resil_engine_release();
    rwarn("fd %d: racing unavailable; plain connect", s->fd);
    resil_event("fallback", s->fd,
                "\"dst\":\"%s\",\"reason\":\"racing unavailable\"",
                resil_ip_format(&s->peer_ip, s->peer_port, d, sizeof(d)));
}

/* Attempt 0 connected before any race started (s->mu held). */
static void first_won(struct resil_sock *s, uint64_t rtt_ns, uint64_t now)
{
    resil_sock_set_state(s, RS_CONNECTED);
    s->connected_ns = now;
    s->try_blocking = false;
    s->fail_connecting = false;
    set_inplace(s, false);
    atomic_store(&s->ka_due, true);
    resil_health_win_path(&s->cur_ip, resil_path_cached(&s->cur_ip), rtt_ns,
                          now);
}

/* The "connect" event of a connect its first candidate won (no lock).
 * Only formatted for the events file or the info summary. */
static void first_event(struct resil_sock *s, uint64_t ms_ns)
{
    char a[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN], nm[RESIL_NAME_LEN];
    char name[2 * RESIL_NAME_LEN];
    struct resil_ip tmp[1];

    if (!resil_events_enabled() && resil_log_level < RESIL_LOG_INFO)
        return;
    resil_ip_format(&s->cur_ip, -1, a, sizeof(a));
    resil_ip_format(&s->peer_ip, s->peer_port, dst, sizeof(dst));
    nm[0] = '\0';
    resil_names_lookup(&s->peer_ip, nm, sizeof(nm), tmp, 1);
    resil_json_str(nm, name, sizeof(name));
    rdebug("fd %d: first attempt %s:%u won after %.1f ms", s->fd, a,
           s->peer_port, (double)ms_ns / 1e6);
    resil_event("connect", s->fd,
                "\"dst\":\"%s\",\"name\":\"%s\",\"port\":%u,"
                "\"tried\":[\"%s\"],\"winner\":\"%s\",\"ms\":%.3f",
                dst, name, s->peer_port, a, a, (double)ms_ns / 1e6);
}

/* ---- sockets to look at again an attempt delay after their connect ----
 * A first attempt on the program's socket (RS_TRYING, non-blocking) races
 * if it has not connected by then; a connection still open then gets its
 * keepalive sized (and its SO_COOKIE read). The connect pushes the socket
 * on a lock-free stack (one CAS, a reference); the engine takes the stack
 * on its turns, keeps the sockets in connect order and looks at those due,
 * waking at most every PEND_TICK while any waits. IDLE on the stack means
 * that the engine waits for none: only the push that replaces it wakes
 * (or starts) the engine. A connection per request is closed long before
 * it is due: it costs the push and, on the engine, an unlock and unref. */
#define PEND_TICK_NS (10 * MS)
/* Free descriptors the engine must leave the program when it starts for
 * this list alone (as many as a race needs, and one): below that, a
 * connect settles its socket at once instead (fds.h, README). */
#define PEND_HEADROOM 8
static char pend_idle_mark;
#define PEND_IDLE ((struct resil_sock *)&pend_idle_mark)
static _Atomic(struct resil_sock *) pend_stack = PEND_IDLE;
static struct resil_sock *pend_head, *pend_tail; /* engine lock */
static uint64_t pend_woke;                      /* engine lock */

static uint64_t pend_delay(void)
{
    return (uint64_t)resil_config_get()->attempt_delay_ms * MS;
}

/* s's own attempt delay: from the RTT history of its candidates when its
 * connect had some (race.h: resil_race_delay_for), else the configured
 * one. */
static uint64_t sock_delay(struct resil_sock *s)
{
    uint64_t d = __atomic_load_n(&s->try_delay_ns, __ATOMIC_RELAXED);
    return d ? d : pend_delay();
}

/* Keepalive sized, identity read (s->mu held, s connected). */
static void ka_settle(struct resil_sock *s)
{
    if (!atomic_load(&s->ka_due))
        return;
    atomic_store(&s->ka_due, false);
    if (s->cookie == 0)
        s->cookie = resil_sock_cookie(s->fd);
    resil_monitor_tune(s, s->fd);
}

/* s without the engine: a first attempt stays the plain connect it is, a
 * connection gets its keepalive now. engine_locked: the caller holds the
 * engine lock (and gives the engine up itself). */
static void pend_settle(struct resil_sock *s, bool engine_locked)
{
    bool fell = false;

    atomic_store(&s->pend_listed, false);
    pthread_mutex_lock(&s->mu);
    if (!resil_sock_closed(s)) {
        if (resil_sock_state(s) == RS_TRYING && !s->try_blocking) {
            resil_sock_set_state(s, RS_DIRECT);
            set_inplace(s, false);
            atomic_store(&s->ka_due, true);
            fell = true;
        }
        if (resil_sock_connected(s))
            ka_settle(s);
    }
    pthread_mutex_unlock(&s->mu);
    if (fell)
        fallback(s, !engine_locked);
    resil_sock_unref(s);
}

static bool fds_headroom(int fd, int want)
{
    int got[PEND_HEADROOM], n = 0;

    resil_fds_making(); /* low numbers, for a moment */
    while (n < want && n < PEND_HEADROOM &&
           (got[n] = real.fcntl(fd, F_DUPFD_CLOEXEC, 0)) >= 0)
        n++;
    for (int i = 0; i < n; i++)
        real.close(got[i]);
    resil_fds_made();
    return n == want;
}

/* The push that found the list idle: wake the engine, or start it. When
 * it cannot serve the list (no thread, or too few descriptors left to
 * start one), whatever was pushed is settled here. */
static void pend_kick(int fd)
{
    struct resil_sock *top;
    resil_status_t st = RESIL_OK;

    /* under the engine lock: an idle engine decides to leave under it
     * (resil_conn_busy), so that either it sees the push, or we see that
     * it left (a wake-up of a thread on its way out would be lost) */
    resil_engine_lock();
    if (!resil_engine_running())
        st = fds_headroom(fd, PEND_HEADROOM) ? resil_engine_start()
                                             : RESIL_ESYS;
    resil_engine_unlock();
    if (st == RESIL_OK) {
        resil_engine_wake();
        return;
    }
    /* nobody will take the stack: settle it ourselves, and leave it idle
     * so that the next push tries again */
    top = atomic_exchange(&pend_stack, PEND_IDLE);
    while (top != NULL && top != PEND_IDLE) {
        struct resil_sock *nx = top->pend_next;
        pend_settle(top, false);
        top = nx;
    }
}

/* Have s looked at an attempt delay after s->conn_ns (any thread). */
static void pend_push(struct resil_sock *s, bool engine_locked)
{
    struct resil_sock *old;

    if (atomic_exchange(&s->pend_listed, true))
        return; /* listed: it will be looked at anyway */
    resil_sock_ref(s);
    old = atomic_load_explicit(&pend_stack, memory_order_relaxed);
    do
        s->pend_next = old == PEND_IDLE ? NULL : old;
    while (!atomic_compare_exchange_weak_explicit(
        &pend_stack, &old, s, memory_order_release, memory_order_relaxed));
    if (old != PEND_IDLE && resil_engine_running())
        return;
    if (engine_locked)
        resil_engine_wake(); /* a race holds the engine up */
    else
        pend_kick(s->fd);
}

/* A first attempt not connected an attempt delay after its connect: the
 * race starts, with it in place (engine lock held). Else what it came to
 * (first_settle). */
static void first_due(struct resil_sock *s, uint64_t now)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    resil_status_t st = RESIL_OK;
    bool start;

    pthread_mutex_lock(&s->mu);
    start = !resil_sock_closed(s) && resil_sock_state(s) == RS_TRYING &&
            !s->try_blocking && atomic_load(&s->inplace) &&
            resil_sock_is_ours(s);
    memset(&ti, 0, sizeof(ti));
    if (start && real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
        (ti.tcpi_state == TCP_SYN_SENT || ti.tcpi_state == TCP_SYN_RECV)) {
        st = race_inplace(s, s->conn_ns, -1, false, true, NULL);
        if (st != RESIL_OK) {
            /* the program's connect goes on alone, as without libresil */
            set_inplace(s, false);
            resil_sock_set_state(s, RS_DIRECT);
            atomic_store(&s->ka_due, true);
        }
        pthread_mutex_unlock(&s->mu);
        if (st == RESIL_ESYS)
            fallback(s, false);
        return;
    }
    pthread_mutex_unlock(&s->mu);
    (void)first_settle(s, 0, false, false, now);
}

/* The engine looks at s, due (engine lock held). */
static void pend_look(struct resil_sock *s, uint64_t now)
{
    bool trying, owed;

    atomic_store(&s->pend_listed, false);
    /* a race from here watches attempt 0 itself (on another duplicate) */
    hello_unwatch(s);
    pthread_mutex_lock(&s->mu);
    trying = !resil_sock_closed(s) && resil_sock_state(s) == RS_TRYING &&
             !s->try_blocking;
    pthread_mutex_unlock(&s->mu);
    if (trying)
        first_due(s, now);
    pthread_mutex_lock(&s->mu);
    if (!resil_sock_closed(s) && resil_sock_connected(s))
        ka_settle(s);
    /* none started (one address): a non-blocking connect goes on alone,
     * and its HELLO must still leave the moment it connects (a blocking
     * one's connect() sends it) */
    owed = trying && s->hello_here && !resil_sock_closed(s) &&
           resil_sock_state(s) != RS_RACING;
    pthread_mutex_unlock(&s->mu);
    /* the duplicate may now be held for a whole connect timeout: not when
     * it would take one of the program's last descriptors (its first data
     * call sends the HELLO then) */
    if (owed && fds_headroom(s->fd, PEND_HEADROOM))
        hello_watch_locked(s);
    resil_sock_unref(s);
}

/* The list's turn (engine lock held): returns its next deadline. */
static uint64_t pend_tick(uint64_t now)
{
    uint64_t due;
    struct resil_sock *top, *rev = NULL;

    top = atomic_load_explicit(&pend_stack, memory_order_acquire);
    if (top == PEND_IDLE)
        return UINT64_MAX; /* nothing listed either */
    top = atomic_exchange_explicit(&pend_stack, NULL, memory_order_acquire);
    /* the stack is newest first: the list keeps connect order */
    while (top != NULL && top != PEND_IDLE) {
        struct resil_sock *nx = top->pend_next;
        top->pend_next = rev;
        rev = top;
        top = nx;
    }
    if (rev) {
        if (pend_tail)
            pend_tail->pend_next = rev;
        else
            pend_head = rev;
        for (pend_tail = rev; pend_tail->pend_next;)
            pend_tail = pend_tail->pend_next;
    }
    /* each socket is due its own delay after its connect (sock_delay: an
     * RTT history makes it shorter), so the list is not in due order: the
     * whole of it is looked at, in connect order */
    {
        struct resil_sock *kh = NULL, *kt = NULL, *s, *nx;
        uint64_t next = UINT64_MAX;
        for (s = pend_head; s != NULL; s = nx) {
            nx = s->pend_next;
            /* conn_ns: written under s->mu, at the connect */
            due = __atomic_load_n(&s->conn_ns, __ATOMIC_RELAXED) +
                  sock_delay(s);
            if (due <= now) {
                pend_look(s, now);
                continue;
            }
            s->pend_next = NULL;
            if (kt)
                kt->pend_next = s;
            else
                kh = s;
            kt = s;
            if (due < next)
                next = due;
        }
        pend_head = kh;
        pend_tail = kt;
        if (pend_head) {
            /* coarse: a connect per request must not wake us per connect */
            pend_woke = now;
            return next > now + PEND_TICK_NS ? next : now + PEND_TICK_NS;
        }
    }
    {
        struct resil_sock *expect = NULL;
        if (atomic_compare_exchange_strong(&pend_stack, &expect, PEND_IDLE))
            return UINT64_MAX;
    }
    return now; /* pushed meanwhile: take it on the next turn */
}

bool resil_conn_idle(void)
{
    return atomic_load_explicit(&pend_stack, memory_order_acquire) ==
               PEND_IDLE &&
           hello_ws == NULL;
}

/* Every socket waiting on the list settled now (engine lock held). */
static void pend_flush(void)
{
    struct resil_sock *top =
        atomic_exchange_explicit(&pend_stack, PEND_IDLE, memory_order_acquire);

    while (top != NULL && top != PEND_IDLE) {
        struct resil_sock *nx = top->pend_next;
        pend_settle(top, true);
        top = nx;
    }
    while (pend_head) {
        struct resil_sock *s = pend_head;
        pend_head = s->pend_next;
        pend_settle(s, true);
    }
    pend_tail = NULL;
}

/* ---- the first attempt, on the program's own socket ---- */

/* What attempt 0 on s's fd has come to; engine lock held, s->mu not.
 * err: the error a hook's call consumed from it (0: none, we look
 * ourselves); shown: that call shows err to the program unless we hide
 * it; disconnected: the call was connect(), which left the socket
 * unconnected. Acts on it: a race won or finished, a race started or the
 * fd parked (enum first_res). */
static enum first_res first_settle(struct resil_sock *s, int err, bool shown,
                                   bool disconnected, uint64_t now)
{
    struct resil_race_ctx *c = NULL;
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    enum first_res res = FIRST_RUNNING;
    bool held, won = false, fin = false, ev = false;
    uint64_t rtt = 0;

    pthread_mutex_lock(&s->mu);
    if (resil_sock_closed(s) || !atomic_load(&s->inplace) || s->try_blocking)
        goto out;
    if (resil_sock_state(s) == RS_RACING) {
        c = s->race;
        if (c == NULL || !c->inplace || c->finished || c->cancelled)
            goto out;
    } else if (resil_sock_state(s) != RS_TRYING) {
        goto out;
    }
    if (!resil_sock_is_ours(s)) {
        /* closed behind our back: its number is not ours to look at */
        atomic_store_explicit(&s->closed, true, memory_order_relaxed);
        resil_table_take_if(s->fd, s);
        set_inplace(s, false);
        goto out;
    }
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
        goto out;
    /* still connecting: no outcome yet (an error a call met then is not
     * the connect's: the kernel reports an ICMP error or a timeout and
     * leaves SYN_SENT under the socket lock, in one go) */
    if (ti.tcpi_state == TCP_SYN_SENT || ti.tcpi_state == TCP_SYN_RECV)
        goto out;
    /* a failure's error is read after parking (att0_fail) */
    held = err != 0 && !shown;
    /* the SYN was acknowledged: the handshake completed (bytes_acked
     * counts the SYN). What came after (a reset) is the program's own
     * socket's: the kernel reports it, as without libresil, and a
     * connection that died unused may be re-raced like any other. */
    if (ti.tcpi_state != TCP_CLOSE || ti.tcpi_bytes_acked >= 1) {
        won = true;
        rtt = (uint64_t)ti.tcpi_rtt * 1000;
    }
    if (won && c == NULL) {
        first_won(s, rtt, now);
        hello_now(s);
        ev = true;
        res = FIRST_WON;
    } else if (won) {
        bool connecting = true;
        c->won_err = 0;
        if (ti.tcpi_state != TCP_CLOSE && (c->waiters > 0 || c->rerace)) {
            /* a blocking connect() waits for it: it leaves the socket
             * connected, as the kernel's own does (settle()) */
            struct sockaddr_storage sa;
            socklen_t len = resil_ip_to_sa(&s->cur_ip, c->port, s->family,
                                           &sa);
            if (real.connect(s->fd, (struct sockaddr *)&sa, len) == 0 ||
                errno == EISCONN)
                connecting = false;
        }
        c->won_connecting = connecting;
        resil_race_won(&c->r, 0, now);
        fin = true;
        res = FIRST_WON;
    } else if (c == NULL) {
        /* failed before any race: the race starts now, the others at
         * once */
        resil_status_t st = race_inplace(s, s->conn_ns, err, held,
                                         !disconnected, NULL);
        if (st == RESIL_OK) {
            res = FIRST_PARKED;
        } else {
            /* no other candidate (or no race to be had): the failure is
             * the program's, as without libresil */
            set_inplace(s, false);
            if (disconnected) {
                resil_sock_set_state(s, RS_FRESH);
            } else {
                resil_sock_set_state(s, RS_FAILED);
                s->fail_connecting = true;
                set_pending(s, held ? err : 0);
            }
            res = FIRST_FAILED;
        }
    } else {
        res = att0_fail(c, err, held, !disconnected, now);
        fin = res == FIRST_FAILED;
    }
out:
    pthread_mutex_unlock(&s->mu);
    if (fin && !c->finished)
        finish(c, c->r.winner, now);
    if (ev)
        first_event(s, rtt);
    return res;
}

/* ---- a session destination's HELLO, on the program's own socket ----
 * A non-blocking connect of a session destination runs in place like any
 * other. Its HELLO must leave as soon as the socket connects (a server that
 * speaks first waits for it only about two RTTs) and before any byte of the
 * program: the engine watches a duplicate of the socket until it connects
 * or fails (a race started at the attempt delay watches its attempt 0
 * itself, and sends the HELLO as it ends), and every data hook asks first
 * (resil_conn_hello_due). Both send it under s->mu, or through
 * first_settle() while a race runs, so that attempt 0 has won before it
 * goes. The duplicate must not keep alive a socket the program closed:
 * close() has the engine drop the watch at once (hello_tick), and a socket
 * closed behind libresil's back is found by its cookie within
 * HELLO_CHECK_NS. */
struct hello_w {
    struct resil_watch w;
    struct resil_sock *s;
    int fd; /* a duplicate of the program's socket, in the engine's set */
    struct hello_w *prev, *next; /* every watch (engine lock) */
};
static uint64_t hello_check;          /* engine lock: the next cookie look */
static atomic_bool hello_closed;      /* close() of a watched socket */
#define HELLO_CHECK_NS (1000 * MS)

/* Drop s's HELLO watch (engine lock held). */
static void hello_unwatch(struct resil_sock *s)
{
    struct hello_w *h = s->hello_w;

    if (h == NULL)
        return;
    __atomic_store_n(&s->hello_w, NULL, __ATOMIC_RELAXED);
    if (h->prev)
        h->prev->next = h->next;
    else
        hello_ws = h->next;
    if (h->next)
        h->next->prev = h->prev;
    resil_engine_del(h->fd);
    resil_fds_close(&h->fd);
    resil_sock_unref(h->s);
    free(h);
}

/* The socket connected, or failed (engine lock held). */
static void hello_event(struct resil_watch *w, uint32_t events, uint64_t now)
{
    struct resil_sock *s = ((struct hello_w *)w)->s;
    bool settle = false;

    (void)events;
    resil_sock_ref(s);
    hello_unwatch(s);
    pthread_mutex_lock(&s->mu);
    if (s->hello_here && !resil_sock_closed(s) && resil_sock_is_ours(s)) {
        if (resil_sock_state(s) == RS_TRYING && atomic_load(&s->inplace))
            settle = true; /* first_settle: won (and the HELLO), or race */
        else if (resil_sock_state(s) != RS_RACING)
            hello_now(s); /* a race's end sends it (finish) */
    }
    pthread_mutex_unlock(&s->mu);
    if (settle)
        (void)first_settle(s, 0, false, false, now);
    resil_sock_unref(s);
}

/* Watches whose socket the program closed, or (every HELLO_CHECK_NS)
 * closed behind our back, dropped; the next look (engine lock held). */
static uint64_t hello_tick(uint64_t now)
{
    bool cookies = now >= hello_check;

    if (hello_ws == NULL)
        return UINT64_MAX;
    if (!atomic_exchange(&hello_closed, false) && !cookies)
        return hello_check;
    for (struct hello_w *h = hello_ws, *nx; h != NULL; h = nx) {
        struct resil_sock *s = h->s;
        bool drop;

        nx = h->next;
        pthread_mutex_lock(&s->mu);
        drop = resil_sock_closed(s) || !s->hello_here ||
               (cookies && !resil_sock_is_ours(s));
        pthread_mutex_unlock(&s->mu);
        if (drop)
            hello_unwatch(s);
    }
    if (cookies)
        hello_check = now + HELLO_CHECK_NS;
    return hello_ws ? hello_check : UINT64_MAX;
}

/* The connect of s, in progress a moment ago, may have completed already
 * (over loopback it does within connect()): then the HELLO goes now, and
 * the engine need not watch for it. Returns true when nothing is left to
 * watch for. */
static bool hello_at_once(struct resil_sock *s, uint64_t t0)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    uint64_t now = resil_now_ns();
    bool won = false;

    pthread_mutex_lock(&s->mu);
    memset(&ti, 0, sizeof(ti));
    if (s->hello_here && !resil_sock_closed(s) &&
        resil_sock_state(s) == RS_TRYING && atomic_load(&s->inplace) &&
        real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
        ti.tcpi_state == TCP_ESTABLISHED) {
        first_won(s, now - t0, now);
        hello_with(s, &ti);
        won = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (won)
        first_event(s, now - t0);
    return won;
}

/* Watch s's socket for the HELLO (its connect is in progress; engine lock
 * held). Without the watch (no engine, no descriptor) the data hooks
 * still send it. */
static void hello_watch_locked(struct resil_sock *s)
{
    struct hello_w *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return;
    h->w.fn = hello_event;
    h->s = s;
    h->fd = -1;
    pthread_mutex_lock(&s->mu);
    if (s->hello_w == NULL && s->hello_here && !resil_sock_closed(s) &&
        resil_sock_state(s) != RS_RACING && resil_engine_start() == RESIL_OK &&
        resil_fds_dup(&h->fd, s->fd, RESIL_FD_SOCK) == RESIL_OK &&
        resil_engine_add(h->fd, EPOLLOUT, &h->w) == RESIL_OK) {
        resil_sock_ref(s);
        if (hello_ws == NULL)
            hello_check = resil_now_ns() + HELLO_CHECK_NS;
        h->next = hello_ws;
        if (hello_ws)
            hello_ws->prev = h;
        hello_ws = h;
        __atomic_store_n(&s->hello_w, h, __ATOMIC_RELAXED);
        h = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (h != NULL)
        resil_fds_close(&h->fd);
    free(h);
}

static void hello_watch(struct resil_sock *s)
{
    resil_engine_lock();
    hello_watch_locked(s);
    resil_engine_unlock();
}

int resil_conn_hello_due(int fd, bool is_write, size_t n, int flags)
{
    struct resil_sock *s = resil_table_get(fd);
    int ret = 0;

    if (s == NULL)
        return 0;
    for (;;) {
        struct tcp_info ti;
        socklen_t l = sizeof(ti);
        bool racing;
        int fl, ms, rc;

        pthread_mutex_lock(&s->mu);
        racing = resil_sock_state(s) == RS_RACING;
        memset(&ti, 0, sizeof(ti));
        if (!s->hello_here || resil_sock_closed(s) ||
            (racing && !atomic_load(&s->inplace)) ||
            real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0) {
            /* a parked fd (a race from a failed attempt 0) carries nothing
             * of the program's: the winner gets the HELLO at the swap */
            pthread_mutex_unlock(&s->mu);
            break;
        }
        if (ti.tcpi_state == TCP_ESTABLISHED ||
            ti.tcpi_state == TCP_CLOSE_WAIT) {
            if (!racing) {
                hello_with(s, &ti);
                pthread_mutex_unlock(&s->mu);
            } else {
                /* attempt 0 wins first: no swap can take the socket the
                 * HELLO and the program's bytes go on */
                pthread_mutex_unlock(&s->mu);
                NO_CANCEL(cs);
                (void)cs;
                heal();
                resil_engine_lock();
                (void)first_settle(s, 0, false, false, resil_now_ns());
                resil_engine_unlock();
            }
            break;
        }
        pthread_mutex_unlock(&s->mu);
        if ((ti.tcpi_state != TCP_SYN_SENT &&
             ti.tcpi_state != TCP_SYN_RECV) ||
            !is_write || n == 0)
            break; /* failed (the call meets it), or nothing to send */
        /* still connecting: what the kernel does with a write then
         * (sk_stream_wait_connect), minus the race for the first byte */
        fl = real.fcntl(fd, F_GETFL);
        if ((flags & MSG_DONTWAIT) || (fl >= 0 && (fl & O_NONBLOCK))) {
            ret = EAGAIN;
            break;
        }
        ms = sndtimeo_ms(fd);
        rc = real.poll(&(struct pollfd){.fd = fd, .events = POLLOUT}, 1, ms);
        if (rc == 0) {
            ret = EAGAIN; /* SO_SNDTIMEO */
            break;
        }
        if (rc < 0 && errno == EINTR && !signal_restarts()) {
            ret = EINTR;
            break;
        }
    }
    resil_sock_unref(s);
    return ret;
}

/* ---- connect(): the first attempt on the program's own socket ---- */

/* connect() failed at once with e: a failure toward the destination
 * (another candidate may do better), or one of the program's socket or
 * call, which no candidate changes. */
static bool dest_error(int e)
{
    switch (e) {
    case EISCONN:
    case EALREADY:
    case EINPROGRESS:
    case EINTR:
    case EBADF:
    case ENOTSOCK:
    case EINVAL:
    case EFAULT:
    case EAFNOSUPPORT:
    case EPROTOTYPE:
    case EOPNOTSUPP:
    case EAGAIN: /* no local port left */
    case ENOBUFS:
    case ENOMEM:
        return false;
    default:
        return true;
    }
}

/* The program's connect() met e, no failure of the destination: the
 * kernel's answer, and s goes on as its socket says (s->mu held). */
static void not_dest(struct resil_sock *s, int e)
{
    set_inplace(s, false);
    s->try_blocking = false;
    /* connected or connecting behind our back: the kernel's from now on */
    resil_sock_set_state(s, e == EISCONN || e == EALREADY ? RS_DIRECT
                                                          : RS_FRESH);
}

/* The program's own SO_SNDTIMEO, from its options (no system call): true
 * with *tv when it set a non-zero one. s->mu held. */
static bool app_sndtimeo(const struct resil_sock *s, struct timeval *tv)
{
    for (const struct resil_sockopt *o = s->opts; o; o = o->next)
        if (o->level == SOL_SOCKET &&
            (o->name == SO_SNDTIMEO_OLD || o->name == SO_SNDTIMEO_NEW) &&
            o->len >= sizeof(*tv)) {
            memcpy(tv, o->val, sizeof(*tv));
            return tv->tv_sec != 0 || tv->tv_usec != 0;
        }
    return false;
}

static uint64_t tv_ns(const struct timeval *tv)
{
    return (uint64_t)tv->tv_sec * 1000000000ull +
           (uint64_t)tv->tv_usec * 1000ull;
}

static int ns_to_ms(int64_t ns)
{
    if (ns <= 0)
        return 1;
    return (int)((ns + (int64_t)MS - 1) / (int64_t)MS);
}

/* A blocking connect with SO_SNDTIMEO set fails with EINTR after any
 * signal handler (sock_intr_errno), where the program's own, untimed
 * connect would be restarted after a handler with SA_RESTART and after a
 * stop and continue (signal(7)). Which signal it was cannot be known:
 * restart when every handler this thread may run has SA_RESTART (exactly
 * what the kernel does then); else EINTR (exactly that, for a program
 * whose handlers lack SA_RESTART, like the alarm() connect timeout; a
 * program with handlers of both kinds also gets EINTR for one with
 * SA_RESTART: README). The signals of a fault (and of abort()) go to the
 * thread that caused it, never one asleep in connect(): their handlers
 * (crash reporters, sanitizers) do not count. Only on that rare path: up
 * to 64 sigaction(). */
static bool signal_restarts(void)
{
    sigset_t blocked;

    if (pthread_sigmask(SIG_BLOCK, NULL, &blocked) != 0)
        sigemptyset(&blocked);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV ||
            sig == SIGBUS || sig == SIGFPE || sig == SIGILL ||
            sig == SIGTRAP || sig == SIGSYS || sig == SIGABRT ||
            sigismember(&blocked, sig) == 1 || sigaction(sig, NULL, &sa) != 0)
            continue; /* glibc's own signals answer EINVAL */
        if (!(sa.sa_flags & SA_SIGINFO) &&
            (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
            continue;
        if (!(sa.sa_flags & SA_RESTART))
            return false;
    }
    return true;
}

static void put_sndtimeo(struct resil_sock *s, const struct timeval *tv)
{
    pthread_mutex_lock(&s->mu);
    if (!resil_sock_closed(s))
        real.setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, tv, sizeof(*tv));
    pthread_mutex_unlock(&s->mu);
}

static void fast_abandon(struct fastrec r)
{
    RESIL_KEEP_ERRNO();
    bool push = false;

    if (r.restore)
        put_sndtimeo(r.s, &r.app);
    pthread_mutex_lock(&r.s->mu);
    set_hello(r.s, false); /* the program left its connect() */
    if (!resil_sock_closed(r.s) && resil_sock_state(r.s) == RS_TRYING &&
        r.s->try_blocking) {
        /* connecting on: the engine races it when it is due */
        r.s->try_blocking = false;
        set_inplace(r.s, true);
        push = true;
    }
    pthread_mutex_unlock(&r.s->mu);
    if (push)
        pend_push(r.s, false);
    resil_sock_unref(r.s);
}

static void fast_cancelled(void *arg)
{
    struct fastrec *r = arg;
    fast.s = NULL;
    fast_abandon(*r);
}

/* connect(fd) once, the kernel's own blocking connect, bounded by tmo
 * (NULL: the program's own SO_SNDTIMEO holds), outside the recursion
 * guard and cancellable like the program's own (conn.h). Returns 0 or an
 * errno. */
static int timed_connect(struct resil_sock *s, const struct sockaddr *sa,
                         socklen_t len, const struct timeval *tmo,
                         const struct timeval *app, int cs)
{
    struct fastrec r = {.s = s, .restore = tmo != NULL}, outer;
    uintptr_t outer_frame;
    int depth = resil_in_shim, rc, e;

    if (app)
        r.app = *app;
    if (tmo)
        real.setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, tmo, sizeof(*tmo));
    resil_sock_ref(s);
    outer = fast;
    outer_frame = fast_frame;
    fast = r;
    fast_frame = (uintptr_t)&r;
    resil_in_shim = 0;
    pthread_cleanup_push(fast_cancelled, &r);
    pthread_setcancelstate(cs, NULL);
    rc = real.connect(s->fd, sa, len);
    e = errno;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_pop(0);
    resil_in_shim = depth;
    fast = outer;
    fast_frame = outer_frame;
    if (tmo)
        put_sndtimeo(s, &r.app);
    resil_sock_unref(s);
    return rc == 0 ? 0 : e;
}

/* Blocking connect() of s to its first candidate sa (s RS_TRYING with
 * try_blocking, since t0): the kernel waits for it up to the attempt
 * delay; only then, or when it fails first, does a race start, with it in
 * place, and the connect waits for that race as it would for its own. */
static resil_status_t connect_blocking(struct resil_sock *s,
                                       const struct sockaddr *sa,
                                       socklen_t len, uint64_t t0, int cs,
                                       int *err)
{
    uint64_t delay = sock_delay(s), now;
    struct timeval app = {0}, tmo;
    struct resil_race_ctx *c = NULL;
    bool has_app, own;
    int e, wait_ms;
    resil_status_t st;

    pthread_mutex_lock(&s->mu);
    has_app = app_sndtimeo(s, &app);
    /* a session destination: the HELLO goes out from here, or from the
     * race's end while this connect() waits for it (finish()) */
    set_hello(s, s->want_sess);
    if (s->want_sess && s->cookie == 0)
        s->cookie = resil_sock_cookie(s->fd); /* detach() checks it */
    pthread_mutex_unlock(&s->mu);
    /* the program's timeout comes first: its own connect, as it is */
    own = has_app && tv_ns(&app) <= delay;
    for (;;) {
        uint64_t left;
        now = resil_now_ns();
        left = now - t0 < delay ? delay - (now - t0) : 0;
        if (own) {
            e = timed_connect(s, sa, len, NULL, NULL, cs);
        } else {
            /* SO_SNDTIMEO runs on the timer wheel, whose coarser levels
             * fire up to 1/8 late (250 ms fired at 260-284 ms here, HZ
             * 250): ask for 7/8 of what is left, then for the rest, which
             * a fine level times */
            uint64_t ask = left > 8 * MS ? left - left / 8 : left;
            if (ask < MS)
                ask = MS;
            tmo.tv_sec = (time_t)(ask / 1000000000ull);
            tmo.tv_usec = (suseconds_t)((ask % 1000000000ull + 999) / 1000);
            e = timed_connect(s, sa, len, &tmo, &app, cs);
            now = resil_now_ns();
            if ((e == EINPROGRESS || e == EALREADY) &&
                now - t0 + MS < delay)
                continue; /* the rest of the delay */
        }
        if (e != EINTR || own || !signal_restarts())
            break;
    }
    now = resil_now_ns();
    if (e == 0) {
        pthread_mutex_lock(&s->mu);
        if (resil_sock_state(s) == RS_TRYING)
            first_won(s, now - t0, now);
        if (s->hello_here && !resil_sock_closed(s))
            hello(s, s->fd);
        pthread_mutex_unlock(&s->mu);
        first_event(s, now - t0);
        pend_push(s, false); /* keepalive, an attempt delay from now */
        *err = 0;
        return RESIL_OK;
    }
    if (e != EINPROGRESS && e != EALREADY && e != EINTR && !dest_error(e)) {
        pthread_mutex_lock(&s->mu);
        not_dest(s, e);
        pthread_mutex_unlock(&s->mu);
        *err = e;
        return RESIL_OK;
    }
    /* still connecting (a timeout, or a signal that ends the call), or
     * failed at once (the kernel disconnected the socket): the race */
    resil_engine_lock();
    pthread_mutex_lock(&s->mu);
    s->try_blocking = false;
    if (resil_sock_closed(s) || resil_sock_state(s) != RS_TRYING) {
        /* the program closed it meanwhile (a handler) */
        pthread_mutex_unlock(&s->mu);
        resil_engine_unlock();
        *err = e;
        return RESIL_OK;
    }
    if (e == EINPROGRESS || e == EALREADY || e == EINTR)
        st = race_inplace(s, t0, -1, false, true,
                          e == EINTR || own ? NULL : &c);
    else
        st = race_inplace(s, t0, e, true, false, &c);
    if (st != RESIL_OK) {
        set_inplace(s, false);
        resil_sock_set_state(s, e == EINPROGRESS || e == EALREADY ||
                                        e == EINTR
                                    ? RS_DIRECT
                                    : RS_FRESH);
        atomic_store(&s->ka_due, true);
    }
    pthread_mutex_unlock(&s->mu);
    resil_engine_unlock();
    if (st != RESIL_OK) {
        if (st == RESIL_ESYS)
            fallback(s, true);
        if (resil_sock_state(s) == RS_DIRECT) {
            pend_push(s, false);
            if (e == EINPROGRESS || e == EALREADY) {
                if (own) {
                    *err = EINPROGRESS;
                    return RESIL_OK;
                }
                if (s->want_sess) {
                    /* nothing to race it with: the kernel's own wait for
                     * the rest, here, so that a connection it makes
                     * carries the HELLO before connect() returns */
                    e = timed_connect(s, sa, len, NULL, NULL, cs);
                    pthread_mutex_lock(&s->mu);
                    if (e == 0 && s->hello_here && !resil_sock_closed(s))
                        hello(s, s->fd);
                    pthread_mutex_unlock(&s->mu);
                    if (e == 0)
                        first_event(s, resil_now_ns() - t0);
                    *err = e;
                    return RESIL_OK;
                }
                /* the kernel waits on for the rest (the program's own
                 * SO_SNDTIMEO): EALREADY for EINPROGRESS at its end */
                return RESIL_EUNSUPP;
            }
        }
        *err = e; /* EINTR, or the kernel's failure: as without us */
        return RESIL_OK;
    }
    if (c == NULL) {
        /* the race goes on; connect() says what the kernel's said */
        *err = e == EALREADY ? EINPROGRESS : e;
        return RESIL_OK;
    }
    /* the program's own timeout counts from its call (socket(7)) */
    wait_ms = -1;
    if (has_app)
        wait_ms = ns_to_ms((int64_t)tv_ns(&app) - (int64_t)(now - t0));
    *err = race_wait(s, c, sa, len, EINPROGRESS, wait_ms, cs);
    return RESIL_OK;
}

/* Non-blocking connect() of s to its first candidate sa: EINPROGRESS at
 * once, and the engine looks at it again when it is due. */
static resil_status_t connect_nonblocking(struct resil_sock *s,
                                          const struct sockaddr *sa,
                                          socklen_t len, uint64_t t0,
                                          int *err)
{
    resil_status_t st;
    int rc, e;

    rc = real.connect(s->fd, sa, len);
    e = errno;
    if (rc == 0) {
        uint64_t now = resil_now_ns();
        pthread_mutex_lock(&s->mu);
        if (resil_sock_state(s) == RS_TRYING)
            first_won(s, now - t0, now);
        hello_now(s);
        pthread_mutex_unlock(&s->mu);
        first_event(s, now - t0);
        pend_push(s, false);
        *err = 0;
        return RESIL_OK;
    }
    if (e == EINPROGRESS) {
        bool push = false;
        pthread_mutex_lock(&s->mu);
        if (!resil_sock_closed(s) && resil_sock_state(s) == RS_TRYING) {
            /* its identity: the engine must never look at a number the
             * program closed behind our back and reused */
            if (s->cookie == 0)
                s->cookie = resil_sock_cookie(s->fd);
            s->try_blocking = false;
            set_inplace(s, true);
            push = true;
        }
        pthread_mutex_unlock(&s->mu);
        if (push) {
            pend_push(s, false);
            if (s->want_sess && !hello_at_once(s, t0))
                hello_watch(s);
        }
        *err = EINPROGRESS;
        return RESIL_OK;
    }
    if (!dest_error(e)) {
        pthread_mutex_lock(&s->mu);
        not_dest(s, e);
        set_hello(s, false);
        pthread_mutex_unlock(&s->mu);
        *err = e;
        return RESIL_OK;
    }
    /* failed at once (no route...): the race starts, the fd parked */
    resil_engine_lock();
    pthread_mutex_lock(&s->mu);
    st = resil_sock_state(s) == RS_TRYING
             ? race_inplace(s, t0, e, true, false, NULL)
             : RESIL_EUNSUPP;
    if (st != RESIL_OK && resil_sock_state(s) == RS_TRYING) {
        set_inplace(s, false);
        /* unconnected: the next connect is new */
        resil_sock_set_state(s, RS_FRESH);
    }
    if (st != RESIL_OK)
        set_hello(s, false);
    pthread_mutex_unlock(&s->mu);
    resil_engine_unlock();
    *err = st == RESIL_OK ? EINPROGRESS : e;
    return RESIL_OK;
}

resil_status_t resil_conn_connect(struct resil_sock *s,
                                  const struct sockaddr *sa, socklen_t len,
                                  int *err)
{
    const struct resil_config *cfg = resil_config_get();
    struct resil_ip ip, cand[RESIL_RACE_MAX], first;
    struct sockaddr_storage fss;
    const struct sockaddr *fsa = sa;
    socklen_t flen = len;
    char name[RESIL_NAME_LEN];
    uint16_t port;
    uint64_t now, delay;
    int fl, n, fi;
    bool want;
    resil_status_t cst;
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
    if (!cfg->race)
        goto passthru;
    now = resil_now_ns();
    n = gather(&ip, name, sizeof(name), cand, RESIL_RACE_MAX);
    /* a session destination: the HELLO goes before the program can write
     * a byte (below; asked before s->mu: the first one sets sessions up,
     * which may log) */
    want = cfg->n_session > 0 && resil_sess_wanted(&ip, port, name);
    pthread_mutex_lock(&s->mu);
    s->peer_ip = ip;
    s->peer_port = port;
    s->reraces = 0;
    __atomic_store_n(&s->conn_ns, now, __ATOMIC_RELAXED);
    __atomic_store_n(&s->try_delay_ns, 0, __ATOMIC_RELAXED);
    /* a connect clears the socket's error (tcp_connect_init) */
    set_pending(s, 0);
    if (s->fastopen) {
        pthread_mutex_unlock(&s->mu);
        goto passthru;
    }
    s->want_sess = want;
    if (!want && n == 1 && (name[0] == '\0' || !cfg->dns)) {
        /* nothing to race: the real connect, plus failure detection
         * (keepalive sized an attempt delay from now) */
        resil_sock_set_state(s, RS_DIRECT);
        s->cur_ip = ip;
        atomic_store(&s->ka_due, true);
        pthread_mutex_unlock(&s->mu);
        pend_push(s, false);
        return RESIL_EUNSUPP;
    }
    pthread_mutex_unlock(&s->mu);
    /* the race's first candidate (race.h: recent winners, the program's
     * own choice, its name's order, recent failures last), and its
     * attempt delay from the candidates' RTT history (issue 9: a fabric's
     * RTT is a fraction of a millisecond) */
    fi = resil_race_pick(cand, n, s->family, s->v6only, pend_delay(), now,
                         &delay);
    if (fi < 0)
        goto passthru; /* no candidate the socket can reach */
    first = cand[fi];
    __atomic_store_n(&s->try_delay_ns, delay, __ATOMIC_RELAXED);
    if (!resil_ip_equal(&first, &ip)) {
        flen = resil_ip_to_sa(&first, port, s->family, &fss);
        fsa = (const struct sockaddr *)&fss;
    }
    fl = real.fcntl(s->fd, F_GETFL);
    if (fl < 0)
        goto passthru;
    if (cfg->strict && (fl & O_NONBLOCK) && !resil_engine_running()) {
        resil_status_t st;
        resil_engine_lock();
        st = resil_engine_start();
        resil_engine_unlock();
        if (st != RESIL_OK) {
            /* strict mode: an internal failure is an error, not plain TCP */
            rerror("fd %d: cannot race (engine unavailable); failing the "
                   "connect (strict)", s->fd);
            *err = EAGAIN;
            return RESIL_OK;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->cur_ip = first;
    resil_sock_set_state(s, RS_TRYING);
    s->try_blocking = true; /* ours until the connect() returns */
    s->fail_connecting = false;
    if (want && (fl & O_NONBLOCK)) {
        /* a session destination, in place too: whatever finds the socket
         * connected first (the engine's watch, a data hook) sends the
         * HELLO, and no byte of the program goes before it
         * (resil_conn_hello_due). A blocking one: connect_blocking. */
        set_hello(s, true);
        if (s->cookie == 0)
            s->cookie = resil_sock_cookie(s->fd); /* detach() checks it */
    }
    pthread_mutex_unlock(&s->mu);
    if (fl & O_NONBLOCK)
        return connect_nonblocking(s, fsa, flen, now, err);
    cst = connect_blocking(s, fsa, flen, now, cs, err);
    /* connect() returns: whatever connects the socket from now on (the
     * race after EINTR) sends no HELLO, as the program's bytes could go
     * first; plain TCP then */
    pthread_mutex_lock(&s->mu);
    set_hello(s, false);
    pthread_mutex_unlock(&s->mu);
    return cst;

passthru:
    pthread_mutex_lock(&s->mu);
    resil_sock_set_state(s, RS_PASSTHRU);
    pthread_mutex_unlock(&s->mu);
    return RESIL_EUNSUPP;
}

resil_status_t resil_conn_first_connect(struct resil_sock *s,
                                        const struct sockaddr *sa,
                                        socklen_t len, int *err)
{
    struct resil_race_ctx *c = NULL;
    resil_status_t st = RESIL_ENOENT;
    int fl, rc, e;
    bool ok;
    NO_CANCEL(cs);

    heal();
    resil_engine_lock();
    pthread_mutex_lock(&s->mu);
    ok = !resil_sock_closed(s) && atomic_load(&s->inplace) &&
         !s->try_blocking &&
         (resil_sock_state(s) == RS_TRYING ||
          (resil_sock_state(s) == RS_RACING && s->race && s->race->inplace &&
           !s->race->rerace));
    fl = ok ? real.fcntl(s->fd, F_GETFL) : -1;
    if (fl < 0) {
        pthread_mutex_unlock(&s->mu);
        resil_engine_unlock();
        return RESIL_ENOENT;
    }
    if (!(fl & O_NONBLOCK)) {
        /* blocking: the kernel waits for a connect in progress (the usual
         * retry after EINTR); so do we, for the race */
        if (resil_sock_state(s) == RS_TRYING) {
            st = race_inplace(s, s->conn_ns, -1, false, true, &c);
            if (st != RESIL_OK) {
                set_inplace(s, false);
                resil_sock_set_state(s, RS_DIRECT);
                atomic_store(&s->ka_due, true);
            }
        } else {
            c = s->race;
            c->refs++;
            c->waiters++;
            st = RESIL_OK;
        }
        pthread_mutex_unlock(&s->mu);
        resil_engine_unlock();
        if (st != RESIL_OK)
            return RESIL_ENOENT; /* the real connect waits, as plain */
        /* the kernel: EALREADY when SO_SNDTIMEO expires on a connect
         * already in progress */
        *err = race_wait(s, c, sa, len, EALREADY, sndtimeo_ms(s->fd), cs);
        return RESIL_OK;
    }
    /* non-blocking: what the kernel's socket says, unless that is attempt
     * 0's failure and the race goes on */
    rc = real.connect(s->fd, sa, len);
    e = rc == 0 ? 0 : errno;
    pthread_mutex_unlock(&s->mu);
    if (e == 0 || e == EISCONN) {
        (void)first_settle(s, 0, false, false, resil_now_ns());
        *err = e;
    } else if (e == EALREADY || e == EINPROGRESS) {
        *err = e;
    } else {
        enum first_res r = first_settle(s, e, true, true, resil_now_ns());
        *err = r == FIRST_PARKED ? EALREADY : e;
    }
    resil_engine_unlock();
    return RESIL_OK;
}

bool resil_conn_first_sockerr(int fd, int *err)
{
    struct resil_sock *s = resil_table_get(fd);
    socklen_t l = sizeof(int);
    bool ok;
    int e = 0;

    if (s == NULL)
        return false;
    if (!atomic_load(&s->inplace)) {
        resil_sock_unref(s);
        return false;
    }
    /* read under s->mu, as we read attempt 0's error ourselves (att0_fail):
     * never both at once. The program's own call on its fd (whose identity
     * first_settle checks before acting on an error). */
    pthread_mutex_lock(&s->mu);
    ok = !resil_sock_closed(s) && atomic_load(&s->inplace) &&
         !s->try_blocking &&
         real.getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &l) == 0;
    pthread_mutex_unlock(&s->mu);
    if (ok && e != 0) {
        NO_CANCEL(cs);
        (void)cs;
        heal();
        resil_engine_lock();
        if (first_settle(s, e, true, false, resil_now_ns()) == FIRST_PARKED)
            e = 0; /* a connect in progress, as far as the program sees */
        resil_engine_unlock();
    }
    resil_sock_unref(s);
    *err = e;
    return ok;
}

bool resil_conn_first_failed(struct resil_sock *s, int err)
{
    struct resil_race_ctx *c;
    bool hide = false;
    NO_CANCEL(cs);

    (void)cs;
    heal();
    resil_engine_lock();
    if (atomic_load(&s->inplace)) {
        hide = first_settle(s, err, true, false, resil_now_ns()) ==
               FIRST_PARKED;
    } else {
        /* parked while this call was in flight on attempt 0: its error
         * is the one the engine could not read */
        pthread_mutex_lock(&s->mu);
        c = resil_sock_state(s) == RS_RACING ? s->race : NULL;
        if (c && c->att0_unknown && !c->finished && !c->cancelled) {
            c->r.att[0].err = err;
            c->att0_unknown = false;
            hide = true;
        }
        pthread_mutex_unlock(&s->mu);
    }
    resil_engine_unlock();
    return hide;
}

void resil_conn_first_done(struct resil_sock *s)
{
    uint64_t now = resil_now_ns(), took = 0;
    bool ev = false, racing;

    pthread_mutex_lock(&s->mu);
    racing = resil_sock_state(s) == RS_RACING;
    if (!resil_sock_closed(s) && resil_sock_state(s) == RS_TRYING &&
        !s->try_blocking && atomic_load(&s->inplace)) {
        took = now - s->conn_ns;
        first_won(s, took, now);
        hello_now(s); /* bytes moved: none, unless a write went first */
        ev = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (ev) {
        first_event(s, took);
    } else if (racing) {
        NO_CANCEL(cs);
        (void)cs;
        heal();
        resil_engine_lock();
        (void)first_settle(s, 0, false, false, now);
        resil_engine_unlock();
    }
}

struct resil_sock *resil_conn_io_begin(int fd)
{
    struct resil_sock *s = resil_table_get(fd);

    if (s == NULL)
        return NULL;
    if (!atomic_load(&s->inplace)) {
        resil_sock_unref(s);
        return NULL;
    }
    atomic_fetch_add(&s->io_busy, 1);
    return s;
}

void resil_conn_io_end(struct resil_sock *s)
{
    atomic_fetch_sub(&s->io_busy, 1);
}

void resil_conn_ka_now(int fd)
{
    struct resil_sock *s = resil_table_get(fd);

    if (s == NULL)
        return;
    if (atomic_load(&s->ka_due)) {
        pthread_mutex_lock(&s->mu);
        if (!resil_sock_closed(s) && resil_sock_connected(s))
            ka_settle(s);
        pthread_mutex_unlock(&s->mu);
    }
    resil_sock_unref(s);
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
        s->try_blocking = false;
        set_inplace(s, false);
    }
    pthread_mutex_unlock(&s->mu);
    resil_engine_unlock();
    if (cancelled)
        resil_engine_wake(); /* the engine drops the race */
    *err = rc < 0 ? e : 0;
    return RESIL_OK;
}

/* A first attempt the program closes before anything looked at it: its
 * "connect" event when it had connected (only for the events file or the
 * info summary: one TCP_INFO, the fd still open). */
static void first_closed(struct resil_sock *s)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);

    if (!resil_events_enabled() && resil_log_level < RESIL_LOG_INFO)
        return;
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
        ti.tcpi_bytes_acked >= 1)
        first_event(s, (uint64_t)ti.tcpi_rtt * 1000);
}

void resil_conn_forget(struct resil_sock *s)
{
    bool racing, trying;

    /* s->mu only, never the engine lock: a close() must not wait for the
     * engine's turn (its log and event writes, a swap of another socket),
     * and a connection per request closes here without touching it. A
     * race of s is stopped by the engine itself (step() sees s->closed);
     * none can begin after this (race_begin() and race_inplace() look at
     * s->closed under s->mu), and a race that ends meanwhile finds
     * s->closed in finish(), under s->mu, before it touches the fd. A
     * first attempt on the list is dropped when the engine looks at it
     * (pend_look). */
    pthread_mutex_lock(&s->mu);
    atomic_store_explicit(&s->closed, true, memory_order_relaxed);
    /* RS_RACING, not s->race: that is the engine's (cancel_ctx clears it
     * under the engine lock alone); under s->mu the state says the same */
    racing = resil_sock_state(s) == RS_RACING;
    trying = resil_sock_state(s) == RS_TRYING &&
             atomic_load_explicit(&s->inplace, memory_order_relaxed);
    s->rerace = false;
    set_pending(s, 0);
    set_inplace(s, false);
    set_hello(s, false);
    pthread_mutex_unlock(&s->mu);
    if (__atomic_load_n(&s->hello_w, __ATOMIC_RELAXED) != NULL) {
        /* the engine's duplicate would keep the connect going */
        atomic_store(&hello_closed, true);
        resil_engine_wake();
    }
    if (trying) {
        /* its event is written (no cancellation point may act there) */
        NO_CANCEL(cs);
        (void)cs;
        first_closed(s);
    }
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
    /* a session recovers by resuming: the socket on its fd during a
     * resume (parked, or the new connection) has carried no byte, and
     * the server's end is an accepted one, whose "re-race" would connect
     * to the client's ephemeral port (seen: a server whose epoll_wait met
     * the old connection's error mid-resume lost the session) */
    if (s->sess != NULL)
        goto out;
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
    if (resil_fds_socket(&park, s->family, SOCK_STREAM | SOCK_CLOEXEC, 0,
                         RESIL_FD_SOCK, NULL) != RESIL_OK)
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

    if (atomic_load_explicit(&s->inplace, memory_order_relaxed)) {
        bool hide;
        /* attempt 0 on the fd: an ICMP error or a timeout is reported
         * just before the socket leaves SYN_SENT (tcp_v4_err,
         * tcp_write_err); a reset after it (tcp_reset) */
        for (int i = 0; pollerr && i < 20; i++) {
            memset(&ti, 0, sizeof(ti));
            l = sizeof(ti);
            if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
                ti.tcpi_state != TCP_SYN_SENT)
                break;
            struct timespec d = {.tv_nsec = 100000};
            nanosleep(&d, NULL);
        }
        heal();
        resil_engine_lock();
        hide = first_settle(s, 0, false, false, resil_now_ns()) ==
               FIRST_PARKED;
        resil_engine_unlock();
        if (hide || atomic_load(&s->inplace))
            return hide;
        /* connected, and died since: as any connection */
    }
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
    if (i == 0 && c->inplace) {
        /* the program's own socket: looked at the way its hooks do */
        (void)first_settle(c->s, 0, false, false, now);
        return;
    }
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
    uint64_t wake = UINT64_MAX, w;

    for (struct resil_race_ctx *c = races, *nx; c; c = nx) {
        nx = c->next;
        w = step(c, now);
        if (w < wake)
            wake = w;
        if (c->finished || c->cancelled)
            list_remove(c);
    }
    w = pend_tick(now);
    if (w < wake)
        wake = w;
    w = hello_tick(now);
    return w < wake ? w : wake;
}

/* In the child of a fork: a first attempt in progress stays the parent's
 * (its race, its engine), like a race in flight. */
static void fork_child_sock(struct resil_sock *s, void *arg)
{
    (void)arg;
    if (atomic_load(&s->inplace) || resil_sock_state(s) == RS_TRYING) {
        resil_sock_set_state(s, RS_FAILED);
        s->fail_connecting = false;
        s->try_blocking = false;
        atomic_store(&s->inplace, false);
        set_pending(s, ECONNABORTED);
    }
    atomic_store(&s->pend_listed, false);
    atomic_store(&s->io_busy, 0);
}

void resil_conn_atfork_child(void)
{
    /* a wait the forking thread jumped out of belongs to the parent */
    jumped.c = NULL;
    fast.s = NULL;
    /* the list's references stay with the parent (leaked here) */
    atomic_store(&pend_stack, PEND_IDLE);
    pend_head = pend_tail = NULL;
    resil_table_foreach(fork_child_sock, NULL);
    atomic_store(&resil_conn_inplace, 0);
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
    /* the watches' duplicates are the parent's: the child's copies go */
    for (struct hello_w *h = hello_ws, *nx; h != NULL; h = nx) {
        nx = h->next;
        __atomic_store_n(&h->s->hello_w, NULL, __ATOMIC_RELAXED);
        resil_fds_close(&h->fd);
        /* h and its reference are leaked, as the list's above */
    }
    hello_ws = NULL;
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
            set_inplace(s, false);
            set_pending(s, err);
        }
        pthread_mutex_unlock(&s->mu);
        if (c->donefd >= 0)
            (void)!real.write(c->donefd, &one, sizeof(one));
    }
    pend_flush();
    /* no engine to see them: the data hooks send those HELLOs */
    while (hello_ws != NULL)
        hello_unwatch(hello_ws->s);
}

void resil_conn_hold_error(struct resil_sock *s, int err)
{
    set_pending(s, err);
}

bool resil_conn_busy(void)
{
    /* the list's pushes wake (or start) the engine only when they find
     * it idle: the engine leaves only when it is (checked under the
     * engine lock, which pend_kick takes) */
    return races != NULL || !resil_conn_idle();
}
