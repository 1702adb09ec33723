#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */

#include "config.h"
#include "conn.h"
#include "engine.h"
#include "events.h"
#include "fds.h"
#include "log.h"
#include "resume.h"
#include "resumer.h"
#include "session.h"
#include "session_io.h"
#include "swap.h"
#include "sys.h"

/* How long a resume waits for the peer's answer on a connection, and for
 * a connection to its resume listener, per try. */
#define EXCHANGE_MS 2000
#define CONNECT_MS 1000
/* between tries while the linger time lasts */
#define RETRY_MS 200

/* The listener: an accept thread of its own (blocking accept: the engine
 * lock is never needed to take a resume in, and the engine thread may be
 * the one asking for the port, from inside a race). */
static struct {
    pthread_mutex_t mu;
    int lfd;            /* registry-owned (fds.h), pinned by the thread */
    atomic_int pins;
    uint16_t port;
    bool tried;         /* set up once per process; not again on failure */
    int workers;        /* running worker threads */
    int inits;          /* of which resuming for this end (initiators) */
    /* sessions to resume while every worker is at work: the next worker
     * to finish takes the first (a reference held on each) */
    struct resil_sess *queue, *queue_tail;
} L = {.mu = PTHREAD_MUTEX_INITIALIZER, .lfd = -1};

/* ---- threads ---- */

/* Start a worker counted already (L.workers, and L.inits for an
 * initiator): on failure the count is given back, errno says why. */
static bool launch(void *(*fn)(void *), void *arg, bool init)
{
    int rc = resil_thread_start("resil-resume", fn, arg);

    if (rc == 0)
        return true;
    pthread_mutex_lock(&L.mu);
    L.workers--;
    L.inits -= init;
    pthread_mutex_unlock(&L.mu);
    errno = rc;
    return false;
}

static bool spawn(void *(*fn)(void *), void *arg)
{
    pthread_mutex_lock(&L.mu);
    if (L.workers >= RESIL_RESUME_WORKERS) {
        pthread_mutex_unlock(&L.mu);
        return false;
    }
    L.workers++;
    pthread_mutex_unlock(&L.mu);
    return launch(fn, arg, false);
}

static void run_initiator(struct resil_sock *s);
static void *initiator(void *arg);

/* A worker's job is done (init: it resumed for this end): the next queued
 * resume, in this thread, while initiators may take one more; else leave.
 * The queue and the counts change together under L.mu: a resume queued
 * while a worker runs (start_init) is always taken by one. */
static void worker_done(bool init)
{
    for (;;) {
        struct resil_sess *x;
        pthread_mutex_lock(&L.mu);
        x = L.queue;
        if (x == NULL || (!init && L.inits >= RESIL_RESUME_INITIATORS)) {
            L.workers--;
            L.inits -= init;
            pthread_mutex_unlock(&L.mu);
            return;
        }
        L.queue = x->init_next;
        if (L.queue == NULL)
            L.queue_tail = NULL;
        if (!init)
            L.inits++;
        init = true;
        pthread_mutex_unlock(&L.mu);
        run_initiator(x->sock); /* drops the queue's reference */
    }
}

/* Resume s in a worker of its own, or queued for the next one. False when
 * neither can be (no thread could be started, and none runs). */
static bool start_init(struct resil_sock *s)
{
    resil_sock_ref(s);
    pthread_mutex_lock(&L.mu);
    if (L.workers < RESIL_RESUME_WORKERS &&
        L.inits < RESIL_RESUME_INITIATORS) {
        L.workers++;
        L.inits++;
        pthread_mutex_unlock(&L.mu);
        if (launch(initiator, s, true))
            return true;
        /* none started: queued if a worker runs that will take it */
        pthread_mutex_lock(&L.mu);
    }
    if (L.workers == 0) {
        pthread_mutex_unlock(&L.mu);
        resil_sock_unref(s);
        return false;
    }
    s->sess->init_next = NULL;
    if (L.queue_tail)
        L.queue_tail->init_next = s->sess;
    else
        L.queue = s->sess;
    L.queue_tail = s->sess;
    pthread_mutex_unlock(&L.mu);
    return true;
}

/* ---- small blocking helpers with deadlines (worker threads only) ---- */

static int left_ms(uint64_t deadline)
{
    uint64_t now = resil_now_ns();
    return now >= deadline ? 0 : (int)((deadline - now) / RESIL_MS) + 1;
}

static bool wait_fd(int fd, short ev, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int rc;
    do
        rc = real.poll(&p, 1, left_ms(deadline));
    while (rc < 0 && errno == EINTR);
    return rc == 1 && (p.revents & (ev | POLLERR | POLLHUP));
}

/* The length a message's header announces, or 0 when no message of any
 * version is that long. */
static size_t msg_len(const uint8_t *hdr)
{
    size_t n = ((size_t)hdr[6] << 8) | hdr[7];
    return n < RESIL_WIRE_HDR_LEN + 1 || n > RESIL_WIRE_MAX_LEN ? 0 : n;
}

/* Read exactly one message (its header says how long) from fd. */
static resil_status_t read_msg(int fd, uint8_t *buf, size_t *len,
                               uint64_t deadline)
{
    size_t got = 0, want = RESIL_WIRE_HDR_LEN;

    while (got < want) {
        ssize_t n;
        if (!wait_fd(fd, POLLIN, deadline))
            return RESIL_EAGAIN;
        n = real.recv(fd, buf + got, want - got, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return RESIL_ESYS;
        got += (size_t)n;
        if (got == RESIL_WIRE_HDR_LEN && (want = msg_len(buf)) == 0)
            return RESIL_EPROTO;
    }
    *len = got;
    return RESIL_OK;
}

static resil_status_t write_all(int fd, const void *buf, size_t len,
                                uint64_t deadline)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = real.send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!wait_fd(fd, POLLOUT, deadline))
                return RESIL_EAGAIN;
            continue;
        }
        if (n <= 0)
            return RESIL_ESYS;
        p += n;
        len -= (size_t)n;
    }
    return RESIL_OK;
}

/* A session message in hex at trace level (a test replays a recorded
 * RESUME; an operator can decode one by hand). */
static void trace_msg(const char *what, int fd, const uint8_t *buf,
                      size_t len)
{
    char hex[2 * RESIL_WIRE_MAX_LEN + 1];
    if (resil_log_level < RESIL_LOG_TRACE)
        return;
    resil_sess_hex(buf, len, hex, sizeof(hex));
    rtrace("resume: %s on fd %d: %s", what, fd, hex);
}

