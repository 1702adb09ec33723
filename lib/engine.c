#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "dns.h"
#include "engine.h"
#include "epoll.h"
#include "events.h"
#include "fds.h"
#include "health.h"
#include "linger.h"
#include "path.h"
#include "session.h"
#include "log.h"
#include "monitor.h"
#include "names.h"
#include "swap.h"
#include "sys.h"
#include "table.h"

static struct {
    pthread_mutex_t mu; /* the engine lock: this struct and every client's
                           engine state (races, c-ares) */
    pthread_cond_t cv;  /* the engine thread came back from epoll_wait, or
                           left */
    bool running;       /* an engine thread serves this process: written
                           under mu (set_running), read without it by
                           resil_engine_running */
    unsigned gen;       /* bumped per engine thread started or stopped */
    unsigned alive;     /* gen of the thread that may still use epfd, or 0 */
    unsigned turns;     /* returns from epoll_wait */
    bool waiting;       /* the thread is in epoll_wait, or on its way */
    unsigned warned_gen; /* "cannot start the engine thread" said in this
                            process (resil_fork_gen + 1) */
    int epfd, wakefd;   /* owned by the registry (fds.h), which may move
                           them: the thread re-reads epfd each turn, and
                           wake writers pin wakefd */
    atomic_int wake_pins;
    struct resil_watch wake_w;
} E = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .cv = PTHREAD_COND_INITIALIZER,
       .epfd = -1,
       .wakefd = -1};

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

/* E.running, written under E.mu: atomic, as resil_engine_running reads it
 * without the lock */
