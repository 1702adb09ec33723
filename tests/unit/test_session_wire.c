/* The session message codec: layouts, round trips and every rejection. */
#include <arpa/inet.h>

#include "session_util.h"

TestSuite(session_wire, .init = unit_setup);

/* The samples of every type, encoded. */
struct sample {
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t len;
};

static int all_samples(struct sample *s)
{
    struct resil_msg m[] = {
        sample_hello(RESIL_MSG_HELLO, 0),
        sample_hello(RESIL_MSG_HELLO, 2),
        sample_hello(RESIL_MSG_WELCOME, 3),
        sample_hello(RESIL_MSG_HELLO, RESIL_WIRE_MAX_ADDR),
        sample_resume(),
        sample_resumed(),
        sample_refuse(RESIL_REFUSE_TAIL_MISMATCH),
    };
    int n = (int)(sizeof m / sizeof m[0]);

    for (int i = 0; i < n; i++)
        s[i].len = encode_ok(&m[i], s[i].b, sizeof s[i].b);
    return n;
}

static void expect_decodes_to(const uint8_t *b, size_t len,
                              const struct resil_msg *want)
{
    struct resil_msg m;
    struct resil_wire_err e;

    cr_assert_eq(resil_wire_decode(b, len, &m, &e), RESIL_OK, "%s", e.why);
    cr_expect_eq(m.type, want->type);
    cr_expect_eq(m.version, RESIL_WIRE_VERSION);
    cr_expect_eq(m.len, len);
    switch (want->type) {
    case RESIL_MSG_HELLO:
    case RESIL_MSG_WELCOME: {
        const struct resil_msg_hello *a = &m.u.hello, *w = &want->u.hello;
        cr_expect_eq(a->flags, w->flags);
        cr_expect_arr_eq(a->pub, w->pub, sizeof a->pub);
        cr_expect_arr_eq(a->nonce, w->nonce, sizeof a->nonce);
        cr_expect_eq(a->rcvbuf, w->rcvbuf);
        cr_expect_eq(a->resume_port, w->resume_port);
        cr_assert_eq(a->naddr, w->naddr);
        for (unsigned i = 0; i < a->naddr; i++)
            cr_expect(resil_ip_equal(&a->addr[i], &w->addr[i]), "addr %u", i);
        cr_expect_arr_eq(a->mac, w->mac, sizeof a->mac);
        break;
    }
    case RESIL_MSG_RESUME: {
        const struct resil_msg_resume *a = &m.u.resume, *w = &want->u.resume;
        cr_expect_arr_eq(a->id, w->id, sizeof a->id);
        cr_expect_eq(a->role, w->role);
        cr_expect_eq(a->flags, w->flags);
        cr_expect_eq(a->counter, w->counter);
        cr_expect_eq(a->r, w->r);
        cr_expect_eq(a->w, w->w);
        cr_expect_arr_eq(a->tail, w->tail, sizeof a->tail);
        cr_expect_arr_eq(a->nonce, w->nonce, sizeof a->nonce);
        cr_expect_arr_eq(a->mac, w->mac, sizeof a->mac);
        break;
    }
    case RESIL_MSG_RESUMED: {
        const struct resil_msg_resumed *a = &m.u.resumed, *w = &want->u.resumed;
        cr_expect_arr_eq(a->id, w->id, sizeof a->id);
        cr_expect_eq(a->flags, w->flags);
        cr_expect_eq(a->r, w->r);
        cr_expect_eq(a->w, w->w);
        cr_expect_arr_eq(a->tail, w->tail, sizeof a->tail);
        cr_expect_arr_eq(a->mac, w->mac, sizeof a->mac);
        break;
    }
    default:
        cr_expect_eq(m.u.refuse.reason, want->u.refuse.reason);
    }
}

/* The layouts of doc/session.md, byte for byte. */
Test(session_wire, golden_resume)
{
    static const uint8_t want[RESIL_RESUME_LEN] = {
        0x00, 0x52, 0x53, 0x4c, 3, 1, 0, 98,
        /* id */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
        0x0d, 0x0e, 0x0f, 0x10,
        /* role, flags */
        1, 1,
        /* counter, R, W */
        1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x10,
        /* tail, nonce, MAC */
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b,
        0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
        0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x41, 0x42, 0x43,
        0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f};
    struct resil_msg m = sample_resume();
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t len = encode_ok(&m, b, sizeof b);

    cr_assert_eq(len, sizeof want);
    cr_expect_arr_eq(b, want, len);
    expect_decodes_to(want, sizeof want, &m);
    cr_expect_eq(resil_wire_mac_offset(b, len), 82);
}

