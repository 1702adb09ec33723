/* libresil: session key schedule and MACs, with libsodium. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "session_crypto.h"
#include "sys.h"

/* Labels are their ASCII bytes, without a terminating NUL. */
#define LABEL(s) (const unsigned char *)(s), sizeof(s) - 1

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int sodium_rc = -1;

static void kx_child(void);

static void start(void)
{
    /* 0: initialised now, 1: already (by the program, say); -1: failed. */
    sodium_rc = sodium_init();
    pthread_atfork(NULL, NULL, kx_child);
}

static bool ready(void)
{
    pthread_once(&once, start);
    return sodium_rc >= 0;
}

resil_status_t resil_crypto_init(void)
{
    return ready() ? RESIL_OK : RESIL_EUNSUPP;
}

/* One key pair serves this process's handshakes for up to KX_TTL_NS or
 * KX_USES of them, and the X25519 of a pair of public keys seen before is
 * remembered (SHARED_N of them): two scalar multiplications per connection
 * were a third of a connection-per-request client's CPU (perf, redis-
 * benchmark -k 0). Each session still gets keys of its own (both fresh
 * nonces go into S), and a process's memory holds its live sessions' keys
 * anyway: the pair kept for a minute exposes nothing more, save sessions
 * that ended within it, which nothing can resume. A fork child makes its
 * own. */
#define KX_TTL_NS (60ull * 1000000000ull)
#define KX_USES 100000u
#define SHARED_N 64

static pthread_mutex_t kx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint8_t pk[RESIL_WIRE_KEY_LEN], sk[RESIL_SESSION_SK_LEN];
    uint64_t born;
    unsigned uses;
} cur;
static bool kx_have;
static struct shared_ent {
    uint8_t own[RESIL_WIRE_KEY_LEN], peer[RESIL_WIRE_KEY_LEN];
    uint8_t shared[crypto_scalarmult_BYTES];
    bool used;
} shared_tab[SHARED_N];
static unsigned shared_next;

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* A fork child makes a pair of its own (no lock may be taken here: the
 * child has one thread, and kx_mu may have been held by another one). */
static void kx_child(void)
{
    pthread_mutex_init(&kx_mu, NULL);
    kx_have = false;
}

resil_status_t resil_kx_new(struct resil_kx *kx)
{
    uint64_t now = mono_ns();

    if (!ready())
        return RESIL_EUNSUPP;
    pthread_mutex_lock(&kx_mu);
    if (!kx_have || cur.uses >= KX_USES || now - cur.born > KX_TTL_NS) {
        crypto_kx_keypair(cur.pk, cur.sk);
        cur.born = now;
        cur.uses = 0;
        kx_have = true;
        /* what the old pair shared with anyone goes with it */
        sodium_memzero(shared_tab, sizeof shared_tab);
    }
    cur.uses++;
    memcpy(kx->pk, cur.pk, sizeof kx->pk);
    memcpy(kx->sk, cur.sk, sizeof kx->sk);
    pthread_mutex_unlock(&kx_mu);
    randombytes_buf(kx->nonce, sizeof kx->nonce);
    return RESIL_OK;
}

/* X25519(own->sk, peer_pk) into shared: 0, or -1 for a low-order point
 * (never remembered). */