static void set_running(bool on)
{
    __atomic_store_n(&E.running, on, __ATOMIC_RELAXED);
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
    int fd = resil_fds_pin(&E.wakefd, &E.wake_pins);
    if (fd >= 0)
        (void)!real.write(fd, &one, sizeof(one));
    resil_fds_unpin(&E.wake_pins);
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
    if (E.epfd < 0 || real.epoll_ctl(E.epfd, op, fd, &ev) < 0)
        return RESIL_ESYS;
    /* so that a move of fd (dup2 onto its number) can re-register it */
    resil_fds_set_watch(fd, events, w);
    return RESIL_OK;
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
    resil_fds_set_watch(fd, 0, NULL);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* An engine with nothing to do for this long leaves: a process with a
 * second thread pays for it in every descriptor call it makes (the kernel
 * then takes a reference on the file each time: __fget_light), managed or
 * not. The next race or monitor mark starts it again. */
#define IDLE_EXIT_MS 1000

static void *engine_main(void *arg)
{
    unsigned gen = (unsigned)(uintptr_t)arg;
    struct epoll_event evs[64];
    bool idle;

    resil_in_shim = 1;
    pthread_mutex_lock(&E.mu);
    for (;;) {
        uint64_t now = resil_now_ns(), wake;
        int timeout, n, epfd, err;

        if (E.gen != gen) {
            /* stopped (resil_engine_release) or replaced: leave */
            break;
        }
        wake = min_u64(min_u64(resil_conn_tick(now), resil_dns_tick(now)),
                       resil_linger_tick(now));
        pthread_mutex_unlock(&E.mu);
        /* the monitor's system calls (one pair per socket with bytes in
         * flight) run without the engine lock: a close() or a connect()
         * never waits for them. Its clock is read now: it dates bytes
         * in flight from the kernel's ages, and the ticks above (the sockets
         * due since their connect, conn.c) take their time */
        wake = min_u64(wake, resil_monitor_tick(resil_now_ns()));
        now = resil_now_ns();
        /* nothing timed: no race (its attempts wait for events), no
         * lookup, the monitor idle (a mark wakes or starts us) */
        idle = false;
        if (wake == UINT64_MAX) {
            pthread_mutex_lock(&E.mu);
            idle = !resil_conn_busy();
            pthread_mutex_unlock(&E.mu);
        }
        if (idle)
            timeout = IDLE_EXIT_MS;
        else if (wake == UINT64_MAX)
            timeout = -1;
        else if (wake <= now)
            timeout = 0;
        else
            timeout = (int)((wake - now + RESIL_MS - 1) / RESIL_MS);
        /* the number is read under the lock, and a move of it waits (cv)
         * until this thread is back: epoll_wait never runs on a number
         * that has become the program's */
        pthread_mutex_lock(&E.mu);
        if (E.gen != gen)
            break;
        epfd = E.epfd;
        E.waiting = true;
        pthread_mutex_unlock(&E.mu);
        n = real.epoll_wait(epfd, evs, 64, timeout);
        err = errno;
        pthread_mutex_lock(&E.mu);
        E.waiting = false;
        E.turns++;
        pthread_cond_broadcast(&E.cv);
        if (n < 0 && err != EINTR) {
            /* our descriptor was closed behind our back (a raw system
             * call): this thread is done; the next need starts afresh */
            rwarn("engine descriptor lost (%s); engine thread exits",
                  strerror(err));
            if (E.gen == gen) {
                set_running(false);
                resil_fds_forget(E.epfd);
                resil_fds_forget(E.wakefd);
            }
            break;
        }
        if (n == 0 && idle && !resil_conn_busy() &&
            resil_dns_tick(resil_now_ns()) == UINT64_MAX &&
            resil_monitor_idle()) {
            /* still nothing: leave (epoll set and eventfd stay for the
             * next start) */
            if (E.gen == gen)
                set_running(false);
            break;
        }
        now = resil_now_ns();
        for (int i = 0; i < n; i++) {
            struct resil_watch *w = evs[i].data.ptr;
            w->fn(w, evs[i].events, now);
        }
    }
    if (E.alive == gen) {
        E.alive = 0;
        pthread_cond_broadcast(&E.cv);
    }
    pthread_mutex_unlock(&E.mu);
    return NULL;
}

/* Close the engine's descriptors. Engine lock held, no thread alive. */
static void close_fds(void)
{
    resil_fds_close(&E.wakefd);
    resil_fds_close(&E.epfd);
}

/* Make the engine thread leave and wait until it has (it may be asleep in
 * epoll_wait: woken through wake_fd, or the wake eventfd when -1). Engine
 * lock held (released while waiting). */
static void stop_thread(int wake_fd)
{
    unsigned g = E.alive;

    set_running(false);
    if (g == 0)
        return;
    E.gen++;
    if (wake_fd >= 0) {
        uint64_t one = 1;
        (void)!real.write(wake_fd, &one, sizeof(one));
    } else {
        resil_engine_wake();
    }
    while (E.alive == g)
        pthread_cond_wait(&E.cv, &E.mu);
}

struct thread_start {
    void *(*fn)(void *);
    void *arg;
    char name[16];
};

/* Named as the thread's first act: ps -L, top -H and /proc/PID/task show
 * which threads are libresil's (and a test can tell them from a
 * sanitizer's). */
static void *thread_main(void *p)
{
    struct thread_start st = *(struct thread_start *)p;

    free(p);
    (void)prctl(PR_SET_NAME, st.name, 0, 0, 0);
    return st.fn(st.arg);
}

int resil_thread_start(const char *name, void *(*fn)(void *), void *arg)
{
    struct thread_start *st = malloc(sizeof(*st));
    sigset_t all, old;
    pthread_attr_t at;
    pthread_t t;
    int rc;

    if (st == NULL)
        return ENOMEM;
    st->fn = fn;
    st->arg = arg;
    snprintf(st->name, sizeof(st->name), "%s", name);
    /* our threads must never take a signal meant for the program */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    rc = pthread_create(&t, &at, thread_main, st);
    if (rc == EINVAL) {
        /* the program's static TLS does not fit a small stack (glibc puts
         * it there): the default size then */
        pthread_attr_destroy(&at);
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &at, thread_main, st);
    }
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        free(st);
    return rc;
}

