/* Hooks: socket lifecycle (socket, bind, setsockopt, getsockopt, connect,
 * listen, accept, close, dup2, dup3, close_range). */
#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>

#include "config.h"
#include "conn.h"
#include "engine.h"
#include "monitor.h"
#include "log.h"
#include "shim.h"

void resil_shim_drop(int fd)
{
    struct resil_sock *s = resil_table_take(fd);
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    pthread_mutex_unlock(&s->mu);
    resil_conn_forget(s);
    resil_sock_unref(s);
}

RESIL_EXPORT int socket(int domain, int type, int protocol)
{
    int fd, saved;
    struct resil_sock *s;

    RESIL_INIT();
    fd = real.socket(domain, type, protocol);
    if (fd < 0 || resil_in_shim)
        return fd;
    saved = errno;
    /* A reused fd number may carry a stale entry (fclose() of an fdopen'd
     * socket closes without our close hook). */
    if (resil_table_has(fd))
        resil_shim_drop(fd);
    if ((domain == AF_INET || domain == AF_INET6) &&
        (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) == SOCK_STREAM &&
        (protocol == 0 || protocol == IPPROTO_TCP)) {
        s = resil_sock_new(fd, domain, type);
        if (s == NULL || resil_table_set(fd, s) != RESIL_OK) {
            resil_sock_unref(s);
            if (resil_config_get()->strict) {
                rerror("fd %d: cannot manage the socket; failing (strict)",
                       fd);
                real.close(fd);
                errno = ENOBUFS;
                return -1;
            }
            rwarn("fd %d: not managed (out of memory or fd too large)", fd);
            errno = saved;
            return fd;
        }
        resil_sock_unref(s);
    }
    errno = saved;
    return fd;
}

RESIL_EXPORT int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    struct resil_sock *s;
    struct resil_ip ip;
    uint16_t port = 0;
    int rc;

    RESIL_INIT();
    if (resil_in_shim || !resil_table_has(fd))
        return real.bind(fd, sa, len);
    rc = real.bind(fd, sa, len);
    if (rc < 0 || (s = resil_table_get(fd)) == NULL)
        return rc;
    pthread_mutex_lock(&s->mu);
    if (s->state == RS_FRESH) {
        if (!resil_ip_from_sa(sa, len, &ip, &port) || port != 0 ||
            len > sizeof(s->bind_sa)) {
            /* a fixed source port cannot be given to several attempts */
            s->state = RS_PASSTHRU;
            rdebug("fd %d: bound to a fixed port; not racing", fd);
        } else {
            memcpy(&s->bind_sa, sa, len);
            s->bind_len = len;
            s->bound = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    return rc;
}

RESIL_EXPORT int setsockopt(int fd, int level, int name, const void *val,
                            socklen_t len)
{
    struct resil_sock *s;
    int rc, saved;

    RESIL_INIT();
    if (resil_in_shim || !resil_table_has(fd))
        return real.setsockopt(fd, level, name, val, len);
    rc = real.setsockopt(fd, level, name, val, len);
    if (rc < 0 || (s = resil_table_get(fd)) == NULL)
        return rc;
    saved = errno;
    pthread_mutex_lock(&s->mu);
    resil_monitor_app_opt(s, level, name, val, len);
    if (level == IPPROTO_TCP && name == TCP_FASTOPEN_CONNECT)
        s->fastopen = true;
    else if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && val &&
             len >= sizeof(int))
        s->v6only = *(const int *)val != 0;
    if (s->state == RS_FRESH &&
        resil_sock_add_opt(s, level, name, val, len) != RESIL_OK) {
        s->state = RS_PASSTHRU;
        rdebug("fd %d: cannot record option %d/%d; not racing", fd, level,
               name);
    }
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    errno = saved;
    return rc;
}

RESIL_EXPORT int getsockopt(int fd, int level, int name, void *val,
                            socklen_t *len)
{
    struct resil_sock *s;
    int err = -1;

    RESIL_INIT();
    if (resil_in_shim || !resil_table_has(fd) || level != SOL_SOCKET ||
        name != SO_ERROR || val == NULL || len == NULL || *len < sizeof(int))
        return real.getsockopt(fd, level, name, val, len);
    s = resil_table_get(fd);
    if (s == NULL)
        return real.getsockopt(fd, level, name, val, len);
    pthread_mutex_lock(&s->mu);
    if (s->state == RS_FAILED && !s->error_reported) {
        err = s->race_errno;
        s->error_reported = true;
    }
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    if (err < 0)
        return real.getsockopt(fd, level, name, val, len);
    *(int *)val = err;
    *len = sizeof(int);
    return 0;
}

