/* The resume decision table, both sides, and a whole handshake. */
#include "resume.h"
#include "session_crypto.h"
#include "session_util.h"

TestSuite(session_resume, .init = unit_setup);

/* The server's side of a session: it wrote [0, 5000) and the client
 * acknowledged up to 3000, so its ring holds [2936, 5000). */
struct side {
    struct resil_session_keys k;
    struct resil_ring ring;
    struct resil_resume_view v;
};

static void side_init(struct side *s, int role, uint64_t base, uint64_t written,
                      uint64_t acked)
{
    uint8_t buf[1024];

    memset(s, 0, sizeof *s);
    fill_seq(s->k.id, sizeof s->k.id, 0xe0);
    fill_seq(s->k.k_mac, sizeof s->k.k_mac, 0x70);
    cr_assert_eq(resil_ring_init(&s->ring, base, 1 << 20, 64), RESIL_OK);
    for (uint64_t p = base; p < base + written; p += sizeof buf) {
        size_t n =
            base + written - p < sizeof buf ? base + written - p : sizeof buf;
        gen_fill(buf, p, n);
        cr_assert_eq(resil_ring_append(&s->ring, buf, n), RESIL_OK);
    }
    cr_assert_eq(resil_ring_trim(&s->ring, base + acked), RESIL_OK);
    memcpy(s->v.id, s->k.id, sizeof s->v.id);
    s->v.role = role;
    s->v.k_mac = s->k.k_mac;
    s->v.resumable = true;
    s->v.ring = &s->ring;
}

/* The hash of the stream's bytes before position r, as the peer that
 * received them computes it. */
static void tail_at(uint64_t r, uint8_t out[16])
{
    uint8_t b[64];
    size_t n = r < 64 ? (size_t)r : 64;
    struct iovec iov = {b, n};

    gen_fill(b, r - n, n);
    resil_session_tail(&iov, 1, out);
}

struct req {
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t len;
    struct resil_msg m;
};

/* A RESUME from the peer of s (the other role), sealed with key. */
static void make_req(struct req *q, const struct side *s, const uint8_t *key,
                     uint64_t counter, uint64_t r)
{
    struct resil_resume_view peer = s->v;
    uint8_t tail[16], nonce[16];

    peer.role = !s->v.role;
    peer.k_mac = key;
    tail_at(r, tail);
    cr_assert_eq(resil_session_random(nonce, sizeof nonce), RESIL_OK);
    cr_assert_eq(resil_resume_request(&peer, counter, r, tail, 0, nonce, q->b,
                                      sizeof q->b, &q->len),
                 RESIL_OK);
    cr_assert_eq(resil_wire_decode(q->b, q->len, &q->m, NULL), RESIL_OK);
}

static enum resil_refuse decide(const struct side *s, const struct req *q,
                                struct resil_resume_verdict *v)
{
    resil_status_t st =
        resil_resume_decide(s ? &s->v : NULL, q->b, q->len, &q->m, v);

    cr_assert_eq(st, v->refuse == RESIL_REFUSE_NONE ? RESIL_OK : RESIL_EAUTH,
                 "status and verdict agree");
    cr_assert_not_null(v->why);
    return v->refuse;
}

Test(session_resume, accepted)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    make_req(&q, &s, s.k.k_mac, 1, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE, "%s", v.why);
    cr_expect_eq(v.from, 4000);
    cr_expect_eq(v.to, 5000);
    cr_expect(v.take_counter);
    cr_expect_eq(v.counter, 1);
    cr_expect_not(v.abort_own);
    /* The lowest R whose tail is still held, and R = W. */
    make_req(&q, &s, s.k.k_mac, 2, 3000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE, "%s", v.why);
    make_req(&q, &s, s.k.k_mac, 3, 5000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE);
    cr_expect_eq(v.from, v.to, "nothing to retransmit");
    resil_ring_free(&s.ring);
}

