/* The replay ring: wrap-around, 64-bit positions, growth, cap, trim. */
#include <stdlib.h>

#include "ring.h"
#include "session_util.h"

TestSuite(session_ring, .init = unit_setup);

static void append_gen(struct resil_ring *r, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);

    cr_assert_not_null(b);
    gen_fill(b, r->end, n);
    cr_assert_eq(resil_ring_append(r, b, n), RESIL_OK, "append %zu at %llu", n,
                 (unsigned long long)r->end);
    free(b);
}

/* Every byte held reads back as written, through both read paths. */
static void check_all(const struct resil_ring *r)
{
    size_t n = resil_ring_held(r);
    uint8_t *b = malloc(n + 1), *w = malloc(n + 1);
    struct iovec iov[2];
    int k;

    cr_assert(b && w);
    cr_assert_eq(resil_ring_read(r, r->start, r->end, b), RESIL_OK);
    gen_fill(w, r->start, n);
    cr_assert_arr_eq(b, w, n, "bytes at [%llu, %llu)",
                     (unsigned long long)r->start, (unsigned long long)r->end);
    cr_assert_eq(resil_ring_spans(r, r->start, r->end, iov, &k), RESIL_OK);
    size_t off = 0;
    for (int i = 0; i < k; i++) {
        cr_assert_gt(iov[i].iov_len, 0, "no empty span");
        cr_assert_leq(off + iov[i].iov_len, n);
        cr_assert_arr_eq(iov[i].iov_base, w + off, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    cr_assert_eq(off, n);
    cr_assert_leq(n, r->max);
    cr_assert_leq(resil_ring_heap(r), r->max > RESIL_RING_MIN_ALLOC
                                          ? r->max
                                          : RESIL_RING_MIN_ALLOC);
    free(b);
    free(w);
}

/* An idle session's share: the ring and the received tail, no heap. */
Test(session_ring, idle_cost)
{
    struct resil_ring r;

    cr_log_info("sizeof(struct resil_ring) = %zu, "
                "sizeof(struct resil_lastbytes) = %zu",
                sizeof(struct resil_ring), sizeof(struct resil_lastbytes));
    cr_expect_leq(sizeof(struct resil_ring) + sizeof(struct resil_lastbytes),
                  256);
    cr_assert_eq(resil_ring_init(&r, 0, 1 << 20, 64), RESIL_OK);
    cr_expect_null(r.heap, "nothing allocated before the first append");
    cr_expect_eq(resil_ring_heap(&r), 0);
    append_gen(&r, 100000);
    cr_expect_eq(resil_ring_heap(&r), 131072);
    cr_expect_eq(resil_ring_trim(&r, r.end), RESIL_OK);
    cr_expect_null(r.heap, "an acknowledged ring frees its buffer");
    cr_expect_eq(resil_ring_held(&r), 64, "the tail stays, inline");
    check_all(&r);
    resil_ring_free(&r);
}

Test(session_ring, small_writes_stay_inline)
{
    struct resil_ring r;

    cr_assert_eq(resil_ring_init(&r, 0, 1 << 20, 64), RESIL_OK);
    for (int i = 0; i < 64; i++) {
        append_gen(&r, 1);
        cr_expect_null(r.heap);
    }
    check_all(&r);
    append_gen(&r, 1);
    cr_expect_eq(resil_ring_heap(&r), RESIL_RING_MIN_ALLOC);
    check_all(&r);
    resil_ring_free(&r);
}

Test(session_ring, growth_doubles_up_to_the_cap)
{
    struct resil_ring r;
    size_t max = 100000, want = RESIL_RING_MIN_ALLOC;

    cr_assert_eq(resil_ring_init(&r, 0, max, 64), RESIL_OK);
    append_gen(&r, 100);
    cr_expect_eq(resil_ring_heap(&r), 4096);
    while (resil_ring_held(&r) < max) {
        size_t n =
            max - resil_ring_held(&r) < 1000 ? max - resil_ring_held(&r) : 1000;
        append_gen(&r, n);
        while (want < resil_ring_held(&r))
            want *= 2;
        cr_expect_eq(resil_ring_heap(&r), want < max ? want : max, "held %zu",
                     resil_ring_held(&r));
    }
    cr_expect_eq(resil_ring_heap(&r), max, "never beyond the cap");
    cr_expect_eq(resil_ring_space(&r), 0);
    check_all(&r);

    /* Full: refused whole, nothing changes. */
    uint64_t end = r.end;
    cr_expect_eq(resil_ring_append(&r, "x", 1), RESIL_EFULL);
    cr_expect_eq(r.end, end);
    check_all(&r);
    /* The caller trims with the kernel's count, then it fits. */
    cr_expect_eq(resil_ring_trim(&r, 1064), RESIL_OK);
    cr_expect_eq(r.start, 1000);
    cr_expect_eq(resil_ring_space(&r), 1000);
    static const uint8_t big[1001];
    cr_expect_eq(resil_ring_append(&r, big, sizeof big), RESIL_EFULL,
                 "1001 bytes do not fit in 1000");
    append_gen(&r, 1000);
    check_all(&r);
    resil_ring_free(&r);
}

Test(session_ring, trim_keeps_the_tail)
{
    struct resil_ring r;

    cr_assert_eq(resil_ring_init(&r, 0, 1 << 16, 64), RESIL_OK);
    append_gen(&r, 5000);
    cr_expect_eq(resil_ring_trim(&r, 40), RESIL_OK);
    cr_expect_eq(r.start, 0, "nothing before 40 - 64");
    cr_expect_eq(resil_ring_trim(&r, 1000), RESIL_OK);
    cr_expect_eq(r.start, 936);
    cr_expect_eq(resil_ring_trim(&r, 900), RESIL_OK);
    cr_expect_eq(r.start, 936, "a stale trim changes nothing");
    cr_expect_eq(resil_ring_trim(&r, 5001), RESIL_ERANGE);
    cr_expect_eq(r.start, 936);
    cr_expect_eq(resil_ring_trim(&r, 5000), RESIL_OK);
    cr_expect_eq(r.start, 4936);
    check_all(&r);

    uint8_t b[8] = {0};
    cr_expect_eq(resil_ring_read(&r, 4935, 4940, b), RESIL_ERANGE);
    cr_expect_eq(resil_ring_read(&r, 4990, 5001, b), RESIL_ERANGE);
    cr_expect_eq(resil_ring_read(&r, 4991, 4990, b), RESIL_ERANGE);
    cr_expect_eq(b[0], 0, "untouched");
    struct iovec iov[2];
    int n = 9;
    cr_expect_eq(resil_ring_spans(&r, 5000, 5000, iov, &n), RESIL_OK);
    cr_expect_eq(n, 0);
    cr_expect_eq(resil_ring_spans(&r, 4936, 4936, iov, &n), RESIL_OK);
    cr_expect_eq(n, 0);
    resil_ring_free(&r);

    /* keep 0: an acknowledged ring is empty. */
    cr_assert_eq(resil_ring_init(&r, 0, 1 << 16, 0), RESIL_OK);
    append_gen(&r, 5000);
    cr_expect_eq(resil_ring_trim(&r, 5000), RESIL_OK);
    cr_expect_eq(resil_ring_held(&r), 0);
    cr_expect_null(r.heap);
    append_gen(&r, 10);
    check_all(&r);
    resil_ring_free(&r);
}

/* Reads and appends that cross the end of the storage. */
Test(session_ring, wrap_around)
{
    struct resil_ring r;
    uint8_t b[4096], w[4096];
    struct iovec iov[2];
    int n;

    cr_assert_eq(resil_ring_init(&r, 0, 4096, 64), RESIL_OK);
    append_gen(&r, 3000);
    cr_assert_eq(resil_ring_heap(&r), 4096);
    cr_expect_eq(resil_ring_trim(&r, 2900), RESIL_OK);
    cr_expect_eq(r.start, 2836);
    append_gen(&r, 3000); /* storage [3000, 4096) then [0, 1904) */
    cr_expect_eq(resil_ring_heap(&r), 4096, "no growth: it fits");
    cr_expect_eq(r.end, 6000);
    check_all(&r);
    cr_expect_eq(resil_ring_spans(&r, 3000, 5000, iov, &n), RESIL_OK);
    cr_assert_eq(n, 2);
    cr_expect_eq(iov[0].iov_len, 4096 - 3000);
    cr_expect_eq(iov[1].iov_len, 5000 - 4096);
    /* Every range that starts before the seam and ends after it. */
    for (uint64_t a = 4000; a <= 4096; a += 8) {
        for (uint64_t e = 4096; e <= 4200; e += 13) {
            cr_assert_eq(resil_ring_read(&r, a, e, b), RESIL_OK);
            gen_fill(w, a, (size_t)(e - a));
            cr_assert_arr_eq(b, w, e - a, "[%llu, %llu)", (unsigned long long)a,
                             (unsigned long long)e);
        }
    }
    /* Growth while wrapped keeps the order. */
    resil_ring_free(&r);
    cr_assert_eq(resil_ring_init(&r, 0, 1 << 20, 64), RESIL_OK);
    append_gen(&r, 4000);
    resil_ring_trim(&r, 3000);
    append_gen(&r, 3000); /* wraps in 4096 */
    check_all(&r);
    append_gen(&r, 2000); /* grows to 8192 from a wrapped state */
    cr_expect_eq(resil_ring_heap(&r), 8192);
    check_all(&r);
    resil_ring_free(&r);
}

static void high_positions(uint64_t base)
{
    struct resil_ring r;
    uint8_t b[600], w[600];

    cr_assert_eq(resil_ring_init(&r, base, 8192, 64), RESIL_OK);
    append_gen(&r, 300);
    cr_expect_eq(r.end, base + 300);
    cr_expect_eq(resil_ring_read(&r, base + 50, base + 250, b), RESIL_OK);
    gen_fill(w, base + 50, 200);
    cr_expect_arr_eq(b, w, 200);
    for (int i = 0; i < 100; i++) {
        append_gen(&r, 777);
        cr_assert_eq(resil_ring_trim(&r, r.end - 100), RESIL_OK);
        check_all(&r);
    }
    cr_expect_eq(r.end, base + 300 + 77700);
    cr_expect_eq(r.start, r.end - 164);
    resil_ring_free(&r);
}

Test(session_ring, positions_past_4_gib)
{
    high_positions((1ull << 32) - 100); /* crosses 2^32 on the first write */
    high_positions((1ull << 32) + 12345);
    high_positions((1ull << 40) - 1);
    high_positions((1ull << 40) + 4096 * 3 + 17);
}

Test(session_ring, the_end_of_64_bits)
{
    struct resil_ring r;

    cr_assert_eq(resil_ring_init(&r, UINT64_MAX - 100, 4096, 64), RESIL_OK);
    append_gen(&r, 100);
    cr_expect_eq(resil_ring_append(&r, "ab", 2), RESIL_ERANGE);
    cr_expect_eq(r.end, UINT64_MAX - 0);
    check_all(&r);
    resil_ring_free(&r);
}

Test(session_ring, shrinks_when_mostly_drained)
{
    struct resil_ring r;

    cr_assert_eq(resil_ring_init(&r, 0, 1 << 20, 64), RESIL_OK);
    append_gen(&r, 60000);
    cr_expect_eq(resil_ring_heap(&r), 65536);
    resil_ring_trim(&r, 40000); /* 20064 held: more than a quarter */
    cr_expect_eq(resil_ring_heap(&r), 65536);
    resil_ring_trim(&r, 59064); /* 1000 held */
    cr_expect_eq(resil_ring_heap(&r), 4096);
    check_all(&r);
    append_gen(&r, 10000);
    cr_expect_eq(resil_ring_heap(&r), 16384);
    check_all(&r);
    resil_ring_free(&r);
    cr_expect_null(r.heap);
    cr_expect_eq(resil_ring_held(&r), 0);
    cr_expect_eq(r.start, 70000);
    append_gen(&r, 5);
    check_all(&r);
    resil_ring_free(&r);
}

Test(session_ring, bad_init)
{
    struct resil_ring r;

    cr_expect_eq(resil_ring_init(&r, 0, 64, 64), RESIL_EINVAL);
    cr_expect_eq(resil_ring_init(&r, 0, 0, 0), RESIL_EINVAL);
    cr_expect_eq(resil_ring_init(&r, 0, 65, 64), RESIL_OK);
    append_gen(&r, 65);
    cr_expect_eq(resil_ring_append(&r, "x", 1), RESIL_EFULL);
    check_all(&r);
    resil_ring_free(&r);
}

/* Random appends, trims and reads against the reference stream. */
Test(session_ring, random_model)
{
    unsigned seed = 12345;
    static const uint64_t bases[] = {0, (1ull << 32) - 5000, 1ull << 40};
    static const size_t maxes[] = {100, 5000, 70000};

    for (size_t bi = 0; bi < 3; bi++) {
        for (size_t mi = 0; mi < 3; mi++) {
            struct resil_ring r;
            uint64_t acked;

            cr_assert_eq(resil_ring_init(&r, bases[bi], maxes[mi], 64),
                         RESIL_OK);
            acked = r.start;
            for (int op = 0; op < 3000; op++) {
                int what = rand_r(&seed) % 4;
                size_t n = (size_t)rand_r(&seed) % (maxes[mi] / 3 + 2);

                if (what < 2) {
                    uint8_t *b = malloc(n + 1);
                    resil_status_t st;
                    uint64_t end = r.end;

                    gen_fill(b, r.end, n);
                    st = resil_ring_append(&r, b, n);
                    if (n <= resil_ring_space(&r) || st == RESIL_OK)
                        cr_assert_eq(st, RESIL_OK);
                    else
                        cr_assert_eq(st, RESIL_EFULL);
                    cr_assert_eq(r.end, st == RESIL_OK ? end + n : end);
                    free(b);
                } else if (what == 2) {
                    uint64_t before = r.start, cut;

                    acked += n;
                    if (acked > r.end)
                        acked = r.end;
                    cut = acked > 64 ? acked - 64 : 0;
                    cr_assert_eq(resil_ring_trim(&r, acked), RESIL_OK);
                    cr_assert_eq(r.start, cut > before ? cut : before,
                                 "the 64 bytes before acked are kept");
                } else {
                    check_all(&r);
                }
            }
            check_all(&r);
            resil_ring_free(&r);
        }
    }
}

Test(session_ring, last_bytes_received)
{
    struct resil_lastbytes t;
    unsigned seed = 7;
    uint8_t buf[300], w[64], got[64];

    resil_lastbytes_init(&t);
    for (int op = 0; op < 2000; op++) {
        size_t n = (size_t)rand_r(&seed) % (op % 10 == 0 ? 300 : 70);
        struct iovec iov[2];
        int k;
        size_t off = 0, have;

        gen_fill(buf, t.pos, n);
        resil_lastbytes_feed(&t, buf, n);
        resil_lastbytes_spans(&t, iov, &k);
        have = t.pos < 64 ? (size_t)t.pos : 64;
        for (int i = 0; i < k; i++) {
            memcpy(got + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        cr_assert_eq(off, have, "pos %llu", (unsigned long long)t.pos);
        gen_fill(w, t.pos - have, have);
        cr_assert_arr_eq(got, w, have);
    }
    resil_lastbytes_init(&t);
    struct iovec iov[2];
    int k = 5;
    resil_lastbytes_spans(&t, iov, &k);
    cr_expect_eq(k, 0, "nothing received, empty tail");
}
