/* Hooks: socket lifecycle (socket, bind, setsockopt, getsockopt, connect,
 * listen, accept, close, fcntl, dup, dup2, dup3, close_range, closefrom). */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <stdarg.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>

#include "config.h"
#include "conn.h"
#include "engine.h"
#include "epoll.h"
#include "fds.h"
#include "monitor.h"
#include "log.h"
#include "shim.h"
#include "session.h"
#include "session_io.h"
#include "swap.h"

void resil_shim_drop(int fd)
{
    struct resil_sock *s = resil_table_take(fd);
    struct resil_sess *x;

    if (s == NULL)
        return;
    resil_conn_forget(s);
    /* a session ends with the program's socket (close, dup2 onto it,
     * close_range): a RESUME for it (its peer met the reset of a close
     * with SO_LINGER 0, say) finds nothing, while something else still
     * holds s (a monitor mark, a worker). s->sess is attached under s->mu,
     * which the forget took, and never after it (s->closed) */
    x = s->sess;
    if (x != NULL)
        resil_sess_unindex(x);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
}

/* A reused fd number may carry a stale entry (fclose() of an fdopen'd
 * socket closes without our close hook). */
static RESIL_SLOW int socket_stale(int fd)
{
    int saved = errno;
    resil_shim_drop(fd);
    errno = saved;
    return fd;
}

static bool socket_tcp(int domain, int type, int protocol)
{
    return (domain == AF_INET || domain == AF_INET6) &&
           (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) == SOCK_STREAM &&
           (protocol == 0 || protocol == IPPROTO_TCP);
}

/* A TCP socket: a new entry (init first: the configuration decides). */
static RESIL_SLOW int socket_managed(int domain, int type, int protocol)
{
    int fd, saved;
    struct resil_sock *s;
    uint64_t mark;

    if (resil_in_shim)
        return real.socket(domain, type, protocol);
    RESIL_INIT();
    mark = resil_fds_mark();
    fd = resil_fds_settle(real.socket(domain, type, protocol), mark,
                          type & SOCK_CLOEXEC);
    if (fd < 0)
        return fd;
    saved = errno;
    if (resil_table_has(fd))
        resil_shim_drop(fd);
    /* its identity (SO_COOKIE, resil_sock_is_ours) is read when a swap
     * may come (conn.h), not for every socket */
    s = resil_sock_new(fd, domain, type);
    if (s == NULL || resil_table_set(fd, s) != RESIL_OK) {
        resil_sock_unref(s);
        if (resil_config_get()->strict) {
            rerror("fd %d: cannot manage the socket; failing (strict)", fd);
            real.close(fd);
            errno = ENOBUFS;
            return -1;
        }
        rwarn("fd %d: not managed (out of memory or fd too large)", fd);
        errno = saved;
        return fd;
    }
    resil_sock_unref(s);
    errno = saved;
    return fd;
}

RESIL_EXPORT int socket(int domain, int type, int protocol)
{
    uint64_t mark;
    int fd;

    if (socket_tcp(domain, type, protocol))
        return socket_managed(domain, type, protocol);
    mark = resil_fds_mark();
    fd = real.socket(domain, type, protocol);
    if (!resil_in_shim)
        fd = resil_fds_settle(fd, mark, type & SOCK_CLOEXEC);
    if (fd >= 0 && resil_hooked(fd))
        return socket_stale(fd);
    return fd;
}

