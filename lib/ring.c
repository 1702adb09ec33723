/* libresil: the replay ring (see ring.h for the memory rules). */
#include <stdlib.h>
#include <string.h>

#include "ring.h"

#ifdef __SSE2__
#include <emmintrin.h>

/* Appends of at least this many bytes bypass the caches (copy_in). */
#define RING_STREAM_MIN 4096

/* Copy n bytes into the ring's storage. The ring is written now and read
 * only by a resume, if ever: a large copy uses non-temporal stores, which
 * neither read the destination's cache lines first nor push out of the
 * caches what the program and the kernel are about to use (the same bytes
 * on their way into the socket). A bulk writer's ring is as large as the
 * socket's send buffer, megabytes that would otherwise cycle through the
 * caches on every write. */
static void copy_in(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t head;

    if (n < RING_STREAM_MIN) {
        memcpy(dst, src, n);
        return;
    }
    head = (16 - ((uintptr_t)dst & 15)) & 15;
    memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    for (; n >= 64; n -= 64, dst += 64, src += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)src);
        __m128i b = _mm_loadu_si128((const __m128i *)(src + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + 48));
        _mm_stream_si128((__m128i *)dst, a);
        _mm_stream_si128((__m128i *)(dst + 16), b);
        _mm_stream_si128((__m128i *)(dst + 32), c);
        _mm_stream_si128((__m128i *)(dst + 48), d);
    }
    memcpy(dst, src, n);
    /* streaming stores are weakly ordered: visible before the session's
     * lock is released (a resume on another thread reads them) */
    _mm_sfence();
}
#else
static void copy_in(uint8_t *dst, const uint8_t *src, size_t n)
{
    memcpy(dst, src, n);
}
#endif

static uint8_t *store(const struct resil_ring *r)
{
    return r->heap ? r->heap : (uint8_t *)r->small;
}

/* Storage index of position p, start <= p <= end. */
static size_t index_of(const struct resil_ring *r, uint64_t p)
{
    size_t i = r->head + (size_t)(p - r->start);

    return i >= r->cap ? i - r->cap : i;
}

/* [a, b) as one or two spans of storage. */
static int spans_of(const struct resil_ring *r, uint64_t a, uint64_t b,
                    struct iovec iov[2])
{
    size_t n = (size_t)(b - a), i, first;

    if (n == 0)
        return 0;
    i = index_of(r, a);
    first = r->cap - i < n ? r->cap - i : n;
    iov[0].iov_base = store(r) + i;
    iov[0].iov_len = first;
    if (first == n)
        return 1;
    iov[1].iov_base = store(r);
    iov[1].iov_len = n - first;
    return 2;
}

/* Move the held bytes, in order, to storage of newcap bytes: the inline
 * array when newcap is its size, else a fresh heap buffer. */
static resil_status_t resize(struct resil_ring *r, size_t newcap)
{
    struct iovec iov[2];
    uint8_t *dst, *fresh = NULL;
    int n = spans_of(r, r->start, r->end, iov);

    if (newcap == sizeof r->small) {
        dst = r->small;
    } else {
        fresh = malloc(newcap);
        if (!fresh)
            return RESIL_ENOMEM;
        dst = fresh;
    }
    /* From the heap into `small`, or into a fresh buffer: never overlap. */
    for (int k = 0; k < n; k++) {
        memcpy(dst, iov[k].iov_base, iov[k].iov_len);
        dst += iov[k].iov_len;
    }
    free(r->heap);
    r->heap = fresh;
    r->cap = newcap;
    r->head = 0;
    return RESIL_OK;
}

resil_status_t resil_ring_init(struct resil_ring *r, uint64_t base, size_t max,
                               size_t keep)
{
    if (max <= keep)
        return RESIL_EINVAL;
    memset(r, 0, sizeof *r);
    r->cap = sizeof r->small;
    r->max = max;
    r->keep = keep;
    r->start = r->end = base;
    return RESIL_OK;
}

void resil_ring_free(struct resil_ring *r)
{
    free(r->heap);
    r->heap = NULL;
    r->cap = sizeof r->small;
    r->head = 0;
    r->start = r->end;
}

