/* libFuzzer target for every parser of network bytes: the session
 * message decoder (HELLO, WELCOME, RESUME, RESUMED, REFUSE, dispatched on
 * the type byte) and what reads a decoded message further: the MAC checks
 * and both resume decisions, against the fixed session of fixture.h.
 * Besides the sanitizers, it aborts when the codec contradicts itself. */
#include <stdio.h>

#include "fixture.h"

static struct fixture fx;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_session: %s:%d: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fx_init(&fx);
    return 0;
}

static void check_verdict(resil_status_t st,
                          const struct resil_resume_verdict *v)
{
    CHECK(v->why != NULL);
    if (st == RESIL_OK) {
        CHECK(v->refuse == RESIL_REFUSE_NONE);
        CHECK(v->from >= fx.ring.start && v->from <= v->to);
        CHECK(v->to == fx.ring.end);
    } else {
        CHECK(st == RESIL_EAUTH);
        CHECK(v->refuse > RESIL_REFUSE_NONE && v->refuse < RESIL_REFUSE_MAX);
        CHECK(!v->abort_own && v->from == 0 && v->to == 0);
    }
}

static void decided(const uint8_t *data, const struct resil_msg *m)
{
    struct resil_resume_verdict v;
    resil_status_t st;

    switch (m->type) {
    case RESIL_MSG_HELLO:
        st = resil_session_verify(fx.k_hello, NULL, 0, data, m->len);
        CHECK(st == RESIL_OK || st == RESIL_EAUTH);
        break;
    case RESIL_MSG_WELCOME:
        st = resil_session_verify(fx.k_confirm, fx.hello, fx.hello_len, data,
                                  m->len);
        CHECK(st == RESIL_OK || st == RESIL_EAUTH);
        break;
    case RESIL_MSG_RESUME:
        st = resil_resume_decide(&fx.server, data, m->len, m, &v);
        check_verdict(st, &v);
        if (v.refuse == RESIL_REFUSE_NONE || v.refuse > RESIL_REFUSE_REPLAYED)
            CHECK(v.take_counter && v.counter > fx.server.peer_counter);
        else
            CHECK(!v.take_counter);
        st = resil_resume_decide(&fx.client, data, m->len, m, &v);
        check_verdict(st, &v);
        break;
    case RESIL_MSG_RESUMED:
        st = resil_resume_check(&fx.client, fx.req, fx.req_len, data, m->len, m,
                                &v);
        check_verdict(st, &v);
        break;
    default:
        CHECK(m->u.refuse.reason > RESIL_REFUSE_NONE &&
              m->u.refuse.reason < RESIL_REFUSE_MAX);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct resil_msg m, again;
    struct resil_wire_err e;
    uint8_t out[RESIL_WIRE_MAX_LEN];
    size_t len;
    enum resil_wire_sniff sn = resil_wire_sniff(data, size);
    resil_status_t st = resil_wire_decode(data, size, &m, &e);

    CHECK(e.why != NULL);
    CHECK((sn == RESIL_SNIFF_NO) == (st == RESIL_ENOMSG));
    switch (st) {
    case RESIL_OK:
        break;
    case RESIL_EAGAIN:
        CHECK(e.need > 0 && size + e.need <= RESIL_WIRE_MAX_LEN);
        return 0;
    case RESIL_EVERSION:
        CHECK(size >= RESIL_WIRE_HDR_LEN && m.len >= RESIL_WIRE_HDR_LEN &&
              m.len <= RESIL_WIRE_MAX_LEN);
        return 0;
    case RESIL_ENOMSG:
    case RESIL_EPROTO:
        CHECK(e.need == 0);
        return 0;
    default:
        CHECK(!"unexpected status");
    }
    CHECK(m.len >= RESIL_WIRE_HDR_LEN && m.len <= size);
    /* One byte short is a valid prefix that lacks exactly that byte. */
    CHECK(resil_wire_decode(data, m.len - 1u, &again, &e) == RESIL_EAGAIN);
    CHECK(e.need == 1);
    /* What decodes encodes back to the same bytes. */
    CHECK(resil_wire_encode(&m, out, sizeof out, &len) == RESIL_OK);
    CHECK(len == m.len);
    if (m.version == RESIL_WIRE_VERSION)
        CHECK(memcmp(out, data, len) == 0);
    CHECK(resil_wire_mac_offset(data, m.len) ==
          (m.type == RESIL_MSG_REFUSE || m.version != RESIL_WIRE_VERSION
               ? 0
               : m.len - RESIL_WIRE_MAC_LEN));
    decided(data, &m);
    return 0;
}