resil_status_t resil_engine_start(void)
{
    int rc;

    /* a forked child learns from the atfork handler that it has no
     * engine thread (the child of _Fork(), which runs no handlers, may
     * only call async-signal-safe functions until it execs) */
    if (E.running)
        return RESIL_OK;
    if (E.epfd < 0) {
        resil_fds_making();
        if (resil_fds_own_made(&E.epfd, epoll_create1(EPOLL_CLOEXEC),
                               RESIL_FD_EPOLL, NULL) != RESIL_OK)
            goto fail;
    }
    if (E.wakefd < 0) {
        resil_fds_making();
        if (resil_fds_own_made(&E.wakefd,
                               eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK),
                               RESIL_FD_WAKE, &E.wake_pins) != RESIL_OK)
            goto fail;
        E.wake_w.fn = wake_read;
        if (resil_engine_add(E.wakefd, EPOLLIN, &E.wake_w) != RESIL_OK)
            goto fail;
    }
    E.gen++;
    rc = resil_thread_start("resil-engine", engine_main, (void *)(uintptr_t)E.gen);
    if (rc != 0) {
        /* once per process: every connect of a program that cannot make
         * threads would otherwise say it again */
        if (E.warned_gen != resil_fork_gen + 1) {
            E.warned_gen = resil_fork_gen + 1;
            rwarn("cannot start the engine thread: %s; connections are "
                  "not raced", strerror(rc));
        }
        goto fail;
    }
    E.alive = E.gen;
    set_running(true);
    return RESIL_OK;
fail:
    /* without a thread they serve nothing: the program gets them back */
    close_fds();
    return RESIL_ESYS;
}

bool resil_engine_running(void)
{
    return __atomic_load_n(&E.running, __ATOMIC_RELAXED);
}

void resil_engine_release(void)
{
    pthread_mutex_lock(&E.mu);
    /* nothing parked, no lookup serves a race, no socket waits to be
     * looked at (conn.c) */
    if (atomic_load(&resil_races_active) == 0 && resil_conn_idle()) {
        resil_dns_cancel();
        resil_park_release();
        /* the engine itself, unless the monitor needs it; and unless
         * another thread started it again while we waited */
        if (resil_monitor_idle()) {
            stop_thread(-1);
            if (!E.running)
                close_fds();
        }
    }
    pthread_mutex_unlock(&E.mu);
}

/* Finish a move (m->newfd holds ours now). Engine lock held. */
static void moved(const struct resil_fds_moved *m)
{
    if (m->watch) {
        /* epoll keys a registration by number and file: ADD the new
         * number while the old one still names our file, then DEL it */
        struct epoll_event ev = {.events = m->events, .data.ptr = m->watch};
        real.epoll_ctl(E.epfd, EPOLL_CTL_ADD, m->newfd, &ev);
        real.epoll_ctl(E.epfd, EPOLL_CTL_DEL, m->oldfd, NULL);
    }
    if (m->kind == RESIL_FD_EPOLL && E.alive && E.waiting) {
        /* the thread may have read the old number and not yet entered
         * epoll_wait: bring it round once before the number goes (inside
         * epoll_wait it holds the file, whatever the number becomes) */
        unsigned t = E.turns;
        resil_engine_wake();
        while (E.alive && E.turns == t)
            pthread_cond_wait(&E.cv, &E.mu);
    }
}

/* No number was free: ours is lost to the program's call. Engine lock
 * held. */
static void lost(const struct resil_fds_moved *m)
{
    rwarn("fd %d: no descriptor free to move libresil's own out of the "
          "program's way; %s", m->oldfd,
          m->kind == RESIL_FD_FILE ? "that output stops"
                                   : "races in flight are aborted");
    if (m->kind == RESIL_FD_FILE)
        return;
    resil_conn_abort_all(ECONNABORTED);
    /* a waiter blocked on the lost eventfd holds its file: wake it through
     * the old number, ours until the program's call replaces it */
    if (m->kind == RESIL_FD_WAKE) {
        uint64_t one = 1;
        (void)!real.write(m->oldfd, &one, sizeof(one));
    }
    stop_thread(E.wakefd < 0 ? m->oldfd : -1);
    resil_dns_cancel();
    close_fds();
    resil_park_release();
}