static RESIL_SLOW int bind_managed(int fd, const struct sockaddr *sa,
                                   socklen_t len)
{
    struct resil_sock *s;
    struct resil_ip ip;
    uint16_t port = 0;
    int rc;

    rc = real.bind(fd, sa, len);
    if (rc < 0 || (s = resil_table_get(fd)) == NULL)
        return rc;
    pthread_mutex_lock(&s->mu);
    if (resil_sock_state(s) == RS_FRESH) {
        if (!resil_ip_from_sa(sa, len, &ip, &port) || port != 0 ||
            len > sizeof(s->bind_sa)) {
            /* a fixed source port cannot be given to several attempts */
            resil_sock_set_state(s, RS_PASSTHRU);
            rdebug("fd %d: bound to a fixed port; not racing", fd);
        } else {
            struct sockaddr_storage got;
            socklen_t gl = sizeof(got);
            memcpy(&s->bind_sa, sa, len);
            s->bind_len = len;
            s->bound = true;
            /* the port bind() chose: the attempts take it too (conn.c
             * bind_attempt), so getsockname() names the port the
             * connection will use, as for one socket. 0 when the choice
             * waits for the connect (IP_BIND_ADDRESS_NO_PORT). */
            if (real.getsockname(fd, (struct sockaddr *)&got, &gl) == 0 &&
                gl <= sizeof(got) &&
                resil_ip_from_sa((struct sockaddr *)&got, gl, &ip, &port) &&
                port != 0) {
                memcpy(&s->bind_sa, &got, gl);
                s->bind_len = gl;
                s->bind_shared = true;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    return rc;
}

RESIL_EXPORT int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (resil_hooked(fd))
        return bind_managed(fd, sa, len);
    return real.bind(fd, sa, len);
}

static RESIL_SLOW int setsockopt_managed(int fd, int level, int name,
                                         const void *val, socklen_t len)
{
    struct resil_sock *s;
    int rc, saved;

    if ((s = resil_table_get(fd)) == NULL)
        return real.setsockopt(fd, level, name, val, len);
    /* the call and its record under s->mu, which a swap holds: either the
     * option is recorded before the swap, which sets it on the new socket,
     * or the call goes to the new socket itself. Recorded in every state:
     * a race's winner and a re-race's new connection get what the program
     * set during the race or after its connect, in its order. */
    pthread_mutex_lock(&s->mu);
    rc = real.setsockopt(fd, level, name, val, len);
    saved = errno;
    if (rc == 0 && resil_sock_state(s) != RS_PASSTHRU) {
        resil_monitor_app_opt(s, level, name, val, len);
        if (level == IPPROTO_TCP && name == TCP_FASTOPEN_CONNECT)
            s->fastopen = true;
        else if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && val &&
                 len >= sizeof(int))
            s->v6only = *(const int *)val != 0;
        if (resil_sock_add_opt(s, level, name, val, len) != RESIL_OK) {
            if (resil_sock_state(s) == RS_FRESH)
                resil_sock_set_state(s, RS_PASSTHRU);
            rdebug("fd %d: cannot record option %d/%d; %s", fd, level, name,
                   resil_sock_state(s) == RS_PASSTHRU ? "not racing"
                                           : "a new connection lacks it");
        }
    }
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    errno = saved;
    return rc;
}

RESIL_EXPORT int setsockopt(int fd, int level, int name, const void *val,
                            socklen_t len)
{
    if (resil_hooked(fd))
        return setsockopt_managed(fd, level, name, val, len);
    return real.setsockopt(fd, level, name, val, len);
}

/* SO_ERROR reads an error libresil holds for the socket (a failed race's,
 * a failed re-race's) once, like the kernel's sk_err; and never the
 * failure of a race's first attempt while the race goes on. Keepalive is
 * sized an attempt delay after the connect: a program that reads a
 * keepalive option first sees it sized. */
static RESIL_SLOW int getsockopt_managed(int fd, int level, int name, void *val,
                                         socklen_t *len)
{
    int err;
    bool got;

    if (level == SOL_SOCKET && name == SO_ERROR) {
        if (val && len && *len >= sizeof(int)) {
            got = resil_conn_take_error(fd, &err);
            if (!got && atomic_load_explicit(&resil_conn_inplace,
                                             memory_order_relaxed)) {
                resil_in_shim++;
                got = resil_conn_first_sockerr(fd, &err);
                resil_in_shim--;
            }
            if (got) {
                *(int *)val = err;
                *len = sizeof(int);
                return 0;
            }
        }
    } else {
        resil_in_shim++;
        resil_conn_ka_now(fd);
        resil_in_shim--;
    }
    return real.getsockopt(fd, level, name, val, len);
}

/* The options getsockopt_managed looks at (no memory read: the test in
 * front of the table lookup) */
static inline bool getsockopt_ours(int level, int name)
{
    if (level == SOL_SOCKET)
        return name == SO_ERROR || name == SO_KEEPALIVE;
    return level == IPPROTO_TCP && (name == TCP_KEEPIDLE ||
                                    name == TCP_KEEPINTVL ||
                                    name == TCP_KEEPCNT);
}

RESIL_EXPORT int getsockopt(int fd, int level, int name, void *val,
                            socklen_t *len)
{
    if (getsockopt_ours(level, name) && resil_hooked(fd))
        return getsockopt_managed(fd, level, name, val, len);
    return real.getsockopt(fd, level, name, val, len);
}

static RESIL_SLOW int connect_managed(int fd, const struct sockaddr *sa,
                                      socklen_t len)
{
    struct resil_sock *s;
    int err = 0;
    bool no_wait = false, tried_first = false;
    resil_status_t st;

    s = resil_table_get(fd);
    if (s == NULL)
        return real.connect(fd, sa, len);
    if (sa && len >= sizeof(sa_family_t) && sa->sa_family == AF_UNSPEC) {
        /* a disconnect: a race in progress stops there */
        resil_in_shim++;
        st = resil_conn_disconnect(s, sa, len, &err);
        resil_in_shim--;
        resil_sock_unref(s);
        if (st != RESIL_OK)
            return real.connect(fd, sa, len);
        goto result;
    }
again:
    pthread_mutex_lock(&s->mu);
    switch (resil_sock_state(s)) {
    case RS_FRESH:
        break;
    case RS_TRYING:
        if (s->try_blocking) {
            /* another thread's blocking connect() holds it: the kernel's
             * answer for a connect in progress */
            err = EALREADY;
            goto report;
        }
        /* fall through */
    case RS_RACING:
        if (!tried_first &&
            atomic_load_explicit(&s->inplace, memory_order_relaxed)) {
            /* the fd holds the race's first attempt: the kernel's answer,
             * unless that is its failure while the race goes on */
            pthread_mutex_unlock(&s->mu);
            resil_in_shim++;
            st = resil_conn_first_connect(s, sa, len, &err);
            resil_in_shim--;
            if (st != RESIL_OK) {
                tried_first = true; /* not (any more): look again */
                goto again;
            }
            resil_sock_unref(s);
            goto result;
        }
        if (resil_sock_state(s) == RS_TRYING)
            goto pass;
        /* re-racing a connection the program had: to it, still connected */
        err = s->rerace ? EISCONN : EALREADY;
        if (s->rerace || no_wait || !resil_io_blocking(fd, 0))
            goto report;
        /* blocking: the kernel waits for a connect in progress (the usual
         * retry after EINTR); so do we */
        pthread_mutex_unlock(&s->mu);
        resil_in_shim++;
        st = resil_conn_wait(s, sa, len, &err);
        resil_in_shim--;
        if (st != RESIL_OK) {
            /* decided meanwhile, or nothing to wait for (the fd was
             * closed) */
            no_wait = true;
            goto again;
        }
        resil_sock_unref(s);
        goto result;
    case RS_CONNECTED:
        if (!s->fail_connecting)
            goto pass;
        /* fall through */
    case RS_FAILED:
        pthread_mutex_unlock(&s->mu);
        resil_in_shim++;
        st = resil_conn_connect_failed(s, sa, len, &err);
        resil_in_shim--;
        if (st != RESIL_OK)
            goto again;
        resil_sock_unref(s);
        goto result;
    default:
    pass:
        pthread_mutex_unlock(&s->mu);
        resil_sock_unref(s);
        return real.connect(fd, sa, len);
    }
    pthread_mutex_unlock(&s->mu);
    resil_in_shim++;
    st = resil_conn_connect(s, sa, len, &err);
    resil_in_shim--;
    resil_sock_unref(s);
    if (st != RESIL_OK)
        return real.connect(fd, sa, len);
result:
    if (err == 0)
        return 0;
    errno = err;
    return -1;
report:
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    errno = err;
    return -1;
}

RESIL_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (resil_hooked(fd))
        return connect_managed(fd, sa, len);
    return real.connect(fd, sa, len);
}

