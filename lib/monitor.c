#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

#include "config.h"
#include "engine.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "monitor.h"
#include "resumer.h"
#include "session.h"
#include "sys.h"

/* include/net/tcp_states.h; netinet/tcp.h clashes with linux/tcp.h */
#define TCP_ESTABLISHED 1
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8

/* After the last marked socket, keep ticking this many ticks before going
 * idle: request/response traffic with pauses shorter than that never
 * pays a wake-up. */
#define GRACE_TICKS 16

/* New marks: a lock-free stack (push: one CAS). IDLE on top means the
 * engine stopped ticking for the monitor: the push that replaces it must
 * wake the engine. The engine takes the whole stack at once. */
static char idle_mark;
#define IDLE ((struct resil_sock *)&idle_mark)
static _Atomic(struct resil_sock *) marks = IDLE;

/* The engine's side, under mon_mu (only engine threads take it: one, or
 * two for a moment when close_range() made a new engine replace one). */
static pthread_mutex_t mon_mu = PTHREAD_MUTEX_INITIALIZER;
static struct resil_sock *list; /* marked sockets, linked by mon.next */
static uint64_t due;            /* next check of the list */
static uint64_t quiet_until;    /* go idle when the list is empty past it */

/* Wake the engine (start it in a process that never raced): a mark found
 * the monitor idle. */
static void kick(void)
{
    resil_status_t st;

    resil_engine_lock();
    st = resil_engine_start();
    resil_engine_unlock();
    if (st == RESIL_OK)
        resil_engine_wake();
    else
        rwarn("no engine thread; dead paths are left to TCP");
}

void resil_monitor_push(struct resil_sock *s)
{
    struct resil_sock *old = atomic_load_explicit(&marks, memory_order_relaxed);

    /* the stack's reference: s may be closed before the engine looks */
    resil_sock_ref(s);
    do
        s->mon.mark_next = old == IDLE ? NULL : old;
    while (!atomic_compare_exchange_weak_explicit(
        &marks, &old, s, memory_order_release, memory_order_relaxed));
    if (old == IDLE)
        kick();
}

/* Take the new marks onto the list (mon_mu held). Returns true if there
 * were any. A socket is on the stack at most once: it is pushed only when
 * its dirty flag goes from false to true, and only check() clears it, on
 * the engine thread, after the stack was taken. It may be listed already
 * (pushed while check() looked at it): then the push's reference goes. */
static bool take_marks(void)
{
    struct resil_sock *s, *nx;

    s = atomic_exchange_explicit(&marks, NULL, memory_order_acquire);
    if (s == NULL)
        return false;
    for (; s; s = nx) {
        nx = s->mon.mark_next;
        if (s->mon.listed) {
            resil_sock_unref(s);
            continue;
        }
        s->mon.listed = true;
        s->mon.out_since = 0;
        s->mon.next = list;
        list = s;
    }
    return true;
}

static void set_user_timeout(int fd, unsigned ms)
{
    real.setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
}

/* Mark s's address down (s->mu held). Returns true the first time for
 * this connection: the caller then logs. */
static bool mark_down(struct resil_sock *s, uint64_t now)
{
    if (s->mon.failed)
        return false;
    s->mon.failed = true;
    resil_health_fail(&s->cur_ip, now);
    return true;
}

/* A stall found under s->mu, reported after it (a close() waits on it,
 * and must not wait for a log or event write). */
struct stall_note {
    bool found;
    int fd;
    char peer[RESIL_ADDRSTRLEN];
    unsigned unacked, last_ack_ms;
    unsigned long long in_flight_ms;
};

static void stalled(struct resil_sock *s, const struct tcp_info *ti,
                    uint64_t now, struct stall_note *n)
{
    const struct resil_config *cfg = resil_config_get();

    if (s->mon.ut_armed)
        return;
    if (!(s->app_opts & RESIL_APP_USER_TIMEOUT)) {
        /* The kernel aborts the connection with ETIMEDOUT at the user
         * timeout, counted from the first unanswered segment; since 4.19
         * it clamps the RTO timer to that deadline. */
        set_user_timeout(s->fd, (unsigned)cfg->fail_timeout_ms);
    }
    s->mon.ut_armed = true;
    mark_down(s, now);
    n->found = true;
    n->fd = s->fd;
    resil_ip_format(&s->cur_ip, s->peer_port, n->peer, sizeof(n->peer));
    n->unacked = ti->tcpi_unacked;
    n->last_ack_ms = ti->tcpi_last_ack_recv;
    n->in_flight_ms = (now - s->mon.out_since) / RESIL_MS;
}

