/* Hooks: readiness. epoll_ctl is tracked so that a socket swapped onto a
 * managed fd goes back into every epoll set the program put the fd in
 * (dup2/dup3 silently drop the registration: pitfalls 2.1). */
#include <errno.h>
#include <sys/select.h>
#include <time.h>

#include "config.h"
#include "conn.h"
#include "engine.h"
#include "epoll.h"
#include "monitor.h"
#include "session_io.h"

#include "log.h"
#include "shim.h"

/* A session socket whose readiness is not the kernel's (session_io.h). */
static bool sess_attention(void)
{
    return atomic_load_explicit(&resil_sess_attention,
                                memory_order_relaxed) > 0 &&
           !resil_in_shim;
}

/* Sessions in the process: poll and select count their sleepers on
 * session fds (session_io.h). */
static bool sess_any(void)
{
    return atomic_load_explicit(&resil_sess_count, memory_order_relaxed) >
               0 &&
           !resil_in_shim;
}

/* The events of a frozen session were taken back: the old connection
 * reports at once, so pause briefly before asking again rather than spin
 * (a resume replaces it with the parked socket within a few ms). */
static void nap(void)
{
    struct timespec d = {0, 2000000};
    nanosleep(&d, NULL);
}

/* A timeout in ms as the sessions of a call need it (what: from
 * resil_sess_poll_enter or resil_sess_select_enter). */
static int sess_ms(int t, int what)
{
    if (what & RESIL_SESS_READY)
        return 0;
    if ((what & RESIL_SESS_SLICE) && (t < 0 || t > RESIL_SESS_SLICE_MS))
        return RESIL_SESS_SLICE_MS;
    return t;
}

/* The same in ns (-1: none). */
static int64_t sess_ns(int64_t t, int what)
{
    const int64_t sl = RESIL_SESS_SLICE_MS * 1000000LL;
    if (what & RESIL_SESS_READY)
        return 0;
    if ((what & RESIL_SESS_SLICE) && (t < 0 || t > sl))
        return sl;
    return t;
}

static RESIL_SLOW int epoll_ctl_managed(int epfd, int op, int fd,
                                        struct epoll_event *ev)
{
    int err;

    if (resil_epoll_ctl_fd(fd, epfd, op, ev, &err) != RESIL_OK)
        return real.epoll_ctl(epfd, op, fd, ev);
    if (err == 0) {
        if (sess_attention())
            /* a stand-in for a session's stash follows (session_io.h) */
            resil_sess_epoll_ctl(fd, epfd, op, ev);
        return 0;
    }
    errno = err;
    return -1;
}

RESIL_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (resil_hooked(fd))
        return epoll_ctl_managed(epfd, op, fd, ev);
    return real.epoll_ctl(epfd, op, fd, ev);
}

/* ---- readiness: events of a socket that is being replaced ----
 * A managed connection that dies before carrying a byte is re-raced. A
 * program that reads or writes meets the error inside a data hook (io.c);
 * one that sees POLLERR/POLLHUP and closes without reading would not: so
 * the readiness calls hand such an event to the engine first. When it
 * re-races, the fd already holds a socket in progress; the event, and any
 * other one harvested from the replaced socket before the swap (another
 * thread, the same fd twice in one pollfd array as in nc), is dropped
 * (epoll.h: stale reports); the call waits on if nothing else is ready. */

