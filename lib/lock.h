/* libresil: a small mutex for the locks on the per-call paths.
 *
 * A pthread mutex costs about 50 instructions per lock/unlock pair in
 * glibc (type, elision and owner bookkeeping) and 40 bytes; the epoll
 * bookkeeping of a managed socket takes two locks per epoll_ctl, which an
 * event loop calls several times per request. This one is a word: taking
 * it free is one compare-and-swap, releasing it one exchange, and a
 * contended one sleeps in the kernel (futex), so a holder doing system
 * calls (the swap) never makes a waiter spin for long. Not recursive, no
 * owner check. The slow paths are in table.c.
 */
#ifndef RESIL_LOCK_H
#define RESIL_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>

typedef struct {
    atomic_int v; /* 0 free, 1 held, 2 held and maybe waited for */
} resil_lock_t;

#define RESIL_LOCK_INIT {0}

void resil_lock_wait_(resil_lock_t *l);
void resil_lock_wake_(resil_lock_t *l);

static inline void resil_lock_init(resil_lock_t *l)
{
    atomic_init(&l->v, 0);
}

static inline void resil_lock(resil_lock_t *l)
{
    int free_ = 0;
    if (__builtin_expect(
            !atomic_compare_exchange_strong_explicit(
                &l->v, &free_, 1, memory_order_acquire, memory_order_relaxed),
            0))
        resil_lock_wait_(l);
}

static inline void resil_unlock(resil_lock_t *l)
{
    if (__builtin_expect(
            atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2, 0))
        resil_lock_wake_(l);
}

/* True while some thread holds l (a hint: it may be released at once). */
static inline bool resil_lock_held(resil_lock_t *l)
{
    return atomic_load_explicit(&l->v, memory_order_acquire) != 0;
}

#endif