Test(session_resume, early_in_the_stream)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;

    /* Nothing acknowledged yet: every R from 0 has its (short) tail. */
    side_init(&s, RESIL_ROLE_CLIENT, 0, 100, 0);
    for (uint64_t r = 0; r <= 100; r++) {
        make_req(&q, &s, s.k.k_mac, r + 1, r);
        cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE, "R %llu: %s",
                     (unsigned long long)r, v.why);
        cr_expect_eq(v.from, r);
    }
    resil_ring_free(&s.ring);
}

Test(session_resume, unknown)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    make_req(&q, &s, s.k.k_mac, 1, 4000);
    cr_expect_eq(decide(NULL, &q, &v), RESIL_REFUSE_UNKNOWN);
    cr_expect_not(v.take_counter);
    s.v.id[3] ^= 1;
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_UNKNOWN);
    s.v.id[3] ^= 1;
    /* Our own RESUME reflected back: the same K_mac verifies it. */
    s.v.role = RESIL_ROLE_CLIENT;
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_UNKNOWN);
    cr_expect_str_eq(v.why, "RESUME claims our own role in the session");
    cr_expect_not(v.take_counter);
    resil_ring_free(&s.ring);
}

Test(session_resume, bad_mac)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;
    uint8_t wrong[32];

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    memcpy(wrong, s.k.k_mac, 32);
    wrong[7] ^= 0x10;
    make_req(&q, &s, wrong, 1, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_BAD_MAC);
    cr_expect_not(v.take_counter, "an unauthenticated counter is no news");
    /* K_confirm is not K_mac. */
    fill_seq(s.k.k_confirm, 32, 0x71);
    make_req(&q, &s, s.k.k_confirm, 1, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_BAD_MAC);
    /* Any bit of the message after the header, MAC included. */
    make_req(&q, &s, s.k.k_mac, 1, 4000);
    for (size_t off = RESIL_WIRE_HDR_LEN; off < q.len; off++) {
        for (int bit = 0; bit < 8; bit++) {
            struct req f = q;
            f.b[off] ^= (uint8_t)(1 << bit);
            if (resil_wire_decode(f.b, f.len, &f.m, NULL) != RESIL_OK)
                continue; /* role or flags out of range */
            cr_assert_neq(decide(&s, &f, &v), RESIL_REFUSE_NONE,
                          "byte %zu bit %d", off, bit);
            cr_assert_not(v.take_counter);
        }
    }
    resil_ring_free(&s.ring);
}

Test(session_resume, replayed_and_stale)
{
    struct side s;
    struct req q, old;
    struct resil_resume_verdict v;

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    make_req(&old, &s, s.k.k_mac, 6, 4000);
    make_req(&q, &s, s.k.k_mac, 7, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE);
    s.v.peer_counter = v.counter; /* the caller stores it */
    /* The same bytes again: a recorded resume. */
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_REPLAYED);
    cr_expect_not(v.take_counter);
    /* An older one that was never used. */
    cr_expect_eq(decide(&s, &old, &v), RESIL_REFUSE_REPLAYED);
    /* Counters start at 1. */
    s.v.peer_counter = 0;
    make_req(&q, &s, s.k.k_mac, 0, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_REPLAYED);
    /* The top of the range is a counter like any other. */
    s.v.peer_counter = UINT64_MAX - 1;
    make_req(&q, &s, s.k.k_mac, UINT64_MAX, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE);
    s.v.peer_counter = UINT64_MAX;
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_REPLAYED);
    resil_ring_free(&s.ring);
}

Test(session_resume, not_resumable)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    s.v.resumable = false;
    make_req(&q, &s, s.k.k_mac, 1, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NOT_RESUMABLE);
    cr_expect(v.take_counter);
    resil_ring_free(&s.ring);
}