Test(session_wire, golden_resumed_refuse)
{
    static const uint8_t want[RESIL_RESUMED_LEN] = {
        0x00, 0x52, 0x53, 0x4c, 4, 1, 0, 73,
        /* id */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
        0x0d, 0x0e, 0x0f, 0x10,
        /* flags, R, W */
        0, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b,
        0x2c, 0x2d, 0x2e, 0x2f, 0x20,
        /* tail, MAC */
        0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b,
        0x5c, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f};
    static const uint8_t refuse[RESIL_REFUSE_LEN] = {0x00, 0x52, 0x53, 0x4c, 5,
                                                     1,    0,    9,    7};
    struct resil_msg m = sample_resumed(),
                     f = sample_refuse(RESIL_REFUSE_TAIL_MISMATCH);
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t len = encode_ok(&m, b, sizeof b);

    cr_assert_eq(len, sizeof want);
    cr_expect_arr_eq(b, want, len);
    expect_decodes_to(want, sizeof want, &m);
    cr_expect_eq(resil_wire_mac_offset(b, len), 57);
    len = encode_ok(&f, b, sizeof b);
    cr_assert_eq(len, sizeof refuse);
    cr_expect_arr_eq(b, refuse, len);
    expect_decodes_to(refuse, sizeof refuse, &f);
    cr_expect_eq(resil_wire_mac_offset(b, len), 0, "REFUSE has no MAC");
}

Test(session_wire, golden_hello)
{
    uint8_t want[103] = {0x00, 0x52, 0x53, 0x4c, 1, 1, 0, 103, 0x00, 0x01};
    struct resil_msg m = sample_hello(RESIL_MSG_HELLO, 2);
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t len;

    fill_seq(want + 10, 32, 0x10);            /* public key */
    fill_seq(want + 42, 16, 0x40);            /* nonce */
    memcpy(want + 58, "\x00\x60\x00\x00", 4); /* 6 MiB */
    memcpy(want + 62, "\x9c\xbb", 2);         /* port 40123 */
    want[64] = 2;
    want[65] = 6;
    cr_assert_eq(inet_pton(AF_INET6, "fd00:66::1", want + 66), 1);
    memcpy(want + 82, "\x04\x0a\x00\x01\x02", 5);
    fill_seq(want + 87, 16, 0xa0); /* MAC */
    len = encode_ok(&m, b, sizeof b);
    cr_assert_eq(len, sizeof want);
    cr_expect_arr_eq(b, want, len);
    expect_decodes_to(want, sizeof want, &m);
    cr_expect_eq(resil_wire_mac_offset(b, len), 87);
    m.type = RESIL_MSG_WELCOME;
    want[4] = 2;
    len = encode_ok(&m, b, sizeof b);
    cr_expect_arr_eq(b, want, len);
    expect_decodes_to(want, sizeof want, &m);
}

Test(session_wire, lengths_of_every_hello_size)
{
    for (unsigned n = 0; n <= RESIL_WIRE_MAX_ADDR; n++) {
        struct resil_msg m = sample_hello(RESIL_MSG_HELLO, n);
        uint8_t b[RESIL_WIRE_MAX_LEN];
        size_t len = encode_ok(&m, b, sizeof b);
        size_t want = RESIL_HELLO_MIN_LEN + (n + 1) / 2 * 17 + n / 2 * 5;

        cr_expect_eq(len, want, "%u addresses: %zu", n, len);
        expect_decodes_to(b, len, &m);
    }
    /* Eight IPv6 addresses is the longest HELLO. */
    struct resil_msg m = sample_hello(RESIL_MSG_HELLO, 8);
    uint8_t b[RESIL_WIRE_MAX_LEN];
    for (int i = 0; i < 8; i++)
        m.u.hello.addr[i] = ip_of("2001:db8::1");
    cr_expect_eq(encode_ok(&m, b, sizeof b), RESIL_HELLO_MAX_LEN);
    expect_decodes_to(b, RESIL_HELLO_MAX_LEN, &m);
}