static void refuse(int fd, uint8_t reason)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN];
    struct resil_msg m = {.type = RESIL_MSG_REFUSE};
    size_t len;
    m.u.refuse.reason = reason;
    if (resil_wire_encode(&m, buf, sizeof(buf), &len) == RESIL_OK)
        (void)!real.send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- freezing a session: its old connection put aside ---- */

static uint64_t r_total(const struct resil_sess *x)
{
    return x->r + (x->stash_len - x->stash_off);
}

static void stash_add(struct resil_sess *x, const void *b, size_t n)
{
    uint8_t *p;
    if (x->stash_off == x->stash_len) {
        free(x->stash);
        x->stash = NULL;
        x->stash_len = x->stash_off = 0;
    }
    p = realloc(x->stash, x->stash_len + n);
    if (p == NULL) {
        resil_sess_untracked(x, "out of memory for the received bytes");
        return;
    }
    memcpy(p + x->stash_len, b, n);
    x->stash = p;
    x->stash_len += n;
    resil_sess_set_stashed(x, true);
}

static void tail_of(const struct resil_sess *x, uint8_t out[16])
{
    struct resil_lastbytes t = x->last;
    struct iovec iov[2];
    int n;
    if (x->stash_len > x->stash_off)
        resil_lastbytes_feed(&t, x->stash + x->stash_off,
                             x->stash_len - x->stash_off);
    resil_lastbytes_spans(&t, iov, &n);
    resil_session_tail(iov, n, out);
}

/* A parked socket to stand on the program's fd while the session is
 * frozen: event loops sleep on it (a socket in SYN_SENT reports nothing),
 * blocking calls wait in the hooks. */
static int make_parked(struct resil_sock *s)
{
    int fd;

    if (resil_fds_socket(&fd, s->family, SOCK_STREAM | SOCK_CLOEXEC, 0,
                         RESIL_FD_SOCK, NULL) != RESIL_OK)
        return -1;
    resil_engine_lock();
    if (resil_engine_start() != RESIL_OK ||
        resil_park(fd, s->family, s->v6only) != RESIL_OK)
        resil_fds_release(&fd);
    resil_engine_unlock();
    return resil_fds_take(&fd);
}

/* Wait (at most 200 ms: a thread of the program that the scheduler
 * leaves out that long) until no thread of the program is inside a real
 * poll or select with x's fd in its set. */
static void wait_pollers(struct resil_sess *x)
{
    uint64_t end = resil_now_ns() + 200 * RESIL_MS;
    while (atomic_load(&x->pollers) > 0) {
        struct timespec d = {0, 200000};
        if (resil_now_ns() >= end) {
            rdebug("resume: a thread stays in poll/select on the old "
                   "connection");
            break;
        }
        nanosleep(&d, NULL);
    }
}

/* Freeze x (idempotent): readers and writers of the program are woken
 * and wait; the old connection's queue goes to the stash; counts are
 * checked against the kernel; the old connection is reset (put aside on
 * x->old_fd), a parked socket stands on the fd. Returns RESIL_OK, or
 * RESIL_ENOENT, with nothing done, when the program has closed the
 * session's fd. Worker thread, no lock held; x->busy is ours.
 *
 * Every call below acts on a duplicate of the session's socket, taken
 * while the fd was still the program's (s->mu, the cookie): the program
 * may close its number at any moment, and the kernel then gives that
 * number to the program's next socket, which a reset, a shutdown or a
 * read meant for the session must never touch. */
static resil_status_t detach(struct resil_sock *s, struct resil_sess *x)
{
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    int fd, own = -1, parked;
    bool wlocked, mine;
    resil_status_t st;

    pthread_mutex_lock(&x->mu);
    if (x->detached) {
        pthread_mutex_unlock(&x->mu);
        return RESIL_OK;
    }
    pthread_mutex_unlock(&x->mu);
    pthread_mutex_lock(&s->mu);
    mine = resil_sock_is_ours(s) &&
           resil_fds_dup(&own, s->fd, RESIL_FD_SOCK) == RESIL_OK;
    pthread_mutex_unlock(&s->mu);
    if (!mine)
        return RESIL_ENOENT;
    fd = own;
    pthread_mutex_lock(&x->mu);
    resil_sess_set_frozen(x, true);
    pthread_mutex_unlock(&x->mu);
    parked = make_parked(s);
    /* readers: shutting the read side wakes them (queued bytes stay) */
    real.shutdown(fd, SHUT_RD);
    pthread_mutex_lock(&x->rmu);
    if (atomic_load(&x->state) == RESIL_SESS_HELLO_SENT &&
        resil_sess_client_welcome(x, fd) != RESIL_OK)
        /* the WELCOME never came, or was bad: nothing to resume with */
        resil_sess_untracked(x, "no WELCOME from the server");
    for (;;) {
        uint8_t buf[65536];
        ssize_t n = real.recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        stash_add(x, buf, (size_t)n);
    }
    if (atomic_load(&x->state) == RESIL_SESS_UP &&
        resil_sess_in_check(x, fd, NULL) < 0)
        /* a byte the hooks did not see (stdio, io_uring, raw syscall)
         * came off this connection: the stream cannot be resumed */
        resil_sess_untracked(x, "bytes were read that libresil did not see");
    pthread_mutex_unlock(&x->rmu);
    /* writers: a writer inside a call is waiting for buffer space on the
     * dead path; checking the counts needs none inside */
    wlocked = pthread_mutex_trylock(&x->wmu) == 0;
    if (wlocked && atomic_load(&x->state) == RESIL_SESS_UP) {
        int c = resil_sess_out_check(x, fd);
        if (c < 0)
            resil_sess_untracked(x, "bytes were written that libresil did "
                                    "not see");
        else if (c == 1)
            /* our program shut down writing (shutdown() is no hook of
             * ours: its FIN shows in the count): the new connection gets
             * it again after the replay */
            x->fin_out = true;
    }
    /* reset (never FIN: a FIN means the program closed its end); wakes a
     * blocked writer, whose partial count the hook records */
    real.connect(fd, &unspec, sizeof(unspec));
    if (!wlocked)
        pthread_mutex_lock(&x->wmu);
    pthread_mutex_unlock(&x->wmu);
    /* a thread asleep in poll or select since before the freeze is
     * registered on the old connection only (session_io.h): the reset
     * woke it, and it must meet the reset before the parked socket takes
     * the fd, or it sleeps on with nothing left to wake it */
    wait_pollers(x);
    /* the old connection aside, the parked socket on the fd */
    pthread_mutex_lock(&s->mu);
    st = RESIL_ESYS;
    if (parked >= 0) {
        resil_fds_close(&x->old_fd);
        resil_fds_transfer(&own, &x->old_fd);
        st = resil_swap_in(s, parked);
        parked = -1;
    }
    pthread_mutex_unlock(&s->mu);
    resil_fds_close_fd(parked);
    resil_fds_close(&own);
    pthread_mutex_lock(&x->mu);
    x->detached = true;
    if (x->detached_ns == 0)
        x->detached_ns = resil_now_ns();
    pthread_mutex_unlock(&x->mu);
    if (st != RESIL_OK)
        /* the fd keeps the reset connection: the program meets it */
        resil_sess_untracked(x, "cannot park the program's fd");
    return RESIL_OK;
}