static void report_stall(const struct stall_note *n)
{
    if (!n->found)
        return;
    rinfo("fd %d: path to %s stalled (%u bytes unacked, no ACK for %u ms, "
          "in flight for %llu ms); failing within %d ms",
          n->fd, n->peer, n->unacked, n->last_ack_ms, n->in_flight_ms,
          resil_config_get()->fail_timeout_ms);
    resil_event("path_stall", n->fd,
                "\"peer\":\"%s\",\"unacked\":%u,\"last_ack_ms\":%u",
                n->peer, n->unacked, n->last_ack_ms);
}

/* The path answers again after a stall: the user timeout goes, and a
 * later failure of this connection marks its address down again. */
static void disarm(struct resil_sock *s)
{
    if (!s->mon.ut_armed)
        return;
    if (!(s->app_opts & RESIL_APP_USER_TIMEOUT))
        set_user_timeout(s->fd, 0);
    s->mon.ut_armed = false;
    s->mon.failed = false;
}

/* Check one marked socket (mon_mu held). Returns false when it needs no
 * more watching: nothing in flight (the next write marks it again), or
 * not a connection to watch now. */
/* A session socket (session.h) listed in this tick: ticks come faster. */
static bool session_listed;

/* A session's path: suspected at the first retransmission timeout with
 * data in flight (one RTO without an ACK), not after stall_ms: a resume
 * costs nothing the peer does not verify, and is how the session beats
 * TCP's own recovery (doc/session.md). len: what TCP_INFO filled, outq:
 * bytes queued, out_ms: how long bytes have been in flight (as the ticks
 * saw it: never more than the truth). */
static bool session_suspect(const struct tcp_info *ti, socklen_t len,
                            int outq, uint64_t out_ms)
{
    /* the RTO before the timeouts doubled it (tcp_retransmit_timer):
     * comparing with the doubled one waited a second RTO */
    unsigned rto_ms = (ti->tcpi_rto >> (ti->tcpi_backoff < 31
                                            ? ti->tcpi_backoff : 31)) / 1000;
    if (ti->tcpi_last_ack_recv < (rto_ms > 200 ? rto_ms : 200))
        return false;
    /* in flight and unanswered for an RTO: the first RTO fired, or the
     * bytes have been out that long (a request alone in flight gets a
     * tail loss probe after ~200 ms and its first RTO only an RTO after
     * that: suspected at +470 ms instead of +250 ms on the bed; a peer
     * acknowledges within its delayed-ACK bound, 200 ms at most) */
    if (ti->tcpi_unacked > 0 &&
        (ti->tcpi_backoff >= 1 || out_ms >= (rto_ms > 200 ? rto_ms : 200)))
        return true;
    if (ti->tcpi_backoff < 1)
        return false;
    /* Bytes queued, none in flight, the timer backing off: our segments
     * are dropped before they leave (the link is down: the kernel counts
     * none out and probes as for a zero window; measured on 6.x), or the
     * peer's window is zero. An open window (tcpi_snd_wnd, Linux 5.4)
     * says the first; in a zero window, two probes in a row without an
     * answer say the path is gone (an answer resets the count: a peer
     * whose program does not read is no failure). */
    if (outq <= 0)
        return false;
    if (len >= offsetof(struct tcp_info, tcpi_snd_wnd) +
                   sizeof(ti->tcpi_snd_wnd) &&
        ti->tcpi_snd_wnd >= ti->tcpi_snd_mss)
        return true;
    return ti->tcpi_probes >= 2;
}

/* Our FIN is out and not acknowledged yet (FIN_WAIT1, CLOSING,
 * LAST_ACK): a session's bytes before it may still be lost with the
 * path, and the resume sends the FIN again. */
static bool fin_unacked(int st)
{
    return st == 4 || st == 11 || st == 9;
}

void resil_monitor_in_flight(struct resil_sock_mon *m, uint64_t acked,
                             uint32_t ack_age_ms, uint32_t sent_age_ms,
                             uint64_t now)
{
    uint64_t back;

    if (m->out_since != 0 && acked == m->acked)
        return; /* the same episode: no byte acknowledged since */
    back = (uint64_t)(ack_age_ms < sent_age_ms ? ack_age_ms : sent_age_ms) *
           RESIL_MS;
    m->out_since = back < now ? now - back : 1;
    m->acked = acked;
}