/* The program's own bytes may follow a message in the same read. */
Test(session_wire, bytes_after_the_message_are_not_ours)
{
    struct sample s[8];
    int n = all_samples(s);

    for (int i = 0; i < n; i++) {
        uint8_t b[RESIL_WIRE_MAX_LEN + 64];
        struct resil_msg m;

        memcpy(b, s[i].b, s[i].len);
        memcpy(b + s[i].len, "GET / HTTP/1.1\r\n", 16);
        cr_expect_eq(resil_wire_decode(b, s[i].len + 16, &m, NULL), RESIL_OK);
        cr_expect_eq(m.len, s[i].len);
    }
}

Test(session_wire, every_truncation_asks_for_more)
{
    struct sample s[8];
    int n = all_samples(s);

    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < s[i].len; k++) {
            struct resil_msg m;
            struct resil_wire_err e;
            size_t want =
                k < RESIL_WIRE_HDR_LEN ? RESIL_WIRE_HDR_LEN - k : s[i].len - k;

            cr_assert_eq(resil_wire_decode(s[i].b, k, &m, &e), RESIL_EAGAIN,
                         "sample %d, %zu bytes: %s", i, k, e.why);
            cr_expect_eq(e.need, want, "sample %d, %zu bytes", i, k);
            cr_expect_str_eq(e.why, "truncated message");
        }
    }
    /* NULL with no bytes is a valid (empty) prefix. */
    struct resil_wire_err e;
    struct resil_msg m;
    cr_expect_eq(resil_wire_decode(NULL, 0, &m, &e), RESIL_EAGAIN);
    cr_expect_eq(e.need, RESIL_WIRE_HDR_LEN);
}

Test(session_wire, sniff_the_first_bytes)
{
    static const uint8_t magic[4] = {0x00, 0x52, 0x53, 0x4c};

    cr_expect_eq(resil_wire_sniff(NULL, 0), RESIL_SNIFF_MAYBE);
    for (size_t k = 1; k < 4; k++)
        cr_expect_eq(resil_wire_sniff(magic, k), RESIL_SNIFF_MAYBE);
    cr_expect_eq(resil_wire_sniff(magic, 4), RESIL_SNIFF_YES);
    cr_expect_eq(resil_wire_sniff("\x00RSL\x01\x01", 6), RESIL_SNIFF_YES);
    /* What ordinary clients send first: text, TLS, PostgreSQL's length. */
    cr_expect_eq(resil_wire_sniff("G", 1), RESIL_SNIFF_NO);
    cr_expect_eq(resil_wire_sniff("*1\r\n", 4), RESIL_SNIFF_NO);
    cr_expect_eq(resil_wire_sniff("\x16\x03\x01", 3), RESIL_SNIFF_NO);
    cr_expect_eq(resil_wire_sniff("\x00\x00\x00\x08", 4), RESIL_SNIFF_NO);
    cr_expect_eq(resil_wire_sniff("\x00\x00", 2), RESIL_SNIFF_NO);
    for (size_t k = 0; k < 4; k++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t b[4];
            memcpy(b, magic, 4);
            b[k] ^= (uint8_t)(1 << bit);
            cr_expect_eq(resil_wire_sniff(b, 4), RESIL_SNIFF_NO);
            cr_expect_eq(resil_wire_sniff(b, k + 1), RESIL_SNIFF_NO);
            if (k > 0)
                cr_expect_eq(resil_wire_sniff(b, k), RESIL_SNIFF_MAYBE);
        }
    }
}

static resil_status_t decode(const uint8_t *b, size_t len,
                             struct resil_wire_err *e)
{
    struct resil_msg m;
    return resil_wire_decode(b, len, &m, e);
}

Test(session_wire, wrong_magic)
{
    struct sample s[8];
    int n = all_samples(s);

    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < 4; k++) {
            struct resil_wire_err e;
            uint8_t b[RESIL_WIRE_MAX_LEN];

            memcpy(b, s[i].b, s[i].len);
            b[k] ^= 0x80;
            /* Judged at the first differing byte. */
            cr_expect_eq(decode(b, k + 1, &e), RESIL_ENOMSG);
            cr_expect_eq(decode(b, s[i].len, &e), RESIL_ENOMSG);
            cr_expect_str_eq(e.why, "wrong magic: not a libresil message");
        }
    }
    cr_expect_eq(decode((const uint8_t *)"GET / HTTP/1.1\r\n", 16, NULL),
                 RESIL_ENOMSG);
}

