/* The session the fuzz target checks messages against, shared with the
 * corpus generator so that the seeds carry MACs that verify and reach the
 * decisions past BAD_MAC. Everything is fixed: the same seeds come out of
 * every run of the generator. */
#ifndef RESIL_FUZZ_FIXTURE_H
#define RESIL_FUZZ_FIXTURE_H

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "resume.h"
#include "session_crypto.h"
#include "session_wire.h"

#define FX_WRITTEN 5000 /* the stream we wrote: [0, 5000) */
#define FX_ACKED 3000   /* the ring holds [2936, 5000) */
#define FX_PEER_R 4000  /* what our RESUME says we received */

struct fixture {
    uint8_t k_hello[RESIL_SESSION_KEY_LEN];
    uint8_t k_confirm[RESIL_SESSION_KEY_LEN];
    uint8_t k_mac[RESIL_SESSION_KEY_LEN];
    struct resil_ring ring;
    struct resil_resume_view server;   /* responder to the client's RESUME */
    struct resil_resume_view client;   /* initiator of `req` */
    uint8_t hello[RESIL_WIRE_MAX_LEN]; /* the HELLO a WELCOME answers */
    size_t hello_len;
    uint8_t req[RESIL_WIRE_MAX_LEN]; /* the RESUME a RESUMED answers */
    size_t req_len;
};

static inline uint8_t fx_byte(uint64_t p)
{
    return (uint8_t)((p * 0x9e3779b97f4a7c15ull) >> 56);
}

static inline void fx_seq(uint8_t *p, size_t n, uint8_t first)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(first + i);
}

/* The hash of the 64 stream bytes before r (r >= 64). */
static inline void fx_tail(uint64_t r, uint8_t out[RESIL_WIRE_TAIL_LEN])
{
    uint8_t b[64];
    struct iovec iov = {b, sizeof b};

    for (int i = 0; i < 64; i++)
        b[i] = fx_byte(r - 64 + (uint64_t)i);
    resil_session_tail(&iov, 1, out);
}

/* A HELLO or WELCOME with n addresses, sealed as its type wants. */
static inline size_t fx_hello(const struct fixture *fx, uint8_t type,
                              unsigned n, uint8_t *buf, size_t cap)
{
    struct resil_msg m;
    size_t len = 0;

    memset(&m, 0, sizeof m);
    m.type = type;
    fx_seq(m.u.hello.pub, sizeof m.u.hello.pub, type * 0x10);
    fx_seq(m.u.hello.nonce, sizeof m.u.hello.nonce, 0x80);
    m.u.hello.rcvbuf = 131072;
    m.u.hello.resume_port = 7000 + type;
    m.u.hello.naddr = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        struct resil_ip *ip = &m.u.hello.addr[i];
        if (i % 2) {
            ip->family = AF_INET;
            ip->u.v4.s_addr = htonl(0x0a000102u + i);
        } else {
            ip->family = AF_INET6;
            ip->u.v6.s6_addr[0] = 0xfd;
            ip->u.v6.s6_addr[15] = (uint8_t)(i + 1);
        }
    }
    if (resil_wire_encode(&m, buf, cap, &len) != RESIL_OK)
        abort();
    if (type == RESIL_MSG_HELLO)
        resil_session_seal(fx->k_hello, NULL, 0, buf, len);
    else
        resil_session_seal(fx->k_confirm, fx->hello, fx->hello_len, buf, len);
    return len;
}

static inline void fx_init(struct fixture *fx)
{
    uint8_t data[FX_WRITTEN], tail[RESIL_WIRE_TAIL_LEN];
    uint8_t nonce[RESIL_WIRE_NONCE_LEN];

    memset(fx, 0, sizeof *fx);
    if (resil_crypto_init() != RESIL_OK)
        abort();
    resil_session_hello_key(NULL, fx->k_hello);
    fx_seq(fx->k_confirm, sizeof fx->k_confirm, 0x50);
    fx_seq(fx->k_mac, sizeof fx->k_mac, 0x70);
    for (uint64_t p = 0; p < FX_WRITTEN; p++)
        data[p] = fx_byte(p);
    if (resil_ring_init(&fx->ring, 0, 1 << 16, 64) != RESIL_OK ||
        resil_ring_append(&fx->ring, data, sizeof data) != RESIL_OK ||
        resil_ring_trim(&fx->ring, FX_ACKED) != RESIL_OK)
        abort();
    fx_seq(fx->server.id, sizeof fx->server.id, 0xe0);
    fx->server.role = RESIL_ROLE_SERVER;
    fx->server.k_mac = fx->k_mac;
    fx->server.peer_counter = 5;
    fx->server.resumable = true;
    fx->server.ring = &fx->ring;
    fx->client = fx->server;
    fx->client.role = RESIL_ROLE_CLIENT;
    fx->hello_len =
        fx_hello(fx, RESIL_MSG_HELLO, 2, fx->hello, sizeof fx->hello);
    fx_tail(FX_PEER_R, tail);
    fx_seq(nonce, sizeof nonce, 0x90);
    if (resil_resume_request(&fx->client, 1, FX_PEER_R, tail, 0, nonce, fx->req,
                             sizeof fx->req, &fx->req_len) != RESIL_OK)
        abort();
}

#endif