static RESIL_SLOW int listen_managed(int fd, int backlog)
{
    struct resil_sock *s;
    int rc = real.listen(fd, backlog), saved = errno;

    if ((s = resil_table_get(fd)) != NULL) {
        if (rc == 0 && resil_sess_listening(fd)) {
            /* a session port: its accepted sockets are classified at
             * their first data call (session.h); the listener itself is
             * left alone */
            pthread_mutex_lock(&s->mu);
            s->state = RS_PASSTHRU;
            s->listening = true;
            pthread_mutex_unlock(&s->mu);
            resil_sock_unref(s);
        } else {
            /* a server socket: nothing of ours applies */
            resil_sock_unref(s);
            resil_shim_drop(fd);
        }
    }
    errno = saved;
    return rc;
}

RESIL_EXPORT int listen(int fd, int backlog)
{
    if (resil_hooked(fd))
        return listen_managed(fd, backlog);
    return real.listen(fd, backlog);
}

/* A socket accepted on a session port: managed, its session state to be
 * classified at its first data call. */
static RESIL_SLOW int accepted_session(int lfd, int fd)
{
    struct resil_sock *l = resil_table_get(lfd), *s;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int saved = errno;

    if (resil_table_has(fd))
        resil_shim_drop(fd);
    if (l == NULL || !l->listening ||
        (s = resil_sock_new(fd, l->family, SOCK_STREAM)) == NULL) {
        resil_sock_unref(l);
        errno = saved;
        return fd;
    }
    s->state = RS_DIRECT;
    s->cookie = resil_sock_cookie(fd);
    if (real.getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        resil_ip_from_sa((struct sockaddr *)&ss, sl, &s->cur_ip,
                         &s->peer_port);
    s->peer_ip = s->cur_ip;
    if (resil_sess_attach(s, RESIL_ROLE_SERVER) == RESIL_OK &&
        resil_table_set(fd, s) == RESIL_OK) {
        pthread_mutex_lock(&s->mu);
        resil_monitor_tune(s, fd);
        pthread_mutex_unlock(&s->mu);
    }
    resil_sock_unref(s);
    resil_sock_unref(l);
    errno = saved;
    return fd;
}

/* The number an accept gave the program, settled (fds.h). */
static int accepted(int fd, uint64_t mark, bool cloexec)
{
    return resil_in_shim ? fd : resil_fds_settle(fd, mark, cloexec);
}

RESIL_EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    int lfd = fd;
    uint64_t mark = resil_fds_mark();
    fd = accepted(real.accept(fd, sa, len), mark, false);
    if (fd >= 0 && resil_hooked(lfd))
        return accepted_session(lfd, fd);
    if (fd >= 0 && resil_hooked(fd))
        return socket_stale(fd);
    return fd;
}

