#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "epoll.h"
#include "session.h"
#include "table.h"

#define CHUNK_BITS RESIL_TABLE_CHUNK_BITS
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS (RESIL_TABLE_MAX / CHUNK)
#define NSTRIPES RESIL_TABLE_NSTRIPES
#define WORDS (CHUNK / 64)

typedef resil_slot_t slot_t;

/* Each chunk is CHUNK slots followed by a bitmap of the slots in use, so
 * that close_range() over a wide range visits only what is in use. The
 * bits change under the slot's stripe lock; words are shared by stripes,
 * hence atomic. */
static _Atomic uint64_t *bits_of(slot_t *c)
{
    return (_Atomic uint64_t *)(c + CHUNK);
}

static void bit_set(slot_t *c, int fd, bool on)
{
    uint64_t m = 1ull << (fd & 63);
    _Atomic uint64_t *w = &bits_of(c)[(fd & (CHUNK - 1)) >> 6];
    if (on)
        atomic_fetch_or_explicit(w, m, memory_order_relaxed);
    else
        atomic_fetch_and_explicit(w, ~m, memory_order_relaxed);
}

static bool is_internal(struct resil_sock *p)
{
    return ((uintptr_t)p & RESIL_SLOT_INTERNAL) != 0;
}

_Atomic(slot_t *) resil_table_chunks[NCHUNKS];
atomic_int resil_table_count;
#define chunks resil_table_chunks
/* The stripe locks (table.h: taken inline by resil_table_get); a
 * contended one waits out of line. */
atomic_flag resil_table_stripes[RESIL_TABLE_NSTRIPES];
#define stripes resil_table_stripes

void resil_table_stripe_wait_(atomic_flag *f)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(f, memory_order_acquire)) {
        /* the holder may have been preempted: let it run */
        if (++spins % 64 == 0)
            sched_yield();
    }
}

#define stripe_lock resil_table_stripe_lock_
#define stripe_unlock resil_table_stripe_unlock_
static pthread_mutex_t chunk_mu = PTHREAD_MUTEX_INITIALIZER;

/* lock.h's slow paths (Drepper, "Futexes Are Tricky", mutex 2). The
 * holders keep these locks for a system call at most: spin briefly before
 * sleeping. */
void resil_lock_wait_(resil_lock_t *l)
{
    int saved = errno, c;

    for (int i = 0; i < 64; i++) {
        c = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(
                &l->v, &c, 1, memory_order_acquire, memory_order_relaxed))
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    while ((c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire)) != 0)
        syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
    errno = saved;
}

void resil_lock_wake_(resil_lock_t *l)
{
    int saved = errno;
    syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    errno = saved;
}

struct resil_sock *resil_sock_new(int fd, int family, int type)
{
    struct resil_sock *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->mu, NULL);
    resil_lock_init(&s->ep_mu);
    s->fd = fd;
    s->family = family;
    s->type = type;
    return s;
}

