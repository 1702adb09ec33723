/* Hooks: the data path. For a managed socket they report an error libresil
 * holds for it (a failed race's), note writes (the dead-path monitor
 * watches sockets with bytes in flight), note EOF, retry a call whose
 * socket was replaced under it, and turn a path failure on a connection
 * that never carried a byte into a transparent re-race: a blocking caller
 * waits for it inside the hook (as long as the socket's own timeout, and
 * a signal interrupts it as it would the call) and is retried on the new
 * connection, a non-blocking one gets EAGAIN and is woken by the swap. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>

#include "config.h"
#include "conn.h"
#include "engine.h"
#include "monitor.h"
#include "session_io.h"
#include "shim.h"
#include "swap.h"

enum { IO_RETURN, IO_RETRY };

bool resil_io_blocking(int fd, int flags)
{
    int fl;
    if (flags & MSG_DONTWAIT)
        return false;
    fl = real.fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

/* An error libresil holds for the socket (conn.h) is what this call
 * reports, as the kernel's sk_err would be; except where the kernel does
 * not look at it: read()/readv()/sendfile() of nothing return 0 first
 * (sock_read_iter, do_sendfile), MSG_ERRQUEUE reads another queue. */
static inline bool io_error(int fd, size_t n, int flags, bool zero_ok, int *err)
{
    if (atomic_load_explicit(&resil_conn_errors, memory_order_relaxed) == 0 ||
        (zero_ok && n == 0) || (flags & MSG_ERRQUEUE))
        return false;
    return resil_conn_take_error(fd, err);
}

/* A blocking call's own timeout (SO_RCVTIMEO, SO_SNDTIMEO) in ms, or -1. */
static int io_timeout_ms(int fd, bool is_write)
{
    struct timeval tv;
    socklen_t l = sizeof(tv);
    if (real.getsockopt(fd, SOL_SOCKET, is_write ? SO_SNDTIMEO : SO_RCVTIMEO,
                        &tv, &l) < 0 ||
        (tv.tv_sec == 0 && tv.tv_usec == 0))
        return -1;
    return (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
}

/* What to do after the real call returned rc (neither data read nor
 * EAGAIN or EINTR: IO_MANAGED returns those at once); errno is that of the
 * call, seq the swap sequence read before it. held: rc and errno are an
 * error libresil held for the socket, not the kernel's answer to this
 * call. */
static RESIL_SLOW int io_done(int fd, ssize_t rc, bool is_write, size_t n,
                              int flags, uint64_t seq, bool held)
{
    struct resil_sock *s;
    int saved = errno, ret = IO_RETURN, res;

    if (rc == 0 && (is_write || n == 0))
        return IO_RETURN;
    s = resil_table_get(fd);
    if (s == NULL)
        return IO_RETURN;
    if (rc > 0) {
        /* without s->mu (the hot path): a write that meets a swap may go
         * unmarked (the next one marks) or mark a socket being replaced
         * (the monitor's check, under s->mu, finds it not connected) */
        if (resil_sock_connected(s))
            resil_monitor_mark(s);
    } else if (!held && resil_conn_swapped(s, seq)) {
        /* the call slept on a socket libresil replaced meanwhile (a parked
         * one, a dead one being re-raced): the shutdown that woke it made
         * this EOF or error, not the program's socket. Again, on what the
         * fd holds now. */
        ret = IO_RETRY;
    } else if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        s->eof_seen = true;
        pthread_mutex_unlock(&s->mu);
    } else {
        int wait =
            resil_io_blocking(fd, flags) ? io_timeout_ms(fd, is_write) : 0;
        resil_in_shim++;
        if (resil_conn_path_error(s, saved, wait, &res) == RESIL_OK) {
            if (res == 0)
                ret = IO_RETRY;
            else
                saved = res; /* EAGAIN (in progress, timeout) or EINTR */
        } else {
            resil_monitor_failed(s, saved);
        }
        resil_in_shim--;
    }
    resil_sock_unref(s);
    errno = saved;
    return ret;
}

/* The call ran on a socket whose fd held a race's first attempt (s, from
 * resil_conn_io_begin): bytes moved prove it connected; an error may be
 * its failure, which the program must not see while the race goes on
 * (the fd is then parked: retry there). Else as IO_MANAGED and io_done. */