/* Thaw x: waiters retry (on the new connection, or meet the lost
 * session's error). */
static void thaw(struct resil_sess *x, bool ok)
{
    pthread_mutex_lock(&x->mu);
    resil_sess_set_frozen(x, false);
    x->detached = false;
    x->busy = 0;
    x->abort_init = false;
    if (ok) {
        x->resumes++;
        x->detached_ns = 0;
        x->suspect_ns = 0;
    }
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

/* The session is lost: the program gets ECONNRESET, once, on the old
 * (reset) connection put back on its fd. */
/* dial(): the peer's process has ended, its reset was its end */
static const char peer_ended[] =
    "the peer's resume listener refused the connection (its process has "
    "ended)";

static void lose(struct resil_sock *s, struct resil_sess *x, const char *why)
{
    char a[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN], w[160];
    pthread_mutex_lock(&s->mu);
    resil_ip_format(&s->cur_ip, s->peer_port, a, sizeof(a));
    resil_ip_format(&s->peer_ip, s->peer_port, dst, sizeof(dst));
    pthread_mutex_unlock(&s->mu);
    /* the peer no longer has the session (its program closed or reset
     * the connection, or exited): what plain TCP's reset says too. Our
     * own program closed it (during the resume): nothing to tell */
    if (resil_sock_closed(s)) {
        rdebug("fd %d: session with %s ended: the program closed it", s->fd,
               a);
    } else {
        if (why == peer_ended ||
            strstr(why, resil_refuse_str(RESIL_REFUSE_UNKNOWN)) != NULL)
            rinfo("fd %d: session with %s ended: the peer no longer has it "
                  "(%s); the program gets ECONNRESET", s->fd, a, why);
        else
            rwarn("fd %d: session with %s lost: %s; the program gets "
                  "ECONNRESET", s->fd, a, why);
        resil_event("resume_failed", s->fd,
                    "\"dst\":\"%s\",\"peer\":\"%s\",\"why\":\"%s\"", dst,
                    a, resil_json_str(why, w, sizeof(w)));
    }
    resil_sess_set_state(x, RESIL_SESS_BROKEN);
    pthread_mutex_lock(&s->mu);
    if (x->old_fd >= 0) {
        resil_swap_in(s, resil_fds_take(&x->old_fd));
    } else if (!x->detached && resil_sock_is_ours(s)) {
        /* not frozen (it could not be resumed): the connection is still
         * on the fd, and the peer gives its end up too; reset it, so that
         * a read or write no hook sees (stdio) meets the error as well */
        struct sockaddr unspec = {.sa_family = AF_UNSPEC};
        real.connect(s->fd, &unspec, sizeof(unspec));
    }
    resil_conn_hold_error(s, ECONNRESET);
    pthread_mutex_unlock(&s->mu);
    thaw(x, false);
}

/* Put the resumed connection on the program's fd: replay what the peer
 * lacks, its FIN again if our program had sent one, then the swap. */
static resil_status_t switch_over(struct resil_sock *s, struct resil_sess *x,
                                  int *fdp, bool init, uint64_t r_peer,
                                  size_t sent, size_t got, uint64_t deadline)
{
    const struct resil_config *cfg = resil_config_get();
    int fd = *fdp, rep = -1;
    struct iovec iov[2];
    int n = 0;
    resil_status_t st;

    (void)deadline;
    if (r_peer < x->w &&
        resil_ring_spans(&x->ring, r_peer, x->w, iov, &n) != RESIL_OK)
        return RESIL_ERANGE;
    /* the replay goes out on a duplicate of ours: the program may close
     * its fd meanwhile */
    if (resil_fds_dup(&rep, fd, RESIL_FD_SOCK) != RESIL_OK)
        return RESIL_ESYS;
    x->kbase_out = sent;
    x->kbase_in = got;
    x->syn = init; /* the initiator opened the new connection */
    x->pos_out_base = r_peer;
    x->pos_in_base = r_total(x);
    pthread_mutex_lock(&s->mu);
    st = resil_swap_in(s, resil_fds_take(fdp));
    pthread_mutex_unlock(&s->mu);
    if (st != RESIL_OK) {
        resil_fds_close(&rep);
        return st;
    }
    resil_fds_close(&x->old_fd);
    /* bytes drained from the old connection: an epoll loop gets an event
     * for them although the new one holds none (session_io.h) */
    pthread_mutex_lock(&x->rmu);
    resil_sess_kick(s);
    pthread_mutex_unlock(&x->rmu);
    /* readers go on at once (the peer's replay may need them to read
     * ours: both sides replay at the same time); writers wait until the
     * replay is out, so that nothing is reordered */
    pthread_mutex_lock(&x->mu);
    __atomic_store_n(&x->gen, x->gen + 1, __ATOMIC_RELEASE); /* gen_now */
    atomic_store(&x->replaying, true);
    resil_sess_set_frozen(x, false);
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    deadline = resil_now_ns() + (uint64_t)cfg->session_linger_ms * RESIL_MS;
    for (int i = 0; i < n && st == RESIL_OK; i++)
        st = write_all(rep, iov[i].iov_base, iov[i].iov_len, deadline);
    if (st == RESIL_OK && x->fin_out)
        real.shutdown(rep, SHUT_WR);
    resil_fds_close(&rep);
    pthread_mutex_lock(&x->mu);
    atomic_store(&x->replaying, false);
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return st;
}

/* What a resume did, for its log line and event. */
struct outcome {
    bool init;            /* we asked (initiator) */
    struct resil_ip old;  /* the peer's address before */
    uint64_t out, in;     /* bytes replayed to the peer, and by it */
    uint64_t stash;       /* bytes carried over from the old queue */
    uint64_t t0;          /* suspicion (ours), else the RESUME's arrival */
};

static uint64_t minus(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static void resumed(struct resil_sock *s, const struct outcome *o)
{
    char was[RESIL_ADDRSTRLEN], now[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN];
    double ms = (double)(resil_now_ns() - o->t0) / 1e6;

    pthread_mutex_lock(&s->mu);
    resil_ip_format(&o->old, s->peer_port, was, sizeof(was));
    resil_ip_format(&s->cur_ip, s->peer_port, now, sizeof(now));
    resil_ip_format(&s->peer_ip, s->peer_port, dst, sizeof(dst));
    pthread_mutex_unlock(&s->mu);
    /* the one line of a resume at info level */
    rinfo("fd %d: session with %s resumed over %s, %.1f ms after %s: %llu "
          "bytes replayed to the peer, %llu by it, %llu carried over", s->fd,
          was, now, ms, o->init ? "the path was suspected"
                                : "the peer's RESUME came",
          (unsigned long long)o->out, (unsigned long long)o->in,
          (unsigned long long)o->stash);
    resil_event("resume", s->fd,
                "\"dst\":\"%s\",\"peer\":\"%s\",\"old\":\"%s\",\"new\":\"%s\","
                "\"initiator\":%s,\"replayed_out\":%llu,\"replayed_in\":%llu,"
                "\"carried\":%llu,\"ms\":%.3f,\"since\":\"%s\"",
                dst, now, was, now, o->init ? "true" : "false",
                (unsigned long long)o->out, (unsigned long long)o->in,
                (unsigned long long)o->stash, ms,
                o->init ? "suspicion" : "resume_request");
}

/* ---- the initiator ---- */

static bool tcp_closed(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    /* include/net/tcp_states.h: TCP_CLOSE is 7 */
    return real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
           ti.tcpi_state == 7;
}

/* A connection to the peer's resume listener: every known address of the
 * peer at once, the first to connect wins. Returns a registry-owned fd in
 * *out (pinned by the caller's pins), RESIL_EAGAIN, or RESIL_EREFUSED when
 * an address refused it: the peer's host answers there and no listener
 * holds the port, so its process has ended (the listener lives as long as
 * the process; routers do not send port unreachable). Its RST on our
 * connection was the peer's end, not a path's: the program gets
 * ECONNRESET at once, as without libresil, not after the linger time. */
static resil_status_t dial(struct resil_sock *s, struct resil_sess *x,
                           int *out, atomic_int *pins)
{
    struct resil_ip cand[RESIL_WIRE_MAX_ADDR + 1];
    int fds[RESIL_WIRE_MAX_ADDR + 1], n = 0, win = -1;
    bool refused = false;
    struct pollfd p[RESIL_WIRE_MAX_ADDR + 1];
    uint64_t deadline = resil_now_ns() + CONNECT_MS * RESIL_MS;

    cand[n++] = s->cur_ip;
    for (int i = 0; i < x->npeer; i++) {
        bool dup = false;
        for (int k = 0; k < n; k++)
            dup |= resil_ip_equal(&cand[k], &x->peer[i]);
        if (!dup)
            cand[n++] = x->peer[i];
    }
    for (int i = 0; i < n; i++) {
        struct sockaddr_storage sa;
        socklen_t len = resil_ip_to_sa(&cand[i], x->peer_port,
                                       cand[i].family, &sa);
        if (resil_fds_socket(&fds[i], cand[i].family,
                             SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                             RESIL_FD_SOCK, pins) != RESIL_OK)
            continue;
        if (real.connect(fds[i], (struct sockaddr *)&sa, len) < 0 &&
            errno != EINPROGRESS) {
            refused |= errno == ECONNREFUSED;
            resil_fds_release(&fds[i]);
        }
    }
    while (win < 0 && !refused && left_ms(deadline) > 0) {
        int k = 0, map[RESIL_WIRE_MAX_ADDR + 1];
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0) {
                p[k] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
                map[k++] = i;
            }
        if (k == 0 || real.poll(p, (nfds_t)k, left_ms(deadline)) <= 0)
            break;
        for (int j = 0; j < k && win < 0; j++) {
            int err = 0;
            socklen_t l = sizeof(err);
            if (!p[j].revents)
                continue;
            real.getsockopt(p[j].fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err == 0)
                win = map[j];
            else
                resil_fds_release(&fds[map[j]]);
            refused |= err == ECONNREFUSED;
        }
    }
    for (int i = 0; i < n; i++)
        if (i != win)
            resil_fds_release(&fds[i]);
    if (win < 0)
        return refused ? RESIL_EREFUSED : RESIL_EAGAIN;
    resil_fds_transfer(&fds[win], out);
    pthread_mutex_lock(&s->mu);
    s->cur_ip = cand[win];
    pthread_mutex_unlock(&s->mu);
    return RESIL_OK;
}

/* What lib/resume.c checks a RESUME or RESUMED against: x's id, role, MAC
 * key and the last counter its peer used (x->mu held by a responder). */
static void view_of(const struct resil_sess *x, struct resil_resume_view *v)
{
    memset(v, 0, sizeof(*v));
    memcpy(v->id, x->keys.id, sizeof(v->id));
    v->role = x->role;
    v->k_mac = x->keys.k_mac;
    v->peer_counter = x->peer_counter;
    v->resumable = true;
}

/* One try: RESUME on a new connection, RESUMED back. RESIL_OK: resumed;
 * RESIL_EAGAIN: try again; else the session is lost (*why). */
static resil_status_t try_resume(struct resil_sock *s, struct resil_sess *x,
                                 atomic_int *pins, uint64_t t0,
                                 const char **why)
{
    uint8_t req[RESIL_WIRE_MAX_LEN], ans[RESIL_WIRE_MAX_LEN];
    uint8_t tail[RESIL_WIRE_TAIL_LEN], nonce[RESIL_WIRE_NONCE_LEN];
    struct resil_resume_view v;
    struct resil_resume_verdict d;
    struct resil_wire_err werr = {0};
    struct resil_msg m;
    struct outcome o;
    size_t rlen, alen;
    uint64_t deadline;
    int fd = -1;
    resil_status_t st;

    pthread_mutex_lock(&s->mu);
    o.old = s->cur_ip;
    pthread_mutex_unlock(&s->mu);
    st = dial(s, x, &fd, pins);
    if (st == RESIL_EREFUSED) {
        *why = peer_ended;
        return RESIL_EREFUSED;
    }
    if (st != RESIL_OK) {
        rdebug("fd %d: resume: no connection to the peer's listener", s->fd);
        return RESIL_EAGAIN;
    }
    rdebug("fd %d: resume: connected (fd %d)", s->fd, fd);
    pthread_mutex_lock(&x->mu);
    if (x->abort_init) {
        /* the client's own RESUME came in and wins */
        pthread_mutex_unlock(&x->mu);
        resil_fds_release(&fd);
        *why = NULL;
        return RESIL_ECANCELED;
    }
    pthread_mutex_unlock(&x->mu);
    if (detach(s, x) == RESIL_ENOENT) {
        /* the program closed the socket: the session ended with it */
        resil_fds_release(&fd);
        *why = NULL;
        return RESIL_ECANCELED;
    }
    if (!x->resumable) {
        resil_fds_release(&fd);
        *why = x->why_not;
        return RESIL_EREFUSED;
    }
    view_of(x, &v);
    v.own_attempt = true;
    v.ring = &x->ring;
    tail_of(x, tail);
    resil_session_random(nonce, sizeof(nonce));
    st = resil_resume_request(&v, ++x->counter, r_total(x), tail,
                              x->fin_in ? RESIL_RESUME_F_FIN : 0, nonce, req,
                              sizeof(req), &rlen);
    deadline = resil_now_ns() + EXCHANGE_MS * RESIL_MS;
    if (st == RESIL_OK) {
        trace_msg("RESUME sent", fd, req, rlen);
        st = write_all(fd, req, rlen, deadline);
    }
    if (st == RESIL_OK)
        st = read_msg(fd, ans, &alen, deadline);
    if (st != RESIL_OK) {
        rdebug("fd %d: resume: no answer (%s)", s->fd, resil_strerror(st));
        resil_fds_release(&fd);
        return RESIL_EAGAIN; /* the new path died too, or no answer */
    }
    st = resil_wire_decode(ans, alen, &m, &werr);
    if (st == RESIL_OK && m.type == RESIL_MSG_REFUSE) {
        resil_fds_release(&fd);
        if (m.u.refuse.reason == RESIL_REFUSE_BUSY) {
            /* the peer resumes it itself (the client wins): its RESUME
             * reaches our listener */
            *why = NULL;
            return RESIL_ECANCELED;
        }
        *why = resil_refuse_str(m.u.refuse.reason);
        return RESIL_EREFUSED;
    }
    if (st != RESIL_OK ||
        resil_resume_check(&v, req, rlen, ans, alen, &m, &d) != RESIL_OK ||
        d.refuse != RESIL_REFUSE_NONE) {
        resil_fds_release(&fd);
        *why = st != RESIL_OK ? werr.why : d.why;
        return RESIL_EREFUSED;
    }
    o.init = true;
    o.out = minus(x->w, d.from);
    o.in = minus(m.u.resumed.w, r_total(x));
    o.stash = x->stash_len - x->stash_off;
    o.t0 = t0;
    st = switch_over(s, x, &fd, true, d.from, rlen, alen, deadline);
    if (st != RESIL_OK) {
        resil_fds_release(&fd);
        *why = "cannot replay onto the new connection";
        return RESIL_EREFUSED;
    }
    resumed(s, &o);
    return RESIL_OK;
}

/* The old connection answers again (a suspicion that was wrong, or a
 * path that healed): nothing in flight waits for an RTO any more. */
static bool recovered(int fd, uint64_t since)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    uint64_t now = resil_now_ns();
    memset(&ti, 0, sizeof(ti));
    /* an ACK came after the suspicion (since). Not "no backoff": a path is
     * also suspected before its first RTO fires (monitor.c: bytes in
     * flight an RTO long), and then backoff 0 proved nothing: three
     * resumes in a row were called off on a blackholed path, 455 ms to
     * fail over instead of ~250. include/net/tcp_states.h:
     * TCP_ESTABLISHED is 1 */
    return real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
           ti.tcpi_state == 1 &&
           (uint64_t)ti.tcpi_last_ack_recv * RESIL_MS < now - since;
}