static int drop_stale_pollfds(struct pollfd *fds, nfds_t n, uint64_t seq0)
{
    RESIL_KEEP_ERRNO();
    int dropped = 0;

    for (nfds_t i = 0; i < n; i++) {
        struct resil_sock *s;
        uint32_t m;
        short got = fds[i].revents;
        if (!(got & (POLLERR | POLLHUP)) || fds[i].fd < 0 ||
            !resil_table_has(fds[i].fd) ||
            (s = resil_table_get(fds[i].fd)) == NULL)
            continue;
        if (!resil_epoll_stale_report(s, seq0, &m)) {
            resil_in_shim++;
            if (!resil_conn_dead_unused(s, got & POLLERR) && (got & POLLERR))
                resil_monitor_pollerr(s);
            resil_in_shim--;
        }
        if (resil_epoll_stale_report(s, seq0, &m) &&
            resil_epoll_stale_match(
                (uint16_t)got,
                m & ((uint16_t)fds[i].events | POLLERR | POLLHUP))) {
            rdebug("fd %d: readiness 0x%x of the replaced socket dropped",
                   fds[i].fd, (unsigned)(uint16_t)got);
            fds[i].revents = 0;
            dropped++;
        } else {
            fds[i].revents |= (short)resil_conn_poll_err(fds[i].fd);
        }
        resil_sock_unref(s);
    }
    return dropped;
}

static int64_t ts_ns(const struct timespec *ts)
{
    return ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts_ns(&ts);
}

static int64_t now_ms(void)
{
    return mono_ns() / 1000000;
}

/* What is left of a millisecond timeout that began at t0 (-1: none). */
static int left_ms(int timeout, int64_t t0)
{
    int64_t left;
    if (timeout < 0)
        return -1;
    left = timeout - (now_ms() - t0);
    return left > 0 ? (int)left : 0;
}

static bool quiet(int rc)
{
    return rc <= 0 || resil_in_shim ||
           atomic_load_explicit(&resil_table_count, memory_order_relaxed) == 0;
}

static bool racing(int fd)
{
    struct resil_sock *s;
    bool r;
    if (fd < 0 || !resil_table_has(fd) || (s = resil_table_get(fd)) == NULL)
        return false;
    /* without s->mu: a stale answer costs one slice more, or one less
     * for a race that another thread starts while this one sleeps, which
     * is the program's own race between the two calls (race_begin makes
     * RS_RACING visible before resil_races_active counts it) */
    r = resil_sock_state(s) == RS_RACING;
    resil_sock_unref(s);
    return r;
}

/* The kernel's poll and select register on the wait queues of the files
 * they find in their first pass only. A sleeper on a parked socket is woken
 * by the swap and re-reads the fd table, but is not registered on the new
 * socket: if that one is not ready at once (a re-race waiting for data),
 * nothing would wake it again. So while a socket in the set is being
 * replaced, sleep in slices: each new call registers on what fd holds now. */
#define RACE_SLICE_MS 50

static int slice(int t, bool racing_now)
{
    return racing_now && (t < 0 || t > RACE_SLICE_MS) ? RACE_SLICE_MS : t;
}

static bool pollfds_racing(const struct pollfd *fds, nfds_t n)
{
    if (resil_in_shim || atomic_load(&resil_races_active) == 0)
        return false;
    for (nfds_t i = 0; i < n; i++)
        if (racing(fds[i].fd))
            return true;
    return false;
}

/* No managed socket in the process (or we are inside libresil): the
 * readiness hooks are a single test in front of the real call. */
static bool unmanaged(void)
{
    return __builtin_expect(atomic_load_explicit(&resil_table_count,
                                                 memory_order_relaxed) == 0,
                            1) ||
           resil_in_shim;
}

static RESIL_SLOW int poll_loop(struct pollfd *fds, nfds_t n, int timeout,
                                size_t fdslen, bool chk)
{
    int64_t t0 = timeout > 0 ? now_ms() : 0;
    uint64_t seq0;
    int rc, t;

    for (;;) {
        struct resil_sess_call sc;
        bool napping = false, sess = sess_any();
        t = slice(left_ms(timeout, t0), pollfds_racing(fds, n));
        if (sess) {
            resil_sess_poll_enter(&sc, fds, n);
            t = sess_ms(t, sc.what);
        }
        seq0 = resil_epoll_swap_seq();
        rc = chk ? real.__poll_chk(fds, n, t, fdslen) : real.poll(fds, n, t);
        if (sess)
            resil_sess_poll_leave(&sc, fds);
        if (rc >= 0 && sess_attention())
            rc = resil_sess_poll_fix(fds, n, rc, &napping);
        if (napping && rc == 0)
            nap();
        if (rc < 0 ||
            (rc > 0 && (quiet(rc) ||
                        (rc -= drop_stale_pollfds(fds, n, seq0)) > 0)))
            return rc;
        if (timeout == 0 || left_ms(timeout, t0) == 0)
            return 0;
    }
}

