/* libresil: the session protocol's messages on the wire (doc/session.md).
 *
 * A pure codec: plain C structs to bytes and back, no I/O, no crypto. The
 * decoder takes bytes straight from the network: it never reads past the
 * length it is given, and says precisely why it rejects an input (a status
 * plus a static, human-readable reason for the log). The MAC field is
 * copied as is both ways; session_crypto.h computes and checks it over the
 * byte range resil_wire_mac_offset() names.
 */
#ifndef RESIL_SESSION_WIRE_H
#define RESIL_SESSION_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "status.h"

#define RESIL_WIRE_VERSION 1
#define RESIL_WIRE_HDR_LEN 8
#define RESIL_WIRE_MAX_LEN 512 /* no message of any version is longer */
#define RESIL_WIRE_MAC_LEN 16
#define RESIL_WIRE_KEY_LEN 32 /* X25519 public key */
#define RESIL_WIRE_NONCE_LEN 16
#define RESIL_WIRE_ID_LEN 16
#define RESIL_WIRE_TAIL_LEN 16
#define RESIL_WIRE_MAX_ADDR 8

/* Lengths on the wire, header and MAC included. */
#define RESIL_HELLO_MIN_LEN 81  /* no address */
#define RESIL_HELLO_MAX_LEN 217 /* eight IPv6 addresses */
#define RESIL_RESUME_LEN 98
#define RESIL_RESUMED_LEN 73
#define RESIL_REFUSE_LEN 9

enum resil_msg_type {
    RESIL_MSG_HELLO = 1,
    RESIL_MSG_WELCOME = 2,
    RESIL_MSG_RESUME = 3,
    RESIL_MSG_RESUMED = 4,
    RESIL_MSG_REFUSE = 5,
};

/* The session roles, as RESUME carries them. */
enum resil_role {
    RESIL_ROLE_CLIENT = 0,
    RESIL_ROLE_SERVER = 1,
};

/* REFUSE reasons (doc/session.md, "Resume decision"). */
enum resil_refuse {
    RESIL_REFUSE_NONE = 0, /* not on the wire: "accepted" */
    RESIL_REFUSE_UNKNOWN = 1,
    RESIL_REFUSE_BAD_MAC = 2,
    RESIL_REFUSE_REPLAYED = 3,
    RESIL_REFUSE_NOT_RESUMABLE = 4,
    RESIL_REFUSE_BUSY = 5,
    RESIL_REFUSE_OUT_OF_WINDOW = 6,
    RESIL_REFUSE_TAIL_MISMATCH = 7,
    RESIL_REFUSE_VERSION = 8,
    RESIL_REFUSE_MAX
};

#define RESIL_HELLO_F_PSK 0x0001u /* a pre-shared key is mixed in */
#define RESIL_HELLO_F_ALL 0x0001u
#define RESIL_RESUME_F_FIN 0x01u /* the sender has the peer's FIN at R */
#define RESIL_RESUME_F_ALL 0x01u

/* HELLO and WELCOME share one body. */
struct resil_msg_hello {
    uint16_t flags;
    uint8_t pub[RESIL_WIRE_KEY_LEN];
    uint8_t nonce[RESIL_WIRE_NONCE_LEN];
    uint32_t rcvbuf;      /* receive buffer ceiling, bytes */
    uint16_t resume_port; /* 0: none */
    uint8_t naddr;
    struct resil_ip addr[RESIL_WIRE_MAX_ADDR];
    uint8_t mac[RESIL_WIRE_MAC_LEN];
};

struct resil_msg_resume {
    uint8_t id[RESIL_WIRE_ID_LEN];
    uint8_t role; /* the initiator's role in the session */
    uint8_t flags;
    uint64_t counter;
    uint64_t r; /* bytes of the responder's stream received */
    uint64_t w; /* bytes of its own stream the initiator's program wrote */
    uint8_t tail[RESIL_WIRE_TAIL_LEN];
    uint8_t nonce[RESIL_WIRE_NONCE_LEN];
    uint8_t mac[RESIL_WIRE_MAC_LEN];
};