static void *initiator(void *arg)
{
    run_initiator(arg);
    worker_done(true);
    return NULL;
}

/* One resume, initiated here (s referenced for it: dropped at the end). */
static void run_initiator(struct resil_sock *s)
{
    struct resil_sess *x = s->sess;
    const struct resil_config *cfg = resil_config_get();
    atomic_int pins = 1; /* our descriptors stay put while we run */
    uint64_t t0 = resil_now_ns(), deadline;
    const char *why = "no answer from the peer within the linger time";
    resil_status_t st = RESIL_EAGAIN;

    resil_in_shim = 1;
    /* the linger time counts from the request, not from this start (a
     * resume may have waited its turn in the queue): it never outlives the
     * program's own wait for it (resil_resume_wait) */
    pthread_mutex_lock(&x->mu);
    deadline = x->init_ns + (uint64_t)cfg->session_linger_ms * RESIL_MS;
    pthread_mutex_unlock(&x->mu);
    if (x->peer_port == 0) {
        st = RESIL_EREFUSED;
        why = "the peer announced no resume listener";
    }
    /* a connection already dead (a data call met its error) is put aside
     * at once, so that event loops sleep on a parked socket instead of
     * spinning on the dead one's error; a suspected one stays on the fd
     * until its replacement is connected (make before break) */
    if (st == RESIL_EAGAIN && tcp_closed(s->fd) &&
        detach(s, x) == RESIL_ENOENT)
        st = RESIL_ECANCELED; /* closed by the program meanwhile */
    while (st == RESIL_EAGAIN && resil_now_ns() < deadline) {
        if (resil_sock_closed(s)) {
            /* the program closed it: nothing left to resume */
            st = RESIL_ECANCELED;
            break;
        }
        if (!x->detached && recovered(s->fd, t0)) {
            /* the old path carries bytes again: leave it be */
            st = RESIL_ECANCELED;
            rinfo("fd %d: session path answers again; no resume", s->fd);
            break;
        }
        st = try_resume(s, x, &pins, t0, &why);
        if (st == RESIL_EAGAIN) {
            struct timespec d = {0, RETRY_MS * 1000000L};
            nanosleep(&d, NULL);
        }
    }
    if (st == RESIL_ECANCELED) {
        /* the peer's own resume wins (its RESUME reaches our listener, and
         * the responder takes over from here), or nothing to do: the
         * connection lives on */
        pthread_mutex_lock(&x->mu);
        if (x->busy == RESIL_RESUME_INIT)
            x->busy = 0;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
    } else if (st != RESIL_OK && !x->detached && !tcp_closed(s->fd)) {
        /* never kill a connection that is still alive for a resume that
         * cannot be made: TCP and the monitor's own bounds go on */
        rinfo("fd %d: session cannot be resumed (%s); the connection goes "
              "on as it is", s->fd, why ? why : "refused");
        pthread_mutex_lock(&x->mu);
        x->busy = 0;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
    } else if (st != RESIL_OK) {
        detach(s, x);
        lose(s, x, why ? why : "refused");
    } else {
        thaw(x, true);
    }
    atomic_fetch_sub(&pins, 1);
    resil_sock_unref(s);
}

