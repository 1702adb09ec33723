/* Hooks: the data path. For a managed socket they note writes (the dead-path
 * monitor watches sockets with bytes in flight), note EOF, and turn a path
 * failure on a connection that never carried a byte into a transparent
 * re-race: a blocking caller is retried on the new connection inside the
 * hook, a non-blocking one gets EAGAIN and is woken by the swap. */
#include <errno.h>
#include <fcntl.h>
#include <sys/sendfile.h>

#include "config.h"
#include "conn.h"
#include "engine.h"
#include "monitor.h"
#include "shim.h"

enum { IO_RETURN, IO_RETRY, IO_AGAIN };

bool resil_io_blocking(int fd, int flags)
{
    int fl;
    if (flags & MSG_DONTWAIT)
        return false;
    fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

/* What to do after the real call returned rc; errno is that of the call. */
static int io_done(int fd, ssize_t rc, bool is_write, size_t n, int flags)
{
    struct resil_sock *s;
    int saved = errno, ret = IO_RETURN;

    if (rc > 0 && !is_write)
        return IO_RETURN;
    if (rc == 0 && (is_write || n == 0))
        return IO_RETURN;
    /* the way event loops end every read: no lookup, no lock */
    if (rc < 0 && (saved == EAGAIN || saved == EINTR))
        return IO_RETURN;
    s = resil_table_get(fd);
    if (s == NULL)
        return IO_RETURN;
    if (rc > 0) {
        if (s->state == RS_CONNECTED || s->state == RS_DIRECT)
            resil_monitor_mark(s);
    } else if (rc == 0) {
        /* A read that slept on a socket libresil has just replaced (a
         * re-race) is woken by the shutdown of the old socket and returns 0:
         * not the program's EOF. The socket on fd now tells which. */
        char b;
        ssize_t p = real.recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (p > 0 || (p < 0 && errno == EAGAIN)) {
            ret = IO_RETRY;
        } else {
            pthread_mutex_lock(&s->mu);
            s->eof_seen = true;
            pthread_mutex_unlock(&s->mu);
        }
    } else {
        bool blocking = resil_io_blocking(fd, flags);
        resil_in_shim++;
        if (resil_conn_path_error(s, saved, blocking))
            ret = blocking ? IO_RETRY : IO_AGAIN;
        else
            resil_monitor_failed(s, saved);
        resil_in_shim--;
    }
    resil_sock_unref(s);
    errno = ret == IO_AGAIN ? EAGAIN : saved;
    return ret;
}

/* One body for every hook: call, then decide (retry only after a re-race) */
#define IO_HOOK(call, fd, is_write, n, flags)                                  \
    do {                                                                       \
        ssize_t rc_;                                                           \
        RESIL_INIT();                                                          \
        if (resil_in_shim || !resil_table_has(fd))                             \
            return call;                                                       \
        for (;;) {                                                             \
            rc_ = call;                                                        \
            if (rc_ > 0 && !(is_write)) /* data read: nothing to note */       \
                return rc_;                                                    \
            if (io_done(fd, rc_, is_write, n, flags) != IO_RETRY)              \
                return rc_;                                                    \
        }                                                                      \
    } while (0)

static size_t iov_len(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; iov && i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

RESIL_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    IO_HOOK(real.read(fd, buf, n), fd, false, n, 0);
}

RESIL_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    IO_HOOK(real.__read_chk(fd, buf, n, buflen), fd, false, n, 0);
}

RESIL_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    IO_HOOK(real.readv(fd, iov, cnt), fd, false, iov_len(iov, cnt), 0);
}

RESIL_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    IO_HOOK(real.recv(fd, buf, n, flags), fd, false, n, flags);
}

RESIL_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen,
                                int flags)
{
    IO_HOOK(real.__recv_chk(fd, buf, n, buflen, flags), fd, false, n, flags);
}

RESIL_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags,
                              struct sockaddr *sa, socklen_t *len)
{
    IO_HOOK(real.recvfrom(fd, buf, n, flags, sa, len), fd, false, n, flags);
}

RESIL_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n,
                                    size_t buflen, int flags,
                                    struct sockaddr *sa, socklen_t *len)
{
    IO_HOOK(real.__recvfrom_chk(fd, buf, n, buflen, flags, sa, len), fd,
            false, n, flags);
}

RESIL_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    IO_HOOK(real.recvmsg(fd, msg, flags), fd, false,
            msg ? iov_len(msg->msg_iov, (int)msg->msg_iovlen) : 0, flags);
}

RESIL_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    IO_HOOK(real.write(fd, buf, n), fd, true, n, 0);
}

RESIL_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    IO_HOOK(real.writev(fd, iov, cnt), fd, true, iov_len(iov, cnt), 0);
}

RESIL_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    IO_HOOK(real.send(fd, buf, n, flags), fd, true, n, flags);
}

RESIL_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                            const struct sockaddr *sa, socklen_t len)
{
    IO_HOOK(real.sendto(fd, buf, n, flags, sa, len), fd, true, n, flags);
}

RESIL_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    IO_HOOK(real.sendmsg(fd, msg, flags), fd, true,
            msg ? iov_len(msg->msg_iov, (int)msg->msg_iovlen) : 0, flags);
}

RESIL_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    IO_HOOK(real.sendfile(out, in, off, n), out, true, n, 0);
}

RESIL_EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
    IO_HOOK(real.sendfile64(out, in, off, n), out, true, n, 0);
}
