/* libresil: session message codec (layouts in doc/session.md). */
#include <string.h>

#include "session_wire.h"

/* "\0RSL": a NUL first byte, which no text protocol starts with, then a
 * byte PostgreSQL's startup length (00 00 ..) never has second. */
static const uint8_t magic[4] = {0x00, 0x52, 0x53, 0x4c};

static const struct {
    uint16_t min, max;
} bounds[] = {
    [RESIL_MSG_HELLO] = {RESIL_HELLO_MIN_LEN, RESIL_HELLO_MAX_LEN},
    [RESIL_MSG_WELCOME] = {RESIL_HELLO_MIN_LEN, RESIL_HELLO_MAX_LEN},
    [RESIL_MSG_RESUME] = {RESIL_RESUME_LEN, RESIL_RESUME_LEN},
    [RESIL_MSG_RESUMED] = {RESIL_RESUMED_LEN, RESIL_RESUMED_LEN},
    [RESIL_MSG_REFUSE] = {RESIL_REFUSE_LEN, RESIL_REFUSE_LEN},
};

/* Body offsets. */
enum {
    H_FLAGS = 8,
    H_PUB = 10,
    H_NONCE = 42,
    H_RCVBUF = 58,
    H_PORT = 62,
    H_NADDR = 64,
    H_ADDR = 65,
    R_ID = 8,
    R_ROLE = 24,
    R_FLAGS = 25,
    R_COUNTER = 26,
    R_R = 34,
    R_W = 42,
    R_TAIL = 50,
    R_NONCE = 66,
    R_MAC = 82,
    D_ID = 8,
    D_FLAGS = 24,
    D_R = 25,
    D_W = 33,
    D_TAIL = 41,
    D_MAC = 57,
    F_REASON = 8,
};

static bool known_type(unsigned t)
{
    return t >= RESIL_MSG_HELLO && t <= RESIL_MSG_REFUSE;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static resil_status_t fail(struct resil_wire_err *e, resil_status_t st,
                           const char *why)
{
    e->why = why;
    e->need = 0;
    return st;
}

static resil_status_t more(struct resil_wire_err *e, size_t need)
{
    e->why = "truncated message";
    e->need = need;
    return RESIL_EAGAIN;
}

static resil_status_t decode_hello(const uint8_t *p, size_t len,
                                   struct resil_msg_hello *h,
                                   struct resil_wire_err *e)
{
    size_t off = H_ADDR, end = len - RESIL_WIRE_MAC_LEN;

    h->flags = get16(p + H_FLAGS);
    if (h->flags & ~RESIL_HELLO_F_ALL)
        return fail(e, RESIL_EPROTO, "unknown flag bits");
    memcpy(h->pub, p + H_PUB, sizeof h->pub);
    memcpy(h->nonce, p + H_NONCE, sizeof h->nonce);
    h->rcvbuf = get32(p + H_RCVBUF);
    h->resume_port = get16(p + H_PORT);
    h->naddr = p[H_NADDR];
    if (h->naddr > RESIL_WIRE_MAX_ADDR)
        return fail(e, RESIL_EPROTO, "more than 8 addresses");
    for (unsigned i = 0; i < h->naddr; i++) {
        struct resil_ip *ip = &h->addr[i];
        size_t alen;

        if (off >= end)
            return fail(e, RESIL_EPROTO, "addresses overrun the length");
        memset(ip, 0, sizeof *ip);
        switch (p[off]) {
        case 4:
            ip->family = AF_INET;
            alen = 4;
            break;
        case 6:
            ip->family = AF_INET6;
            alen = 16;
            break;
        default:
            return fail(e, RESIL_EPROTO, "address family not 4 or 6");
        }
        if (alen > end - off - 1)
            return fail(e, RESIL_EPROTO, "addresses overrun the length");
        memcpy(ip->family == AF_INET ? (void *)&ip->u.v4 : (void *)&ip->u.v6,
               p + off + 1, alen);
        /* One spelling per address, so that encode(decode(x)) == x. */
        if (ip->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&ip->u.v6))
            return fail(e, RESIL_EPROTO, "IPv4 address sent as IPv6");
        off += 1 + alen;
    }
    if (off != end)
        return fail(e, RESIL_EPROTO, "bytes left between addresses and MAC");
    memcpy(h->mac, p + end, sizeof h->mac);
    return RESIL_OK;
}

static resil_status_t decode_resume(const uint8_t *p,
                                    struct resil_msg_resume *r,
                                    struct resil_wire_err *e)
{
    memcpy(r->id, p + R_ID, sizeof r->id);
    r->role = p[R_ROLE];
    if (r->role > RESIL_ROLE_SERVER)
        return fail(e, RESIL_EPROTO, "role not 0 or 1");
    r->flags = p[R_FLAGS];
    if (r->flags & ~RESIL_RESUME_F_ALL)
        return fail(e, RESIL_EPROTO, "unknown flag bits");
    r->counter = get64(p + R_COUNTER);
    r->r = get64(p + R_R);
    r->w = get64(p + R_W);
    memcpy(r->tail, p + R_TAIL, sizeof r->tail);
    memcpy(r->nonce, p + R_NONCE, sizeof r->nonce);
    memcpy(r->mac, p + R_MAC, sizeof r->mac);
    return RESIL_OK;
}

