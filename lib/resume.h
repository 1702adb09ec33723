/* libresil: the resume decision (doc/session.md, "Resume decision").
 *
 * Pure: given what this process knows of a session and a decoded RESUME
 * (or, for the initiator, the RESUMED that answers its RESUME), say
 * whether the resume goes ahead and which bytes to retransmit, or why it
 * is refused. No I/O and no clock; the caller holds the session's lock,
 * stores the counter the verdict says to store, and acts.
 *
 * The checks run in the table's order, so that an unauthenticated message
 * never gets past BAD_MAC and cannot learn or change anything: UNKNOWN,
 * BAD_MAC, REPLAYED, NOT_RESUMABLE, BUSY, OUT_OF_WINDOW, TAIL_MISMATCH.
 */
#ifndef RESIL_RESUME_H
#define RESIL_RESUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ring.h"
#include "session_wire.h"
#include "status.h"

/* One session as the decision sees it. */
struct resil_resume_view {
    uint8_t id[RESIL_WIRE_ID_LEN];
    int role;                      /* our role in the session */
    const uint8_t *k_mac;          /* RESIL_SESSION_KEY_LEN bytes */
    uint64_t peer_counter;         /* last counter accepted from the peer;
                                      0: none (counters start at 1) */
    bool resumable;                /* our counts agreed with the kernel's */
    bool own_attempt;              /* we are resuming it ourselves now */
    const struct resil_ring *ring; /* our sent stream [start, W) */
};

struct resil_resume_verdict {
    enum resil_refuse refuse; /* RESIL_REFUSE_NONE: go ahead */
    const char *why;          /* static, for the log */
    /* Store `counter` as the peer's last counter, even when refused: a
     * RESUME refused as BUSY must not be accepted when replayed later. */
    bool take_counter;
    uint64_t counter;
    /* Accepted while our own attempt runs (we are the session's server,
     * the client's RESUME wins): abandon our attempt. */
    bool abort_own;
    uint64_t from, to; /* retransmit our stream's [from, to) */
};

/* The responder's decision on the RESUME msg[0, len), decoded into m, for
 * session s (NULL when no session of this process has the RESUME's id and
 * the opposite of its role). Returns RESIL_OK when the resume goes ahead
 * (v->from = the initiator's R, v->to = our W); RESIL_EAUTH when refused
 * (v->refuse names the REFUSE reason to send); RESIL_EINVAL when m is not
 * a RESUME (a caller bug; v->refuse is UNKNOWN). v is always filled. */
resil_status_t resil_resume_decide(const struct resil_resume_view *s,
                                   const void *msg, size_t len,
                                   const struct resil_msg *m,
                                   struct resil_resume_verdict *v);

/* The initiator's check of the RESUMED ans[0, alen), decoded into m, that
 * answers our RESUME req[0, rlen): same id, MAC over req || ans, the
 * responder's R inside our window, its tail matching our stream. Returns
 * RESIL_OK (v->from = the responder's R, v->to = our W), RESIL_EAUTH
 * (v->refuse: UNKNOWN for another id, BAD_MAC, OUT_OF_WINDOW,
 * TAIL_MISMATCH), RESIL_EINVAL when m is not a RESUMED or req is not a
 * RESUME. take_counter and abort_own are false. */
resil_status_t resil_resume_check(const struct resil_resume_view *s,
                                  const void *req, size_t rlen, const void *ans,
                                  size_t alen, const struct resil_msg *m,
                                  struct resil_resume_verdict *v);

/* Build our RESUME for session s into buf[0, cap): our role, counter (the
 * caller's previous one plus 1), r and tail of the stream we received,
 * flags, nonce (random, 16 bytes), sealed with s->k_mac. *out gets the
 * length. Returns RESIL_OK, or the status of resil_wire_encode() or
 * resil_session_seal(). */
resil_status_t resil_resume_request(const struct resil_resume_view *s,
                                    uint64_t counter, uint64_t r,
                                    const uint8_t *tail, uint8_t flags,
                                    const uint8_t *nonce, void *buf, size_t cap,
                                    size_t *out);

/* Build the RESUMED that answers req[0, rlen) into buf[0, cap): r and tail
 * of the stream we received, flags, our W (s->ring's end; 0 without a
 * ring), sealed with s->k_mac over req and itself. Returns as resil_resume_request(). */
resil_status_t resil_resume_answer(const struct resil_resume_view *s,
                                   const void *req, size_t rlen, uint64_t r,
                                   const uint8_t *tail, uint8_t flags,
                                   void *buf, size_t cap, size_t *out);

#endif
