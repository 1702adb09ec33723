/* The program's data calls on a session socket (session.h): the
 * handshake where it is still due, the stash a resume left, the real call,
 * the counting, and the waits while a resume runs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */

#include "log.h"
#include "monitor.h"
#include "resumer.h"
#include "session.h"
#include "session_io.h"
#include "sys.h"

static bool blocking(int fd, int flags)
{
    int fl;
    if (flags & MSG_DONTWAIT)
        return false;
    fl = real.fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

/* The errors of a dead path (the peer's program closing is a FIN, and
 * its abort a reset that a resume then finds refused: ECONNRESET). */
static bool path_error(int e)
{
    return e == ECONNRESET || e == ETIMEDOUT || e == EPIPE ||
           e == EHOSTUNREACH || e == ENETUNREACH;
}

/* Wait until fd has something to read, as the program's blocking call
 * would (its SO_RCVTIMEO included). Returns 0, or EAGAIN at the timeout,
 * EINTR. */
static int wait_readable(int fd)
{
    struct timeval tv = {0};
    socklen_t l = sizeof(tv);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ms = -1, rc;

    if (real.getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &l) == 0 &&
        (tv.tv_sec || tv.tv_usec))
        ms = (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000);
    rc = real.poll(&p, 1, ms);
    if (rc < 0)
        return errno;
    return rc == 0 ? EAGAIN : 0;
}

/* How long a server that speaks first waits for a session client's HELLO:
 * the client sends it right after its connect, so about the handshake's
 * round trip (doc/session.md). */
static int hello_wait_ms(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int ms = 50;

    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
        ti.tcpi_rtt > 0)
        ms = (int)(2 * ti.tcpi_rtt / 1000) + 1;
    return ms < 1 ? 1 : ms > 50 ? 50 : ms;
}

/* Copy from the stash into the program's buffers. rmu held. */
static size_t from_stash(struct resil_sess *x, const struct iovec *iov,
                         int cnt, bool peek)
{
    size_t off = x->stash_off, done = 0;
    for (int i = 0; i < cnt && off < x->stash_len; i++) {
        size_t k = x->stash_len - off;
        if (k > iov[i].iov_len)
            k = iov[i].iov_len;
        memcpy(iov[i].iov_base, x->stash + off, k);
        off += k;
        done += k;
    }
    if (!peek) {
        resil_sess_received(x, iov, cnt, done);
        x->stash_off = off;
    }
    return done;
}

/* The handshake still due before a read, rmu held: RESIL_OK to go on
 * (counting or plain), RESIL_EAGAIN (wait for more), an error (lost). */
static resil_status_t due(struct resil_sess *x, int fd)
{
    resil_status_t st;

    switch (atomic_load(&x->state)) {
    case RESIL_SESS_HELLO_SENT:
        st = resil_sess_client_welcome(x, fd);
        return st == RESIL_EUNSUPP ? RESIL_OK : st;
    case RESIL_SESS_CLASSIFY:
        st = resil_sess_server_hello(x, fd, 0);
        if (st == RESIL_EUNSUPP)
            atomic_store(&x->state, RESIL_SESS_PLAIN);
        return st == RESIL_EUNSUPP ? RESIL_OK : st;
    case RESIL_SESS_LATE:
        return resil_sess_swallow_late(x, fd);
    default:
        return RESIL_OK;
    }
}

/* ---- the two halves of a call (session_io.h) ---- */

static enum resil_sess_step done(struct resil_io *io, ssize_t rc, int e)
{
    io->rc = rc;
    io->err = e;
    return RESIL_SESS_DONE;
}

/* The generation of the connection on the fd (rmu or wmu held: no resume
 * can put another one there meanwhile, its freeze needs them). */
static unsigned gen_now(struct resil_sess *x)
{
    unsigned g;
    pthread_mutex_lock(&x->mu);
    g = x->gen;
    pthread_mutex_unlock(&x->mu);
    return g;
}

/* The real call answered (rc, e) on an established session's connection
 * of generation gen, dead (why: an errno): resume, and wait for the new
 * connection (blocking) or not. */
static enum resil_sess_step away(struct resil_sock *s, struct resil_io *io,
                                 int why, unsigned gen, ssize_t rc, int e)
{
    int w;

    resil_resume_start(s, strerror(why));
    w = resil_resume_wait(s, blocking(io->fd, io->flags), io->write, &gen);
    if (w < 0) /* no resume: the answer is the program's */
        return done(io, rc, e);
    return w ? done(io, -1, w) : RESIL_SESS_RETRY;
}