static RESIL_SLOW int io_first(struct resil_sock *s, int fd, ssize_t rc,
                               bool is_write, size_t n, int flags,
                               uint64_t seq, bool held)
{
    int saved = errno, ret = -1;

    resil_conn_io_end(s);
    resil_in_shim++;
    if (rc > 0)
        resil_conn_first_done(s);
    else if (rc < 0 && !held && saved != EAGAIN && saved != EINTR &&
             resil_conn_first_failed(s, saved))
        ret = IO_RETRY;
    resil_in_shim--;
    resil_sock_unref(s);
    errno = saved;
    if (ret == IO_RETRY)
        return IO_RETRY;
    if ((rc > 0 && !is_write) ||
        (rc < 0 && (saved == EAGAIN || saved == EINTR)))
        return IO_RETURN;
    return io_done(fd, rc, is_write, n, flags, seq, held);
}

/* The managed part of every data hook: an error libresil holds or the
 * call, then decide (retry only on a socket put there meanwhile, or after
 * a re-race). A held error goes the way the kernel's would (a connection
 * reset right after its handshake is re-raced like one reset later).
 * zero_ok: a call of n == 0 bytes returns 0 without looking at the
 * socket's error. */
#define IO_MANAGED(call, fd_, is_write, n_, flags_, zero_ok, iovp, cnt, why_)  \
    do {                                                                       \
        ssize_t rc_;                                                           \
        uint64_t seq_;                                                         \
        int err_;                                                              \
        bool held_;                                                            \
        struct resil_sock *sx_;                                                \
        if (resil_table_internal(fd_)) { /* ours: never opened by it */        \
            errno = EBADF;                                                     \
            return -1;                                                         \
        }                                                                      \
        /* a session's HELLO before any byte of the program (conn.h) */        \
        if (atomic_load_explicit(&resil_conn_hellos, memory_order_acquire) &&  \
            (err_ = resil_conn_hello_due(fd_, is_write, n_, flags_)) != 0) {   \
            errno = err_;                                                      \
            return -1;                                                         \
        }                                                                      \
        if (atomic_load_explicit(&resil_sess_count, memory_order_relaxed) &&   \
            (sx_ = resil_sess_sock(fd_)) != NULL) {                            \
            struct resil_io io_ = {.fd = (fd_),                                \
                                   .write = (is_write),                        \
                                   .flags = (flags_),                          \
                                   .len = (n_),                                \
                                   .iov = (iovp),                              \
                                   .iovcnt = (cnt),                            \
                                   .untracked = (why_)};                       \
            for (;;) {                                                         \
                enum resil_sess_step st_;                                      \
                if (io_error(fd_, n_, flags_, zero_ok, &err_)) {               \
                    resil_sock_unref(sx_);                                     \
                    errno = err_;                                              \
                    return -1;                                                 \
                }                                                              \
                st_ = resil_sess_pre(sx_, &io_);                               \
                if (st_ == RESIL_SESS_CALL) {                                  \
                    rc_ = call;                                                \
                    st_ = resil_sess_post(sx_, &io_, rc_, errno);              \
                }                                                              \
                if (st_ == RESIL_SESS_DONE) {                                  \
                    resil_sock_unref(sx_);                                     \
                    errno = io_.err;                                           \
                    return io_.rc;                                             \
                }                                                              \
            }                                                                  \
        }                                                                      \
        for (;;) {                                                             \
            struct resil_sock *first_ = NULL;                                  \
            seq_ =                                                             \
                atomic_load_explicit(&resil_swap_seq, memory_order_acquire);   \
            /* a race's first attempt on the fd: counted around the call */    \
            if (atomic_load_explicit(&resil_conn_inplace,                      \
                                     memory_order_relaxed))                    \
                first_ = resil_conn_io_begin(fd_);                             \
            held_ = io_error(fd_, n_, flags_, zero_ok, &err_);                 \
            if (held_) {                                                       \
                errno = err_;                                                  \
                rc_ = -1;                                                      \
            } else {                                                           \
                rc_ = call;                                                    \
            }                                                                  \
            if (first_ != NULL) {                                              \
                if (io_first(first_, fd_, rc_, is_write, n_, flags_, seq_,     \
                             held_) != IO_RETRY)                               \
                    return rc_;                                                \
                continue;                                                      \
            }                                                                  \
            if (rc_ > 0 && !(is_write)) /* data read: nothing to note */       \
                return rc_;                                                    \
            /* the way event loops end every read: no lookup, no lock */       \
            if (rc_ < 0 && (errno == EAGAIN || errno == EINTR))                \
                return rc_;                                                    \
            if (io_done(fd_, rc_, is_write, n_, flags_, seq_, held_) !=        \
                IO_RETRY)                                                      \
                return rc_;                                                    \
        }                                                                      \
    } while (0)

