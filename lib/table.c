#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"

#define CHUNK_BITS RESIL_TABLE_CHUNK_BITS
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS (RESIL_TABLE_MAX / CHUNK)
#define NSTRIPES 64

typedef resil_slot_t slot_t;

_Atomic(slot_t *) resil_table_chunks[NCHUNKS];
atomic_int resil_table_count;
#define chunks resil_table_chunks
/* Stripe locks guard a few instructions (load a slot, take a reference),
 * so they spin: a pthread mutex costs more than the work it protects on the
 * hot path of every hook on a managed fd. */
static atomic_flag stripes[NSTRIPES];

static void stripe_lock(int fd)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&stripes[fd % NSTRIPES],
                                             memory_order_acquire)) {
        /* the holder may have been preempted: let it run */
        if (++spins % 64 == 0)
            sched_yield();
    }
}

static void stripe_unlock(int fd)
{
    atomic_flag_clear_explicit(&stripes[fd % NSTRIPES], memory_order_release);
}
static pthread_mutex_t chunk_mu = PTHREAD_MUTEX_INITIALIZER;

struct resil_sock *resil_sock_new(int fd, int family, int type)
{
    struct resil_sock *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    s->fd = fd;
    s->family = family;
    s->type = type;
    return s;
}

void resil_sock_ref(struct resil_sock *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void resil_sock_unref(struct resil_sock *s)
{
    if (s == NULL ||
        atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (struct resil_sockopt *o = s->opts, *n; o; o = n) {
        n = o->next;
        free(o);
    }
    for (struct resil_epreg *e = s->ep, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    free(s->ep_spare);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

resil_status_t resil_sock_add_opt(struct resil_sock *s, int level, int name,
                                  const void *val, socklen_t len)
{
    struct resil_sockopt **pp, *o = NULL;

    if (len > 256)
        return RESIL_EUNSUPP;
    /* unlink an earlier value of the same option (reused when it fits:
     * some programs toggle TCP_CORK per request) */
    for (pp = &s->opts; *pp; pp = &(*pp)->next) {
        if ((*pp)->level == level && (*pp)->name == name) {
            o = *pp;
            *pp = o->next;
            if (o->len != len) {
                free(o);
                o = NULL;
            }
            break;
        }
    }
    if (o == NULL) {
        o = malloc(sizeof(*o) + len);
        if (o == NULL)
            return RESIL_ENOMEM;
    }
    o->next = NULL;
    o->level = level;
    o->name = name;
    o->len = len;
    o->seq = ++s->opt_seq;
    if (len)
        memcpy(o->val, val, len);
    for (pp = &s->opts; *pp; pp = &(*pp)->next)
        ;
    *pp = o;
    return RESIL_OK;
}

void resil_sock_ep_lock(struct resil_sock *s)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&s->ep_lock,
                                             memory_order_acquire))
        if (++spins % 64 == 0)
            sched_yield();
}

void resil_sock_ep_unlock(struct resil_sock *s)
{
    atomic_flag_clear_explicit(&s->ep_lock, memory_order_release);
}

resil_status_t resil_sock_epoll(struct resil_sock *s, int epfd, int op,
                                const struct epoll_event *ev)
{
    struct resil_epreg **pp, *e;

    for (pp = &s->ep; *pp; pp = &(*pp)->next)
        if ((*pp)->epfd == epfd)
            break;
    switch (op) {
    case EPOLL_CTL_ADD:
    case EPOLL_CTL_MOD:
        if (*pp == NULL) {
            e = s->ep_spare ? s->ep_spare : malloc(sizeof(*e));
            if (e == NULL)
                return RESIL_ENOMEM;
            s->ep_spare = NULL;
            memset(e, 0, sizeof(*e));
            e->epfd = epfd;
            *pp = e;
        }
        if (ev)
            (*pp)->ev = *ev;
        return RESIL_OK;
    case EPOLL_CTL_DEL:
        if (*pp) {
            e = *pp;
            *pp = e->next;
            if (s->ep_spare == NULL)
                s->ep_spare = e;
            else
                free(e);
        }
        return RESIL_OK;
    }
    return RESIL_EINVAL;
}

void resil_sock_epoll_forget(struct resil_sock *s, int epfd)
{
    resil_sock_epoll(s, epfd, EPOLL_CTL_DEL, NULL);
}

static slot_t *slot_of(int fd, bool create)
{
    slot_t *c;

    if (fd < 0 || fd >= RESIL_TABLE_MAX)
        return NULL;
    c = (slot_t *)atomic_load_explicit(&chunks[fd >> CHUNK_BITS],
                                       memory_order_acquire);
    if (c == NULL && create) {
        pthread_mutex_lock(&chunk_mu);
        c = (slot_t *)atomic_load(&chunks[fd >> CHUNK_BITS]);
        if (c == NULL) {
            c = calloc(CHUNK, sizeof(*c));
            if (c)
                atomic_store_explicit(&chunks[fd >> CHUNK_BITS],
                                      (void *)c, memory_order_release);
        }
        pthread_mutex_unlock(&chunk_mu);
    }
    return c ? &c[fd & (CHUNK - 1)] : NULL;
}

struct resil_sock *resil_table_get(int fd)
{
    slot_t *sl = slot_of(fd, false);
    struct resil_sock *s;

    if (sl == NULL || atomic_load_explicit(sl, memory_order_relaxed) == NULL)
        return NULL;
    stripe_lock(fd);
    s = atomic_load(sl);
    if (s)
        resil_sock_ref(s);
    stripe_unlock(fd);
    return s;
}

resil_status_t resil_table_set(int fd, struct resil_sock *s)
{
    struct resil_sock *old;
    slot_t *sl;

    if (fd < 0 || fd >= RESIL_TABLE_MAX)
        return RESIL_ERANGE;
    sl = slot_of(fd, true);
    if (sl == NULL)
        return RESIL_ENOMEM;
    resil_sock_ref(s);
    stripe_lock(fd);
    old = atomic_exchange(sl, s);
    if (old == NULL)
        atomic_fetch_add_explicit(&resil_table_count, 1, memory_order_relaxed);
    stripe_unlock(fd);
    resil_sock_unref(old);
    return RESIL_OK;
}

struct resil_sock *resil_table_take(int fd)
{
    slot_t *sl = slot_of(fd, false);
    struct resil_sock *s;

    if (sl == NULL || atomic_load_explicit(sl, memory_order_relaxed) == NULL)
        return NULL;
    stripe_lock(fd);
    s = atomic_exchange(sl, NULL);
    if (s)
        atomic_fetch_sub_explicit(&resil_table_count, 1, memory_order_relaxed);
    stripe_unlock(fd);
    return s;
}

bool resil_table_take_if(int fd, struct resil_sock *s)
{
    slot_t *sl = slot_of(fd, false);
    struct resil_sock *want = s;
    bool took;

    if (sl == NULL)
        return false;
    stripe_lock(fd);
    took = atomic_compare_exchange_strong(sl, &want, NULL);
    if (took)
        atomic_fetch_sub_explicit(&resil_table_count, 1, memory_order_relaxed);
    stripe_unlock(fd);
    if (took)
        resil_sock_unref(s);
    return took;
}

struct find_ep {
    int epfd, fd;
    uint64_t data;
};

static void match_ep(struct resil_sock *s, void *arg)
{
    struct find_ep *f = arg;
    if (f->fd >= 0)
        return;
    resil_sock_ep_lock(s);
    for (struct resil_epreg *e = s->ep; e; e = e->next)
        if (e->epfd == f->epfd && e->ev.data.u64 == f->data) {
            f->fd = s->fd;
            break;
        }
    resil_sock_ep_unlock(s);
}

int resil_table_find_epoll(int epfd, uint64_t data)
{
    struct find_ep f = {.epfd = epfd, .fd = -1, .data = data};
    resil_table_foreach(match_ep, &f);
    return f.fd;
}

void resil_table_lock_all(void)
{
    for (int i = 0; i < NSTRIPES; i++)
        stripe_lock(i);
}

void resil_table_unlock_all(void)
{
    for (int i = 0; i < NSTRIPES; i++)
        stripe_unlock(i);
}

void resil_table_foreach(void (*fn)(struct resil_sock *, void *), void *arg)
{
    for (int c = 0; c < NCHUNKS; c++) {
        if (atomic_load(&chunks[c]) == NULL)
            continue;
        for (int i = 0; i < CHUNK; i++) {
            struct resil_sock *s = resil_table_get(c * CHUNK + i);
            if (s) {
                fn(s, arg);
                resil_sock_unref(s);
            }
        }
    }
}