RESIL_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (unmanaged())
        return real.poll(fds, n, timeout);
    return poll_loop(fds, n, timeout, 0, false);
}

RESIL_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout,
                            size_t fdslen)
{
    if (unmanaged())
        return real.__poll_chk(fds, n, timeout, fdslen);
    return poll_loop(fds, n, timeout, fdslen, true);
}

static RESIL_SLOW int ppoll_loop(struct pollfd *fds, nfds_t n,
                                 const struct timespec *ts,
                                 const sigset_t *mask)
{
    int64_t t0, left = ts ? ts_ns(ts) : -1;
    struct timespec step;
    uint64_t seq0;
    int rc;

    t0 = mono_ns();
    for (;;) {
        const struct timespec *tp = ts ? &step : NULL;
        int64_t want = left;
        struct resil_sess_call sc;
        bool napping = false, sess = sess_any();
        if (pollfds_racing(fds, n) &&
            (want < 0 || want > RACE_SLICE_MS * 1000000LL)) {
            want = RACE_SLICE_MS * 1000000LL;
            tp = &step;
        }
        if (sess) {
            resil_sess_poll_enter(&sc, fds, n);
            if ((want = sess_ns(want, sc.what)) >= 0)
                tp = &step;
        }
        if (tp) {
            step.tv_sec = want / 1000000000LL;
            step.tv_nsec = want % 1000000000LL;
        }
        seq0 = resil_epoll_swap_seq();
        rc = real.ppoll(fds, n, tp, mask);
        if (sess)
            resil_sess_poll_leave(&sc, fds);
        if (rc >= 0 && sess_attention())
            rc = resil_sess_poll_fix(fds, n, rc, &napping);
        if (napping && rc == 0)
            nap();
        if (rc < 0 ||
            (rc > 0 && (quiet(rc) ||
                        (rc -= drop_stale_pollfds(fds, n, seq0)) > 0)))
            return rc;
        if (ts) {
            left = ts_ns(ts) - (mono_ns() - t0);
            if (left <= 0)
                return 0;
        }
    }
}

RESIL_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                       const sigset_t *mask)
{
    if (unmanaged())
        return real.ppoll(fds, n, ts, mask);
    return ppoll_loop(fds, n, ts, mask);
}

enum epoll_call { EP_WAIT, EP_PWAIT, EP_PWAIT2 };

/* timeout in ns, -1 for none */
static RESIL_SLOW int epoll_loop(int epfd, struct epoll_event *ev, int max,
                                 int64_t timeout, const sigset_t *mask,
                                 enum epoll_call how)
{
    struct resil_epset *set = resil_epoll_set(epfd);
    int64_t t0 = timeout > 0 ? mono_ns() : 0, t = timeout;
    uint64_t seq0;
    int rc;

    for (;;) {
        seq0 = resil_epoll_swap_seq();
        if (how != EP_PWAIT2) {
            /* what is left in ms (from an int of ms, so it fits), rounded
             * up */
            int ms = t <= 0 ? (int)t : (int)((t + 999999) / 1000000);
            rc = how == EP_WAIT ? real.epoll_wait(epfd, ev, max, ms)
                                : real.epoll_pwait(epfd, ev, max, ms, mask);
        } else {
            struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
            rc = real.epoll_pwait2(epfd, ev, max, t < 0 ? NULL : &ts, mask);
        }
        /* a set where no managed socket was ever registered is the
         * program's own business */
        if (set == NULL && (set = resil_epoll_set(epfd)) == NULL)
            return rc;
        if (quiet(rc))
            return rc;
        resil_in_shim++;
        rc = resil_epoll_filter(set, ev, rc, seq0);
        resil_in_shim--;
        if (rc > 0 && sess_attention())
            rc = resil_sess_epoll_fix(set, ev, rc);
        if (rc > 0)
            return rc;
        if (timeout >= 0 && (t = timeout - (mono_ns() - t0)) <= 0)
            return 0;
    }
}