/* One buffer as the session layer's iovec. */
#define IOV1(buf, n) (&(struct iovec){(void *)(buf), (n)})

static size_t iov_len(const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; iov && i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* Each hook: the test, then a tail jump to the real function or to its
 * managed part (shim.h). */

static RESIL_SLOW ssize_t read_managed(int fd, void *buf, size_t n)
{
    IO_MANAGED(real.read(fd, buf, n), fd, false, n, 0, true, IOV1(buf, n), 1,
               NULL);
}

RESIL_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    if (resil_hooked(fd))
        return read_managed(fd, buf, n);
    return real.read(fd, buf, n);
}

static RESIL_SLOW ssize_t read_chk_managed(int fd, void *buf, size_t n,
                                           size_t buflen)
{
    IO_MANAGED(real.__read_chk(fd, buf, n, buflen), fd, false, n, 0, true,
               IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (resil_hooked(fd))
        return read_chk_managed(fd, buf, n, buflen);
    return real.__read_chk(fd, buf, n, buflen);
}

static RESIL_SLOW ssize_t readv_managed(int fd, const struct iovec *iov,
                                        int cnt)
{
    IO_MANAGED(real.readv(fd, iov, cnt), fd, false, iov_len(iov, cnt), 0, true,
               iov, cnt, NULL);
}

RESIL_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    if (resil_hooked(fd))
        return readv_managed(fd, iov, cnt);
    return real.readv(fd, iov, cnt);
}

static RESIL_SLOW ssize_t recv_managed(int fd, void *buf, size_t n, int flags)
{
    IO_MANAGED(real.recv(fd, buf, n, flags), fd, false, n, flags, false,
               IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (resil_hooked(fd))
        return recv_managed(fd, buf, n, flags);
    return real.recv(fd, buf, n, flags);
}

static RESIL_SLOW ssize_t recv_chk_managed(int fd, void *buf, size_t n,
                                           size_t buflen, int flags)
{
    IO_MANAGED(real.__recv_chk(fd, buf, n, buflen, flags), fd, false, n, flags,
               false, IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen,
                                int flags)
{
    if (resil_hooked(fd))
        return recv_chk_managed(fd, buf, n, buflen, flags);
    return real.__recv_chk(fd, buf, n, buflen, flags);
}

static RESIL_SLOW ssize_t recvfrom_managed(int fd, void *buf, size_t n,
                                           int flags, struct sockaddr *sa,
                                           socklen_t *len)
{
    IO_MANAGED(real.recvfrom(fd, buf, n, flags, sa, len), fd, false, n, flags,
               false, IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags,
                              struct sockaddr *sa, socklen_t *len)
{
    if (resil_hooked(fd))
        return recvfrom_managed(fd, buf, n, flags, sa, len);
    return real.recvfrom(fd, buf, n, flags, sa, len);
}

static RESIL_SLOW ssize_t recvfrom_chk_managed(int fd, void *buf, size_t n,
                                               size_t buflen, int flags,
                                               struct sockaddr *sa,
                                               socklen_t *len)
{
    IO_MANAGED(real.__recvfrom_chk(fd, buf, n, buflen, flags, sa, len), fd,
               false, n, flags, false, IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen,
                                    int flags, struct sockaddr *sa,
                                    socklen_t *len)
{
    if (resil_hooked(fd))
        return recvfrom_chk_managed(fd, buf, n, buflen, flags, sa, len);
    return real.__recvfrom_chk(fd, buf, n, buflen, flags, sa, len);
}

static RESIL_SLOW ssize_t recvmsg_managed(int fd, struct msghdr *msg, int flags)
{
    IO_MANAGED(real.recvmsg(fd, msg, flags), fd, false,
               msg ? iov_len(msg->msg_iov, (int)msg->msg_iovlen) : 0, flags,
               false, msg ? msg->msg_iov : NULL, msg ? (int)msg->msg_iovlen : 0,
               NULL);
}

RESIL_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (resil_hooked(fd))
        return recvmsg_managed(fd, msg, flags);
    return real.recvmsg(fd, msg, flags);
}

static RESIL_SLOW ssize_t write_managed(int fd, const void *buf, size_t n)
{
    IO_MANAGED(real.write(fd, buf, n), fd, true, n, 0, false, IOV1(buf, n), 1,
               NULL);
}

RESIL_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (resil_hooked(fd))
        return write_managed(fd, buf, n);
    return real.write(fd, buf, n);
}

static RESIL_SLOW ssize_t writev_managed(int fd, const struct iovec *iov,
                                         int cnt)
{
    IO_MANAGED(real.writev(fd, iov, cnt), fd, true, iov_len(iov, cnt), 0, false,
               iov, cnt, NULL);
}

RESIL_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (resil_hooked(fd))
        return writev_managed(fd, iov, cnt);
    return real.writev(fd, iov, cnt);
}

static RESIL_SLOW ssize_t send_managed(int fd, const void *buf, size_t n,
                                       int flags)
{
    IO_MANAGED(real.send(fd, buf, n, flags), fd, true, n, flags, false,
               IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (resil_hooked(fd))
        return send_managed(fd, buf, n, flags);
    return real.send(fd, buf, n, flags);
}

static RESIL_SLOW ssize_t sendto_managed(int fd, const void *buf, size_t n,
                                         int flags, const struct sockaddr *sa,
                                         socklen_t len)
{
    IO_MANAGED(real.sendto(fd, buf, n, flags, sa, len), fd, true, n, flags,
               false, IOV1(buf, n), 1, NULL);
}

RESIL_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                            const struct sockaddr *sa, socklen_t len)
{
    if (resil_hooked(fd))
        return sendto_managed(fd, buf, n, flags, sa, len);
    return real.sendto(fd, buf, n, flags, sa, len);
}

static RESIL_SLOW ssize_t sendmsg_managed(int fd, const struct msghdr *msg,
                                          int flags)
{
    IO_MANAGED(real.sendmsg(fd, msg, flags), fd, true,
               msg ? iov_len(msg->msg_iov, (int)msg->msg_iovlen) : 0, flags,
               false, msg ? msg->msg_iov : NULL, msg ? (int)msg->msg_iovlen : 0,
               NULL);
}

RESIL_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (resil_hooked(fd))
        return sendmsg_managed(fd, msg, flags);
    return real.sendmsg(fd, msg, flags);
}

