#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fds.h"
#include "sys.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

struct ent {
    struct ent *prev, *next; /* every entry, for fork */
    int fd;
    int *owner;              /* NULL: nobody's variable */
    atomic_int *pins;
    enum resil_fd_kind kind;
    void *watch;
    uint32_t events;
    unsigned long serial;    /* tells a freed and reused entry apart */
};

/* The registry lock: the list, every entry, every mark, and the numbers in
 * the owners' variables (written only here). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct ent *all;
static int n_ents;
static unsigned long serials;
static pid_t fds_pid;

void resil_fds_init(void)
{
    if (__atomic_load_n(&fds_pid, __ATOMIC_RELAXED) == 0)
        __atomic_store_n(&fds_pid, getpid(), __ATOMIC_RELAXED);
}

bool resil_fds_here(void)
{
    pid_t p = __atomic_load_n(&fds_pid, __ATOMIC_RELAXED);
    return p == 0 || p == getpid();
}

/* A duplicate of fd at the lowest free number at or above the floor, with
 * FD_CLOEXEC. When the top of the space is full (a program using almost
 * every number) a lower floor is tried, not below half of it: ours stay
 * out of the low numbers that programs expect open() to return. Failing
 * that we fail open: fd itself when keep (a race still runs, on a number
 * among the program's but marked ours), else any free number; -1 with
 * errno EMFILE only when not one is free. */
static int place(int fd, bool keep)
{
    struct rlimit rl;
    long top = RESIL_FDS_TOP_MAX, floors[3];

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)top)
        top = (long)rl.rlim_cur;
    floors[0] = top - top / 16;
    floors[1] = top / 2;
    floors[2] = 0;
    for (int i = 0; i < 3; i++) {
        int hi;
        if (i == 2 && keep)
            return fd < RESIL_TABLE_MAX ? fd : -1;
        hi = real.fcntl(fd, F_DUPFD_CLOEXEC, (int)floors[i]);
        if (hi >= RESIL_TABLE_MAX) {
            real.close(hi);
            break;
        }
        if (hi >= 0)
            return hi;
        if (errno != EMFILE && errno != EINVAL)
            return -1;
    }
    errno = EMFILE;
    return -1;
}

static void link_ent(struct ent *e)
{
    e->prev = NULL;
    e->next = all;
    if (all)
        all->prev = e;
    all = e;
    n_ents++;
}

static void unlink_ent(struct ent *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        all = e->next;
    if (e->next)
        e->next->prev = e->prev;
    n_ents--;
}

/* The entry of our descriptor at fd, or NULL. Registry lock held. */
static struct ent *find(int fd)
{
    struct ent *e = fd >= 0 ? resil_table_marked(fd) : NULL;
    return e && e->fd == fd ? e : NULL;
}

static void set_owner(struct ent *e, int fd)
{
    if (e->owner)
        __atomic_store_n(e->owner, fd, __ATOMIC_SEQ_CST);
}

/* own (consume fd) or dup (fd stays the caller's) */
static resil_status_t own(int *owner, int fd, enum resil_fd_kind kind,
                          atomic_int *pins, bool dup)
{
    struct ent *e = malloc(sizeof(*e));
    int hi = -1, err = ENOMEM;

    pthread_mutex_lock(&mu);
    resil_fds_init();
    if (e != NULL) {
        hi = place(fd, !dup);
        err = errno;
    }
    if (hi != fd && !dup)
        real.close(fd);
    if (hi >= 0 && resil_table_mark(hi, e) != RESIL_OK) {
        real.close(hi);
        hi = -1;
        err = ENOMEM;
    }
    if (hi < 0) {
        *owner = -1;
        pthread_mutex_unlock(&mu);
        free(e);
        errno = err;
        return RESIL_ESYS;
    }
    e->fd = hi;
    e->owner = kind == RESIL_FD_DNS ? NULL : owner;
    e->pins = pins;
    e->kind = kind;
    e->watch = NULL;
    e->events = 0;
    e->serial = ++serials;
    link_ent(e);
    __atomic_store_n(owner, hi, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&mu);
    return RESIL_OK;
}

resil_status_t resil_fds_own(int *owner, int fd, enum resil_fd_kind kind,
                             atomic_int *pins)
{
    return own(owner, fd, kind, pins, false);
}

resil_status_t resil_fds_dup(int *owner, int fd, enum resil_fd_kind kind)
{
    return own(owner, fd, kind, NULL, true);
}