static resil_status_t decode_resumed(const uint8_t *p,
                                     struct resil_msg_resumed *d,
                                     struct resil_wire_err *e)
{
    memcpy(d->id, p + D_ID, sizeof d->id);
    d->flags = p[D_FLAGS];
    if (d->flags & ~RESIL_RESUME_F_ALL)
        return fail(e, RESIL_EPROTO, "unknown flag bits");
    d->r = get64(p + D_R);
    d->w = get64(p + D_W);
    memcpy(d->tail, p + D_TAIL, sizeof d->tail);
    memcpy(d->mac, p + D_MAC, sizeof d->mac);
    return RESIL_OK;
}

resil_status_t resil_wire_decode(const void *buf, size_t len,
                                 struct resil_msg *m,
                                 struct resil_wire_err *err)
{
    const uint8_t *p = buf;
    struct resil_wire_err scratch;
    struct resil_wire_err *e = err ? err : &scratch;
    unsigned type, version, mlen;

    e->why = "valid message";
    e->need = 0;
    if (resil_wire_sniff(p, len) == RESIL_SNIFF_NO)
        return fail(e, RESIL_ENOMSG, "wrong magic: not a libresil message");
    if (len <= 4)
        return more(e, RESIL_WIRE_HDR_LEN - len);
    type = p[4];
    if (!known_type(type))
        return fail(e, RESIL_EPROTO, "unknown message type");
    if (len < RESIL_WIRE_HDR_LEN)
        return more(e, RESIL_WIRE_HDR_LEN - len);
    version = p[5];
    mlen = get16(p + 6);
    m->type = (uint8_t)type;
    m->version = (uint8_t)version;
    m->len = 0;
    /* The header is the same in every version, REFUSE's body too, so that
     * a peer of another version can be skipped and answered. */
    if (version != RESIL_WIRE_VERSION &&
        (type != RESIL_MSG_REFUSE || version == 0)) {
        if (mlen < RESIL_WIRE_HDR_LEN || mlen > RESIL_WIRE_MAX_LEN)
            return fail(e, RESIL_EPROTO, "length outside [8, 512]");
        m->len = (uint16_t)mlen;
        return fail(e, RESIL_EVERSION, "unsupported protocol version");
    }
    if (mlen < bounds[type].min || mlen > bounds[type].max)
        return fail(e, RESIL_EPROTO, "length outside the type's bounds");
    if (len < mlen)
        return more(e, mlen - len);
    m->len = (uint16_t)mlen;
    switch (type) {
    case RESIL_MSG_HELLO:
    case RESIL_MSG_WELCOME:
        return decode_hello(p, mlen, &m->u.hello, e);
    case RESIL_MSG_RESUME:
        return decode_resume(p, &m->u.resume, e);
    case RESIL_MSG_RESUMED:
        return decode_resumed(p, &m->u.resumed, e);
    default:
        m->u.refuse.reason = p[F_REASON];
        if (m->u.refuse.reason == RESIL_REFUSE_NONE ||
            m->u.refuse.reason >= RESIL_REFUSE_MAX)
            return fail(e, RESIL_EPROTO, "unknown refuse reason");
        return RESIL_OK;
    }
}

/* Bytes the addresses of h take, or 0 when h cannot be encoded. */
static size_t hello_len(const struct resil_msg_hello *h)
{
    size_t n = RESIL_HELLO_MIN_LEN;

    if (h->flags & ~RESIL_HELLO_F_ALL || h->naddr > RESIL_WIRE_MAX_ADDR)
        return 0;
    for (unsigned i = 0; i < h->naddr; i++) {
        if (h->addr[i].family == AF_INET)
            n += 5;
        else if (h->addr[i].family == AF_INET6 &&
                 !IN6_IS_ADDR_V4MAPPED(&h->addr[i].u.v6))
            n += 17;
        else
            return 0;
    }
    return n;
}

static void encode_hello(const struct resil_msg_hello *h, uint8_t *p)
{
    size_t off = H_ADDR;

    put16(p + H_FLAGS, h->flags);
    memcpy(p + H_PUB, h->pub, sizeof h->pub);
    memcpy(p + H_NONCE, h->nonce, sizeof h->nonce);
    put32(p + H_RCVBUF, h->rcvbuf);
    put16(p + H_PORT, h->resume_port);
    p[H_NADDR] = h->naddr;
    for (unsigned i = 0; i < h->naddr; i++) {
        const struct resil_ip *ip = &h->addr[i];

        if (ip->family == AF_INET) {
            p[off] = 4;
            memcpy(p + off + 1, &ip->u.v4, 4);
            off += 5;
        } else {
            p[off] = 6;
            memcpy(p + off + 1, &ip->u.v6, 16);
            off += 17;
        }
    }
    memcpy(p + off, h->mac, sizeof h->mac);
}