resil_status_t resil_ring_append(struct resil_ring *r, const void *data,
                                 size_t n)
{
    size_t held = resil_ring_held(r), i, first;

    if (n == 0)
        return RESIL_OK;
    if (n > r->max - held)
        return RESIL_EFULL;
    if (n > UINT64_MAX - r->end)
        return RESIL_ERANGE;
    if (held + n > r->cap) {
        size_t want = r->heap ? r->cap : RESIL_RING_MIN_ALLOC;

        while (want < held + n && want <= r->max / 2)
            want *= 2;
        if (want < held + n || want > r->max)
            want = r->max;
        if (resize(r, want) != RESIL_OK)
            return RESIL_ENOMEM;
    }
    i = index_of(r, r->end);
    first = r->cap - i < n ? r->cap - i : n;
    copy_in(store(r) + i, data, first);
    copy_in(store(r), (const uint8_t *)data + first, n - first);
    r->end += n;
    return RESIL_OK;
}

resil_status_t resil_ring_drop(struct resil_ring *r, uint64_t pos)
{
    uint64_t cut = pos > r->keep ? pos - r->keep : 0;

    if (pos > r->end)
        return RESIL_ERANGE;
    if (cut <= r->start)
        return RESIL_OK;
    r->head = index_of(r, cut);
    r->start = cut;
    if (resil_ring_held(r) == 0)
        r->head = 0;
    return RESIL_OK;
}

resil_status_t resil_ring_trim(struct resil_ring *r, uint64_t pos)
{
    size_t held, target;
    resil_status_t st = resil_ring_drop(r, pos);

    if (st != RESIL_OK || !r->heap)
        return st;
    held = resil_ring_held(r);
    if (held <= sizeof r->small) {
        resize(r, sizeof r->small); /* cannot fail: no allocation */
        return RESIL_OK;
    }
    target = r->cap;
    while (target / 2 >= RESIL_RING_MIN_ALLOC && held <= target / 4)
        target /= 2;
    if (target < r->cap)
        (void)resize(r, target); /* no memory: keep the larger buffer */
    return RESIL_OK;
}

resil_status_t resil_ring_read(const struct resil_ring *r, uint64_t a,
                               uint64_t b, void *dst)
{
    struct iovec iov[2];
    int n;

    if (resil_ring_spans(r, a, b, iov, &n) != RESIL_OK)
        return RESIL_ERANGE;
    for (int k = 0; k < n; k++) {
        memcpy(dst, iov[k].iov_base, iov[k].iov_len);
        dst = (uint8_t *)dst + iov[k].iov_len;
    }
    return RESIL_OK;
}

resil_status_t resil_ring_spans(const struct resil_ring *r, uint64_t a,
                                uint64_t b, struct iovec iov[2], int *n)
{
    if (a < r->start || a > b || b > r->end)
        return RESIL_ERANGE;
    *n = spans_of(r, a, b, iov);
    return RESIL_OK;
}

void resil_lastbytes_init(struct resil_lastbytes *t)
{
    memset(t, 0, sizeof *t);
}

void resil_lastbytes_feed(struct resil_lastbytes *t, const void *data, size_t n)
{
    const size_t w = sizeof t->b;
    const uint8_t *p = data;
    size_t i, first;

    if (n > w) {
        t->pos += n - w;
        p += n - w;
        n = w;
    }
    i = (size_t)(t->pos % w);
    first = w - i < n ? w - i : n;
    memcpy(t->b + i, p, first);
    memcpy(t->b, p + first, n - first);
    t->pos += n;
}

void resil_lastbytes_spans(const struct resil_lastbytes *t, struct iovec iov[2],
                           int *n)
{
    const size_t w = sizeof t->b;
    size_t have = t->pos < w ? (size_t)t->pos : w;
    size_t i = (size_t)((t->pos - have) % w);
    size_t first = w - i < have ? w - i : have;

    *n = 0;
    if (have == 0)
        return;
    iov[0].iov_base = (uint8_t *)t->b + i;
    iov[0].iov_len = first;
    *n = 1;
    if (first < have) {
        iov[1].iov_base = (uint8_t *)t->b;
        iov[1].iov_len = have - first;
        *n = 2;
    }
}