_Atomic uint64_t resil_fds_making_word;

resil_status_t resil_fds_own_made(int *owner, int raw,
                                  enum resil_fd_kind kind, atomic_int *pins)
{
    resil_status_t st = RESIL_ESYS;

    /* as own() stores it: an owner others read without a lock */
    __atomic_store_n(owner, -1, __ATOMIC_SEQ_CST);
    if (raw >= 0)
        st = resil_fds_own(owner, raw, kind, pins);
    resil_fds_made(); /* errno stays */
    return st;
}

resil_status_t resil_fds_socket(int *owner, int domain, int type,
                                int protocol, enum resil_fd_kind kind,
                                atomic_int *pins)
{
    resil_fds_making();
    return resil_fds_own_made(owner, real.socket(domain, type, protocol),
                              kind, pins);
}

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int resil_fds_settle_slow(int fd, bool cloexec)
{
    struct timespec d = {.tv_nsec = 50000};
    uint64_t end = mono_ns() + 100000000u, m;
    int low, saved = errno;

    /* ours is moved within microseconds, unless its thread is descheduled
     * in the instant; and one of ours made while fd moves could take the
     * number it is due: then again */
    for (int round = 0; round < 4; round++) {
        while ((uint32_t)(m = resil_fds_mark()) != 0 && mono_ns() < end)
            nanosleep(&d, NULL);
        low = real.fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
        if (low >= 0 && low < fd) {
            real.close(fd);
            fd = low;
        } else if (low >= 0) {
            real.close(low);
        }
        if (resil_fds_mark() == m)
            break;
    }
    errno = saved;
    return fd;
}

bool resil_fds_spare(int fd)
{
    int t;

    resil_fds_making(); /* a low number, for a moment */
    t = real.fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (t >= 0)
        real.close(t);
    resil_fds_made();
    return t >= 0;
}

/* A pinned user is a write of one line, or a thread blocked on a race's
 * eventfd until the race ends: yield, then sleep. */
static void backoff(unsigned *spins)
{
    if (++*spins < 64) {
        sched_yield();
    } else {
        struct timespec d = {.tv_nsec = 200000};
        nanosleep(&d, NULL);
    }
}

void resil_fds_drain(atomic_int *pins)
{
    unsigned spins = 0;
    while (atomic_load_explicit(pins, memory_order_seq_cst) != 0)
        backoff(&spins);
}

void resil_fds_drain_moved(const struct resil_fds_moved *m)
{
    unsigned spins = 0;

    if (m->pins == NULL || m->ent == NULL)
        return;
    for (;;) {
        int v = 0;
        pthread_mutex_lock(&mu);
        for (struct ent *e = all; e; e = e->next)
            if (e == m->ent && e->serial == m->serial) {
                v = atomic_load_explicit(e->pins, memory_order_seq_cst);
                break;
            }
        pthread_mutex_unlock(&mu);
        if (v == 0)
            return;
        backoff(&spins);
    }
}

/* Unregister e and close its descriptor. Registry lock held. */
static void drop(struct ent *e, bool close_it)
{
    unlink_ent(e);
    set_owner(e, -1);
    if (e->pins)
        resil_fds_drain(e->pins);
    resil_table_unmark(e->fd);
    if (close_it)
        real.close(e->fd);
    free(e);
}

void resil_fds_close_fd(int fd)
{
    struct ent *e;

    if (fd < 0)
        return;
    pthread_mutex_lock(&mu);
    e = find(fd);
    if (e)
        drop(e, true);
    pthread_mutex_unlock(&mu);
    if (e == NULL)
        real.close(fd);
}

void resil_fds_release(int *owner)
{
    struct ent *e;

    pthread_mutex_lock(&mu);
    if (*owner >= 0 && (e = find(*owner)) != NULL)
        e->pins = NULL; /* the caller's pins: it is done with this one */
    pthread_mutex_unlock(&mu);
    resil_fds_close(owner);
}

void resil_fds_close(int *owner)
{
    int fd;

    pthread_mutex_lock(&mu);
    fd = *owner;
    if (fd >= 0) {
        struct ent *e = find(fd);
        if (e)
            drop(e, true);
        else
            real.close(fd);
    }
    *owner = -1;
    pthread_mutex_unlock(&mu);
}