static bool check(struct resil_sock *s, uint64_t now)
{
    const struct resil_config *cfg = resil_config_get();
    uint64_t stall = (uint64_t)cfg->stall_ms * RESIL_MS;
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int outq = 0;
    bool keep = false, sess = false, trim = false, suspect = false;
    bool kept = false;
    struct stall_note note = {.found = false};

    /* s->mu: the program's close() sets s->closed under it before the
     * real close, so the fd number is still s's socket here */
    pthread_mutex_lock(&s->mu);
    if (resil_sock_closed(s)) {
        /* stays dirty: a write racing with the close marks it no more */
        goto out;
    }
    /* Clear before looking: a write that lands after this store marks
     * the socket again; one before it shows in the counters below. */
    atomic_store(&s->mon.dirty, false);
    if (!resil_sock_connected(s)) {
        /* being replaced (a re-race): the new socket starts afresh */
        s->mon.ut_armed = false;
        goto out;
    }
    /* the usual answer, nothing unacknowledged (an unarmed socket then
     * needs nothing more), for one cheap call instead of two */
    if (!s->mon.ut_armed && real.ioctl(s->fd, SIOCOUTQ, &outq) == 0 &&
        outq == 0) {
        /* an idle session keeps no replay bytes: the peer has them */
        trim = s->sess && atomic_load(&s->sess->state) == RESIL_SESS_UP;
        goto out;
    }
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        (ti.tcpi_state != TCP_ESTABLISHED && ti.tcpi_state != TCP_CLOSE_WAIT &&
         !(s->sess && fin_unacked(ti.tcpi_state))))
        goto out;
    real.ioctl(s->fd, SIOCOUTQ, &outq);
    /* the kernel's smoothed RTT of a live connection: the next race to
     * this address sizes its attempt delay on it (health.h) */
    resil_health_rtt(&s->cur_ip, (uint64_t)ti.tcpi_rtt * 1000, now);
    sess = s->sess && atomic_load(&s->sess->state) == RESIL_SESS_UP;
    if (ti.tcpi_unacked == 0 && outq == 0) {
        disarm(s);
        /* an idle session keeps no replay bytes: the peer has them */
        trim = sess;
        goto out;
    }
    keep = true;
    if (ti.tcpi_unacked > 0)
        resil_monitor_in_flight(&s->mon, ti.tcpi_bytes_acked,
                                ti.tcpi_last_ack_recv,
                                ti.tcpi_last_data_sent, now);
    if (sess) {
        session_listed = true;
        suspect = session_suspect(
            &ti, l, outq,
            s->mon.out_since ? (now - s->mon.out_since) / RESIL_MS : 0);
    }
    atomic_store(&s->mon.dirty, true);
    if (ti.tcpi_unacked == 0) {
        /* Bytes queued, none in flight: a zero window. Not a failure: the
         * peer's ACKs to window probes keep the path proven. */
        s->mon.out_since = 0;
        disarm(s);
        goto out;
    }
    /* A stall is no progress for stall_ms counted from when data became
     * outstanding: the age of the last ACK alone also counts the quiet
     * time before this write (a healthy connection idle for a while). */
    if (ti.tcpi_last_ack_recv >= (unsigned)cfg->stall_ms &&
        now - s->mon.out_since >= stall)
        stalled(s, &ti, now, &note);
    else if ((uint64_t)ti.tcpi_last_ack_recv * RESIL_MS < stall)
        disarm(s);
out:
    if (!keep)
        s->mon.out_since = 0;
    /* no write of its marks it: it stays listed while it is the
     * program's connection */
    if (s->mon.unseen && !resil_sock_closed(s) && resil_sock_connected(s))
        keep = true;
    pthread_mutex_unlock(&s->mu);
    report_stall(&note);
    /* the session's own locks come before s->mu (session.h) */
    if (trim)
        kept = resil_sess_trim(s->sess, s->fd);
    if (suspect)
        resil_resume_start(s, "a retransmission timeout with data in "
                              "flight");
    /* a session ring that keeps its memory after writes: looked at again
     * next tick, which gives it back if no write came */
    return keep || kept;
}

/* Check every listed socket; drop those that need no more watching.
 * mon_mu held. */
static void check_list(uint64_t now)
{
    for (struct resil_sock **pp = &list; *pp;) {
        struct resil_sock *s = *pp;
        if (check(s, now)) {
            pp = &s->mon.next;
            continue;
        }
        *pp = s->mon.next;
        s->mon.listed = false;
        resil_sock_unref(s);
    }
}

