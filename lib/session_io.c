/* The program's data calls on a session socket (session.h): the
 * handshake where it is still due, the stash a resume left, the real call,
 * the counting, and the waits while a resume runs. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */

#include "config.h"
#include "engine.h"
#include "epoll.h"
#include "fds.h"
#include "linger.h"
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
        if (off == x->stash_len) {
            resil_sess_set_stashed(x, false);
            /* out of every epoll set it stood in */
            resil_fds_close(&x->kick_fd);
        }
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
            resil_sess_set_state(x, RESIL_SESS_PLAIN);
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

/* The generation of the connection on the fd. Its one writer
 * (resumer.c switch_over) stores it atomically under x->mu, so that this,
 * on every data call, takes no lock: a call that holds rmu, or wmu without
 * a freeze going on, reads the connection its call goes to. */
static unsigned gen_now(struct resil_sess *x)
{
    return __atomic_load_n(&x->gen, __ATOMIC_ACQUIRE);
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
        resil_sess_set_state(x, RESIL_SESS_BROKEN);
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
            if (io->flags & MSG_OOB)
                /* the urgent byte, out of its place in the stream */
                resil_sess_untracked(x, "urgent data (MSG_OOB) was read");
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
                resil_sess_set_state(x, RESIL_SESS_LATE);
            else if (st == RESIL_EUNSUPP)
                resil_sess_set_state(x, RESIL_SESS_PLAIN);
            else if (st != RESIL_OK)
                resil_sess_set_state(x, RESIL_SESS_BROKEN);
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
            resil_sess_set_state(x, RESIL_SESS_BROKEN);
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
            else if (io->flags & MSG_OOB)
                /* a replay would send the urgent byte as an ordinary one,
                 * and a peer without SO_OOBINLINE keeps it out of the
                 * stream: no resume can say where it stands */
                resil_sess_untracked(x, "urgent data (MSG_OOB) was sent");
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

bool resil_sess_fionread(struct resil_sock *s, int fd, int *n)
{
    struct resil_sess *x = s->sess;
    int st = atomic_load(&x->state), k = 0;
    bool ours = true;

    if (st == RESIL_SESS_PLAIN || st == RESIL_SESS_BROKEN)
        return false;
    pthread_mutex_lock(&x->rmu);
    /* frozen (a resume switches connections): the stash is all there is;
     * the handshake message not whole yet: nothing either */
    if (!atomic_load(&x->frozen)) {
        resil_status_t d = due(x, fd);
        if (d != RESIL_EAGAIN &&
            (d != RESIL_OK || real.ioctl(fd, FIONREAD, &k) < 0))
            ours = false;
    }
    if (ours && atomic_load(&x->state) == RESIL_SESS_UP)
        k += (int)(x->stash_len - x->stash_off);
    pthread_mutex_unlock(&x->rmu);
    *n = k;
    return ours;
}

void resil_sess_closing(int fd)
{
    struct resil_sock *s = resil_sess_sock(fd);

    if (s == NULL)
        return;
    if ((s->sess->role == RESIL_ROLE_CLIENT &&
         atomic_load(&s->sess->state) == RESIL_SESS_HELLO_SENT) ||
        (s->sess->role == RESIL_ROLE_SERVER &&
         atomic_load(&s->sess->state) == RESIL_SESS_CLASSIFY))
        (void)resil_linger_start(s, fd);
    resil_sock_unref(s);
}

struct resil_sock *resil_sess_sock(int fd)
{
    struct resil_sock *s = resil_table_get(fd);
    if (s && s->sess)
        return s;
    resil_sock_unref(s);
    return NULL;
}

/* ---- stdio (session_io.h) ---- */

#define STDIO_HELLO_WAIT_MS 200

void resil_sess_unhooked(int fd, enum resil_unhooked how)
{
    static const char *const what[] = {
        [RESIL_UNHOOKED_STDIO] = "stdio (fdopen)",
        [RESIL_UNHOOKED_DUP] = "a duplicate of its descriptor (dup)",
    };
    static const char *const why[] = {
        [RESIL_UNHOOKED_STDIO] = "the socket was handed to stdio (fdopen), "
                                 "whose reads and writes no hook sees",
        [RESIL_UNHOOKED_DUP] = "the socket was duplicated (dup), and reads "
                               "and writes on the copy no hook sees",
    };
    RESIL_KEEP_ERRNO();
    const struct resil_config *cfg = resil_config_get();
    struct resil_sock *s = resil_sess_sock(fd);
    struct resil_sess *x;
    uint64_t end;
    bool reset = false;

    if (s == NULL)
        return;
    x = s->sess;
    resil_in_shim++;
    end = resil_now_ns() + (uint64_t)cfg->session_linger_ms * RESIL_MS;
    pthread_mutex_lock(&x->rmu);
    if (atomic_load(&x->state) == RESIL_SESS_CLASSIFY) {
        /* as if the server spoke first: a session client's HELLO comes
         * right after its connect. Longer than a first write waits: a
         * HELLO later than this is read by fgets as the client's bytes
         * (no hook sees stdio's reads to swallow it), and a loaded client
         * sends its HELLO from its engine thread a few ms after the
         * handshake (a driver under ThreadSanitizer: more than the 1 ms
         * the bed's RTT gives). Any first byte ends the wait. */
        int ms = hello_wait_ms(fd);
        resil_status_t st = resil_sess_server_hello(
            x, fd, ms > STDIO_HELLO_WAIT_MS ? ms : STDIO_HELLO_WAIT_MS);
        resil_sess_set_state(x, st == RESIL_OK       ? RESIL_SESS_UP
                                : st == RESIL_EAGAIN ? RESIL_SESS_LATE
                                : st == RESIL_EUNSUPP
                                    ? RESIL_SESS_PLAIN
                                    : RESIL_SESS_BROKEN);
    }
    while (atomic_load(&x->state) == RESIL_SESS_HELLO_SENT) {
        /* the WELCOME (or the first bytes of a server that is not a
         * session server) must be taken before any fread */
        resil_status_t st = resil_sess_client_welcome(x, fd);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = resil_now_ns();
        if (st == RESIL_EUNSUPP || st == RESIL_OK)
            break;
        if (st != RESIL_EAGAIN || now >= end) {
            reset = true;
            break;
        }
        real.poll(&p, 1, (int)((end - now) / RESIL_MS) + 1);
    }
    if (reset) {
        struct sockaddr unspec = {.sa_family = AF_UNSPEC};
        rwarn("fd %d: handed to %s before the session's WELCOME came "
              "(none within %d ms, or a bad one): reset, so that no read "
              "there takes it for the program's bytes",
              fd, what[how], cfg->session_linger_ms);
        resil_sess_set_state(x, RESIL_SESS_BROKEN);
        real.connect(fd, &unspec, sizeof(unspec));
    }
    pthread_mutex_unlock(&x->rmu);
    if (atomic_load(&x->state) == RESIL_SESS_UP ||
        atomic_load(&x->state) == RESIL_SESS_HELLO_SENT) {
        resil_sess_untracked(x, why[how]);
        resil_monitor_unseen(s);
    }
    resil_in_shim--;
    resil_sock_unref(s);
}

/* ---- readiness (session_io.h) ---- */

enum look { LOOK_NONE, LOOK_HANDSHAKE, LOOK_STASH, LOOK_FROZEN };

/* What fd's readiness needs from us; *sp gets its socket with a reference
 * (unless LOOK_NONE). */
static enum look look(int fd, struct resil_sock **sp)
{
    struct resil_sock *s;
    struct resil_sess *x;
    int st;

    if (fd < 0 || !resil_table_has(fd) || (s = resil_sess_sock(fd)) == NULL)
        return LOOK_NONE;
    x = s->sess;
    st = atomic_load(&x->state);
    *sp = s;
    if (atomic_load(&x->frozen) && st == RESIL_SESS_UP)
        return LOOK_FROZEN;
    if (resil_sess_handshaking(st))
        return LOOK_HANDSHAKE;
    if (st == RESIL_SESS_UP && atomic_load(&x->stashed))
        return LOOK_STASH;
    resil_sock_unref(s);
    return LOOK_NONE;
}

/* fd, a session socket in a handshake state that the kernel reports
 * readable: is that only a handshake message? It is consumed now, as the
 * program's first read would, and the socket asked again. Returns true
 * when nothing is left for the program to read. A reader inside a call
 * keeps the message for its own. */
static bool only_handshake(struct resil_sock *s, int fd)
{
    struct resil_sess *x = s->sess;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    resil_status_t st;

    if (pthread_mutex_trylock(&x->rmu) != 0)
        return false;
    st = resil_sess_handshaking(atomic_load(&x->state)) ? due(x, fd)
                                                         : RESIL_OK;
    pthread_mutex_unlock(&x->rmu);
    if (st == RESIL_EAGAIN) /* a part of one: the rest comes */
        return true;
    if (st != RESIL_OK)     /* a bad one: the program's read reports it */
        return false;
    return real.poll(&p, 1, 0) == 0;
}

#define IN_BITS (POLLIN | POLLRDNORM)

/* Note s in c (a reference the call keeps until _leave); false when it
 * cannot be (out of memory). */
static bool hold(struct resil_sess_call *c, struct resil_sock *s)
{
    if (c->nheld == c->cap) {
        int cap = c->cap * 2;
        struct resil_sock **p =
            c->held == c->local ? malloc(sizeof(*p) * (size_t)cap)
                                : realloc(c->held, sizeof(*p) * (size_t)cap);
        if (p == NULL)
            return false;
        if (c->held == c->local)
            memcpy(p, c->local, sizeof(c->local));
        c->held = p;
        c->cap = cap;
    }
    c->held[c->nheld++] = s;
    return true;
}

/* One fd of a readiness call about to go to the kernel (in: asked for
 * input): true when it is frozen and must be left out of the call. */
static bool enter_fd(struct resil_sess_call *c, int fd, bool in)
{
    struct resil_sock *s;
    struct resil_sess *x;
    int st;

    if (fd < 0 || !resil_table_has(fd) || (s = resil_sess_sock(fd)) == NULL)
        return false;
    x = s->sess;
    st = atomic_load(&x->state);
    if (st != RESIL_SESS_UP && !resil_sess_handshaking(st)) {
        resil_sock_unref(s);
        return false;
    }
    /* counted before frozen is read: a resume sets frozen and then waits
     * for the pollers, so it sees this call or this call sees frozen */
    atomic_fetch_add(&x->pollers, 1);
    if (st == RESIL_SESS_UP && atomic_load(&x->frozen)) {
        atomic_fetch_sub(&x->pollers, 1);
        resil_sock_unref(s);
        c->what |= RESIL_SESS_SLICE;
        return true;
    }
    if (in && st == RESIL_SESS_UP && atomic_load(&x->stashed))
        c->what |= RESIL_SESS_READY;
    if (!hold(c, s)) {
        /* not counted: a resume waits its bound for this call */
        atomic_fetch_sub(&x->pollers, 1);
        resil_sock_unref(s);
    }
    return false;
}

void resil_sess_poll_enter(struct resil_sess_call *c, struct pollfd *fds,
                           nfds_t n)
{
    c->what = 0;
    c->nheld = c->nneg = 0;
    c->held = c->local;
    c->cap = (int)(sizeof(c->local) / sizeof(c->local[0]));
    resil_in_shim++;
    for (nfds_t i = 0; i < n; i++) {
        if (!enter_fd(c, fds[i].fd, fds[i].events & IN_BITS))
            continue;
        /* a negative fd is left out by the kernel, its revents 0: what
         * the parked socket that stands in would report */
        if (c->nneg < (int)(sizeof(c->neg) / sizeof(c->neg[0]))) {
            c->neg[c->nneg++] = i;
            fds[i].fd = -2 - fds[i].fd;
        }
    }
    resil_in_shim--;
}

static void leave(struct resil_sess_call *c)
{
    for (int i = 0; i < c->nheld; i++) {
        atomic_fetch_sub(&c->held[i]->sess->pollers, 1);
        resil_sock_unref(c->held[i]);
    }
    if (c->held != c->local)
        free(c->held);
    c->held = c->local;
    c->nheld = 0;
}

void resil_sess_poll_leave(struct resil_sess_call *c, struct pollfd *fds)
{
    RESIL_KEEP_ERRNO();
    for (int i = 0; i < c->nneg; i++)
        fds[c->neg[i]].fd = -2 - fds[c->neg[i]].fd;
    c->nneg = 0;
    leave(c);
}

void resil_sess_select_enter(struct resil_sess_call *c, int n, fd_set *r,
                             fd_set *w, fd_set *e)
{
    c->what = 0;
    c->nheld = c->nneg = 0;
    c->held = c->local;
    c->cap = (int)(sizeof(c->local) / sizeof(c->local[0]));
    resil_in_shim++;
    for (int fd = 0; fd < n && fd < FD_SETSIZE; fd++) {
        if ((!r || !FD_ISSET(fd, r)) && (!w || !FD_ISSET(fd, w)) &&
            (!e || !FD_ISSET(fd, e)))
            continue;
        if (enter_fd(c, fd, r && FD_ISSET(fd, r))) {
            if (r)
                FD_CLR(fd, r);
            if (w)
                FD_CLR(fd, w);
            if (e)
                FD_CLR(fd, e);
        }
    }
    resil_in_shim--;
}

void resil_sess_select_leave(struct resil_sess_call *c)
{
    RESIL_KEEP_ERRNO();
    leave(c);
}

int resil_sess_poll_fix(struct pollfd *fds, nfds_t n, int rc, bool *nap)
{
    RESIL_KEEP_ERRNO();
    resil_in_shim++;
    for (nfds_t i = 0; i < n; i++) {
        short in = fds[i].events & IN_BITS, was = fds[i].revents;
        struct resil_sock *s;
        enum look k = look(fds[i].fd, &s);
        if (k == LOOK_NONE)
            continue;
        if (k == LOOK_FROZEN) {
            /* the connection under the fd is being replaced: what the
             * old one reports (the read side shut, the reset) is not the
             * program's; the parked socket that stands in reports
             * nothing, and neither does this */
            fds[i].revents &= POLLNVAL;
            *nap |= was != 0 && fds[i].revents == 0;
        } else if (k == LOOK_STASH) {
            /* bytes of the replaced connection wait in the stash */
            fds[i].revents |= in;
        } else if ((was & in) && !(was & (POLLERR | POLLHUP)) &&
                   only_handshake(s, fds[i].fd)) {
            fds[i].revents &= (short)~(in | POLLRDHUP);
        }
        if (was == 0 && fds[i].revents != 0)
            rc++;
        else if (was != 0 && fds[i].revents == 0)
            rc--;
        resil_sock_unref(s);
    }
    resil_in_shim--;
    return rc;
}

static bool in_set(int fd, const fd_set *set)
{
    return set && FD_ISSET(fd, set);
}

/* Clear fd in set (when there and set); returns 1 if it was. */
static int clear(int fd, fd_set *set)
{
    if (!set || !FD_ISSET(fd, set))
        return 0;
    FD_CLR(fd, set);
    return 1;
}

int resil_sess_select_fix(int n, fd_set *r, fd_set *w, fd_set *e,
                          const fd_set *r0, int rc, bool *nap)
{
    RESIL_KEEP_ERRNO();
    resil_in_shim++;
    for (int fd = 0; fd < n && fd < FD_SETSIZE; fd++) {
        struct resil_sock *s;
        enum look k;
        int gone;
        if (!in_set(fd, r0) && !in_set(fd, r) && !in_set(fd, w) &&
            !in_set(fd, e))
            continue;
        k = look(fd, &s);
        if (k == LOOK_NONE)
            continue;
        if (k == LOOK_FROZEN) {
            /* select counts each set's bits apart */
            gone = clear(fd, r) + clear(fd, w) + clear(fd, e);
            rc -= gone;
            *nap |= gone > 0;
        } else if (k == LOOK_STASH) {
            if (in_set(fd, r0) && r && !FD_ISSET(fd, r)) {
                FD_SET(fd, r);
                rc++;
            }
        } else if (in_set(fd, r) && only_handshake(s, fd)) {
            FD_CLR(fd, r);
            rc--;
        }
        resil_sock_unref(s);
    }
    resil_in_shim--;
    return rc;
}

int resil_sess_epoll_fix(struct resil_epset *set, struct epoll_event *ev,
                         int n)
{
    RESIL_KEEP_ERRNO();
    int out = 0;

    resil_in_shim++;
    for (int i = 0; i < n; i++) {
        struct resil_sock *s[2];
        uint32_t interest[2];
        int k;
        if (!(ev[i].events & EPOLLIN) ||
            (ev[i].events & (EPOLLERR | EPOLLHUP)))
            goto keep;
        k = resil_epoll_socks_of(set, ev[i].data.u64, s, interest, 2);
        /* the data names one managed socket (the program may share it
         * with another fd of its own: then the event may be that fd's,
         * and stays) */
        if (k == 1 && resil_sess_handshaking(
                          s[0]->sess ? atomic_load(&s[0]->sess->state)
                                     : RESIL_SESS_PLAIN) &&
            only_handshake(s[0], s[0]->fd)) {
            ev[i].events &= ~(uint32_t)(EPOLLIN | EPOLLRDNORM | EPOLLRDHUP);
            if (ev[i].events == 0 && (interest[0] & EPOLLONESHOT))
                /* disarmed for an event the program never sees */
                resil_epoll_rearm(s[0], set);
        }
        for (int j = 0; j < k; j++)
            resil_sock_unref(s[j]);
    keep:
        if (ev[i].events)
            ev[out++] = ev[i];
    }
    resil_in_shim--;
    return out;
}

/* ---- the stash in the program's epoll sets ---- */

void resil_sess_kick(struct resil_sock *s)
{
    struct resil_sess *x = s->sess;
    struct epoll_event ev[8];
    int epfd[8], n;

    if (__atomic_load_n(&x->kick_fd, __ATOMIC_SEQ_CST) >= 0 ||
        x->stash_off == x->stash_len)
        return;
    n = resil_epoll_regs_of(s, epfd, ev, 8);
    if (n == 0)
        return; /* no epoll set: poll and select look at the stash */
    resil_fds_making(); /* made low, moved high (fds.h) */
    if (resil_fds_own_made(&x->kick_fd, eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK),
                           RESIL_FD_FILE, &x->kick_pins) != RESIL_OK) {
        rwarn("fd %d: no eventfd for the stash's readiness (%s): an "
              "epoll loop may not see %zu bytes until more come", s->fd,
              strerror(errno), x->stash_len - x->stash_off);
        return;
    }
    for (int i = 0; i < n; i++)
        resil_sess_kick_ctl(x, epfd[i], EPOLL_CTL_ADD, &ev[i]);
}

