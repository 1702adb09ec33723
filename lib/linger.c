/* libresil: closed session client sockets kept for their WELCOME
 * (linger.h). The list and every entry are the engine lock's. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "config.h"
#include "engine.h"
#include "epoll.h"
#include "fds.h"
#include "linger.h"
#include "log.h"
#include "session.h"
#include "session_io.h"
#include "session_wire.h"
#include "sys.h"
#include "table.h"

struct kept {
    struct resil_watch w; /* first: the engine's event data */
    struct kept *next;
    int fd;               /* ours (fds.h) */
    int want;             /* RESIL_MSG_WELCOME (client) or HELLO (server) */
    uint64_t deadline;
};

static struct kept *kept_list; /* engine lock */
static atomic_int kept_n;      /* clients on it, which exit() waits for:
                                  written under the lock */

static void drop(struct kept *k)
{
    for (struct kept **p = &kept_list; *p; p = &(*p)->next)
        if (*p == k) {
            *p = k->next;
            break;
        }
    if (k->want == RESIL_MSG_WELCOME)
        atomic_fetch_sub(&kept_n, 1);
    resil_engine_del(k->fd);
    resil_fds_close(&k->fd);
    free(k);
}

/* What came on k's socket (edge-triggered: new bytes, EOF, an error):
 * the message read off, then k closed; or wait for the rest of it. */
static void kept_event(struct resil_watch *w, uint32_t events, uint64_t now)
{
    struct kept *k = (struct kept *)w;

    (void)now;
    if (resil_sess_read_off(k->fd, k->want) == RESIL_EAGAIN &&
        !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return; /* nothing yet, or the rest of it is on its way */
    /* read off, or EOF, an error, the peer program's own bytes (the close
     * resets the connection as the program's own would have) */
    drop(k);
}

bool resil_linger_start(struct resil_sock *s, int fd)
{
    int want = s->sess->role == RESIL_ROLE_CLIENT ? RESIL_MSG_WELCOME
                                                  : RESIL_MSG_HELLO;
    struct kept *k;
    struct linger lg = {0};
    socklen_t l = sizeof(lg);
    RESIL_KEEP_ERRNO();

    if (atomic_load(&resil_sess_shares) != s->sess->share ||
        (real.getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &l) == 0 &&
         lg.l_onoff && lg.l_linger == 0))
        return false;
    /* there already: read off, and the close is the plain one; other
     * bytes there: the close resets the connection, as without us */
    if (resil_sess_read_off(fd, want) != RESIL_EAGAIN)
        return false;
    k = calloc(1, sizeof(*k));
    if (k == NULL)
        return false;
    k->w.fn = kept_event;
    k->fd = -1;
    k->want = want;
    k->deadline = resil_now_ns() +
                  (uint64_t)resil_config_get()->session_linger_ms * RESIL_MS;
    resil_engine_lock();
    if (resil_engine_start() != RESIL_OK ||
        resil_fds_dup(&k->fd, fd, RESIL_FD_SOCK) != RESIL_OK) {
        resil_fds_close(&k->fd);
        resil_engine_unlock();
        free(k);
        return false;
    }
    /* the FIN the program's close sends, after its bytes */
    real.shutdown(k->fd, SHUT_WR);
    /* Once in the engine's set, k is the engine thread's to free (an
     * epoll_wait may already hold an event for it): whether the message
     * came meanwhile is asked before the ADD, whose own look at the
     * socket queues an edge for anything since. */
    if (resil_sess_read_off(k->fd, k->want) != RESIL_EAGAIN ||
        resil_engine_add(k->fd, EPOLLIN | EPOLLRDHUP | EPOLLET, &k->w) !=
            RESIL_OK) {
        /* it came meanwhile (or cannot be watched): the close goes on */
        resil_fds_close(&k->fd);
        resil_engine_unlock();
        free(k);
        return true;
    }
    k->next = kept_list;
    kept_list = k;
    if (want == RESIL_MSG_WELCOME)
        atomic_fetch_add(&kept_n, 1);
    resil_engine_unlock();
    /* k is the engine's now: not touched again here */
    resil_epoll_sock_unwatch(s);
    resil_engine_wake(); /* its deadline */
    rdebug("fd %d: closed before the session %s came; kept for it", fd,
           want == RESIL_MSG_WELCOME ? "WELCOME" : "HELLO");
    return true;
}