uint64_t resil_monitor_tick(uint64_t now)
{
    const struct resil_config *cfg = resil_config_get();
    uint64_t tick = (uint64_t)cfg->stall_ms * RESIL_MS / 4, wake;
    /* sessions are suspected at one RTO (>= 200 ms): look every 50 ms,
     * also at a socket just marked (a request on a session that was idle
     * waited for a 250 ms tick: suspected at +470 ms on the bed) */
    if ((session_listed || atomic_load(&resil_sess_count) > 0) &&
        tick > 50 * RESIL_MS)
        tick = 50 * RESIL_MS;
    bool active;

    pthread_mutex_lock(&mon_mu);
    if (atomic_load(&marks) == IDLE) {
        wake = UINT64_MAX; /* the list is empty too */
        goto out;
    }
    active = take_marks();
    if (now >= due) {
        due = now + tick;
        session_listed = false;
        check_list(now);
    }
    if (active || list)
        quiet_until = now + GRACE_TICKS * tick;
    if (list == NULL && now >= quiet_until) {
        struct resil_sock *expect = NULL;
        if (atomic_compare_exchange_strong(&marks, &expect, IDLE)) {
            wake = UINT64_MAX;
            goto out;
        }
        /* a mark came in meanwhile: take it on the next turn */
        wake = now;
        goto out;
    }
    wake = due;
out:
    pthread_mutex_unlock(&mon_mu);
    return wake;
}

/* The value of an int option of fd, or def when it cannot be read. */
static int opt_int(int fd, int level, int name, int def)
{
    int v;
    socklen_t l = sizeof(v);
    return real.getsockopt(fd, level, name, &v, &l) == 0 ? v : def;
}

static void set_int(int fd, int level, int name, int v)
{
    real.setsockopt(fd, level, name, &v, sizeof(v));
}

void resil_monitor_unseen(struct resil_sock *s)
{
    pthread_mutex_lock(&s->mu);
    s->mon.unseen = true;
    pthread_mutex_unlock(&s->mu);
    resil_monitor_mark(s);
}

void resil_monitor_tune(struct resil_sock *s, int fd)
{
    const struct resil_config *cfg = resil_config_get();
    unsigned app = s->app_opts;
    int fail = cfg->fail_timeout_ms / 1000, idle, intvl, cnt;

    /* The program switched keepalive off: that is its choice to make. */
    if (app & RESIL_APP_KEEPALIVE_OFF)
        return;
    if (fail < 2)
        fail = 2;
    /* Keepalive finds a dead idle path in about fail_timeout: half of it
     * idle, then two unanswered probes. Switching keepalive on (libpq
     * does) is not choosing its timing: only the knobs the program set
     * are its own, the others are sized around them. */
    idle = (app & RESIL_APP_KEEPIDLE)
               ? opt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, fail / 2)
               : fail / 2;
    if (idle < 1)
        idle = 1;
    cnt = (app & RESIL_APP_KEEPCNT) ? opt_int(fd, IPPROTO_TCP, TCP_KEEPCNT, 2)
                                    : 2;
    if (cnt < 1)
        cnt = 1;
    if (app & RESIL_APP_KEEPINTVL) {
        intvl = opt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, 1);
        if (intvl < 1)
            intvl = 1;
        if (!(app & RESIL_APP_KEEPCNT)) {
            cnt = (fail - idle) / intvl;
            if (cnt < 1)
                cnt = 1;
        }
    } else {
        intvl = (fail - idle) / cnt;
        if (intvl < 1)
            intvl = 1;
    }
    if (!(app & RESIL_APP_KEEPALIVE))
        set_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    if (!(app & RESIL_APP_KEEPIDLE))
        set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle);
    if (!(app & RESIL_APP_KEEPINTVL))
        set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, intvl);
    if (!(app & RESIL_APP_KEEPCNT))
        set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, cnt);
}