Test(session_wire, unknown_type)
{
    static const uint8_t types[] = {0, 6, 7, 0x81, 0xff};
    struct sample s[8];

    all_samples(s);
    for (size_t i = 0; i < sizeof types; i++) {
        struct resil_wire_err e;
        uint8_t b[RESIL_WIRE_MAX_LEN];

        memcpy(b, s[4].b, s[4].len);
        b[4] = types[i];
        /* Judged as soon as the type byte is there. */
        cr_expect_eq(decode(b, 5, &e), RESIL_EPROTO);
        cr_expect_eq(decode(b, s[4].len, &e), RESIL_EPROTO);
        cr_expect_str_eq(e.why, "unknown message type");
    }
}

Test(session_wire, other_versions)
{
    struct sample s[8];
    int n = all_samples(s);

    for (int i = 0; i < n; i++) {
        static const uint8_t versions[] = {0, 2, 3, 0x80, 0xff};
        for (size_t v = 0; v < sizeof versions; v++) {
            struct resil_wire_err e;
            struct resil_msg m;
            uint8_t b[RESIL_WIRE_MAX_LEN];
            resil_status_t st;

            memcpy(b, s[i].b, s[i].len);
            b[5] = versions[v];
            /* Not judged before the header is complete. */
            cr_expect_eq(resil_wire_decode(b, 7, &m, &e), RESIL_EAGAIN);
            st = resil_wire_decode(b, RESIL_WIRE_HDR_LEN, &m, &e);
            if (b[4] == RESIL_MSG_REFUSE && versions[v] != 0) {
                /* REFUSE's layout never changes: taken from any version. */
                cr_expect_eq(st, RESIL_EAGAIN);
                cr_expect_eq(resil_wire_decode(b, s[i].len, &m, &e), RESIL_OK);
                cr_expect_eq(m.version, versions[v]);
                continue;
            }
            cr_expect_eq(st, RESIL_EVERSION, "type %u version %u", b[4],
                         versions[v]);
            cr_expect_str_eq(e.why, "unsupported protocol version");
            cr_expect_eq(m.type, b[4]);
            cr_expect_eq(m.version, versions[v]);
            cr_expect_eq(m.len, s[i].len, "the caller can skip it");
        }
    }
    /* Another version's length is still bounded. */
    uint8_t h[8] = {0x00, 0x52, 0x53, 0x4c, 1, 2, 0x02, 0x01}; /* 513 */
    struct resil_wire_err e;
    cr_expect_eq(decode(h, sizeof h, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "length outside [8, 512]");
    h[6] = 0;
    h[7] = 7;
    cr_expect_eq(decode(h, sizeof h, &e), RESIL_EPROTO);
    h[6] = 2;
    h[7] = 0; /* 512: skippable */
    cr_expect_eq(decode(h, sizeof h, &e), RESIL_EVERSION);
}

static void set_len(uint8_t *b, unsigned len)
{
    b[6] = (uint8_t)(len >> 8);
    b[7] = (uint8_t)len;
}

Test(session_wire, lengths_outside_the_bounds)
{
    static const struct {
        uint8_t type;
        unsigned bad[6];
    } cases[] = {
        {RESIL_MSG_HELLO, {0, 8, 80, 218, 512, 0xffff}},
        {RESIL_MSG_WELCOME, {0, 7, 80, 218, 513, 0x8000}},
        {RESIL_MSG_RESUME, {0, 8, 89, 91, 512, 0xffff}},
        {RESIL_MSG_RESUMED, {0, 8, 64, 66, 300, 0xffff}},
        {RESIL_MSG_REFUSE, {0, 8, 10, 16, 512, 0xffff}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t k = 0; k < 6; k++) {
            uint8_t b[RESIL_WIRE_MAX_LEN + 8] = {0x00, 0x52, 0x53, 0x4c};
            struct resil_wire_err e;

            b[4] = cases[i].type;
            b[5] = 1;
            set_len(b, cases[i].bad[k]);
            /* Judged from the header alone, and with all bytes there. */
            cr_expect_eq(decode(b, RESIL_WIRE_HDR_LEN, &e), RESIL_EPROTO,
                         "type %u length %u", cases[i].type, cases[i].bad[k]);
            cr_expect_str_eq(e.why, "length outside the type's bounds");
            cr_expect_eq(decode(b, sizeof b, &e), RESIL_EPROTO);
        }
    }
}

/* A HELLO's address list, its count and its length must agree. */
Test(session_wire, address_counts)
{
    struct resil_msg m = sample_hello(RESIL_MSG_HELLO, 2);
    uint8_t b[RESIL_WIRE_MAX_LEN], c[RESIL_WIRE_MAX_LEN] = {0};
    size_t len = encode_ok(&m, b, sizeof b);
    struct resil_wire_err e;

    memcpy(c, b, len);
    c[64] = 9;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "more than 8 addresses");
    c[64] = 3;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "addresses overrun the length");
    c[64] = 1;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "bytes left between addresses and MAC");
    c[64] = 0;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "bytes left between addresses and MAC");
    /* The IPv6 address made IPv4: 12 bytes left over. */
    memcpy(c, b, len);
    c[65] = 4;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    /* The IPv4 address made IPv6: runs into the MAC. */
    memcpy(c, b, len);
    c[82] = 6;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "addresses overrun the length");
    for (int fam = 0; fam < 256; fam++) {
        if (fam == 4 || fam == 6)
            continue;
        memcpy(c, b, len);
        c[65] = (uint8_t)fam;
        cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
        cr_expect_str_eq(e.why, "address family not 4 or 6");
    }
    /* A longer length whose bytes are there: still no room for naddr. */
    memcpy(c, b, len);
    set_len(c, (unsigned)len + 5);
    cr_expect_eq(decode(c, len + 5, &e), RESIL_EPROTO);
    /* One spelling per address: IPv4 travels as family 4. */
    m.u.hello.addr[0] = ip_of("10.9.8.7");
    m.u.hello.addr[0].family = AF_INET6;
    memset(&m.u.hello.addr[0].u.v6, 0, 16);
    m.u.hello.addr[0].u.v6.s6_addr[10] = 0xff;
    m.u.hello.addr[0].u.v6.s6_addr[11] = 0xff;
    size_t out;
    cr_expect_eq(resil_wire_encode(&m, c, sizeof c, &out), RESIL_EINVAL);
    memcpy(c, b, len);
    memset(c + 66, 0, 16);
    c[76] = c[77] = 0xff;
    cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    cr_expect_str_eq(e.why, "IPv4 address sent as IPv6");
}

