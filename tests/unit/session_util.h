/* Sample session messages and a reference stream for the session tests. */
#ifndef RESIL_TEST_SESSION_UTIL_H
#define RESIL_TEST_SESSION_UTIL_H

#include <string.h>

#include "common.h"
#include "session_wire.h"

/* The byte at stream position p of every test stream: a function of p, so
 * that any read can be checked without keeping a copy. */
static inline uint8_t gen(uint64_t p)
{
    return (uint8_t)((p * 0x9e3779b97f4a7c15ull) >> 56);
}

static inline void gen_fill(uint8_t *dst, uint64_t from, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = gen(from + i);
}

static inline void fill_seq(uint8_t *p, size_t n, uint8_t first)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(first + i);
}

/* A HELLO (or WELCOME) with n addresses, alternating IPv6 and IPv4. */
static inline struct resil_msg sample_hello(uint8_t type, unsigned n)
{
    static const char *const v6[] = {"fd00:66::1", "2001:db8::7", "fd00:1::2",
                                     "2001:db8:1::9"};
    static const char *const v4[] = {"10.0.1.2", "192.0.2.7", "10.0.2.2",
                                     "198.51.100.1"};
    struct resil_msg m;

    memset(&m, 0, sizeof m);
    m.type = type;
    m.u.hello.flags = RESIL_HELLO_F_PSK;
    fill_seq(m.u.hello.pub, sizeof m.u.hello.pub, 0x10);
    fill_seq(m.u.hello.nonce, sizeof m.u.hello.nonce, 0x40);
    m.u.hello.rcvbuf = 6291456;
    m.u.hello.resume_port = 40123;
    m.u.hello.naddr = (uint8_t)n;
    for (unsigned i = 0; i < n; i++)
        m.u.hello.addr[i] = ip_of(i % 2 ? v4[i / 2 % 4] : v6[i / 2 % 4]);
    fill_seq(m.u.hello.mac, sizeof m.u.hello.mac, 0xa0);
    return m;
}

static inline struct resil_msg sample_resume(void)
{
    struct resil_msg m;

    memset(&m, 0, sizeof m);
    m.type = RESIL_MSG_RESUME;
    fill_seq(m.u.resume.id, sizeof m.u.resume.id, 0x01);
    m.u.resume.role = RESIL_ROLE_SERVER;
    m.u.resume.flags = RESIL_RESUME_F_FIN;
    m.u.resume.counter = 0x0102030405060708ull;
    m.u.resume.r = 0x1112131415161718ull;
    m.u.resume.w = 0x191a1b1c1d1e1f10ull;
    fill_seq(m.u.resume.tail, sizeof m.u.resume.tail, 0x20);
    fill_seq(m.u.resume.nonce, sizeof m.u.resume.nonce, 0x30);
    fill_seq(m.u.resume.mac, sizeof m.u.resume.mac, 0x40);
    return m;
}

static inline struct resil_msg sample_resumed(void)
{
    struct resil_msg m;

    memset(&m, 0, sizeof m);
    m.type = RESIL_MSG_RESUMED;
    fill_seq(m.u.resumed.id, sizeof m.u.resumed.id, 0x01);
    m.u.resumed.flags = 0;
    m.u.resumed.r = 0x2122232425262728ull;
    m.u.resumed.w = 0x292a2b2c2d2e2f20ull;
    fill_seq(m.u.resumed.tail, sizeof m.u.resumed.tail, 0x50);
    fill_seq(m.u.resumed.mac, sizeof m.u.resumed.mac, 0x60);
    return m;
}

static inline struct resil_msg sample_refuse(uint8_t reason)
{
    struct resil_msg m;

    memset(&m, 0, sizeof m);
    m.type = RESIL_MSG_REFUSE;
    m.u.refuse.reason = reason;
    return m;
}

static inline size_t encode_ok(const struct resil_msg *m, uint8_t *buf,
                               size_t cap)
{
    size_t len = 0;

    cr_assert_eq(resil_wire_encode(m, buf, cap, &len), RESIL_OK);
    return len;
}

#endif