Test(session_resume, busy_and_the_client_wins)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;

    /* We are the client and resume ourselves: the server's RESUME waits. */
    side_init(&s, RESIL_ROLE_CLIENT, 0, 5000, 3000);
    s.v.own_attempt = true;
    make_req(&q, &s, s.k.k_mac, 1, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_BUSY);
    /* Its counter is spent: the same RESUME cannot come back later. */
    cr_expect(v.take_counter);
    s.v.peer_counter = v.counter;
    s.v.own_attempt = false;
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_REPLAYED);
    make_req(&q, &s, s.k.k_mac, 2, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE);
    resil_ring_free(&s.ring);

    /* We are the server: the client's RESUME wins over our attempt. */
    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    s.v.own_attempt = true;
    make_req(&q, &s, s.k.k_mac, 1, 4000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE);
    cr_expect(v.abort_own);
    /* ... unless it is refused anyway. */
    make_req(&q, &s, s.k.k_mac, 2, 6000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_OUT_OF_WINDOW);
    cr_expect_not(v.abort_own);
    resil_ring_free(&s.ring);
}

Test(session_resume, out_of_window)
{
    static const uint64_t bad[] = {5001, 6000, UINT64_MAX, 2999, 2936, 0, 2937};
    struct side s;
    struct req q;
    struct resil_resume_verdict v;

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    cr_assert_eq(s.ring.start, 2936);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        make_req(&q, &s, s.k.k_mac, i + 1, bad[i]);
        cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_OUT_OF_WINDOW, "R %llu",
                     (unsigned long long)bad[i]);
        cr_expect(v.take_counter);
        cr_expect_eq(v.from, 0);
        cr_expect_eq(v.to, 0);
    }
    resil_ring_free(&s.ring);
}

Test(session_resume, tail_mismatch)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;
    struct resil_resume_view peer;
    uint8_t tail[16], nonce[16] = {0};

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    peer = s.v;
    peer.role = RESIL_ROLE_CLIENT;
    /* Counts off by one: the hash covers other bytes. */
    tail_at(4001, tail);
    cr_assert_eq(resil_resume_request(&peer, 1, 4000, tail, 0, nonce, q.b,
                                      sizeof q.b, &q.len),
                 RESIL_OK);
    cr_assert_eq(resil_wire_decode(q.b, q.len, &q.m, NULL), RESIL_OK);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_TAIL_MISMATCH);
    cr_expect(v.take_counter);
    /* One byte of our stream differs from what the peer received. */
    uint8_t b[64];
    struct iovec iov = {b, 64};
    gen_fill(b, 3936, 64);
    b[63] ^= 1;
    resil_session_tail(&iov, 1, tail);
    cr_assert_eq(resil_resume_request(&peer, 2, 4000, tail, 0, nonce, q.b,
                                      sizeof q.b, &q.len),
                 RESIL_OK);
    cr_assert_eq(resil_wire_decode(q.b, q.len, &q.m, NULL), RESIL_OK);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_TAIL_MISMATCH);
    resil_ring_free(&s.ring);
}

/* A RESUME with several faults gets the first reason of the table. */
Test(session_resume, the_table_order)
{
    struct side s;
    struct req q;
    struct resil_resume_verdict v;
    uint8_t wrong[32] = {1};

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    s.v.peer_counter = 10;
    s.v.resumable = false;
    s.v.own_attempt = true;
    s.v.role = RESIL_ROLE_CLIENT;
    /* Everything wrong. */
    make_req(&q, &s, wrong, 3, 9000);
    s.v.id[0] ^= 1;
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_UNKNOWN);
    s.v.id[0] ^= 1;
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_BAD_MAC);
    make_req(&q, &s, s.k.k_mac, 3, 9000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_REPLAYED);
    make_req(&q, &s, s.k.k_mac, 11, 9000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NOT_RESUMABLE);
    s.v.resumable = true;
    make_req(&q, &s, s.k.k_mac, 12, 9000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_BUSY);
    s.v.own_attempt = false;
    make_req(&q, &s, s.k.k_mac, 13, 9000);
    cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_OUT_OF_WINDOW);
    resil_ring_free(&s.ring);
}

