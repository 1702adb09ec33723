#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "epoll.h"
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
    pthread_mutex_init(&s->ep_mu, NULL);
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
    resil_epoll_sock_free(s);
    pthread_mutex_destroy(&s->ep_mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

resil_status_t resil_sock_add_opt(struct resil_sock *s, int level, int name,
                                  const void *val, socklen_t len)
{
    struct resil_sockopt **pp, *o;

    if (len > 256)
        return RESIL_EUNSUPP;
    o = malloc(sizeof(*o) + len);
    if (o == NULL)
        return RESIL_ENOMEM;
    o->next = NULL;
    o->level = level;
    o->name = name;
    o->len = len;
    if (len)
        memcpy(o->val, val, len);
    /* replace an earlier value of the same option, keep the order */
    for (pp = &s->opts; *pp; pp = &(*pp)->next) {
        if ((*pp)->level == level && (*pp)->name == name) {
            o->next = (*pp)->next;
            free(*pp);
            *pp = o;
            return RESIL_OK;
        }
    }
    *pp = o;
    return RESIL_OK;
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