static int shared_of(const struct resil_kx *own, const uint8_t *peer_pk,
                     uint8_t shared[crypto_scalarmult_BYTES])
{
    int rc = 1;

    pthread_mutex_lock(&kx_mu);
    for (unsigned i = 0; i < SHARED_N && rc == 1; i++) {
        struct shared_ent *e = &shared_tab[i];
        if (e->used && sodium_memcmp(e->own, own->pk, sizeof e->own) == 0 &&
            sodium_memcmp(e->peer, peer_pk, sizeof e->peer) == 0) {
            memcpy(shared, e->shared, crypto_scalarmult_BYTES);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&kx_mu);
    if (rc == 0)
        return 0;
    if (crypto_scalarmult(shared, own->sk, peer_pk) != 0)
        return -1;
    pthread_mutex_lock(&kx_mu);
    /* only for the pair of now: an old one's secret is not kept */
    if (sodium_memcmp(own->pk, cur.pk, sizeof cur.pk) == 0) {
        struct shared_ent *e = &shared_tab[shared_next++ % SHARED_N];
        memcpy(e->own, own->pk, sizeof e->own);
        memcpy(e->peer, peer_pk, sizeof e->peer);
        memcpy(e->shared, shared, sizeof e->shared);
        e->used = true;
    }
    pthread_mutex_unlock(&kx_mu);
    return 0;
}

resil_status_t resil_kx_from(struct resil_kx *kx,
                             const uint8_t sk[RESIL_SESSION_SK_LEN],
                             const uint8_t nonce[RESIL_WIRE_NONCE_LEN])
{
    if (!ready())
        return RESIL_EUNSUPP;
    memcpy(kx->sk, sk, sizeof kx->sk);
    memcpy(kx->nonce, nonce, sizeof kx->nonce);
    /* What crypto_kx_keypair() does after drawing the secret. */
    crypto_scalarmult_base(kx->pk, kx->sk);
    return RESIL_OK;
}

void resil_kx_wipe(struct resil_kx *kx)
{
    sodium_memzero(kx, sizeof *kx);
}

resil_status_t resil_session_derive(struct resil_kx *own, int role,
                                    const uint8_t *peer_pk,
                                    const uint8_t *peer_nonce,
                                    const uint8_t *psk,
                                    struct resil_session_keys *out)
{
    uint8_t shared[crypto_scalarmult_BYTES], s[RESIL_SESSION_KEY_LEN];
    crypto_generichash_state h;
    const uint8_t *cpk, *spk, *cn, *sn;
    resil_status_t st = RESIL_OK;

    if (role != RESIL_ROLE_CLIENT && role != RESIL_ROLE_SERVER) {
        st = RESIL_EINVAL;
        goto done;
    }
    if (!ready()) {
        st = RESIL_EUNSUPP;
        goto done;
    }
    /* -1: the result is all zeros, the peer sent a low-order point and
     * would know our "shared" secret. */
    if (shared_of(own, peer_pk, shared) != 0) {
        st = RESIL_EPROTO;
        goto done;
    }
    cpk = role == RESIL_ROLE_CLIENT ? own->pk : peer_pk;
    spk = role == RESIL_ROLE_CLIENT ? peer_pk : own->pk;
    cn = role == RESIL_ROLE_CLIENT ? own->nonce : peer_nonce;
    sn = role == RESIL_ROLE_CLIENT ? peer_nonce : own->nonce;
    crypto_generichash_init(&h, psk, psk ? RESIL_SESSION_KEY_LEN : 0, sizeof s);
    crypto_generichash_update(&h, LABEL("libresil v1 session"));
    crypto_generichash_update(&h, shared, sizeof shared);
    crypto_generichash_update(&h, cpk, RESIL_WIRE_KEY_LEN);
    crypto_generichash_update(&h, spk, RESIL_WIRE_KEY_LEN);
    crypto_generichash_update(&h, cn, RESIL_WIRE_NONCE_LEN);
    crypto_generichash_update(&h, sn, RESIL_WIRE_NONCE_LEN);
    crypto_generichash_final(&h, s, sizeof s);
    crypto_generichash(out->id, sizeof out->id, LABEL("id"), s, sizeof s);
    crypto_generichash(out->k_confirm, sizeof out->k_confirm, LABEL("confirm"),
                       s, sizeof s);
    crypto_generichash(out->k_mac, sizeof out->k_mac, LABEL("mac"), s,
                       sizeof s);
done:
    sodium_memzero(own->sk, sizeof own->sk);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(s, sizeof s);
    sodium_memzero(&h, sizeof h);
    return st;
}

void resil_session_keys_wipe(struct resil_session_keys *k)
{
    sodium_memzero(k, sizeof *k);
}

resil_status_t resil_session_hello_key(const uint8_t *psk,
                                       uint8_t out[RESIL_SESSION_KEY_LEN])
{
    if (!ready())
        return RESIL_EUNSUPP;
    crypto_generichash(out, RESIL_SESSION_KEY_LEN, LABEL("libresil v1 hello"),
                       psk, psk ? RESIL_SESSION_KEY_LEN : 0);
    return RESIL_OK;
}

/* The MAC of msg as its type defines it, into mac; the offset of the MAC
 * field into *off. Returns RESIL_EINVAL when msg or prefix do not fit. */
static resil_status_t compute(const uint8_t *key, const void *prefix,
                              size_t plen, const void *msg, size_t len,
                              uint8_t mac[RESIL_WIRE_MAC_LEN], size_t *off)
{
    crypto_generichash_state h;
    size_t m = resil_wire_mac_offset(msg, len);
    unsigned type, want = 0;

    if (m == 0)
        return RESIL_EINVAL;
    type = ((const uint8_t *)msg)[4];
    if (type == RESIL_MSG_WELCOME)
        want = RESIL_MSG_HELLO;
    else if (type == RESIL_MSG_RESUMED)
        want = RESIL_MSG_RESUME;
    if (want == 0 ? plen != 0
                  : resil_wire_mac_offset(prefix, plen) == 0 ||
                        ((const uint8_t *)prefix)[4] != want)
        return RESIL_EINVAL;
    if (!ready())
        return RESIL_EUNSUPP;
    crypto_generichash_init(&h, key, RESIL_SESSION_KEY_LEN, RESIL_WIRE_MAC_LEN);
    if (plen)
        crypto_generichash_update(&h, prefix, plen);
    crypto_generichash_update(&h, msg, m);
    crypto_generichash_final(&h, mac, RESIL_WIRE_MAC_LEN);
    sodium_memzero(&h, sizeof h);
    *off = m;
    return RESIL_OK;
}

resil_status_t resil_session_seal(const uint8_t key[RESIL_SESSION_KEY_LEN],
                                  const void *prefix, size_t plen, void *msg,
                                  size_t len)
{
    uint8_t mac[RESIL_WIRE_MAC_LEN];
    size_t off;
    resil_status_t st = compute(key, prefix, plen, msg, len, mac, &off);

    if (st == RESIL_OK)
        memcpy((uint8_t *)msg + off, mac, sizeof mac);
    return st;
}

resil_status_t resil_session_verify(const uint8_t key[RESIL_SESSION_KEY_LEN],
                                    const void *prefix, size_t plen,
                                    const void *msg, size_t len)
{
    uint8_t mac[RESIL_WIRE_MAC_LEN];
    size_t off;
    resil_status_t st = compute(key, prefix, plen, msg, len, mac, &off);

    if (st != RESIL_OK)
        return st;
    return crypto_verify_16(mac, (const uint8_t *)msg + off) == 0 ? RESIL_OK
                                                                  : RESIL_EAUTH;
}

void resil_session_tail(const struct iovec *iov, int n,
                        uint8_t out[RESIL_WIRE_TAIL_LEN])
{
    crypto_generichash_state h;

    (void)ready(); /* BLAKE2b works without it, just slower */
    crypto_generichash_init(&h, NULL, 0, RESIL_WIRE_TAIL_LEN);
    for (int i = 0; i < n; i++)
        crypto_generichash_update(&h, iov[i].iov_base, iov[i].iov_len);
    crypto_generichash_final(&h, out, RESIL_WIRE_TAIL_LEN);
}

bool resil_session_eq16(const uint8_t *a, const uint8_t *b)
{
    return crypto_verify_16(a, b) == 0;
}

resil_status_t resil_session_random(void *buf, size_t n)
{
    if (!ready())
        return RESIL_EUNSUPP;
    randombytes_buf(buf, n);
    return RESIL_OK;
}

static void say(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (!why || whylen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

resil_status_t resil_psk_load(const char *path,
                              uint8_t key[RESIL_SESSION_KEY_LEN], char *why,
                              size_t whylen)
{
    /* One byte more than allowed, to tell "too large" from "just fits". */
    uint8_t buf[RESIL_PSK_FILE_MAX + 1];
    crypto_generichash_state h;
    struct stat st;
    size_t got = 0;
    resil_status_t rc = RESIL_OK;
    int fd, err;

    if (!ready()) {
        say(why, whylen, "libsodium cannot start");
        return RESIL_EUNSUPP;
    }
    /* O_NONBLOCK: a FIFO must not hang us before fstat() refuses it. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        err = errno;
        say(why, whylen, "cannot open '%s': %s", path, strerror(err));
        errno = err;
        return RESIL_ESYS;
    }
    if (fstat(fd, &st) != 0) {
        err = errno;
        say(why, whylen, "cannot stat '%s': %s", path, strerror(err));
        rc = RESIL_ESYS;
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        say(why, whylen, "'%s' is not a regular file", path);
        rc = RESIL_EINVAL;
        goto done;
    }
    if (st.st_mode & 077) {
        say(why, whylen,
            "permissions 0%03o for '%s' are too open: a pre-shared key "
            "must be private to its owner (chmod 600)",
            (unsigned)(st.st_mode & 0777), path);
        rc = RESIL_EPERM;
        goto done;
    }
    while (got < sizeof buf) {
        ssize_t n = real.read(fd, buf + got, sizeof buf - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            say(why, whylen, "cannot read '%s': %s", path, strerror(err));
            rc = RESIL_ESYS;
            goto done;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    if (got > RESIL_PSK_FILE_MAX) {
        say(why, whylen, "'%s' is larger than %d bytes", path,
            RESIL_PSK_FILE_MAX);
        rc = RESIL_ERANGE;
        goto done;
    }
    if (got < RESIL_PSK_FILE_MIN) {
        say(why, whylen,
            "'%s' holds %zu bytes: a pre-shared key needs at least %d", path,
            got, RESIL_PSK_FILE_MIN);
        rc = RESIL_EINVAL;
        goto done;
    }
    crypto_generichash_init(&h, NULL, 0, RESIL_SESSION_KEY_LEN);
    crypto_generichash_update(&h, LABEL("libresil v1 psk"));
    crypto_generichash_update(&h, buf, got);
    crypto_generichash_final(&h, key, RESIL_SESSION_KEY_LEN);
    sodium_memzero(&h, sizeof h);
done:
    sodium_memzero(buf, got < sizeof buf ? got : sizeof buf);
    err = errno;
    real.close(fd);
    errno = err;
    return rc;
}