void resil_sess_kick_ctl(struct resil_sess *x, int epfd, int op,
                         const struct epoll_event *ev)
{
    struct epoll_event k = {0};
    int fd = resil_fds_pin(&x->kick_fd, &x->kick_pins);

    if (fd >= 0 && (op == EPOLL_CTL_DEL || ev)) {
        if (ev) {
            /* readable while the stash holds bytes, reported as the
             * program's registration would be */
            k.events = (ev->events & IN_BITS) |
                       (ev->events & (EPOLLET | EPOLLONESHOT));
            k.data = ev->data;
        }
        if (op == EPOLL_CTL_DEL || !(k.events & IN_BITS)) {
            real.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        } else if (real.epoll_ctl(epfd, op, fd, &k) < 0) {
            /* ours may or may not be in that set yet */
            if (errno == EEXIST)
                real.epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &k);
            else if (errno == ENOENT)
                real.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &k);
        }
    }
    resil_fds_unpin(&x->kick_pins);
}

void resil_sess_epoll_ctl(int fd, int epfd, int op,
                          const struct epoll_event *ev)
{
    RESIL_KEEP_ERRNO();
    struct resil_sock *s = resil_sess_sock(fd);

    if (s == NULL)
        return;
    resil_in_shim++;
    if (op != EPOLL_CTL_DEL && atomic_load(&s->sess->stashed) &&
        pthread_mutex_trylock(&s->sess->rmu) == 0) {
        /* the first epoll set since a resume left bytes in the stash
         * starts the stand-in (in every set, this one included) */
        if (__atomic_load_n(&s->sess->kick_fd, __ATOMIC_SEQ_CST) < 0)
            resil_sess_kick(s);
        else
            resil_sess_kick_ctl(s->sess, epfd, op, ev);
        pthread_mutex_unlock(&s->sess->rmu);
    } else {
        resil_sess_kick_ctl(s->sess, epfd, op, ev);
    }
    resil_in_shim--;
    resil_sock_unref(s);
}