/* away(), from a post half holding mu (rmu or wmu). A connection that a
 * resume replaced while the call was inside it (the freeze goes on without
 * a writer blocked in a call, and resets the old connection under it) is
 * no failure of the new one: the call goes again there. Resuming then
 * would have started a resume of the healthy new connection (a server's
 * stream stopped 9 s on the bench's receive-only failover). */
static enum resil_sess_step away_locked(struct resil_sock *s,
                                        struct resil_sess *x,
                                        pthread_mutex_t *mu,
                                        struct resil_io *io, int why,
                                        ssize_t rc, int e)
{
    unsigned g = gen_now(x);

    pthread_mutex_unlock(mu);
    if (g != io->gen)
        return RESIL_SESS_RETRY;
    return away(s, io, why, g, rc, e);
}

/* A read of 0 bytes on a connection the kernel closed (reset, timed out)
 * with no FIN from the peer in its count: after its error was taken, a
 * dead connection reads as EOF. rmu held. */
static bool dead_eof(struct resil_sess *x, int fd)
{
    int st = 0;
    /* include/net/tcp_states.h: TCP_CLOSE is 7 */
    return resil_sess_in_check(x, fd, &st) == 0 && st == 7;
}

static enum resil_sess_step read_pre(struct resil_sock *s,
                                     struct resil_sess *x,
                                     struct resil_io *io)
{
    resil_status_t st;
    int e;

    pthread_mutex_lock(&x->rmu);
    if (atomic_load(&x->frozen)) {
        pthread_mutex_unlock(&x->rmu);
        e = resil_resume_wait(s, blocking(io->fd, io->flags), false, NULL);
        return e ? done(io, -1, e) : RESIL_SESS_RETRY;
    }
    st = due(x, io->fd);
    if (st == RESIL_EAGAIN) {
        pthread_mutex_unlock(&x->rmu);
        if (!blocking(io->fd, io->flags))
            return done(io, -1, EAGAIN);
        e = wait_readable(io->fd);
        return e ? done(io, -1, e) : RESIL_SESS_RETRY;
    }
    if (st != RESIL_OK) {
        /* a bad handshake answer: the stream cannot be trusted */
        struct sockaddr unspec = {.sa_family = AF_UNSPEC};
        atomic_store(&x->state, RESIL_SESS_BROKEN);
        real.connect(io->fd, &unspec, sizeof(unspec));
        pthread_mutex_unlock(&x->rmu);
        return done(io, -1, ECONNRESET);
    }
    if (atomic_load(&x->state) == RESIL_SESS_UP &&
        x->stash_off < x->stash_len) {
        ssize_t n = (ssize_t)from_stash(x, io->iov, io->iovcnt,
                                        io->flags & MSG_PEEK);
        pthread_mutex_unlock(&x->rmu);
        return done(io, n, 0);
    }
    io->locked = true;
    io->gen = gen_now(x);
    return RESIL_SESS_CALL;
}

static enum resil_sess_step read_post(struct resil_sock *s,
                                      struct resil_sess *x,
                                      struct resil_io *io, ssize_t n, int e)
{
    io->locked = false;
    if (atomic_load(&x->frozen) && n <= 0) {
        /* woken by a resume taking the connection away: again, on the
         * one it puts in its place */
        pthread_mutex_unlock(&x->rmu);
        return RESIL_SESS_RETRY;
    }
    if (atomic_load(&x->state) == RESIL_SESS_UP) {
        if (n > 0 && !(io->flags & MSG_PEEK)) {
            if (io->flags & MSG_TRUNC)
                resil_sess_untracked(x, "MSG_TRUNC discarded bytes");
            resil_sess_received(x, io->iov, io->iovcnt, (size_t)n);
        } else if (n == 0 && io->len > 0 && !x->fin_in && x->resumable &&
                   dead_eof(x, io->fd)) {
            return away_locked(s, x, &x->rmu, io, ECONNRESET, n, e);
        } else if (n == 0 && io->len > 0) {
            x->fin_in = true;
        } else if (n < 0 && path_error(e) && x->resumable) {
            return away_locked(s, x, &x->rmu, io, e, n, e);
        }
    }
    pthread_mutex_unlock(&x->rmu);
    return done(io, n, e);
}