RESIL_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    struct resil_sock *s;
    int err = 0;
    bool no_wait = false;
    resil_status_t st;

    RESIL_INIT();
    if (resil_in_shim || !resil_table_has(fd))
        return real.connect(fd, sa, len);
    s = resil_table_get(fd);
    if (s == NULL)
        return real.connect(fd, sa, len);
again:
    pthread_mutex_lock(&s->mu);
    switch (s->state) {
    case RS_FRESH:
        break;
    case RS_RACING:
        err = EALREADY;
        if (no_wait || !resil_io_blocking(fd, 0))
            goto report;
        /* blocking: the kernel waits for a connect in progress (the usual
         * retry after EINTR); so do we */
        pthread_mutex_unlock(&s->mu);
        resil_in_shim++;
        st = resil_conn_wait(s, sa, len, &err);
        resil_in_shim--;
        if (st != RESIL_OK) {
            /* decided meanwhile, or nothing to wait for (a re-race, or
             * the fd was closed) */
            no_wait = true;
            goto again;
        }
        resil_sock_unref(s);
        if (err == 0)
            return 0;
        errno = err;
        return -1;
    case RS_FAILED:
        /* like the kernel: the pending error, or ECONNABORTED when SO_ERROR
         * already reported it; either way the socket is unconnected again
         * and the next connect() is a new attempt (__inet_stream_connect) */
        err = s->error_reported ? ECONNABORTED : s->race_errno;
        s->state = RS_FRESH;
        s->race_errno = 0;
        s->error_reported = false;
        goto report;
    default:
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

RESIL_EXPORT int listen(int fd, int backlog)
{
    struct resil_sock *s;

    RESIL_INIT();
    if (!resil_in_shim && resil_table_has(fd) &&
        (s = resil_table_get(fd)) != NULL) {
        /* a server socket: nothing of ours applies */
        resil_sock_unref(s);
        resil_shim_drop(fd);
    }
    return real.listen(fd, backlog);
}

static int accepted(int fd)
{
    if (fd >= 0 && !resil_in_shim && resil_table_has(fd)) {
        int saved = errno;
        resil_shim_drop(fd);
        errno = saved;
    }
    return fd;
}

RESIL_EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    RESIL_INIT();
    return accepted(real.accept(fd, sa, len));
}

RESIL_EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len,
                         int flags)
{
    RESIL_INIT();
    return accepted(real.accept4(fd, sa, len, flags));
}

RESIL_EXPORT int close(int fd)
{
    RESIL_INIT();
    /* remove the entry before the real close: a reused fd number must
     * never see a stale session */
    if (!resil_in_shim && resil_table_has(fd))
        resil_shim_drop(fd);
    return real.close(fd);
}

/* dup2/dup3 onto a managed fd replace its socket: forget the entry first
 * (a reused number must never see it), unless the call is bound to fail
 * with EBADF and leave the socket where it is. */
static void replaced(int oldfd, int newfd)
{
    int saved = errno;
    if (!resil_in_shim && oldfd != newfd && resil_table_has(newfd) &&
        fcntl(oldfd, F_GETFD) >= 0)
        resil_shim_drop(newfd);
    errno = saved;
}

RESIL_EXPORT int dup2(int oldfd, int newfd)
{
    RESIL_INIT();
    replaced(oldfd, newfd);
    return real.dup2(oldfd, newfd);
}

RESIL_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    RESIL_INIT();
    replaced(oldfd, newfd);
    return real.dup3(oldfd, newfd, flags);
}

RESIL_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    RESIL_INIT();
    if (real.close_range == NULL) {
        errno = ENOSYS;
        return -1;
    }
    /* CLOSE_RANGE_CLOEXEC only marks the fds */
    if (!resil_in_shim && !(flags & 4 /* CLOSE_RANGE_CLOEXEC */)) {
        for (unsigned fd = first; fd <= last && fd < RESIL_TABLE_MAX; fd++)
            if (resil_table_has((int)fd))
                resil_shim_drop((int)fd);
        resil_engine_fds_closed(first, last);
    }
    return real.close_range(first, last, flags);
}