void resil_monitor_app_opt(struct resil_sock *s, int level, int name,
                           const void *val, socklen_t len)
{
    unsigned bit = 0;

    if (level == SOL_SOCKET && name == SO_KEEPALIVE) {
        /* the real call succeeded, so val holds an int */
        bool on = *(const int *)val != 0;
        s->app_opts &= ~(RESIL_APP_KEEPALIVE | RESIL_APP_KEEPALIVE_OFF);
        bit = on ? RESIL_APP_KEEPALIVE : RESIL_APP_KEEPALIVE_OFF;
    } else if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_KEEPIDLE:
            bit = RESIL_APP_KEEPIDLE;
            break;
        case TCP_KEEPINTVL:
            bit = RESIL_APP_KEEPINTVL;
            break;
        case TCP_KEEPCNT:
            bit = RESIL_APP_KEEPCNT;
            break;
        case TCP_USER_TIMEOUT:
            bit = RESIL_APP_USER_TIMEOUT;
            break;
        }
    }
    if (bit == 0)
        return;
    s->app_opts |= bit;
    if (bit == RESIL_APP_USER_TIMEOUT) {
        /* the monitor's value may have landed after the program's (the
         * real call ran before s->mu was taken): the program's wins */
        if (s->mon.ut_armed && resil_sock_connected(s))
            real.setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, val, len);
        s->mon.ut_armed = false;
        return;
    }
    /* on a connected socket keepalive was sized already (or not at all,
     * if the program had switched it off): size it again around the
     * program's new choice; when it is still due (conn.h), it will be
     * sized around it then */
    if (resil_sock_connected(s) && bit != RESIL_APP_KEEPALIVE_OFF &&
        !atomic_load_explicit(&s->ka_due, memory_order_relaxed))
        resil_monitor_tune(s, s->fd);
}

/* Logged once s->mu is released (a close() waits on it): the caller
 * formats peer under the lock. */
static void log_down(int fd, const char *peer, const char *why)
{
    rinfo("fd %d: connection to %s failed (%s); address tried last for "
          "%d ms",
          fd, peer, why, resil_config_get()->health_ttl_ms);
}

void resil_monitor_failed(struct resil_sock *s, int err)
{
    RESIL_KEEP_ERRNO();
    char peer[RESIL_ADDRSTRLEN];
    bool down;

    if (err != ETIMEDOUT && err != EHOSTUNREACH && err != ENETUNREACH)
        return;
    pthread_mutex_lock(&s->mu);
    down = !resil_sock_closed(s) && resil_sock_connected(s) &&
           mark_down(s, resil_now_ns());
    if (down)
        resil_ip_format(&s->cur_ip, s->peer_port, peer, sizeof(peer));
    pthread_mutex_unlock(&s->mu);
    if (down)
        log_down(s->fd, peer, strerror(err));
}

void resil_monitor_pollerr(struct resil_sock *s)
{
    RESIL_KEEP_ERRNO();
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    char peer[RESIL_ADDRSTRLEN];
    bool down = false;

    pthread_mutex_lock(&s->mu);
    if (resil_sock_closed(s) || !resil_sock_connected(s) || s->mon.failed)
        goto out;
    /* Look, do not touch: SO_ERROR would consume the program's error.
     * A connection the kernel closed after unanswered keepalive probes,
     * retransmissions or zero-window probes died of its path (an RST
     * from a live peer finds none of them). The kernel holds the socket
     * lock from the error report to the close, and TCP_INFO takes it. */
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
        ti.tcpi_state == TCP_CLOSE &&
        (ti.tcpi_probes || ti.tcpi_retransmits || ti.tcpi_backoff) &&
        mark_down(s, resil_now_ns())) {
        down = true;
        resil_ip_format(&s->cur_ip, s->peer_port, peer, sizeof(peer));
    }
out:
    pthread_mutex_unlock(&s->mu);
    if (down)
        log_down(s->fd, peer, "timed out");
}

static void forget_sock(struct resil_sock *s, void *arg)
{
    (void)arg;
    atomic_store(&s->mon.dirty, false);
    s->mon.listed = false;
    s->mon.next = s->mon.mark_next = NULL;
    s->mon.out_since = 0;
}

void resil_monitor_atfork_child(void)
{
    /* Only this thread exists now; the list and its references stay with
     * the parent (leaked here on purpose: nothing may free what the
     * parent's engine thread may have been touching). */
    pthread_mutex_init(&mon_mu, NULL);
    list = NULL;
    due = quiet_until = 0;
    atomic_store(&marks, IDLE);
    resil_table_foreach(forget_sock, NULL);
}

bool resil_monitor_idle(void)
{
    struct resil_sock *expect = NULL;
    bool idle;

    /* nothing listed and no new mark: go idle now (the grace ticks only
     * spare request/response traffic a wake-up), so that the next mark
     * wakes, and if need be starts, the engine */
    pthread_mutex_lock(&mon_mu);
    if (atomic_load(&marks) == IDLE) {
        pthread_mutex_unlock(&mon_mu);
        return true; /* the list is empty too */
    }
    /* what a tick would drop now (closed, nothing in flight) goes now */
    take_marks();
    check_list(resil_now_ns());
    idle = list == NULL &&
           atomic_compare_exchange_strong(&marks, &expect, IDLE);
    pthread_mutex_unlock(&mon_mu);
    return idle;
}