RESIL_EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len,
                         int flags)
{
    int lfd = fd;
    uint64_t mark = resil_fds_mark();
    fd = accepted(real.accept4(fd, sa, len, flags), mark,
                  flags & SOCK_CLOEXEC);
    if (fd >= 0 && resil_hooked(lfd))
        return accepted_session(lfd, fd);
    if (fd >= 0 && resil_hooked(fd))
        return socket_stale(fd);
    return fd;
}

static RESIL_SLOW int close_managed(int fd)
{
    /* remove the entry before the real close: a reused fd number must
     * never see a stale session */
    if (!resil_in_shim && resil_table_has(fd)) {
        if (resil_table_internal(fd)) {
            /* one of libresil's own: the program never opened it */
            errno = EBADF;
            return -1;
        }
        if (atomic_load_explicit(&resil_sess_count, memory_order_relaxed))
            resil_sess_closing(fd);
        resil_shim_drop(fd);
    }
    if (!resil_in_shim)
        resil_epoll_fd_closed(fd);
    return real.close(fd);
}

RESIL_EXPORT int close(int fd)
{
    if (resil_table_has(fd) ||
        atomic_load_explicit(&resil_epoll_nsets, memory_order_relaxed))
        return close_managed(fd);
    return real.close(fd);
}

/* fd is duplicated: the new number is not managed, and a session socket
 * read there would hand the program its handshake message; the handshake
 * is done first and the session made non-resumable (session_io.h). */
static void dup_session(int fd)
{
    atomic_fetch_add(&resil_sess_shares, 1); /* session.h */
    if (atomic_load_explicit(&resil_sess_count, memory_order_relaxed))
        resil_sess_unhooked(fd, RESIL_UNHOOKED_DUP);
}

/* fcntl on one of libresil's own numbers: EBADF, as for any number the
 * program never opened. It matters: bash takes an open descriptor at or
 * above 10 with FD_CLOEXEC (F_GETFD) for one of its own, saves it before
 * `exec N>file` and puts it back afterwards, onto the program's number. The
 * argument, when there is one, is a pointer or an int: read as a pointer,
 * as glibc's own fcntl does. */
static RESIL_SLOW int fcntl_managed(int (*fn)(int, int, ...), int fd, int cmd,
                                    void *arg)
{
    if (resil_table_internal(fd)) {
        errno = EBADF;
        return -1;
    }
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        dup_session(fd);
    return fn(fd, cmd, arg);
}

RESIL_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (resil_hooked(fd))
        return fcntl_managed(real.fcntl, fd, cmd, arg);
    return real.fcntl(fd, cmd, arg);
}

RESIL_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (resil_hooked(fd))
        return fcntl_managed(real.fcntl64, fd, cmd, arg);
    return real.fcntl64(fd, cmd, arg);
}

static RESIL_SLOW int dup_managed(int fd)
{
    if (resil_table_internal(fd)) {
        errno = EBADF;
        return -1;
    }
    dup_session(fd);
    return real.dup(fd);
}

RESIL_EXPORT int dup(int fd)
{
    if (resil_hooked(fd))
        return dup_managed(fd);
    return real.dup(fd);
}

