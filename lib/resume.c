/* libresil: resume decision, both sides (see resume.h). */
#include <string.h>

#include "resume.h"
#include "session_crypto.h"

static resil_status_t refuse(struct resil_resume_verdict *v,
                             enum resil_refuse reason, const char *why)
{
    v->refuse = reason;
    v->why = why;
    v->abort_own = false;
    v->from = v->to = 0;
    return RESIL_EAUTH;
}

/* Can we retransmit from the peer's position r, and does the peer's hash
 * of the bytes before r match ours? The hash covers the last
 * min(r, RESIL_SESSION_TAIL_BYTES) bytes before r, so those must still be
 * in the ring (the trim keeps them), not only r itself. */
static resil_status_t window(const struct resil_ring *ring, uint64_t r,
                             const uint8_t *tail,
                             struct resil_resume_verdict *v)
{
    uint64_t lo =
        r - (r < RESIL_SESSION_TAIL_BYTES ? r : RESIL_SESSION_TAIL_BYTES);
    uint8_t mine[RESIL_WIRE_TAIL_LEN];
    struct iovec iov[2];
    int n;

    if (!ring || r > ring->end || lo < ring->start)
        return refuse(v, RESIL_REFUSE_OUT_OF_WINDOW,
                      "position outside what we can retransmit");
    if (resil_ring_spans(ring, lo, r, iov, &n) != RESIL_OK)
        return refuse(v, RESIL_REFUSE_OUT_OF_WINDOW,
                      "position outside what we can retransmit");
    resil_session_tail(iov, n, mine);
    if (!resil_session_eq16(mine, tail))
        return refuse(v, RESIL_REFUSE_TAIL_MISMATCH,
                      "the stream's last bytes differ");
    v->from = r;
    v->to = ring->end;
    return RESIL_OK;
}

resil_status_t resil_resume_decide(const struct resil_resume_view *s,
                                   const void *msg, size_t len,
                                   const struct resil_msg *m,
                                   struct resil_resume_verdict *v)
{
    const struct resil_msg_resume *r;
    resil_status_t st;

    memset(v, 0, sizeof *v);
    v->why = "accepted";
    if (!m || m->type != RESIL_MSG_RESUME || m->len != len) {
        refuse(v, RESIL_REFUSE_UNKNOWN, "not a decoded RESUME");
        return RESIL_EINVAL;
    }
    r = &m->u.resume;
    /* The caller looks sessions up by id and the role opposite the
     * RESUME's; the role check here also stops our own RESUME reflected
     * back at us, whose MAC verifies with the same K_mac. */
    if (!s || !resil_session_eq16(s->id, r->id))
        return refuse(v, RESIL_REFUSE_UNKNOWN, "no session with this id");
    if (r->role == s->role)
        return refuse(v, RESIL_REFUSE_UNKNOWN,
                      "RESUME claims our own role in the session");
    if (resil_session_verify(s->k_mac, NULL, 0, msg, len) != RESIL_OK)
        return refuse(v, RESIL_REFUSE_BAD_MAC, "MAC does not verify");
    if (r->counter <= s->peer_counter)
        return refuse(v, RESIL_REFUSE_REPLAYED,
                      "counter not above the last one accepted");
    v->take_counter = true;
    v->counter = r->counter;
    if (!s->resumable)
        return refuse(v, RESIL_REFUSE_NOT_RESUMABLE,
                      "bytes moved where no hook saw them");
    /* Both ends may start a resume at once; the client's wins, so exactly
     * one of the two goes ahead. */
    if (s->own_attempt && s->role != RESIL_ROLE_SERVER)
        return refuse(v, RESIL_REFUSE_BUSY, "our own resume is running");
    st = window(s->ring, r->r, r->tail, v);
    if (st == RESIL_OK)
        v->abort_own = s->own_attempt;
    return st;
}

resil_status_t resil_resume_check(const struct resil_resume_view *s,
                                  const void *req, size_t rlen, const void *ans,
                                  size_t alen, const struct resil_msg *m,
                                  struct resil_resume_verdict *v)
{
    const struct resil_msg_resumed *d;

    memset(v, 0, sizeof *v);
    v->why = "accepted";
    if (!s || !m || m->type != RESIL_MSG_RESUMED || m->len != alen ||
        resil_wire_mac_offset(req, rlen) == 0 ||
        ((const uint8_t *)req)[4] != RESIL_MSG_RESUME) {
        refuse(v, RESIL_REFUSE_UNKNOWN, "not a RESUMED to our RESUME");
        return RESIL_EINVAL;
    }
    d = &m->u.resumed;
    if (!resil_session_eq16(s->id, d->id))
        return refuse(v, RESIL_REFUSE_UNKNOWN, "answer for another session");
    if (resil_session_verify(s->k_mac, req, rlen, ans, alen) != RESIL_OK)
        return refuse(v, RESIL_REFUSE_BAD_MAC, "MAC does not verify");
    return window(s->ring, d->r, d->tail, v);
}

resil_status_t resil_resume_request(const struct resil_resume_view *s,
                                    uint64_t counter, uint64_t r,
                                    const uint8_t *tail, uint8_t flags,
                                    const uint8_t *nonce, void *buf, size_t cap,
                                    size_t *out)
{
    struct resil_msg m = {.type = RESIL_MSG_RESUME};
    resil_status_t st;

    memcpy(m.u.resume.id, s->id, sizeof m.u.resume.id);
    m.u.resume.role = (uint8_t)s->role;
    m.u.resume.flags = flags;
    m.u.resume.counter = counter;
    m.u.resume.r = r;
    m.u.resume.w = s->ring ? s->ring->end : 0;
    memcpy(m.u.resume.tail, tail, sizeof m.u.resume.tail);
    memcpy(m.u.resume.nonce, nonce, sizeof m.u.resume.nonce);
    st = resil_wire_encode(&m, buf, cap, out);
    if (st != RESIL_OK)
        return st;
    return resil_session_seal(s->k_mac, NULL, 0, buf, *out);
}

resil_status_t resil_resume_answer(const struct resil_resume_view *s,
                                   const void *req, size_t rlen, uint64_t r,
                                   const uint8_t *tail, uint8_t flags,
                                   void *buf, size_t cap, size_t *out)
{
    struct resil_msg m = {.type = RESIL_MSG_RESUMED};
    resil_status_t st;

    memcpy(m.u.resumed.id, s->id, sizeof m.u.resumed.id);
    m.u.resumed.flags = flags;
    m.u.resumed.r = r;
    m.u.resumed.w = s->ring ? s->ring->end : 0;
    memcpy(m.u.resumed.tail, tail, sizeof m.u.resumed.tail);
    st = resil_wire_encode(&m, buf, cap, out);
    if (st != RESIL_OK)
        return st;
    return resil_session_seal(s->k_mac, req, rlen, buf, *out);
}