RESIL_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max,
                            int timeout)
{
    if (unmanaged())
        return real.epoll_wait(epfd, ev, max, timeout);
    return epoll_loop(epfd, ev, max, timeout < 0 ? -1 : timeout * 1000000LL,
                      NULL, EP_WAIT);
}

RESIL_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max,
                             int timeout, const sigset_t *mask)
{
    if (unmanaged())
        return real.epoll_pwait(epfd, ev, max, timeout, mask);
    return epoll_loop(epfd, ev, max, timeout < 0 ? -1 : timeout * 1000000LL,
                      mask, EP_PWAIT);
}

RESIL_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
                              const struct timespec *ts, const sigset_t *mask)
{
    /* an invalid timeout is the kernel's to refuse */
    if (unmanaged() || (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 ||
                               ts->tv_nsec >= 1000000000L ||
                               ts->tv_sec > INT64_MAX / 1000000000LL - 1)))
        return real.epoll_pwait2(epfd, ev, max, ts, mask);
    return epoll_loop(epfd, ev, max, ts ? ts_ns(ts) : -1, mask, EP_PWAIT2);
}

/* select/pselect: the same slicing (their error events cannot be told from
 * readiness, so a dead socket is met by the data call that follows). */
static bool fdsets_racing(int n, const fd_set *r, const fd_set *w,
                          const fd_set *e)
{
    if (resil_in_shim || atomic_load(&resil_races_active) == 0)
        return false;
    for (int fd = 0; fd < n && fd < FD_SETSIZE; fd++)
        if (((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) ||
             (e && FD_ISSET(fd, e))) && racing(fd))
            return true;
    return false;
}

/* What select reported for a socket whose fd held a race's first attempt
 * and failed while the race goes on (parked now, or replaced since the
 * call began after such a failure: a stale report) is no answer: its bits
 * are cleared. Returns how many bits are left. */
static int select_first(int n, fd_set *r, fd_set *w, fd_set *e, int rc,
                        uint64_t seq0)
{
    RESIL_KEEP_ERRNO();

    for (int fd = 0; fd < n && fd < FD_SETSIZE && rc > 0; fd++) {
        struct resil_sock *s;
        uint32_t m;
        if (!((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) ||
              (e && FD_ISSET(fd, e))) ||
            !resil_table_has(fd) || (s = resil_table_get(fd)) == NULL)
            continue;
        if (!resil_epoll_stale_report(s, seq0, &m) &&
            atomic_load_explicit(&s->inplace, memory_order_relaxed)) {
            struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
            if (real.poll(&p, 1, 0) == 1 &&
                (p.revents & (POLLERR | POLLHUP))) {
                resil_in_shim++;
                (void)resil_conn_dead_unused(s, p.revents & POLLERR);
                resil_in_shim--;
            }
        }
        if (resil_epoll_stale_report(s, seq0, &m)) {
            rdebug("fd %d: select readiness of the replaced socket dropped",
                   fd);
            if (r && FD_ISSET(fd, r)) {
                FD_CLR(fd, r);
                rc--;
            }
            if (w && FD_ISSET(fd, w)) {
                FD_CLR(fd, w);
                rc--;
            }
            if (e && FD_ISSET(fd, e)) {
                FD_CLR(fd, e);
                rc--;
            }
        }
        resil_sock_unref(s);
    }
    return rc;
}