void resil_resume_start(struct resil_sock *s, const char *why)
{
    struct resil_sess *x = s->sess;

    bool tell = false;

    if (x == NULL || atomic_load(&x->state) != RESIL_SESS_UP)
        return;
    pthread_mutex_lock(&x->mu);
    if (x->suspect_ns == 0)
        x->suspect_ns = resil_now_ns();
    if (!x->resumable && !x->told) {
        /* once: what an operator needs to know of a session that is not
         * resumed (the connection goes on as TCP would, to its end) */
        x->told = tell = true;
    }
    if (x->busy || !x->resumable) {
        pthread_mutex_unlock(&x->mu);
        if (tell) {
            char a[RESIL_ADDRSTRLEN], dst[RESIL_ADDRSTRLEN], w[160];
            pthread_mutex_lock(&s->mu);
            resil_ip_format(&s->cur_ip, s->peer_port, a, sizeof(a));
            resil_ip_format(&s->peer_ip, s->peer_port, dst, sizeof(dst));
            pthread_mutex_unlock(&s->mu);
            rwarn("fd %d: session with %s suspected dead (%s) but cannot be "
                  "resumed: %s", s->fd, a, why, x->why_not);
            resil_event("resume_failed", s->fd,
                        "\"dst\":\"%s\",\"peer\":\"%s\",\"why\":\"%s\"", dst,
                        a, resil_json_str(x->why_not, w, sizeof(w)));
        }
        return;
    }
    x->busy = RESIL_RESUME_INIT;
    x->init_ns = resil_now_ns();
    pthread_mutex_unlock(&x->mu);
    rdebug("fd %d: session path suspected dead (%s); resuming", s->fd, why);
    /* every worker at work (a burst: all the sessions of a server whose
     * uplink died): queued for the next one, never given up */
    if (!start_init(s)) {
        pthread_mutex_lock(&x->mu);
        x->busy = 0;
        pthread_mutex_unlock(&x->mu);
        /* once per process: a burst of failures (every peer of a busy
         * server resetting at once) would flood the log */
        static atomic_bool told;
        if (!atomic_exchange(&told, true))
            rwarn("fd %d: cannot start a resume thread (%s); the program "
                  "gets its connection's own error (further cases at debug "
                  "level)", s->fd, strerror(errno));
        else
            rdebug("fd %d: cannot start a resume thread", s->fd);
    }
}