static enum resil_sess_step write_pre(struct resil_sock *s,
                                      struct resil_sess *x,
                                      struct resil_io *io)
{
    int e;

    if (atomic_load(&x->state) == RESIL_SESS_CLASSIFY) {
        /* the server speaks first: is the client a session client? Its
         * HELLO comes right after its connect. */
        pthread_mutex_lock(&x->rmu);
        if (atomic_load(&x->state) == RESIL_SESS_CLASSIFY) {
            resil_status_t st =
                resil_sess_server_hello(x, io->fd, hello_wait_ms(io->fd));
            if (st == RESIL_EAGAIN)
                atomic_store(&x->state, RESIL_SESS_LATE);
            else if (st == RESIL_EUNSUPP)
                atomic_store(&x->state, RESIL_SESS_PLAIN);
            else if (st != RESIL_OK)
                atomic_store(&x->state, RESIL_SESS_BROKEN);
        }
        pthread_mutex_unlock(&x->rmu);
    }
    if (atomic_load(&x->state) == RESIL_SESS_HELLO_SENT &&
        pthread_mutex_trylock(&x->rmu) == 0) {
        /* a program that only writes never reads the WELCOME: take it
         * when it is there, so that the session can be resumed */
        if (atomic_load(&x->state) == RESIL_SESS_HELLO_SENT &&
            resil_sess_client_welcome(x, io->fd) != RESIL_OK &&
            atomic_load(&x->state) != RESIL_SESS_HELLO_SENT &&
            atomic_load(&x->state) != RESIL_SESS_PLAIN)
            atomic_store(&x->state, RESIL_SESS_BROKEN);
        pthread_mutex_unlock(&x->rmu);
    }
    pthread_mutex_lock(&x->wmu);
    if (atomic_load(&x->frozen) || atomic_load(&x->replaying)) {
        pthread_mutex_unlock(&x->wmu);
        e = resil_resume_wait(s, blocking(io->fd, io->flags), true, NULL);
        return e ? done(io, -1, e) : RESIL_SESS_RETRY;
    }
    io->locked = true;
    io->gen = gen_now(x);
    return RESIL_SESS_CALL;
}

static enum resil_sess_step write_post(struct resil_sock *s,
                                       struct resil_sess *x,
                                       struct resil_io *io, ssize_t n, int e)
{
    io->locked = false;
    /* a client counts from its HELLO on, before the WELCOME is read */
    if (atomic_load(&x->state) == RESIL_SESS_UP ||
        atomic_load(&x->state) == RESIL_SESS_HELLO_SENT) {
        if (n > 0) {
            if (io->untracked)
                resil_sess_untracked(x, io->untracked);
            else
                resil_sess_sent(x, io->fd, io->iov, io->iovcnt, (size_t)n);
            resil_monitor_mark(s);
        } else if (n < 0 && atomic_load(&x->frozen)) {
            /* a resume reset the connection under this call */
            pthread_mutex_unlock(&x->wmu);
            return RESIL_SESS_RETRY;
        } else if (n < 0 && path_error(e) && x->resumable) {
            return away_locked(s, x, &x->wmu, io, e, n, e);
        }
    }
    pthread_mutex_unlock(&x->wmu);
    return done(io, n, e);
}

enum resil_sess_step resil_sess_pre(struct resil_sock *s, struct resil_io *io)
{
    struct resil_sess *x = s->sess;
    int st = atomic_load(&x->state);

    io->locked = false;
    /* a lost session's socket is the reset connection: the kernel answers
     * (the ECONNRESET itself is held and reported once by conn.c) */
    if (st == RESIL_SESS_PLAIN || st == RESIL_SESS_BROKEN)
        return RESIL_SESS_CALL;
    return io->write ? write_pre(s, x, io) : read_pre(s, x, io);
}

enum resil_sess_step resil_sess_post(struct resil_sock *s, struct resil_io *io,
                                     ssize_t rc, int err)
{
    struct resil_sess *x = s->sess;

    if (!io->locked)
        return done(io, rc, err);
    return io->write ? write_post(s, x, io, rc, err)
                     : read_post(s, x, io, rc, err);
}

struct resil_sock *resil_sess_sock(int fd)
{
    struct resil_sock *s = resil_table_get(fd);
    if (s && s->sess)
        return s;
    resil_sock_unref(s);
    return NULL;
}