Test(session_resume, positions_past_4_gib)
{
    static const uint64_t bases[] = {(1ull << 32) - 3000, 1ull << 40};

    for (int i = 0; i < 2; i++) {
        struct side s;
        struct req q;
        struct resil_resume_verdict v;
        uint64_t b = bases[i];

        side_init(&s, RESIL_ROLE_SERVER, b, 5000, 3000);
        make_req(&q, &s, s.k.k_mac, 1, b + 4000);
        cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_NONE, "%s", v.why);
        cr_expect_eq(v.from, b + 4000);
        cr_expect_eq(v.to, b + 5000);
        /* The same offsets 2^32 apart are other positions. */
        make_req(&q, &s, s.k.k_mac, 2, b + 4000 + (1ull << 32));
        cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_OUT_OF_WINDOW);
        make_req(&q, &s, s.k.k_mac, 3, b + 4000 - (1ull << 32));
        cr_expect_eq(decide(&s, &q, &v), RESIL_REFUSE_OUT_OF_WINDOW);
        resil_ring_free(&s.ring);
    }
}

Test(session_resume, not_a_resume)
{
    struct side s;
    struct resil_resume_verdict v;
    struct resil_msg m = sample_resumed();
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t len = encode_ok(&m, b, sizeof b);

    side_init(&s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    cr_expect_eq(resil_resume_decide(&s.v, b, len, &m, &v), RESIL_EINVAL);
    cr_expect_eq(v.refuse, RESIL_REFUSE_UNKNOWN);
    cr_expect_eq(resil_resume_decide(&s.v, b, len, NULL, &v), RESIL_EINVAL);
    resil_ring_free(&s.ring);
}

/* The initiator's side: the client resumes, the server answers. */
struct pair {
    struct side c, s;
    struct req q;
    uint8_t a[RESIL_WIRE_MAX_LEN];
    size_t alen;
    struct resil_msg am;
};

static void pair_init(struct pair *p)
{
    uint8_t tail[16], nonce[16];

    /* The client wrote [0, 8000), the server acknowledged 7000 of it and
     * received 7500; the server wrote [0, 5000), the client received
     * 4000. */
    side_init(&p->c, RESIL_ROLE_CLIENT, 0, 8000, 7000);
    side_init(&p->s, RESIL_ROLE_SERVER, 0, 5000, 3000);
    tail_at(4000, tail);
    cr_assert_eq(resil_session_random(nonce, 16), RESIL_OK);
    cr_assert_eq(resil_resume_request(&p->c.v, 1, 4000, tail, 0, nonce, p->q.b,
                                      sizeof p->q.b, &p->q.len),
                 RESIL_OK);
    cr_assert_eq(resil_wire_decode(p->q.b, p->q.len, &p->q.m, NULL), RESIL_OK);
}

static void answer(struct pair *p, uint64_t r, uint64_t tail_r,
                   const uint8_t *req, size_t rlen)
{
    uint8_t tail[16];

    tail_at(tail_r, tail);
    cr_assert_eq(resil_resume_answer(&p->s.v, req, rlen, r, tail,
                                     RESIL_RESUME_F_FIN, p->a, sizeof p->a,
                                     &p->alen),
                 RESIL_OK);
    cr_assert_eq(resil_wire_decode(p->a, p->alen, &p->am, NULL), RESIL_OK);
    cr_expect_eq(p->am.u.resumed.flags, RESIL_RESUME_F_FIN);
}

static enum resil_refuse check(struct pair *p, struct resil_resume_verdict *v)
{
    resil_status_t st =
        resil_resume_check(&p->c.v, p->q.b, p->q.len, p->a, p->alen, &p->am, v);

    cr_assert_eq(st, v->refuse ? RESIL_EAUTH : RESIL_OK);
    cr_expect_not(v->take_counter);
    return v->refuse;
}

Test(session_resume, initiator_accepts_the_answer)
{
    struct pair p;
    struct resil_resume_verdict v;

    pair_init(&p);
    cr_assert_eq(decide(&p.s, &p.q, &v), RESIL_REFUSE_NONE);
    cr_expect_eq(v.from, 4000);
    answer(&p, 7500, 7500, p.q.b, p.q.len);
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_NONE, "%s", v.why);
    cr_expect_eq(v.from, 7500);
    cr_expect_eq(v.to, 8000);
    resil_ring_free(&p.c.ring);
    resil_ring_free(&p.s.ring);
}