Test(session_wire, fields_out_of_range)
{
    struct resil_msg h = sample_hello(RESIL_MSG_WELCOME, 1),
                     r = sample_resume(), d = sample_resumed();
    uint8_t b[RESIL_WIRE_MAX_LEN], c[RESIL_WIRE_MAX_LEN];
    struct resil_wire_err e;
    size_t len;

    len = encode_ok(&h, b, sizeof b);
    for (int bit = 1; bit < 16; bit++) {
        memcpy(c, b, len);
        c[8] ^= (uint8_t)((1u << bit) >> 8);
        c[9] ^= (uint8_t)(1u << bit);
        cr_expect_eq(decode(c, len, &e), RESIL_EPROTO, "flag bit %d", bit);
        cr_expect_str_eq(e.why, "unknown flag bits");
    }
    len = encode_ok(&r, b, sizeof b);
    for (int role = 2; role < 256; role++) {
        memcpy(c, b, len);
        c[24] = (uint8_t)role;
        cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
        cr_expect_str_eq(e.why, "role not 0 or 1");
    }
    for (int bit = 1; bit < 8; bit++) {
        memcpy(c, b, len);
        c[25] ^= (uint8_t)(1 << bit);
        cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
        cr_expect_str_eq(e.why, "unknown flag bits");
    }
    len = encode_ok(&d, b, sizeof b);
    for (int bit = 1; bit < 8; bit++) {
        memcpy(c, b, len);
        c[24] ^= (uint8_t)(1 << bit);
        cr_expect_eq(decode(c, len, &e), RESIL_EPROTO);
    }
    for (int reason = 0; reason < 256; reason++) {
        struct resil_msg f = sample_refuse(1), m;
        len = encode_ok(&f, b, sizeof b);
        b[8] = (uint8_t)reason;
        if (reason >= 1 && reason < RESIL_REFUSE_MAX) {
            cr_expect_eq(resil_wire_decode(b, len, &m, &e), RESIL_OK);
            cr_expect_eq(m.u.refuse.reason, reason);
        } else {
            cr_expect_eq(decode(b, len, &e), RESIL_EPROTO);
            cr_expect_str_eq(e.why, "unknown refuse reason");
        }
    }
}