/* After lost(): the owner's counter is alive as long as we hold the
 * engine lock (a race frees its own only under it), and woken waiters
 * unpin without it. */
static void drain_lost(const struct resil_fds_moved *m)
{
    if (m->pins)
        resil_fds_drain(m->pins);
}

resil_status_t resil_engine_evict(int fd, bool *orphan)
{
    struct resil_fds_moved m = {.pins = NULL};
    resil_status_t st;

    *orphan = false;
    /* a vfork child shares our memory, not our fd table: moving anything
     * there would rewrite the parent's state; its call goes through and
     * replaces our copy in its own table */
    if (!resil_fds_here())
        return RESIL_EUNSUPP;
    pthread_mutex_lock(&E.mu);
    st = resil_fds_move(fd, &m);
    if (st == RESIL_EUNSUPP) {
        /* a c-ares socket: c-ares keeps the number, so it cannot move.
         * Cancelling the lookups closes every c-ares socket (we do not set
         * ARES_FLAG_STAYOPEN); races go on with the addresses they have. */
        resil_dns_cancel();
        if (resil_table_internal(fd)) {
            resil_fds_forget(fd);
            *orphan = true;
        }
        st = RESIL_OK;
    } else if (st == RESIL_OK) {
        *orphan = true;
        if (m.newfd >= 0) {
            moved(&m);
        } else {
            lost(&m);
            drain_lost(&m);
        }
    }
    pthread_mutex_unlock(&E.mu);
    /* a waiter on a race's done eventfd may sleep until the race ends,
     * which needs the engine lock: drained without it */
    if (st == RESIL_OK && m.newfd >= 0)
        resil_fds_drain_moved(&m);
    return st;
}

void resil_engine_atfork_prepare(void)
{
    /* hold every global lock across fork, in the documented order, so the
     * child never inherits one locked by a thread that does not exist
     * there (socket mutexes of racing sockets are re-made in the child) */
    pthread_mutex_lock(&E.mu);
    /* every socket's file is the child's too */
    atomic_fetch_add(&resil_sess_shares, 1);
    resil_fds_atfork_prepare();
    resil_table_lock_all();
    resil_health_lock();
    resil_names_lock();
    resil_path_lock();
}

static void atfork_release(void)
{
    resil_path_unlock();
    resil_names_unlock();
    resil_health_unlock();
    resil_table_unlock_all();
}

void resil_engine_atfork_parent(void)
{
    atfork_release();
    resil_fds_atfork_parent();
    pthread_mutex_unlock(&E.mu);
}

/* In the child only the forking thread exists, and it held no socket lock
 * (fork is called from the program, never from inside a hook): any socket
 * lock held now belonged to a thread that is gone. */
static void reinit_sock_locks(struct resil_sock *s, void *arg)
{
    (void)arg;
    pthread_mutex_init(&s->mu, NULL);
    resil_lock_init(&s->ep_mu);
}

void resil_engine_atfork_child(void)
{
    /* Only the forking thread exists now: the engine thread, its races and
     * c-ares state stay with the parent. */
    atfork_release();
    resil_fds_atfork_child();
    resil_fork_gen++;
    __atomic_store_n(&pid_cache, 0, __ATOMIC_RELAXED);
    resil_table_foreach(reinit_sock_locks, NULL);
    /* a parent thread waiting on cv does not exist here */
    pthread_cond_init(&E.cv, NULL);
    resil_epoll_atfork_child();
    pthread_mutex_unlock(&E.mu);
    resil_conn_atfork_child();
    resil_monitor_atfork_child();
    resil_dns_atfork_child();
    resil_linger_atfork_child();
    set_running(false);
    E.alive = 0;
    E.waiting = false;
    close_fds();
}