Test(session_resume, initiator_refuses_bad_answers)
{
    struct pair p;
    struct resil_resume_verdict v;
    struct req other;

    pair_init(&p);
    /* A recorded RESUMED that answered another RESUME. */
    make_req(&other, &p.s, p.s.k.k_mac, 1, 4000);
    answer(&p, 7500, 7500, other.b, other.len);
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_BAD_MAC);
    /* Out of our window: beyond W, before what we hold, tail trimmed. */
    answer(&p, 8001, 8001, p.q.b, p.q.len);
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_OUT_OF_WINDOW);
    answer(&p, 6999, 6999, p.q.b, p.q.len);
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_OUT_OF_WINDOW);
    answer(&p, 7000, 7000, p.q.b, p.q.len);
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_NONE);
    /* The tail of other bytes. */
    answer(&p, 7500, 7499, p.q.b, p.q.len);
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_TAIL_MISMATCH);
    /* Another session's answer. */
    answer(&p, 7500, 7500, p.q.b, p.q.len);
    p.c.v.id[15] ^= 1;
    cr_expect_eq(check(&p, &v), RESIL_REFUSE_UNKNOWN);
    p.c.v.id[15] ^= 1;
    /* Any bit flipped after the header. */
    for (size_t off = RESIL_WIRE_HDR_LEN; off < p.alen; off++) {
        for (int bit = 0; bit < 8; bit++) {
            p.a[off] ^= (uint8_t)(1 << bit);
            if (resil_wire_decode(p.a, p.alen, &p.am, NULL) == RESIL_OK)
                cr_assert_neq(check(&p, &v), RESIL_REFUSE_NONE,
                              "byte %zu bit %d", off, bit);
            p.a[off] ^= (uint8_t)(1 << bit);
        }
    }
    /* Not a RESUMED, or not our RESUME. */
    cr_expect_eq(
        resil_resume_check(&p.c.v, p.q.b, p.q.len, p.q.b, p.q.len, &p.q.m, &v),
        RESIL_EINVAL);
    cr_expect_eq(
        resil_resume_check(&p.c.v, p.a, p.alen, p.a, p.alen, &p.am, &v),
        RESIL_EINVAL);
    resil_ring_free(&p.c.ring);
    resil_ring_free(&p.s.ring);
}

/* HELLO and WELCOME as the two ends will exchange them, with the keys of
 * both ends, then a resume between them. */