void resil_sock_ref(struct resil_sock *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Storage for an option record of len value bytes: a free box inside s
 * when it fits, else the heap. */
static struct resil_sockopt *opt_alloc(struct resil_sock *s, socklen_t len)
{
    if (len <= RESIL_OPT_BOX_LEN)
        for (int i = 0; i < RESIL_OPT_BOXES; i++)
            if (!(s->opt_box_used & (1u << i))) {
                s->opt_box_used |= (unsigned char)(1u << i);
                return (struct resil_sockopt *)(void *)s->opt_box[i];
            }
    return malloc(sizeof(struct resil_sockopt) + len);
}

static void opt_release(struct resil_sock *s, struct resil_sockopt *o)
{
    for (int i = 0; i < RESIL_OPT_BOXES; i++)
        if ((unsigned char *)o == s->opt_box[i]) {
            s->opt_box_used &= (unsigned char)~(1u << i);
            return;
        }
    free(o);
}

void resil_sock_free_(struct resil_sock *s)
{
    for (struct resil_sockopt *o = s->opts, *n; o; o = n) {
        n = o->next;
        opt_release(s, o);
    }
    resil_epoll_sock_free(s);
    resil_sess_free(s->sess);
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
                opt_release(s, o);
                o = NULL;
            }
            break;
        }
    }
    if (o == NULL) {
        o = opt_alloc(s, len);
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
            c = calloc(1, CHUNK * sizeof(*c) + WORDS * sizeof(uint64_t));
            if (c)
                atomic_store_explicit(&chunks[fd >> CHUNK_BITS],
                                      (void *)c, memory_order_release);
        }
        pthread_mutex_unlock(&chunk_mu);
    }
    return c ? &c[fd & (CHUNK - 1)] : NULL;
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
    stripe_lock(fd);
    old = atomic_load(sl);
    if (old && is_internal(old)) {
        /* only a raw system call closing our descriptor behind our back
         * can get here: leave the mark to the registry */
        stripe_unlock(fd);
        return RESIL_EUNSUPP;
    }
    resil_sock_ref(s);
    atomic_store(sl, s);
    if (old == NULL) {
        atomic_fetch_add_explicit(&resil_table_count, 1, memory_order_relaxed);
        bit_set((slot_t *)atomic_load(&chunks[fd >> CHUNK_BITS]), fd, true);
    }
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
    s = atomic_load(sl);
    if (s && is_internal(s)) {
        s = NULL;
    } else if (s) {
        atomic_store(sl, NULL);
        atomic_fetch_sub_explicit(&resil_table_count, 1, memory_order_relaxed);
        bit_set((slot_t *)atomic_load(&chunks[fd >> CHUNK_BITS]), fd, false);
    }
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
    if (took) {
        atomic_fetch_sub_explicit(&resil_table_count, 1, memory_order_relaxed);
        bit_set((slot_t *)atomic_load(&chunks[fd >> CHUNK_BITS]), fd, false);
    }
    stripe_unlock(fd);
    if (took)
        resil_sock_unref(s);
    return took;
}

resil_status_t resil_table_mark(int fd, void *entry)
{
    slot_t *sl;

    if (fd < 0 || fd >= RESIL_TABLE_MAX)
        return RESIL_ERANGE;
    sl = slot_of(fd, true);
    if (sl == NULL)
        return RESIL_ENOMEM;
    stripe_lock(fd);
    atomic_store(sl, (struct resil_sock *)((uintptr_t)entry |
                                           RESIL_SLOT_INTERNAL));
    bit_set((slot_t *)atomic_load(&chunks[fd >> CHUNK_BITS]), fd, true);
    stripe_unlock(fd);
    return RESIL_OK;
}

void resil_table_unmark(int fd)
{
    slot_t *sl = slot_of(fd, false);

    if (sl == NULL)
        return;
    stripe_lock(fd);
    if (is_internal(atomic_load(sl))) {
        atomic_store(sl, NULL);
        bit_set((slot_t *)atomic_load(&chunks[fd >> CHUNK_BITS]), fd, false);
    }
    stripe_unlock(fd);
}

void *resil_table_marked(int fd)
{
    struct resil_sock *p = resil_table_slot_(fd);
    if (!is_internal(p))
        return NULL;
    return (void *)((uintptr_t)p & ~RESIL_SLOT_INTERNAL);
}

int resil_table_next(int from)
{
    if (from < 0)
        from = 0;
    while (from < RESIL_TABLE_MAX) {
        slot_t *c = (slot_t *)atomic_load_explicit(&chunks[from >> CHUNK_BITS],
                                                   memory_order_acquire);
        int base = from & ~(CHUNK - 1);
        if (c != NULL) {
            for (int w = (from & (CHUNK - 1)) >> 6; w < WORDS; w++) {
                uint64_t v = atomic_load_explicit(&bits_of(c)[w],
                                                  memory_order_relaxed);
                if (w == ((from & (CHUNK - 1)) >> 6))
                    v &= ~0ull << (from & 63);
                if (v)
                    return base + w * 64 + __builtin_ctzll(v);
            }
        }
        from = base + CHUNK;
    }
    return -1;
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
