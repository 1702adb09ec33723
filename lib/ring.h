/* libresil: the replay ring of a session's sent stream.
 *
 * Holds the bytes at stream positions [start, end) (64-bit positions, end
 * = W, everything the program wrote), so that a resume can retransmit
 * [R_peer, W). Pure memory, no I/O, no locking (the session's lock covers
 * it).
 *
 * Cost: nothing is allocated until the held bytes outgrow the inline
 * RESIL_RING_INLINE bytes inside the struct; the heap buffer then starts
 * at RESIL_RING_MIN_ALLOC and doubles up to `max`; a trim that leaves at
 * most RESIL_RING_INLINE bytes frees it (an idle, fully acknowledged
 * session costs sizeof(struct resil_ring) and no heap), one that leaves a
 * quarter of the buffer or less halves it.
 *
 * A trim to `pos` keeps `keep` bytes before pos: the resume's integrity
 * check hashes the 64 bytes before the peer's position. Pointers from
 * resil_ring_spans() are valid until the next append or trim.
 */
#ifndef RESIL_RING_H
#define RESIL_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "status.h"

#define RESIL_RING_INLINE 64
#define RESIL_RING_MIN_ALLOC 4096

struct resil_ring {
    uint8_t *heap;  /* NULL: the bytes live in `small` */
    size_t cap;     /* bytes of storage (heap, or sizeof small) */
    size_t head;    /* storage index of position `start` */
    size_t max;     /* most bytes held at once, the kept tail included */
    size_t keep;    /* bytes kept before a trim position */
    uint64_t start; /* oldest position held */
    uint64_t end;   /* position after the newest byte (W) */
    uint8_t small[RESIL_RING_INLINE];
};

/* An empty ring whose next byte is at stream position `base` (0 for a new
 * session; tests start high to cross 2^32). Returns RESIL_OK, or
 * RESIL_EINVAL when max <= keep (nothing could ever be appended past the
 * kept tail). */
resil_status_t resil_ring_init(struct resil_ring *r, uint64_t base, size_t max,
                               size_t keep);

/* Release the heap buffer and drop every byte: start = end. The ring stays
 * usable. */
void resil_ring_free(struct resil_ring *r);

/* Copy n bytes in at position end. All or nothing: returns RESIL_OK,
 * RESIL_EFULL when more than `max` bytes would be held (trim first, with
 * the kernel's acknowledged count), RESIL_ENOMEM when growing failed,
 * RESIL_ERANGE when end would pass 2^64. */
resil_status_t resil_ring_append(struct resil_ring *r, const void *data,
                                 size_t n);

/* The peer is known to hold everything before pos: drop the bytes before
 * pos - keep (none when pos <= start + keep). Returns RESIL_OK, or
 * RESIL_ERANGE when pos > end (nothing changes: an acknowledgement of
 * bytes never written means our counts are wrong). Never fails for lack
 * of memory: a shrink that cannot allocate keeps the larger buffer. */
/* resil_ring_trim() without giving memory back: for a ring in use, which
 * would otherwise shrink and grow again (a bulk transfer trims every time
 * the ring is full). Returns as resil_ring_trim(). */
resil_status_t resil_ring_drop(struct resil_ring *r, uint64_t pos);
resil_status_t resil_ring_trim(struct resil_ring *r, uint64_t pos);

/* Copy [a, b) into dst (b - a bytes). Returns RESIL_OK, or RESIL_ERANGE
 * unless start <= a <= b <= end (dst untouched). */
resil_status_t resil_ring_read(const struct resil_ring *r, uint64_t a,
                               uint64_t b, void *dst);

/* [a, b) as at most two spans, in order, for writev(): *n gets 0 (a == b),
 * 1 or 2. Returns RESIL_OK, or RESIL_ERANGE unless start <= a <= b <= end.
 */
resil_status_t resil_ring_spans(const struct resil_ring *r, uint64_t a,
                                uint64_t b, struct iovec iov[2], int *n);

static inline size_t resil_ring_held(const struct resil_ring *r)
{
    return (size_t)(r->end - r->start);
}

/* Bytes an append can take now without a trim. */
static inline size_t resil_ring_space(const struct resil_ring *r)
{
    return r->max - resil_ring_held(r);
}

/* Heap bytes the ring holds allocated (0 while inline). */
static inline size_t resil_ring_heap(const struct resil_ring *r)
{
    return r->heap ? r->cap : 0;
}

/* The last RESIL_RING_INLINE bytes of the received stream, for the tail
 * a RESUME or RESUMED carries: fed with every byte received, in order. */
struct resil_lastbytes {
    uint64_t pos; /* bytes fed so far (R) */
    uint8_t b[RESIL_RING_INLINE];
};

void resil_lastbytes_init(struct resil_lastbytes *t);

void resil_lastbytes_feed(struct resil_lastbytes *t, const void *data,
                          size_t n);

/* The last min(pos, RESIL_RING_INLINE) bytes, oldest first, as at most
 * two spans (*n gets 0, 1 or 2), valid until the next feed. */
void resil_lastbytes_spans(const struct resil_lastbytes *t, struct iovec iov[2],
                           int *n);

#endif
