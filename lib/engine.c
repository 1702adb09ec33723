#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "dns.h"
#include "engine.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "monitor.h"
#include "names.h"
#include "swap.h"
#include "sys.h"
#include "table.h"

static struct {
    pthread_mutex_t mu; /* the engine lock: this struct and every client's
                           engine state (races, c-ares) */
    bool running;       /* an engine thread runs in this process */
    unsigned gen;       /* bumped per engine thread started */
    int epfd, wakefd;
    struct resil_watch wake_w;
} E = {.mu = PTHREAD_MUTEX_INITIALIZER, .epfd = -1, .wakefd = -1};

unsigned resil_fork_gen;
static pid_t pid_cache;

pid_t resil_getpid(void)
{
    pid_t p = __atomic_load_n(&pid_cache, __ATOMIC_RELAXED);
    if (p == 0) {
        p = getpid();
        __atomic_store_n(&pid_cache, p, __ATOMIC_RELAXED);
    }
    return p;
}

uint64_t resil_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void resil_engine_lock(void)
{
    pthread_mutex_lock(&E.mu);
}

void resil_engine_unlock(void)
{
    pthread_mutex_unlock(&E.mu);
}

void resil_engine_wake(void)
{
    uint64_t one = 1;
    if (E.wakefd >= 0)
        (void)!real.write(E.wakefd, &one, sizeof(one));
}

static void wake_read(struct resil_watch *w, uint32_t events, uint64_t now)
{
    uint64_t v;
    (void)w;
    (void)events;
    (void)now;
    (void)!real.read(E.wakefd, &v, sizeof(v));
}

static resil_status_t ctl(int op, int fd, uint32_t events,
                          struct resil_watch *w)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (E.epfd < 0)
        return RESIL_ESYS;
    return real.epoll_ctl(E.epfd, op, fd, &ev) == 0 ? RESIL_OK : RESIL_ESYS;
}

resil_status_t resil_engine_add(int fd, uint32_t events, struct resil_watch *w)
{
    return ctl(EPOLL_CTL_ADD, fd, events, w);
}

resil_status_t resil_engine_mod(int fd, uint32_t events, struct resil_watch *w)
{
    return ctl(EPOLL_CTL_MOD, fd, events, w);
}

void resil_engine_del(int fd)
{
    if (E.epfd >= 0)
        real.epoll_ctl(E.epfd, EPOLL_CTL_DEL, fd, NULL);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void *engine_main(void *arg)
{
    unsigned gen = (unsigned)(uintptr_t)arg;
    struct epoll_event evs[64];

    resil_in_shim = 1;
    pthread_mutex_lock(&E.mu);
    for (;;) {
        uint64_t now = resil_now_ns(), wake;
        int timeout, n, epfd;

        if (E.gen != gen) {
            /* a newer engine replaced this one (close_range took our
             * descriptors): leave the state to it */
            break;
        }
        wake = min_u64(resil_conn_tick(now), resil_dns_tick(now));
        epfd = E.epfd;
        pthread_mutex_unlock(&E.mu);
        /* the monitor's system calls (one pair per socket with bytes in
         * flight) run without the engine lock: a close() or a connect()
         * never waits for them */
        wake = min_u64(wake, resil_monitor_tick(now));
        now = resil_now_ns();
        if (wake == UINT64_MAX)
            timeout = -1;
        else if (wake <= now)
            timeout = 0;
        else
            timeout = (int)((wake - now + RESIL_MS - 1) / RESIL_MS);
        n = real.epoll_wait(epfd, evs, 64, timeout);
        int err = errno;
        pthread_mutex_lock(&E.mu);
        if (n < 0 && err != EINTR) {
            /* the program closed our descriptors (close_range): this
             * thread is done; the next need starts a fresh engine */
            rwarn("engine descriptors closed by the program; engine "
                  "thread exits");
            if (E.gen == gen) {
                E.running = false;
                E.epfd = E.wakefd = -1; /* not ours any more */
            }
            break;
        }
        now = resil_now_ns();
        for (int i = 0; i < n; i++) {
            struct resil_watch *w = evs[i].data.ptr;
            w->fn(w, evs[i].events, now);
        }
    }
    pthread_mutex_unlock(&E.mu);
    return NULL;
}

resil_status_t resil_engine_start(void)
{
    sigset_t all, old;
    pthread_t t;
    pthread_attr_t at;
    int rc;

    /* a forked child learns from the atfork handler that it has no
     * engine thread (the child of _Fork(), which runs no handlers, may
     * only call async-signal-safe functions until it execs) */
    if (E.running)
        return RESIL_OK;
    if (E.epfd < 0) {
        E.epfd = epoll_create1(EPOLL_CLOEXEC);
        if (E.epfd >= 0)
            E.epfd = resil_fd_high(E.epfd);
    }
    if (E.wakefd < 0 && E.epfd >= 0) {
        E.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (E.wakefd >= 0) {
            E.wakefd = resil_fd_high(E.wakefd);
            E.wake_w.fn = wake_read;
            if (resil_engine_add(E.wakefd, EPOLLIN, &E.wake_w) != RESIL_OK) {
                real.close(E.wakefd);
                E.wakefd = -1;
            }
        }
    }
    if (E.epfd < 0 || E.wakefd < 0)
        return RESIL_ESYS;
    /* the engine thread must never take a signal meant for the program */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    E.gen++;
    rc = pthread_create(&t, &at, engine_main, (void *)(uintptr_t)E.gen);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        rwarn("cannot start the engine thread: %s", strerror(rc));
        return RESIL_ESYS;
    }
    E.running = true;
    return RESIL_OK;
}