/* ---- the responder ---- */

/* A connection at the resume listener. The acceptor reads its first
 * message itself (read_some), and a worker takes only a whole one. */
struct inbound {
    int fd;            /* registry-owned */
    atomic_int pins;
    uint64_t deadline; /* not whole by then: closed */
    size_t got, want;  /* bytes of msg read, expected (0: header first) */
    uint8_t msg[RESIL_WIRE_MAX_LEN];
};

static void *responder(void *arg)
{
    struct inbound *in = arg;
    uint8_t req[RESIL_WIRE_MAX_LEN], ans[RESIL_WIRE_MAX_LEN];
    uint8_t tail[RESIL_WIRE_TAIL_LEN];
    struct resil_wire_err werr = {0};
    struct resil_resume_view v;
    struct resil_resume_verdict d;
    struct resil_msg m;
    struct resil_sock *s = NULL;
    struct resil_sess *x = NULL;
    uint64_t t0 = resil_now_ns(), deadline = t0 + EXCHANGE_MS * RESIL_MS;
    size_t rlen, alen;
    bool ours = false, have_nip = false;
    resil_status_t st;
    struct outcome o;
    struct resil_ip nip;

    resil_in_shim = 1;
    rdebug("resume listener: connection (fd %d)", in->fd);
    rlen = in->got;
    memcpy(req, in->msg, rlen);
    trace_msg("message received", in->fd, req, rlen);
    if (resil_wire_decode(req, rlen, &m, &werr) != RESIL_OK ||
        m.type != RESIL_MSG_RESUME) {
        rdebug("resume listener: a connection that is not a RESUME (%s)",
               werr.why ? werr.why : "short or not a RESUME");
        goto out;
    }
    /* our role is the other one; a reflected RESUME of our own finds
     * nothing (lib/resume.c) */
    resil_sess_index_lock();
    x = resil_sess_find(m.u.resume.id, m.u.resume.role == RESIL_ROLE_CLIENT
                                           ? RESIL_ROLE_SERVER
                                           : RESIL_ROLE_CLIENT);
    if (x) {
        s = x->sock;
        int r = atomic_load(&s->refs);
        while (r > 0 && !atomic_compare_exchange_weak(&s->refs, &r, r + 1))
            ;
        if (r <= 0)
            s = NULL, x = NULL;
    }
    resil_sess_index_unlock();
    if (x != NULL && resil_sock_closed(s)) {
        /* closed by the program after the lookup (resil_sess_closing
         * takes it out of the index first) */
        resil_sock_unref(s);
        s = NULL;
        x = NULL;
    }
    if (x == NULL) {
        refuse(in->fd, RESIL_REFUSE_UNKNOWN);
        goto out;
    }
    /* authentic and fresh before anything is touched: a forged, replayed
     * or stale RESUME must not freeze (and reset) a live session */
    pthread_mutex_lock(&x->mu);
    view_of(x, &v);
    st = resil_resume_decide(&v, req, rlen, &m, &d);
    if (st == RESIL_EINVAL || !d.take_counter) {
        pthread_mutex_unlock(&x->mu);
        rinfo("fd %d: a RESUME refused: %s", s->fd, d.why);
        refuse(in->fd, (uint8_t)d.refuse);
        goto out;
    }
    /* its counter is spent whatever follows (doc/session.md, "Counter");
     * the decision below compares with the one before */
    x->peer_counter = d.counter;
    if (x->busy == RESIL_RESUME_INIT && x->role == RESIL_ROLE_SERVER) {
        /* the client's RESUME wins over our own attempt: wait for it to
         * give up (it looks at abort_init between its steps) */
        x->abort_init = true;
        while (x->busy == RESIL_RESUME_INIT) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&x->cv, &x->mu, &ts) == ETIMEDOUT)
                break;
        }
    }
    if (x->busy != 0) {
        /* another resume of this session runs (ours, past the point
         * where it gives up, or another RESUME being answered): it
         * finishes; two would both swap the fd */
        x->abort_init = false;
        pthread_mutex_unlock(&x->mu);
        rinfo("fd %d: a RESUME refused: another resume of the session runs",
              s->fd);
        refuse(in->fd, RESIL_REFUSE_BUSY);
        goto out;
    }
    x->busy = RESIL_RESUME_RESP;
    ours = true;
    v.resumable = x->resumable;
    v.ring = &x->ring;
    pthread_mutex_unlock(&x->mu);
    if (x->resumable && detach(s, x) == RESIL_ENOENT) {
        /* our program closed the socket meanwhile: the session is over,
         * as the reset its peer met says */
        rdebug("fd %d: a RESUME refused: the program closed the session",
               s->fd);
        refuse(in->fd, RESIL_REFUSE_UNKNOWN);
        goto out;
    }
    v.resumable = v.resumable && x->resumable;
    st = resil_resume_decide(&v, req, rlen, &m, &d);
    if (st != RESIL_OK) {
        const char *why = st == RESIL_EINVAL ? "not a RESUME" : d.why;
        rinfo("fd %d: RESUME refused: %s", s->fd, why);
        refuse(in->fd, st == RESIL_EINVAL ? RESIL_REFUSE_UNKNOWN
                                          : (uint8_t)d.refuse);
        /* the peer's resume of the session failed for good (and ours is
         * frozen, its connection reset) */
        lose(s, x, why);
        ours = false;
        goto out;
    }
    o.init = false;
    o.out = minus(x->w, d.from);
    o.in = minus(m.u.resume.w, r_total(x));
    o.stash = x->stash_len - x->stash_off;
    pthread_mutex_lock(&x->mu);
    /* our own suspicion, when we had one: else the RESUME's arrival */
    o.t0 = x->suspect_ns ? x->suspect_ns : t0;
    pthread_mutex_unlock(&x->mu);
    pthread_mutex_lock(&s->mu);
    o.old = s->cur_ip;
    pthread_mutex_unlock(&s->mu);
    {
        /* the peer's address on the new connection, ours from now on */
        struct sockaddr_storage ss;
        socklen_t l = sizeof(ss);
        uint16_t port;
        if (real.getpeername(in->fd, (struct sockaddr *)&ss, &l) == 0 &&
            resil_ip_from_sa((struct sockaddr *)&ss, l, &nip, &port))
            have_nip = true;
    }
    tail_of(x, tail);
    if (resil_resume_answer(&v, req, rlen, r_total(x), tail,
                            x->fin_in ? RESIL_RESUME_F_FIN : 0, ans,
                            sizeof(ans), &alen) != RESIL_OK ||
        write_all(in->fd, ans, alen, deadline) != RESIL_OK ||
        switch_over(s, x, &in->fd, false, d.from, alen, rlen, deadline) !=
            RESIL_OK) {
        lose(s, x, "cannot answer the RESUME");
        ours = false;
        goto out;
    }
    if (have_nip) {
        pthread_mutex_lock(&s->mu);
        s->cur_ip = nip;
        pthread_mutex_unlock(&s->mu);
    }
    resumed(s, &o);
    thaw(x, true);
    ours = false;