/* What the decoder must say when bit `bit` of byte `off` of the valid
 * message orig[0, len) is flipped: derived from the layouts of
 * doc/session.md, not from the decoder. */
struct want {
    resil_status_t st;
    size_t need;
    bool any; /* a different message of the right shape: no exact answer */
};

static bool is_family_byte(const uint8_t *orig, size_t off)
{
    size_t p = 65;
    for (unsigned i = 0; i < orig[64]; i++) {
        if (off == p)
            return true;
        p += orig[p] == 4 ? 5 : 17;
    }
    return false;
}

static struct want flip_want(const uint8_t *orig, size_t len, size_t off,
                             uint8_t nb)
{
    static const unsigned lo[] = {0, 81, 81, 98, 73, 9},
                          hi[] = {0, 217, 217, 98, 73, 9};
    const struct want ok = {RESIL_OK, 0, false},
                      proto = {RESIL_EPROTO, 0, false};
    unsigned type = orig[4];

    if (off < 4)
        return (struct want){RESIL_ENOMSG, 0, false};
    if (off == 4) {
        if (nb < 1 || nb > 5 || len < lo[nb] || len > hi[nb])
            return proto;
        return (struct want){RESIL_OK, 0, true};
    }
    if (off == 5) {
        if (type == RESIL_MSG_REFUSE && nb != 0)
            return ok;
        return (struct want){RESIL_EVERSION, 0, false};
    }
    if (off == 6 || off == 7) {
        unsigned nl = off == 6 ? (unsigned)(nb << 8 | orig[7])
                               : (unsigned)(orig[6] << 8 | nb);
        if (nl < lo[type] || nl > hi[type])
            return proto;
        if (nl > len)
            return (struct want){RESIL_EAGAIN, nl - len, false};
        return proto; /* shorter HELLO: the addresses no longer fit */
    }
    switch (type) {
    case RESIL_MSG_HELLO:
    case RESIL_MSG_WELCOME:
        if (off == 8)
            return proto;
        if (off == 9)
            return nb & ~1u ? proto : ok;
        if (off == 64 || is_family_byte(orig, off))
            return proto;
        return ok; /* key, nonce, numbers, address bytes, MAC */
    case RESIL_MSG_RESUME:
        if (off == 24)
            return nb <= 1 ? ok : proto;
        if (off == 25)
            return nb & ~1u ? proto : ok;
        return ok;
    case RESIL_MSG_RESUMED:
        if (off == 24)
            return nb & ~1u ? proto : ok;
        return ok;
    default:
        return nb >= 1 && nb < RESIL_REFUSE_MAX ? ok : proto;
    }
}

Test(session_wire, a_bit_flip_in_every_byte)
{
    struct sample s[8];
    int n = all_samples(s);

    for (int i = 0; i < n; i++) {
        for (size_t off = 0; off < s[i].len; off++) {
            for (int bit = 0; bit < 8; bit++) {
                uint8_t b[RESIL_WIRE_MAX_LEN], again[RESIL_WIRE_MAX_LEN];
                uint8_t nb = s[i].b[off] ^ (uint8_t)(1 << bit);
                struct want w = flip_want(s[i].b, s[i].len, off, nb);
                struct resil_wire_err e;
                struct resil_msg m;
                resil_status_t st;
                size_t alen;

                memcpy(b, s[i].b, s[i].len);
                b[off] = nb;
                st = resil_wire_decode(b, s[i].len, &m, &e);
                if (w.any) {
                    cr_expect(st == RESIL_OK || st == RESIL_EPROTO);
                } else {
                    cr_assert_eq(st, w.st, "sample %d byte %zu bit %d: %d %s",
                                 i, off, bit, st, e.why ? e.why : "");
                    if (st == RESIL_EAGAIN)
                        cr_expect_eq(e.need, w.need);
                }
                cr_expect_not_null(e.why);
                if (st != RESIL_OK)
                    continue;
                /* Whatever decodes is carried through exactly. */
                cr_assert_eq(resil_wire_encode(&m, again, sizeof again, &alen),
                             RESIL_OK);
                if (m.version == RESIL_WIRE_VERSION) {
                    cr_assert_eq(alen, s[i].len);
                    cr_expect_arr_eq(again, b, alen, "sample %d byte %zu", i,
                                     off);
                }
            }
        }
    }
}