void resil_engine_fds_closed(unsigned first, unsigned last)
{
    resil_log_fds_closed(first, last);
    resil_events_fds_closed(first, last);
    pthread_mutex_lock(&E.mu);
    resil_park_fds_closed(first, last);
    if (resil_fd_in_range(E.epfd, first, last) || resil_fd_in_range(E.wakefd, first, last)) {
        if (E.running)
            rwarn("close_range() closed the engine's descriptors while it "
                  "runs; races in flight will not finish");
        E.epfd = E.wakefd = -1;
        E.running = false;
    }
    pthread_mutex_unlock(&E.mu);
}

void resil_engine_atfork_prepare(void)
{
    /* hold every global lock across fork, in the documented order, so the
     * child never inherits one locked by a thread that does not exist
     * there (socket mutexes of racing sockets are re-made in the child) */
    pthread_mutex_lock(&E.mu);
    resil_table_lock_all();
    resil_health_lock();
    resil_names_lock();
}

static void atfork_release(void)
{
    resil_names_unlock();
    resil_health_unlock();
    resil_table_unlock_all();
}

void resil_engine_atfork_parent(void)
{
    atfork_release();
    pthread_mutex_unlock(&E.mu);
}

/* In the child only the forking thread exists, and it held no socket lock
 * (fork is called from the program, never from inside a hook): any socket
 * lock held now belonged to a thread that is gone. */
static void reinit_sock_locks(struct resil_sock *s, void *arg)
{
    (void)arg;
    pthread_mutex_init(&s->mu, NULL);
    atomic_flag_clear(&s->ep_lock);
}

void resil_engine_atfork_child(void)
{
    /* Only the forking thread exists now: the engine thread, its races and
     * c-ares state stay with the parent. */
    atfork_release();
    resil_fork_gen++;
    __atomic_store_n(&pid_cache, 0, __ATOMIC_RELAXED);
    resil_table_foreach(reinit_sock_locks, NULL);
    pthread_mutex_unlock(&E.mu);
    resil_conn_atfork_child();
    resil_monitor_atfork_child();
    resil_dns_atfork_child();
    E.running = false;
    if (E.epfd >= 0)
        real.close(E.epfd);
    if (E.wakefd >= 0)
        real.close(E.wakefd);
    E.epfd = E.wakefd = -1;
}