out:
    if (ours) {
        pthread_mutex_lock(&x->mu);
        x->busy = 0;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
    }
    resil_fds_release(&in->fd);
    atomic_fetch_sub(&in->pins, 1);
    resil_sock_unref(s);
    free(in);
    worker_done(false);
    return NULL;
}

/* ---- the listener ---- */

/* Connections that have not sent a whole message yet, read by the
 * acceptor without waiting on any. A worker used to read each one itself,
 * waiting up to EXCHANGE_MS: 32 silent connections, renewed every two
 * seconds, then held every worker, and every real RESUME was closed
 * unanswered (its initiator retried until its linger ran out). Now
 * silent ones hold a slot here at most until their deadline, and a new
 * one pushes the oldest out: a real RESUME, which comes with its
 * connection, is whole one round trip after it and goes to a worker. */
#define PENDING 32

/* Read what has come of in's message, never past its end (the bytes after
 * a RESUME are the session's). Returns 1 whole, 0 not yet, -1 closed,
 * failed or not a message. */
static int read_some(struct inbound *in)
{
    for (;;) {
        size_t want = in->want ? in->want : RESIL_WIRE_HDR_LEN;
        ssize_t n;

        if (in->got == want && in->want)
            return 1;
        n = real.recv(in->fd, in->msg + in->got, want - in->got,
                      MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0)
            return -1;
        in->got += (size_t)n;
        if (in->got == RESIL_WIRE_HDR_LEN &&
            (in->want = msg_len(in->msg)) == 0)
            return -1;
    }
}

static void drop(struct inbound *in)
{
    resil_fds_release(&in->fd);
    free(in);
}

/* Whole: to a worker (closed when all are busy: a flood of messages costs
 * bounded threads, never a live session). Not a message: closed. */
static void settle(struct inbound *in, int r)
{
    if (r < 0 || !spawn(responder, in))
        drop(in);
}

/* Take the listener's new connections. Returns false when it failed for
 * good. */
static bool take_new(struct inbound **pend, int *np, uint64_t now)
{
    for (int k = 0; k < 64; k++) {
        struct inbound *in;
        resil_status_t st = RESIL_ESYS;
        int raw, r;

        /* made low, moved high (fds.h): a resume of a session whose
         * program is opening its next socket meanwhile (a reset close) is
         * the usual case */
        resil_fds_making();
        raw = real.accept4(L.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (raw < 0) {
            resil_fds_made();
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return true;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                struct timespec d = {0, 100000000L};
                nanosleep(&d, NULL);
                return true;
            }
            rwarn("resume listener: accept: %s; resumes toward this "
                  "process stop", strerror(errno));
            return false;
        }
        in = calloc(1, sizeof(*in));
        if (in == NULL) {
            real.close(raw);
            resil_fds_made();
            continue;
        }
        atomic_init(&in->pins, 1);
        in->fd = -1;
        st = resil_fds_own(&in->fd, raw, RESIL_FD_SOCK, &in->pins);
        resil_fds_made();
        if (st != RESIL_OK) {
            free(in);
            continue;
        }
        in->deadline = now + EXCHANGE_MS * RESIL_MS;
        if ((r = read_some(in)) != 0) {
            settle(in, r);
            continue;
        }
        if (*np == PENDING) {
            /* the oldest goes: it had the longest to speak */
            int o = 0;
            for (int i = 1; i < *np; i++)
                if (pend[i]->deadline < pend[o]->deadline)
                    o = i;
            drop(pend[o]);
            pend[o] = pend[--*np];
        }
        pend[(*np)++] = in;
    }
    return true;
}