int resil_fds_take(int *owner)
{
    struct ent *e;
    int fd;

    pthread_mutex_lock(&mu);
    fd = *owner;
    e = find(fd);
    if (e && e->owner == owner) {
        /* owned by nobody: nobody's pins either */
        e->owner = NULL;
        e->pins = NULL;
    }
    *owner = -1;
    pthread_mutex_unlock(&mu);
    return fd;
}

void resil_fds_transfer(int *from, int *to)
{
    struct ent *e;

    pthread_mutex_lock(&mu);
    *to = *from;
    e = find(*from);
    if (e && e->owner == from)
        e->owner = to;
    *from = -1;
    pthread_mutex_unlock(&mu);
}

void resil_fds_forget(int fd)
{
    struct ent *e;

    pthread_mutex_lock(&mu);
    e = find(fd);
    if (e)
        drop(e, false);
    pthread_mutex_unlock(&mu);
}

void resil_fds_set_watch(int fd, uint32_t events, void *w)
{
    struct ent *e;

    if (!resil_table_internal(fd))
        return;
    pthread_mutex_lock(&mu);
    e = find(fd);
    if (e) {
        e->watch = w;
        e->events = events;
    }
    pthread_mutex_unlock(&mu);
}

resil_status_t resil_fds_move(int fd, struct resil_fds_moved *m)
{
    struct ent *e;
    int hi;

    pthread_mutex_lock(&mu);
    e = find(fd);
    if (e == NULL) {
        pthread_mutex_unlock(&mu);
        return RESIL_ENOENT;
    }
    if (e->kind == RESIL_FD_DNS) {
        pthread_mutex_unlock(&mu);
        return RESIL_EUNSUPP;
    }
    m->kind = e->kind;
    m->oldfd = fd;
    m->pins = e->pins;
    m->watch = e->watch;
    m->events = e->events;
    m->ent = e;
    m->serial = e->serial;
    hi = place(fd, false);
    if (hi >= 0 && resil_table_mark(hi, e) != RESIL_OK) {
        real.close(hi);
        hi = -1;
    }
    m->newfd = hi;
    if (hi >= 0) {
        e->fd = hi;
        set_owner(e, hi);
        resil_table_unmark(fd);
    } else {
        /* not one number free in the whole process: the program's call
         * wins and ours is lost (the old number, still ours, is what the
         * program's dup2 replaces) */
        unlink_ent(e);
        set_owner(e, -1);
        resil_table_unmark(fd);
        free(e);
        m->ent = NULL;
    }
    pthread_mutex_unlock(&mu);
    return RESIL_OK;
}

resil_status_t resil_fds_close_range(unsigned first, unsigned last,
                                     int flags)
{
    unsigned lo = first;
    int fd, fl = flags;
    resil_status_t st = RESIL_OK;

    pthread_mutex_lock(&mu);
    fd = first > INT_MAX ? -1 : resil_table_next((int)first);
    for (; fd >= 0 && (unsigned)fd <= last; fd = resil_table_next(fd + 1)) {
        if (!resil_table_internal(fd))
            continue;
        if ((unsigned)fd > lo) {
            if (real.close_range(lo, (unsigned)fd - 1, fl) < 0) {
                st = RESIL_ESYS;
                goto done;
            }
            /* the first call unshared the table (copying all of it, since
             * its range ends below ours); the rest act on the new one */
            fl &= ~(int)CLOSE_RANGE_UNSHARE;
        }
        lo = (unsigned)fd + 1;
    }
    if (lo <= last && real.close_range(lo, last, fl) < 0)
        st = RESIL_ESYS;
done:
    pthread_mutex_unlock(&mu);
    return st;
}

void resil_fds_atfork_prepare(void)
{
    pthread_mutex_lock(&mu);
}

void resil_fds_atfork_parent(void)
{
    pthread_mutex_unlock(&mu);
}

void resil_fds_atfork_child(void)
{
    /* a thread pinned in the parent does not exist here */
    for (struct ent *e = all; e; e = e->next)
        if (e->pins)
            atomic_store(e->pins, 0);
    /* nor one making a descriptor: a count left here would make every
     * socket() and accept() of the child wait its 5 ms (resil_fds_settle) */
    atomic_store(&resil_fds_making_word, 0);
    __atomic_store_n(&fds_pid, getpid(), __ATOMIC_RELAXED);
    pthread_mutex_unlock(&mu);
}

int resil_fds_count(void)
{
    int n;
    pthread_mutex_lock(&mu);
    n = n_ents;
    pthread_mutex_unlock(&mu);
    return n;
}