struct resil_msg_resumed {
    uint8_t id[RESIL_WIRE_ID_LEN];
    uint8_t flags;
    uint64_t r; /* bytes of the initiator's stream received */
    uint64_t w; /* bytes of its own stream the responder's program wrote */
    uint8_t tail[RESIL_WIRE_TAIL_LEN];
    uint8_t mac[RESIL_WIRE_MAC_LEN];
};

struct resil_msg_refuse {
    uint8_t reason; /* enum resil_refuse, never RESIL_REFUSE_NONE */
};

struct resil_msg {
    uint8_t type;    /* enum resil_msg_type */
    uint8_t version; /* set by the decoder; the encoder writes its own */
    uint16_t len;    /* bytes on the wire; set by the decoder */
    union {
        struct resil_msg_hello hello; /* HELLO and WELCOME */
        struct resil_msg_resume resume;
        struct resil_msg_resumed resumed;
        struct resil_msg_refuse refuse;
    } u;
};

/* Why a decode stopped: `why` is a static string for the log (never NULL
 * after a decode); `need` is the number of bytes still missing at least,
 * set only with RESIL_EAGAIN. */
struct resil_wire_err {
    const char *why;
    size_t need;
};

/* Decode the message at the start of buf[0, len). Bytes after the message
 * are not the decoder's: they may be the program's own first bytes.
 * Returns:
 *  RESIL_OK        m is filled; the message is m->len bytes long;
 *  RESIL_EAGAIN    what is there is a valid prefix: err->need more bytes
 *                  at least (len 0 included);
 *  RESIL_ENOMSG    the magic differs: not a libresil message at all;
 *  RESIL_EVERSION  a libresil message of another version: m->type,
 *                  m->version and, once 8 bytes are there, m->len (at
 *                  most RESIL_WIRE_MAX_LEN) are set so that the caller
 *                  can skip it and answer REFUSE VERSION;
 *  RESIL_EPROTO    malformed (unknown type, length outside the type's
 *                  bounds, a count that does not fit, unknown flag bits,
 *                  an address family other than 4/6, ...).
 * err may be NULL; m is only meaningful with RESIL_OK and RESIL_EVERSION.
 * A REFUSE is accepted whatever its version: its layout never changes. */
resil_status_t resil_wire_decode(const void *buf, size_t len,
                                 struct resil_msg *m,
                                 struct resil_wire_err *err);

/* Encode m (its type and body; version and len are ignored) into
 * buf[0, cap); the MAC field is copied from m. *out gets the length.
 * Returns RESIL_OK, RESIL_EINVAL when m could not be decoded back (unknown
 * type, too many addresses, a family other than AF_INET/AF_INET6, a
 * v4-mapped IPv6 address, unknown flag bits, a role or reason out of
 * range), RESIL_ERANGE when cap is too small (nothing written). */
resil_status_t resil_wire_encode(const struct resil_msg *m, void *buf,
                                 size_t cap, size_t *out);

/* The MAC of a complete encoded message of a type that carries one
 * (HELLO, WELCOME, RESUME, RESUMED) sits at the returned offset and covers
 * bytes [0, offset). Returns 0 when buf[0, len) is not exactly one such
 * message (only the header is checked). */
size_t resil_wire_mac_offset(const void *buf, size_t len);

enum resil_wire_sniff {
    RESIL_SNIFF_NO = 0, /* definitely not a libresil message */
    RESIL_SNIFF_MAYBE,  /* fewer than 4 bytes, all matching the magic */
    RESIL_SNIFF_YES,    /* the 4 bytes of the magic */
};

/* Classify the first bytes of a stream (1..4 are enough; 0 gives MAYBE):
 * whether they can start a libresil message. A server peeking at a new
 * connection lets an ordinary client through at the first byte that
 * differs (a text protocol's first byte is never NUL). */
enum resil_wire_sniff resil_wire_sniff(const void *buf, size_t len);

/* Static names for the log; never NULL. */
const char *resil_msg_type_str(unsigned type);
const char *resil_refuse_str(unsigned reason);

#endif
