/* libresil: the session layer's cryptography (doc/session.md, "Key
 * schedule"), all of it libsodium's: X25519 key agreement, BLAKE2b for
 * derivation and MACs, constant-time comparisons, wiping of secrets. No
 * primitive of our own.
 *
 * Every function calls sodium_init() once (pthread_once) before it
 * touches libsodium; resil_crypto_init() lets a caller find out early
 * that the library cannot start, and fail open.
 */
#ifndef RESIL_SESSION_CRYPTO_H
#define RESIL_SESSION_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "session_wire.h"
#include "status.h"

#define RESIL_SESSION_KEY_LEN 32
#define RESIL_SESSION_SK_LEN 32
#define RESIL_SESSION_TAIL_BYTES 64 /* bytes the stream tail hash covers */
#define RESIL_PSK_FILE_MIN 32       /* bytes of key material at least */
#define RESIL_PSK_FILE_MAX 4096

/* Returns RESIL_OK, or RESIL_EUNSUPP when libsodium cannot start (then no
 * session can be offered: fail open to plain TCP). Thread-safe. */
resil_status_t resil_crypto_init(void);

/* Our side of one handshake: an ephemeral X25519 key pair and a nonce. */
struct resil_kx {
    uint8_t pk[RESIL_WIRE_KEY_LEN];
    uint8_t sk[RESIL_SESSION_SK_LEN];
    uint8_t nonce[RESIL_WIRE_NONCE_LEN];
};

/* This process's key pair of the moment (a fresh one at most a minute or
 * 100,000 handshakes apart, and in a fork child: session_crypto.c says
 * why) and a fresh random nonce. Returns RESIL_OK or RESIL_EUNSUPP. */
resil_status_t resil_kx_new(struct resil_kx *kx);

/* The key pair of a given secret, and a given nonce (known-answer tests).
 * Returns RESIL_OK or RESIL_EUNSUPP. */
resil_status_t resil_kx_from(struct resil_kx *kx,
                             const uint8_t sk[RESIL_SESSION_SK_LEN],
                             const uint8_t nonce[RESIL_WIRE_NONCE_LEN]);

/* Wipe the whole struct (sodium_memzero). */
void resil_kx_wipe(struct resil_kx *kx);

struct resil_session_keys {
    uint8_t id[RESIL_WIRE_ID_LEN];
    uint8_t k_confirm[RESIL_SESSION_KEY_LEN];
    uint8_t k_mac[RESIL_SESSION_KEY_LEN];
};

/* The key schedule: shared = X25519(own->sk, peer_pk), S from shared, both
 * public keys, both nonces (client's first) and psk (32 bytes, or NULL),
 * then the session id, K_confirm and K_mac from S. `role` is our role
 * (RESIL_ROLE_CLIENT: own is the HELLO's side). own->sk, the shared
 * secret and S are wiped before returning, whatever the result. Returns
 * RESIL_OK, RESIL_EPROTO when the peer's key gives an all-zero shared
 * secret (a low-order point: refused, out untouched), RESIL_EINVAL for a
 * role other than 0/1, RESIL_EUNSUPP when libsodium cannot start. */
resil_status_t resil_session_derive(struct resil_kx *own, int role,
                                    const uint8_t *peer_pk,
                                    const uint8_t *peer_nonce,
                                    const uint8_t *psk,
                                    struct resil_session_keys *out);

/* Wipe derived keys once the session ends. */
void resil_session_keys_wipe(struct resil_session_keys *k);

/* K_hello: the HELLO's MAC key, from psk (32 bytes) or from nothing.
 * Returns RESIL_OK or RESIL_EUNSUPP. */
resil_status_t resil_session_hello_key(const uint8_t *psk,
                                       uint8_t out[RESIL_SESSION_KEY_LEN]);

/* Compute the MAC of the encoded message msg[0, len) and write it into
 * its MAC field (the last 16 bytes). The MAC is BLAKE2b-128 keyed with key
 * over prefix[0, plen) || msg[0, len - 16). The prefix is what the message
 * answers: none for HELLO (key K_hello) and RESUME (K_mac); the HELLO for
 * WELCOME (K_confirm); the RESUME for RESUMED (K_mac). Returns RESIL_OK,
 * RESIL_EINVAL when msg is not one complete message with a MAC or the
 * prefix is not the one its type answers, RESIL_EUNSUPP. */
resil_status_t resil_session_seal(const uint8_t key[RESIL_SESSION_KEY_LEN],
                                  const void *prefix, size_t plen, void *msg,
                                  size_t len);

/* Check the MAC field of msg the same way, in constant time. Returns
 * RESIL_OK, RESIL_EAUTH when it differs, RESIL_EINVAL or RESIL_EUNSUPP as
 * resil_session_seal(). */
resil_status_t resil_session_verify(const uint8_t key[RESIL_SESSION_KEY_LEN],
                                    const void *prefix, size_t plen,
                                    const void *msg, size_t len);

/* The stream tail hash a RESUME/RESUMED carries: unkeyed BLAKE2b-128 of
 * the bytes of n spans, in order (at most RESIL_SESSION_TAIL_BYTES of
 * them by the protocol; any count works here). */
void resil_session_tail(const struct iovec *iov, int n,
                        uint8_t out[RESIL_WIRE_TAIL_LEN]);

/* Constant-time equality of two 16-byte values (crypto_verify_16). */
bool resil_session_eq16(const uint8_t *a, const uint8_t *b);

/* Fill buf with n random bytes. Returns RESIL_OK or RESIL_EUNSUPP. */
resil_status_t resil_session_random(void *buf, size_t n);

/* Load a pre-shared key: the file's bytes, as they are (a trailing newline
 * included), between RESIL_PSK_FILE_MIN and RESIL_PSK_FILE_MAX of them,
 * hashed into a 32-byte key with BLAKE2b-256("libresil v1 psk" || bytes).
 * Like ssh with a private key, a file that its group or others may read
 * or write is refused, and so is anything but a regular file. why[0,
 * whylen) gets a message for the log on failure (may be NULL). Returns
 * RESIL_OK; RESIL_ESYS (open/read failed, errno kept), RESIL_EINVAL (not a
 * regular file, or fewer than RESIL_PSK_FILE_MIN bytes), RESIL_ERANGE
 * (more than RESIL_PSK_FILE_MAX bytes), RESIL_EPERM (mode & 077), or
 * RESIL_EUNSUPP; key is untouched on failure. */
resil_status_t resil_psk_load(const char *path,
                              uint8_t key[RESIL_SESSION_KEY_LEN], char *why,
                              size_t whylen);

#endif