resil_status_t resil_wire_encode(const struct resil_msg *m, void *buf,
                                 size_t cap, size_t *out)
{
    uint8_t *p = buf;
    size_t len;

    switch (m->type) {
    case RESIL_MSG_HELLO:
    case RESIL_MSG_WELCOME:
        len = hello_len(&m->u.hello);
        break;
    case RESIL_MSG_RESUME:
        len = m->u.resume.role > RESIL_ROLE_SERVER ||
                      m->u.resume.flags & ~RESIL_RESUME_F_ALL
                  ? 0
                  : RESIL_RESUME_LEN;
        break;
    case RESIL_MSG_RESUMED:
        len = m->u.resumed.flags & ~RESIL_RESUME_F_ALL ? 0 : RESIL_RESUMED_LEN;
        break;
    case RESIL_MSG_REFUSE:
        len = m->u.refuse.reason == RESIL_REFUSE_NONE ||
                      m->u.refuse.reason >= RESIL_REFUSE_MAX
                  ? 0
                  : RESIL_REFUSE_LEN;
        break;
    default:
        len = 0;
    }
    if (len == 0)
        return RESIL_EINVAL;
    if (cap < len)
        return RESIL_ERANGE;
    memcpy(p, magic, sizeof magic);
    p[4] = m->type;
    p[5] = RESIL_WIRE_VERSION;
    put16(p + 6, (uint16_t)len);
    switch (m->type) {
    case RESIL_MSG_HELLO:
    case RESIL_MSG_WELCOME:
        encode_hello(&m->u.hello, p);
        break;
    case RESIL_MSG_RESUME: {
        const struct resil_msg_resume *r = &m->u.resume;
        memcpy(p + R_ID, r->id, sizeof r->id);
        p[R_ROLE] = r->role;
        p[R_FLAGS] = r->flags;
        put64(p + R_COUNTER, r->counter);
        put64(p + R_R, r->r);
        put64(p + R_W, r->w);
        memcpy(p + R_TAIL, r->tail, sizeof r->tail);
        memcpy(p + R_NONCE, r->nonce, sizeof r->nonce);
        memcpy(p + R_MAC, r->mac, sizeof r->mac);
        break;
    }
    case RESIL_MSG_RESUMED: {
        const struct resil_msg_resumed *d = &m->u.resumed;
        memcpy(p + D_ID, d->id, sizeof d->id);
        p[D_FLAGS] = d->flags;
        put64(p + D_R, d->r);
        put64(p + D_W, d->w);
        memcpy(p + D_TAIL, d->tail, sizeof d->tail);
        memcpy(p + D_MAC, d->mac, sizeof d->mac);
        break;
    }
    default:
        p[F_REASON] = m->u.refuse.reason;
    }
    *out = len;
    return RESIL_OK;
}

size_t resil_wire_mac_offset(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    unsigned type;

    if (len < RESIL_WIRE_HDR_LEN || memcmp(p, magic, sizeof magic) != 0)
        return 0;
    type = p[4];
    if (type < RESIL_MSG_HELLO || type > RESIL_MSG_RESUMED ||
        p[5] != RESIL_WIRE_VERSION || get16(p + 6) != len ||
        len < bounds[type].min || len > bounds[type].max)
        return 0;
    return len - RESIL_WIRE_MAC_LEN;
}

enum resil_wire_sniff resil_wire_sniff(const void *buf, size_t len)
{
    size_t n = len < sizeof magic ? len : sizeof magic;

    /* n == 0 returns before memcmp: buf may then be NULL. */
    if (n > 0 && memcmp(buf, magic, n) != 0)
        return RESIL_SNIFF_NO;
    return n == sizeof magic ? RESIL_SNIFF_YES : RESIL_SNIFF_MAYBE;
}

const char *resil_msg_type_str(unsigned type)
{
    static const char *const names[] = {
        [RESIL_MSG_HELLO] = "HELLO",   [RESIL_MSG_WELCOME] = "WELCOME",
        [RESIL_MSG_RESUME] = "RESUME", [RESIL_MSG_RESUMED] = "RESUMED",
        [RESIL_MSG_REFUSE] = "REFUSE",
    };
    return known_type(type) ? names[type] : "unknown";
}

const char *resil_refuse_str(unsigned reason)
{
    static const char *const names[RESIL_REFUSE_MAX] = {
        [RESIL_REFUSE_NONE] = "accepted",
        [RESIL_REFUSE_UNKNOWN] = "unknown session",
        [RESIL_REFUSE_BAD_MAC] = "bad MAC",
        [RESIL_REFUSE_REPLAYED] = "replayed or stale counter",
        [RESIL_REFUSE_NOT_RESUMABLE] = "session not resumable",
        [RESIL_REFUSE_BUSY] = "another resume in progress",
        [RESIL_REFUSE_OUT_OF_WINDOW] = "position outside the replay window",
        [RESIL_REFUSE_TAIL_MISMATCH] = "stream tail mismatch",
        [RESIL_REFUSE_VERSION] = "unsupported protocol version",
    };
    return reason < RESIL_REFUSE_MAX ? names[reason] : "unknown reason";
}