static RESIL_SLOW ssize_t sendfile_managed(int out, int in, off_t *off,
                                           size_t n)
{
    IO_MANAGED(real.sendfile(out, in, off, n), out, true, n, 0, true, NULL, 0,
               "sendfile() moves bytes libresil does not see");
}

RESIL_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    if (resil_hooked(out))
        return sendfile_managed(out, in, off, n);
    return real.sendfile(out, in, off, n);
}

static RESIL_SLOW ssize_t sendfile64_managed(int out, int in, off64_t *off,
                                             size_t n)
{
    IO_MANAGED(real.sendfile64(out, in, off, n), out, true, n, 0, true, NULL, 0,
               "sendfile() moves bytes libresil does not see");
}

RESIL_EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t n)
{
    if (resil_hooked(out))
        return sendfile64_managed(out, in, off, n);
    return real.sendfile64(out, in, off, n);
}

/* stdio on a socket: glibc's FILE functions read and write it with
 * internal calls no hook sees. On a session socket the handshake still
 * due is done now, before fread could take a WELCOME (or a server's fgets
 * a HELLO) for the program's bytes, and the session cannot be resumed
 * (resil_sess_unhooked). */
RESIL_EXPORT FILE *fdopen(int fd, const char *mode)
{
    if (!resil_in_shim &&
        atomic_load_explicit(&resil_sess_count, memory_order_relaxed) &&
        resil_table_has(fd))
        resil_sess_unhooked(fd, RESIL_UNHOOKED_STDIO);
    return real.fdopen(fd, mode);
}

/* ioctl(FIONREAD) (SIOCINQ) on a session socket counts the bytes the
 * program can read: not a handshake message still queued, a resume's
 * stash too. Every other request, and every other fd, is libc's. The
 * kernel answers first: a bad pointer is its EFAULT. */
static RESIL_SLOW int ioctl_managed(int fd, unsigned long req, void *arg)
{
    struct resil_sock *s;
    int rc = real.ioctl(fd, req, arg), saved = errno, n;

    if (rc == 0 && req == FIONREAD &&
        atomic_load_explicit(&resil_sess_count, memory_order_relaxed) &&
        (s = resil_sess_sock(fd)) != NULL) {
        if (resil_sess_fionread(s, fd, &n))
            memcpy(arg, &n, sizeof(n)); /* the buffer may be unaligned */
        resil_sock_unref(s);
    }
    errno = saved;
    return rc;
}

RESIL_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (resil_hooked(fd))
        return ioctl_managed(fd, req, arg);
    return real.ioctl(fd, req, arg);
}