static void handshake(const uint8_t *psk_c, const uint8_t *psk_s,
                      bool expect_ok)
{
    struct resil_kx c, s;
    struct resil_msg h = sample_hello(RESIL_MSG_HELLO, 2), hm, w, wm;
    uint8_t hb[RESIL_WIRE_MAX_LEN], wb[RESIL_WIRE_MAX_LEN], kh[32];
    struct resil_session_keys kc, ks;
    size_t hl, wl;

    /* Client: HELLO sealed with K_hello. */
    cr_assert_eq(resil_kx_new(&c), RESIL_OK);
    memcpy(h.u.hello.pub, c.pk, 32);
    memcpy(h.u.hello.nonce, c.nonce, 16);
    h.u.hello.flags = psk_c ? RESIL_HELLO_F_PSK : 0;
    hl = encode_ok(&h, hb, sizeof hb);
    cr_assert_eq(resil_session_hello_key(psk_c, kh), RESIL_OK);
    cr_assert_eq(resil_session_seal(kh, NULL, 0, hb, hl), RESIL_OK);

    /* Server: checks it with its own K_hello. */
    cr_assert_eq(resil_wire_decode(hb, hl, &hm, NULL), RESIL_OK);
    cr_assert_eq(resil_session_hello_key(psk_s, kh), RESIL_OK);
    if (!expect_ok) {
        cr_expect_eq(resil_session_verify(kh, NULL, 0, hb, hl), RESIL_EAUTH);
        /* Even if it went on, the client would refuse its WELCOME. */
    } else {
        cr_assert_eq(resil_session_verify(kh, NULL, 0, hb, hl), RESIL_OK);
    }
    cr_assert_eq(resil_kx_new(&s), RESIL_OK);
    w = sample_hello(RESIL_MSG_WELCOME, 1);
    memcpy(w.u.hello.pub, s.pk, 32);
    memcpy(w.u.hello.nonce, s.nonce, 16);
    wl = encode_ok(&w, wb, sizeof wb);
    cr_assert_eq(resil_session_derive(&s, RESIL_ROLE_SERVER, hm.u.hello.pub,
                                      hm.u.hello.nonce, psk_s, &ks),
                 RESIL_OK);
    cr_assert_eq(resil_session_seal(ks.k_confirm, hb, hl, wb, wl), RESIL_OK);

    /* Client: derives, checks the confirm MAC. */
    cr_assert_eq(resil_wire_decode(wb, wl, &wm, NULL), RESIL_OK);
    cr_assert_eq(resil_session_derive(&c, RESIL_ROLE_CLIENT, wm.u.hello.pub,
                                      wm.u.hello.nonce, psk_c, &kc),
                 RESIL_OK);
    if (!expect_ok) {
        cr_expect_eq(resil_session_verify(kc.k_confirm, hb, hl, wb, wl),
                     RESIL_EAUTH);
        return;
    }
    cr_assert_eq(resil_session_verify(kc.k_confirm, hb, hl, wb, wl), RESIL_OK);
    cr_expect_arr_eq(kc.id, ks.id, 16);

    /* A resume between the two, each with its own copy of the keys. */
    struct side sc, ss;
    struct resil_resume_verdict v;
    struct req q;
    uint8_t tail[16], nonce[16] = {9};

    side_init(&sc, RESIL_ROLE_CLIENT, 0, 300, 100);
    side_init(&ss, RESIL_ROLE_SERVER, 0, 900, 500);
    memcpy(sc.v.id, kc.id, 16);
    sc.v.k_mac = kc.k_mac;
    memcpy(ss.v.id, ks.id, 16);
    ss.v.k_mac = ks.k_mac;
    tail_at(700, tail);
    cr_assert_eq(resil_resume_request(&sc.v, 1, 700, tail, 0, nonce, q.b,
                                      sizeof q.b, &q.len),
                 RESIL_OK);
    cr_assert_eq(resil_wire_decode(q.b, q.len, &q.m, NULL), RESIL_OK);
    cr_expect_eq(decide(&ss, &q, &v), RESIL_REFUSE_NONE, "%s", v.why);
    cr_expect_eq(v.from, 700);
    cr_expect_eq(v.to, 900);
    resil_ring_free(&sc.ring);
    resil_ring_free(&ss.ring);
}

Test(session_resume, whole_handshake_then_resume)
{
    uint8_t a[32], b[32];

    fill_seq(a, 32, 3);
    fill_seq(b, 32, 4);
    handshake(NULL, NULL, true);
    handshake(a, a, true);
    handshake(a, b, false);
    handshake(NULL, a, false);
    handshake(a, NULL, false);
}