/* dup2 (three false) and dup3. */
static int dup_real(int oldfd, int newfd, bool three, int flags)
{
    return three ? real.dup3(oldfd, newfd, flags) : real.dup2(oldfd, newfd);
}

static RESIL_SLOW int dup_onto_managed(int oldfd, int newfd, bool three,
                                       int flags)
{
    bool orphan = false;
    int rc, saved = errno;

    if (resil_in_shim || (!resil_table_has(oldfd) && !resil_table_has(newfd) &&
                          !(atomic_load_explicit(&resil_epoll_nsets,
                                                 memory_order_relaxed) &&
                            resil_epoll_set(newfd))))
        return dup_real(oldfd, newfd, three, flags);
    /* oldfd one of ours: a number the program never opened. With -1 the
     * kernel reports exactly what it would (EINVAL first for dup3 of a
     * number onto itself, else EBADF) and touches nothing. */
    if (resil_table_internal(oldfd) && !(three && oldfd == newfd))
        oldfd = -1;
    else if (resil_table_has(oldfd) && oldfd != newfd)
        dup_session(oldfd);
    /* only a call that will replace newfd: a bad oldfd leaves it alone */
    if (oldfd >= 0 && oldfd != newfd && real.fcntl(oldfd, F_GETFD) >= 0) {
        if (resil_table_internal(newfd))
            /* ours moves away first; the number is then the program's */
            resil_engine_evict(newfd, &orphan);
        else if (resil_table_has(newfd))
            /* a managed socket replaced: forget the entry first (a reused
             * number must never see it) */
            resil_shim_drop(newfd);
        /* an epoll set replaced: its registrations go with it */
        resil_epoll_fd_closed(newfd);
    }
    errno = saved;
    rc = dup_real(oldfd, newfd, three, flags);
    if (rc < 0 && orphan) {
        /* the number left for the call is free again, as without us */
        saved = errno;
        real.close(newfd);
        errno = saved;
    }
    return rc;
}

/* Either number has an entry, or an epoll set may be replaced. */
static bool dup_hooked(int oldfd, int newfd)
{
    return resil_table_has(oldfd) || resil_table_has(newfd) ||
           atomic_load_explicit(&resil_epoll_nsets, memory_order_relaxed);
}

RESIL_EXPORT int dup2(int oldfd, int newfd)
{
    if (dup_hooked(oldfd, newfd))
        return dup_onto_managed(oldfd, newfd, false, 0);
    return real.dup2(oldfd, newfd);
}

RESIL_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    if (dup_hooked(oldfd, newfd))
        return dup_onto_managed(oldfd, newfd, true, flags);
    return real.dup3(oldfd, newfd, flags);
}

static int close_range_hook(unsigned first, unsigned last, int flags)
{
    /* CLOSE_RANGE_CLOEXEC only marks the fds (ours have FD_CLOEXEC); bad
     * arguments fail in the kernel, closing nothing; the child of a vfork
     * has its own table but our memory: ours may go there */
    if (resil_in_shim || first > last ||
        (flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) ||
        (flags & CLOSE_RANGE_CLOEXEC) || !resil_fds_here())
        return real.close_range(first, last, flags);
    /* the occupancy bitmaps: the cost is what is managed and ours, never
     * the width of the range (close_range(3, ~0U) walked 2^20 slots) */
    for (int fd = first < RESIL_TABLE_MAX ? resil_table_next((int)first) : -1;
         fd >= 0 && (unsigned)fd <= last; fd = resil_table_next(fd + 1))
        if (!resil_table_internal(fd))
            resil_shim_drop(fd);
    resil_epoll_fds_closed(first, last);
    /* the program's descriptors close in the sub-ranges around ours */
    return resil_fds_close_range(first, last, flags) == RESIL_OK ? 0 : -1;
}

RESIL_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    resil_real_optional();
    if (real.close_range == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return close_range_hook(first, last, flags);
}

/* glibc's closefrom() calls the close_range system call directly, never
 * our hook: without this one it would close ours behind our back. */
RESIL_EXPORT void closefrom(int lowfd)
{
    int saved;

    resil_real_optional();
    saved = errno;
    if (lowfd < 0)
        lowfd = 0;
    if (real.close_range != NULL &&
        close_range_hook((unsigned)lowfd, ~0U, 0) == 0) {
        errno = saved;
        return;
    }
    /* glibc's own fallback (/proc/self/fd), which aborts on failure */
    if (real.closefrom != NULL)
        real.closefrom(lowfd);
}