Test(session_wire, encoder_checks_room_and_fields)
{
    struct resil_msg m[] = {sample_hello(RESIL_MSG_HELLO, 5), sample_resume(),
                            sample_resumed(), sample_refuse(RESIL_REFUSE_BUSY)};

    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        uint8_t b[RESIL_WIRE_MAX_LEN];
        size_t len = encode_ok(&m[i], b, sizeof b), out = 12345;

        for (size_t cap = 0; cap < len; cap++) {
            uint8_t c[RESIL_WIRE_MAX_LEN];
            memset(c, 0xee, sizeof c);
            cr_expect_eq(resil_wire_encode(&m[i], c, cap, &out), RESIL_ERANGE);
            cr_expect_eq(c[0], 0xee, "nothing written");
            cr_expect_eq(out, 12345);
        }
        cr_expect_eq(resil_wire_encode(&m[i], b, len, &out), RESIL_OK);
        cr_expect_eq(out, len);
    }

    struct resil_msg h = sample_hello(RESIL_MSG_HELLO, 1), x;
    uint8_t b[RESIL_WIRE_MAX_LEN];
    size_t out;
    x = h;
    x.u.hello.naddr = 9;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = h;
    x.u.hello.addr[0].family = AF_UNIX;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = h;
    x.u.hello.flags = 2;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = sample_resume();
    x.u.resume.role = 2;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = sample_resume();
    x.u.resume.flags = 0x80;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = sample_resumed();
    x.u.resumed.flags = 2;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = sample_refuse(0);
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x = sample_refuse(RESIL_REFUSE_MAX);
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x.type = 0;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
    x.type = 6;
    cr_expect_eq(resil_wire_encode(&x, b, sizeof b, &out), RESIL_EINVAL);
}

Test(session_wire, mac_offset_needs_one_whole_message)
{
    struct sample s[8];
    int n = all_samples(s);

    for (int i = 0; i < n; i++) {
        size_t want =
            s[i].b[4] == RESIL_MSG_REFUSE ? 0 : s[i].len - RESIL_WIRE_MAC_LEN;
        uint8_t b[RESIL_WIRE_MAX_LEN];

        cr_expect_eq(resil_wire_mac_offset(s[i].b, s[i].len), want);
        cr_expect_eq(resil_wire_mac_offset(s[i].b, s[i].len - 1), 0);
        cr_expect_eq(resil_wire_mac_offset(s[i].b, s[i].len + 1), 0);
        cr_expect_eq(resil_wire_mac_offset(s[i].b, 7), 0);
        memcpy(b, s[i].b, s[i].len);
        b[0] = 1;
        cr_expect_eq(resil_wire_mac_offset(b, s[i].len), 0);
        memcpy(b, s[i].b, s[i].len);
        b[5] = 2;
        cr_expect_eq(resil_wire_mac_offset(b, s[i].len), 0);
    }
}

Test(session_wire, names)
{
    cr_expect_str_eq(resil_msg_type_str(RESIL_MSG_HELLO), "HELLO");
    cr_expect_str_eq(resil_msg_type_str(RESIL_MSG_REFUSE), "REFUSE");
    cr_expect_str_eq(resil_msg_type_str(0), "unknown");
    cr_expect_str_eq(resil_msg_type_str(6), "unknown");
    for (unsigned r = 0; r < RESIL_REFUSE_MAX; r++) {
        cr_assert_not_null(resil_refuse_str(r));
        cr_expect_neq(strcmp(resil_refuse_str(r), "unknown reason"), 0);
    }
    cr_expect_str_eq(resil_refuse_str(RESIL_REFUSE_MAX), "unknown reason");
}