static RESIL_SLOW int select_sliced(int n, fd_set *r, fd_set *w, fd_set *e,
                                    const struct timespec *ts,
                                    const sigset_t *mask, bool pselect_call)
{
    fd_set r0, w0, e0;
    int64_t t0 = mono_ns(), left = ts ? ts_ns(ts) : -1;
    uint64_t seq0;
    int rc;

    if (r)
        r0 = *r;
    if (w)
        w0 = *w;
    if (e)
        e0 = *e;
    for (;;) {
        struct timespec step;
        const struct timespec *tp = ts ? &step : NULL;
        int64_t want = left;
        struct resil_sess_call sc;
        bool sliced = false, napping = false, sess = sess_any();
        if (n <= FD_SETSIZE && fdsets_racing(n, r, w, e) &&
            (want < 0 || want > RACE_SLICE_MS * 1000000LL)) {
            want = RACE_SLICE_MS * 1000000LL;
            tp = &step;
            sliced = true;
        }
        if (sess) {
            resil_sess_select_enter(&sc, n, r, w, e);
            if (sc.what) {
                want = sess_ns(want, sc.what);
                tp = &step;
                sliced = true;
            }
        }
        if (tp) {
            step.tv_sec = want / 1000000000LL;
            step.tv_nsec = want % 1000000000LL;
        }
        seq0 = resil_epoll_swap_seq();
        if (pselect_call) {
            rc = real.pselect(n, r, w, e, tp, mask);
        } else {
            struct timeval tv, *tvp = NULL;
            if (tp) {
                tv.tv_sec = tp->tv_sec;
                tv.tv_usec = tp->tv_nsec / 1000;
                tvp = &tv;
            }
            rc = real.select(n, r, w, e, tvp);
        }
        if (sess)
            resil_sess_select_leave(&sc);
        if (rc >= 0 && sess_attention()) {
            int was = rc;
            rc = resil_sess_select_fix(n, r, w, e, r ? &r0 : NULL, rc,
                                       &napping);
            /* only handshake messages, or a frozen session's: not ready,
             * wait on */
            sliced |= was > 0 && rc == 0;
        }
        if (napping && rc == 0)
            nap();
        if (rc < 0)
            return rc;
        if (rc > 0) {
            if (n > FD_SETSIZE)
                return rc;
            if ((rc = select_first(n, r, w, e, rc, seq0)) > 0)
                return rc;
        } else if (!sliced) {
            return 0;
        }
        if (ts) {
            left = ts_ns(ts) - (mono_ns() - t0);
            if (left <= 0)
                return 0;
        }
        /* a sliced timeout, or stale readiness dropped, emptied the sets:
         * give them back */
        if (r)
            *r = r0;
        if (w)
            *w = w0;
        if (e)
            *e = e0;
    }
}

static RESIL_SLOW int select_managed(int n, fd_set *r, fd_set *w, fd_set *e,
                                     struct timeval *tv)
{
    struct timespec ts, *tsp = NULL;
    int64_t t0;
    int rc;

    if (tv) {
        ts.tv_sec = tv->tv_sec;
        ts.tv_nsec = tv->tv_usec * 1000;
        tsp = &ts;
    }
    t0 = mono_ns();
    rc = select_sliced(n, r, w, e, tsp, NULL, false);
    if (tv) {
        /* Linux reports the time not slept */
        int64_t left = ts_ns(&ts) - (mono_ns() - t0);
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000000LL;
        tv->tv_usec = (left % 1000000000LL) / 1000;
    }
    return rc;
}

/* No race, no first attempt on a program's fd and no session: nothing
 * select could report that is not the kernel's own answer. */
static bool select_plain(void)
{
    return unmanaged() ||
           (atomic_load_explicit(&resil_races_active, memory_order_relaxed) ==
                0 &&
            atomic_load_explicit(&resil_conn_inplace, memory_order_relaxed) ==
                0 &&
            !sess_any());
}

RESIL_EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *e,
                        struct timeval *tv)
{
    if (select_plain())
        return real.select(n, r, w, e, tv);
    return select_managed(n, r, w, e, tv);
}

RESIL_EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e,
                         const struct timespec *ts, const sigset_t *mask)
{
    if (select_plain())
        return real.pselect(n, r, w, e, ts, mask);
    return select_sliced(n, r, w, e, ts, mask, true);
}