static void *acceptor(void *arg)
{
    struct inbound *pend[PENDING];
    struct pollfd p[PENDING + 1];
    int np = 0;

    (void)arg;
    resil_in_shim = 1;
    for (;;) {
        uint64_t now = resil_now_ns(), next = UINT64_MAX;
        int rc;

        for (int i = 0; i < np;) {
            if (pend[i]->deadline <= now) {
                drop(pend[i]);
                pend[i] = pend[--np];
                continue;
            }
            if (pend[i]->deadline < next)
                next = pend[i]->deadline;
            i++;
        }
        p[0] = (struct pollfd){.fd = L.lfd, .events = POLLIN};
        for (int i = 0; i < np; i++)
            p[i + 1] = (struct pollfd){.fd = pend[i]->fd, .events = POLLIN};
        rc = real.poll(p, (nfds_t)np + 1,
                       next == UINT64_MAX ? -1 : left_ms(next));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            rwarn("resume listener: poll: %s; resumes toward this process "
                  "stop", strerror(errno));
            break;
        }
        /* downwards: the one swapped into slot i was looked at already */
        for (int i = np - 1; i >= 0; i--) {
            struct inbound *in = pend[i];
            int r;
            if (p[i + 1].revents == 0 || (r = read_some(in)) == 0)
                continue;
            pend[i] = pend[--np];
            settle(in, r);
        }
        if (p[0].revents & (POLLERR | POLLNVAL)) {
            rwarn("resume listener: its socket failed; resumes toward "
                  "this process stop");
            break;
        }
        if ((p[0].revents & POLLIN) && !take_new(pend, &np, resil_now_ns()))
            break;
    }
    while (np > 0)
        drop(pend[--np]);
    atomic_fetch_sub(&L.pins, 1);
    return NULL;
}

uint16_t resil_resumer_port(void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    uint16_t port;
    int raw, off = 0, rc;
    const char *what = "?";

    pthread_mutex_lock(&L.mu);
    if (L.tried) {
        port = L.port;
        pthread_mutex_unlock(&L.mu);
        return port;
    }
    L.tried = true;
    memset(&ss, 0, sizeof(ss));
    /* one listener for both families where IPv6 is there */
    raw = real.socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (raw >= 0) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        real.setsockopt(raw, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
        s6->sin6_family = AF_INET6;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        raw = real.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        s4->sin_family = AF_INET;
        len = sizeof(*s4);
    }
    if (raw < 0) {
        what = "socket";
        goto fail;
    }
    if (resil_fds_own(&L.lfd, raw, RESIL_FD_SOCK, &L.pins) != RESIL_OK) {
        what = "descriptor";
        goto fail;
    }
    if (real.bind(L.lfd, (struct sockaddr *)&ss, len) < 0 ||
        /* a full accept queue drops SYNs, and a resume's connect then
         * waits for its SYN's retransmission (1 s): the kernel's ceiling
         * (net.core.somaxconn), so that a burst of connections (a flood)
         * does not delay a real resume; each one is taken off the queue
         * at once (a worker, or closed when all are busy) */
        real.listen(L.lfd, SOMAXCONN) < 0 ||
        /* the acceptor takes what is queued, never waits in accept */
        real.fcntl(L.lfd, F_SETFL, O_NONBLOCK) < 0 ||
        real.getsockname(L.lfd, (struct sockaddr *)&ss, &len) < 0) {
        what = "bind/listen";
        goto fail;
    }
    port = ntohs(ss.ss_family == AF_INET6
                     ? ((struct sockaddr_in6 *)&ss)->sin6_port
                     : ((struct sockaddr_in *)&ss)->sin_port);
    atomic_store(&L.pins, 1); /* the acceptor's, for its lifetime */
    if ((rc = resil_thread_start("resil-listen", acceptor, NULL)) != 0) {
        atomic_store(&L.pins, 0);
        port = 0;
        errno = rc;
        what = "thread";
    }
    if (port == 0)
        goto fail;
    L.port = port;
    pthread_mutex_unlock(&L.mu);
    rdebug("resume listener on port %u", port);
    return port;
fail:
    rwarn("no resume listener (%s: %s): sessions of this process cannot be "
          "resumed from the other end", what, strerror(errno));
    resil_fds_close(&L.lfd);
    pthread_mutex_unlock(&L.mu);
    return 0;
}

void resil_resumer_atfork_child(void)
{
    /* the parent's listener, its acceptor and its workers stay there: the
     * child makes its own when it needs one */
    pthread_mutex_init(&L.mu, NULL);
    atomic_store(&L.pins, 0);
    resil_fds_close(&L.lfd);
    L.tried = false;
    L.port = 0;
    L.workers = 0;
    L.inits = 0;
    /* the parent's workers resume those: here nobody will */
    while (L.queue != NULL) {
        struct resil_sess *x = L.queue;
        L.queue = x->init_next;
        x->busy = 0;
        resil_sock_unref(x->sock);
    }
    L.queue_tail = NULL;
}

/* ---- the program's calls while a session is away ---- */

int resil_resume_wait(struct resil_sock *s, bool wait, bool writer,
                      const unsigned *failed_at)
{
    struct resil_sess *x = s->sess;
    const struct resil_config *cfg = resil_config_get();
    int err = 0;

    pthread_mutex_lock(&x->mu);
    if (x->detached_ns == 0)
        x->detached_ns = resil_now_ns();
    for (;;) {
        uint64_t end = x->detached_ns +
                       (uint64_t)cfg->session_linger_ms * RESIL_MS;
        bool moved = !x->frozen && !(writer && x->replaying);
        if (atomic_load(&x->state) == RESIL_SESS_BROKEN) {
            err = ECONNRESET;
            break;
        }
        if (failed_at && x->gen == *failed_at && moved && x->busy == 0) {
            /* the call met its connection's error and no resume runs
             * (none could start: the session is not resumable): the
             * error is the program's */
            err = -1;
            break;
        }
        /* the call again: a reader as soon as the new connection is on
         * the fd, a writer once the replay is out too; a call that met
         * the old connection's error only on a new connection (on the
         * dead one it would meet a false EOF) */
        if (moved && (!failed_at || x->gen != *failed_at)) {
            err = 0;
            break;
        }
        if (!wait) {
            err = EAGAIN;
            break;
        }
        if (resil_now_ns() >= end) {
            err = ECONNRESET;
            break;
        }
        struct timespec ts;
        uint64_t ns;
        clock_gettime(CLOCK_REALTIME, &ts);
        ns = (uint64_t)ts.tv_nsec + 100 * RESIL_MS;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&x->cv, &x->mu, &ts);
    }
    pthread_mutex_unlock(&x->mu);
    return err;
}