uint64_t resil_linger_tick(uint64_t now)
{
    uint64_t next = UINT64_MAX;

    for (struct kept *k = kept_list, *nx; k; k = nx) {
        nx = k->next;
        if (k->deadline <= now)
            drop(k);
        else if (k->deadline < next)
            next = k->deadline;
    }
    return next;
}

/* At exit() the process's descriptors close with it, ours too: a kept
 * socket would then meet its WELCOME closed after all. Exit waits for the
 * engine to read them off, as long as LINGER_EXIT_MS at most (a server
 * program that has not made its first data call by then has its
 * connection reset, as before). Not at _exit(), nor on a fatal signal. */
#define LINGER_EXIT_MS 2000

/* Session clients the program leaves open at exit, their WELCOME still to
 * come: exit closes them, and the WELCOME would meet them closed all the
 * same. Their WELCOME is read off on their own descriptors (the program's
 * last FIN is exit's to send: nothing shut here, a thread of the program
 * may still write). At most EXIT_OPEN of them. */
#define EXIT_OPEN 64
struct exit_open {
    struct pollfd p[EXIT_OPEN];
    int n;
};

static void collect(struct resil_sock *s, void *arg)
{
    struct exit_open *o = arg;
    struct resil_sess *x = s->sess;

    if (x != NULL && o->n < EXIT_OPEN && x->role == RESIL_ROLE_CLIENT &&
        atomic_load(&x->state) == RESIL_SESS_HELLO_SENT &&
        atomic_load(&resil_sess_shares) == x->share && !resil_sock_closed(s))
        o->p[o->n++] = (struct pollfd){.fd = s->fd, .events = POLLIN};
}

/* One look at the open ones: those done leave o. */
static void exit_look(struct exit_open *o, int ms)
{
    if (o->n == 0 || real.poll(o->p, (nfds_t)o->n, ms) <= 0)
        return;
    for (int i = 0; i < o->n;) {
        struct resil_sock *s;
        bool done = o->p[i].revents & (POLLERR | POLLHUP | POLLNVAL);

        if (!done && (o->p[i].revents & POLLIN) &&
            (s = resil_sess_sock(o->p[i].fd)) != NULL) {
            /* not under a reading thread of the program */
            if (pthread_mutex_trylock(&s->sess->rmu) == 0) {
                done = resil_sess_read_off(o->p[i].fd, RESIL_MSG_WELCOME) !=
                       RESIL_EAGAIN;
                pthread_mutex_unlock(&s->sess->rmu);
            }
            resil_sock_unref(s);
        }
        if (done)
            o->p[i] = o->p[--o->n];
        else
            i++;
    }
}

__attribute__((destructor)) static void linger_exit(void)
{
    uint64_t deadline = resil_now_ns() + LINGER_EXIT_MS * RESIL_MS;
    struct exit_open o = {.n = 0};
    int nap_ms = 2;
    bool kept;

    if (atomic_load(&kept_n) == 0 && atomic_load(&resil_sess_count) == 0)
        return;
    resil_in_shim++; /* our calls go to the kernel as they are */
    if (atomic_load(&resil_sess_count) > 0)
        resil_table_foreach(collect, &o);
    for (;;) {
        /* no lock: exit() may come from a thread, or a handler, that holds
         * the engine's; the engine thread drops what it read off */
        kept = atomic_load(&kept_n) > 0 && resil_engine_running();
        if ((!kept && o.n == 0) || resil_now_ns() >= deadline)
            break;
        if (o.n > 0) {
            exit_look(&o, nap_ms);
        } else {
            struct timespec nap = {0, nap_ms * 1000000L};
            nanosleep(&nap, NULL);
        }
    }
    resil_in_shim--;
}

void resil_linger_atfork_child(void)
{
    while (kept_list != NULL) {
        struct kept *k = kept_list;
        kept_list = k->next;
        /* the engine's epoll set is the parent's: no DEL */
        resil_fds_close(&k->fd);
        free(k);
    }
    atomic_store(&kept_n, 0);
}
