/* The key schedule, the MACs and the pre-shared key loader. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "session_crypto.h"
#include "session_util.h"

TestSuite(session_crypto, .init = unit_setup);

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

#define EXPECT_HEX(bytes, n, want)                                             \
    do {                                                                       \
        char h_[2 * (n) + 1];                                                  \
        hex((bytes), (n), h_);                                                 \
        cr_expect_str_eq(h_, (want), "%s = %s", #bytes, h_);                   \
    } while (0)

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Fixed inputs of the known-answer tests. */
static void kat_sides(struct resil_kx *c, struct resil_kx *s)
{
    uint8_t skc[32], sks[32], nc[16], ns[16];

    fill_seq(skc, 32, 0x01);
    fill_seq(sks, 32, 0x21);
    fill_seq(nc, 16, 0x41);
    fill_seq(ns, 16, 0x51);
    cr_assert_eq(resil_kx_from(c, skc, nc), RESIL_OK);
    cr_assert_eq(resil_kx_from(s, sks, ns), RESIL_OK);
}

static void both_derive(const uint8_t *psk_c, const uint8_t *psk_s,
                        struct resil_session_keys *kc,
                        struct resil_session_keys *ks)
{
    struct resil_kx c, s;
    uint8_t cpk[32], cn[16];

    cr_assert_eq(resil_kx_new(&c), RESIL_OK);
    cr_assert_eq(resil_kx_new(&s), RESIL_OK);
    memcpy(cpk, c.pk, 32);
    memcpy(cn, c.nonce, 16);
    cr_assert_eq(
        resil_session_derive(&c, RESIL_ROLE_CLIENT, s.pk, s.nonce, psk_c, kc),
        RESIL_OK);
    cr_assert_eq(
        resil_session_derive(&s, RESIL_ROLE_SERVER, cpk, cn, psk_s, ks),
        RESIL_OK);
    cr_expect(all_zero(c.sk, 32), "ephemeral secret wiped");
    cr_expect(all_zero(s.sk, 32), "ephemeral secret wiped");
}

Test(session_crypto, both_sides_derive_the_same_keys)
{
    struct resil_session_keys kc, ks;
    uint8_t psk[32];

    cr_assert_eq(resil_crypto_init(), RESIL_OK);
    both_derive(NULL, NULL, &kc, &ks);
    cr_expect_arr_eq(&kc, &ks, sizeof kc);
    cr_expect_arr_neq(kc.k_mac, kc.k_confirm, 32);
    fill_seq(psk, 32, 0x99);
    both_derive(psk, psk, &kc, &ks);
    cr_expect_arr_eq(&kc, &ks, sizeof kc);
}

Test(session_crypto, a_psk_mismatch_gives_other_keys)
{
    struct resil_session_keys kc, ks;
    uint8_t a[32], b[32];

    fill_seq(a, 32, 0x99);
    memcpy(b, a, 32);
    b[31] ^= 1;
    both_derive(a, b, &kc, &ks);
    cr_expect_arr_neq(kc.id, ks.id, sizeof kc.id);
    cr_expect_arr_neq(kc.k_confirm, ks.k_confirm, 32);
    cr_expect_arr_neq(kc.k_mac, ks.k_mac, 32);
    both_derive(a, NULL, &kc, &ks);
    cr_expect_arr_neq(kc.k_confirm, ks.k_confirm, 32);
    cr_expect_arr_neq(kc.k_mac, ks.k_mac, 32);
    both_derive(NULL, b, &kc, &ks);
    cr_expect_arr_neq(kc.k_mac, ks.k_mac, 32);
}

/* The schedule of doc/session.md written out with plain libsodium calls,
 * independently of lib/session_crypto.c. */
static void doc_schedule(const struct resil_kx *c, const struct resil_kx *s,
                         const uint8_t *psk, struct resil_session_keys *out)
{
    uint8_t in[19 + 32 + 32 + 32 + 16 + 16], shared[32], S[32];
    uint8_t *p = in;

    cr_assert_eq(crypto_scalarmult(shared, c->sk, s->pk), 0);
    memcpy(p, "libresil v1 session", 19);
    p += 19;
    memcpy(p, shared, 32);
    p += 32;
    memcpy(p, c->pk, 32);
    p += 32;
    memcpy(p, s->pk, 32);
    p += 32;
    memcpy(p, c->nonce, 16);
    p += 16;
    memcpy(p, s->nonce, 16);
    crypto_generichash(S, 32, in, sizeof in, psk, psk ? 32 : 0);
    crypto_generichash(out->id, 16, (const uint8_t *)"id", 2, S, 32);
    crypto_generichash(out->k_confirm, 32, (const uint8_t *)"confirm", 7, S,
                       32);
    crypto_generichash(out->k_mac, 32, (const uint8_t *)"mac", 3, S, 32);
}

static void kat(const uint8_t *psk, const char *id, const char *confirm,
                const char *mac)
{
    struct resil_kx c, s, c2, s2;
    struct resil_session_keys kc, ks, doc;

    kat_sides(&c, &s);
    c2 = c;
    s2 = s;
    doc_schedule(&c, &s, psk, &doc);
    cr_assert_eq(
        resil_session_derive(&c2, RESIL_ROLE_CLIENT, s.pk, s.nonce, psk, &kc),
        RESIL_OK);
    cr_assert_eq(
        resil_session_derive(&s2, RESIL_ROLE_SERVER, c.pk, c.nonce, psk, &ks),
        RESIL_OK);
    cr_expect_arr_eq(&kc, &doc, sizeof kc, "the schedule of the doc");
    cr_expect_arr_eq(&ks, &doc, sizeof ks);
    EXPECT_HEX(kc.id, 16, id);
    EXPECT_HEX(kc.k_confirm, 32, confirm);
    EXPECT_HEX(kc.k_mac, 32, mac);
}

/* Pinned once: a change of the schedule (or of a label) breaks them. The
 * values were also computed apart from libsodium, with Python's hashlib
 * (BLAKE2b) and the cryptography package (X25519), from doc/session.md. */
Test(session_crypto, known_answers)
{
    struct resil_kx c, s;
    uint8_t psk[32], k[32];

    kat_sides(&c, &s);
    EXPECT_HEX(c.pk, 32,
               "07a37cbc142093c8b755dc1b10e86cb4"
               "26374ad16aa853ed0bdfc0b2b86d1c7c");
    EXPECT_HEX(s.pk, 32,
               "5869aff450549732cbaaed5e5df9b30a"
               "6da31cb0e5742bad5ad4a1a768f1a67b");
    kat(NULL, "190f55f9f135ce3d5d124d697a4032d5",
        "e235fff95d575d3781a350ce8575110c"
        "ae351cf478c63aa35cdbf269a7c004d5",
        "487d8fdd381f2424f093c208db7f6411"
        "66868d570445c58736e53c2a4563a585");
    fill_seq(psk, 32, 0x61);
    kat(psk, "f4bf0473c90a9433aed6632a51763877",
        "bd3835d6b45d8e7a0edc3c6d1a937233"
        "e2af814dddd70643b5f797deeec1dd58",
        "0631ceffb0dc17e55a78a8754345f714"
        "6f51a266a362a201afd21699f2c0430c");
    cr_assert_eq(resil_session_hello_key(NULL, k), RESIL_OK);
    EXPECT_HEX(k, 32,
               "13e03fa1ab122133bb52ebd837acb953"
               "6774d6b8cb3b17b4422ff70b25153630");
    cr_assert_eq(resil_session_hello_key(psk, k), RESIL_OK);
    EXPECT_HEX(k, 32,
               "3a049caa6f11598c26492d2cdd59d62e"
               "7c788818384544dd7ed7e225b83368f0");
}

Test(session_crypto, low_order_points_are_refused)
{
    /* All zero, and 1: both give an all-zero X25519 result. */
    static const uint8_t bad[2][32] = {{0}, {1}};
    uint8_t n[16] = {0};

    for (int i = 0; i < 2; i++) {
        struct resil_kx c;
        struct resil_session_keys k;

        memset(&k, 0x5a, sizeof k);
        cr_assert_eq(resil_kx_new(&c), RESIL_OK);
        cr_expect_eq(
            resil_session_derive(&c, RESIL_ROLE_CLIENT, bad[i], n, NULL, &k),
            RESIL_EPROTO);
        cr_expect(all_zero(c.sk, 32), "wiped on failure too");
        cr_expect_eq(k.id[0], 0x5a, "keys untouched");
    }
    struct resil_kx c, s;
    struct resil_session_keys k;
    cr_assert_eq(resil_kx_new(&c), RESIL_OK);
    cr_assert_eq(resil_kx_new(&s), RESIL_OK);
    cr_expect_eq(resil_session_derive(&c, 2, s.pk, s.nonce, NULL, &k),
                 RESIL_EINVAL);
    cr_expect(all_zero(c.sk, 32));
}

/* The process's key pair serves its handshakes for a while (session_crypto.c
 * says why); every handshake has a fresh nonce, and a fork child a pair of
 * its own. */
Test(session_crypto, fresh_keys_and_random)
{
    struct resil_kx a, b, c;
    uint8_t r1[32], r2[32];
    int pfd[2], status = -1;
    pid_t pid;

    cr_assert_eq(resil_kx_new(&a), RESIL_OK);
    cr_assert_eq(resil_kx_new(&b), RESIL_OK);
    cr_expect_arr_eq(a.pk, b.pk, 32, "one key pair for the process's handshakes");
    cr_expect_arr_neq(a.nonce, b.nonce, 16);
    cr_assert_eq(pipe(pfd), 0);
    pid = fork();
    if (pid == 0) {
        _exit(resil_kx_new(&c) == RESIL_OK &&
                      write(pfd[1], c.pk, 32) == 32
                  ? 0
                  : 1);
    }
    cr_assert_gt(pid, 0);
    cr_assert_eq(read(pfd[0], c.pk, 32), 32);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_expect_arr_neq(c.pk, a.pk, 32, "a fork child's pair is its own");
    close(pfd[0]);
    close(pfd[1]);
    cr_assert_eq(resil_session_random(r1, 32), RESIL_OK);
    cr_assert_eq(resil_session_random(r2, 32), RESIL_OK);
    cr_expect_arr_neq(r1, r2, 32);
    resil_kx_wipe(&a);
    cr_expect(all_zero((const uint8_t *)&a, sizeof a));
}

/* Seal m with key (over prefix), check it verifies, then that flipping
 * any bit of any byte of prefix or message makes it fail. */
static void flips_fail(const uint8_t *key, const uint8_t *prefix, size_t plen,
                       uint8_t *msg, size_t len)
{
    uint8_t other[32];

    cr_assert_eq(resil_session_seal(key, prefix, plen, msg, len), RESIL_OK);
    cr_assert_eq(resil_session_verify(key, prefix, plen, msg, len), RESIL_OK);
    memcpy(other, key, 32);
    other[0] ^= 1;
    cr_expect_eq(resil_session_verify(other, prefix, plen, msg, len),
                 RESIL_EAUTH);
    for (size_t off = 0; off < len; off++) {
        for (int bit = 0; bit < 8; bit++) {
            resil_status_t st;

            msg[off] ^= (uint8_t)(1 << bit);
            st = resil_session_verify(key, prefix, plen, msg, len);
            msg[off] ^= (uint8_t)(1 << bit);
            /* A header flip makes it another message (EINVAL); any other
             * covered byte, or the MAC, is an authentication failure. */
            if (off >= RESIL_WIRE_HDR_LEN)
                cr_assert_eq(st, RESIL_EAUTH, "byte %zu bit %d", off, bit);
            else
                cr_assert_neq(st, RESIL_OK, "byte %zu bit %d", off, bit);
        }
    }
    if (!plen)
        return;
    uint8_t p[RESIL_WIRE_MAX_LEN];
    memcpy(p, prefix, plen);
    for (size_t off = 0; off < plen; off++) {
        for (int bit = 0; bit < 8; bit++) {
            p[off] ^= (uint8_t)(1 << bit);
            cr_assert_neq(resil_session_verify(key, p, plen, msg, len),
                          RESIL_OK, "prefix byte %zu bit %d", off, bit);
            if (off >= RESIL_WIRE_HDR_LEN)
                cr_assert_eq(resil_session_verify(key, p, plen, msg, len),
                             RESIL_EAUTH);
            p[off] ^= (uint8_t)(1 << bit);
        }
    }
}

Test(session_crypto, macs_cover_every_byte)
{
    struct resil_msg h = sample_hello(RESIL_MSG_HELLO, 3),
                     w = sample_hello(RESIL_MSG_WELCOME, 1),
                     r = sample_resume(), d = sample_resumed();
    uint8_t hb[RESIL_WIRE_MAX_LEN], wb[RESIL_WIRE_MAX_LEN];
    uint8_t rb[RESIL_WIRE_MAX_LEN], db[RESIL_WIRE_MAX_LEN], key[32];
    size_t hl = encode_ok(&h, hb, sizeof hb), wl = encode_ok(&w, wb, sizeof wb);
    size_t rl = encode_ok(&r, rb, sizeof rb), dl = encode_ok(&d, db, sizeof db);

    fill_seq(key, 32, 0x77);
    flips_fail(key, NULL, 0, hb, hl);
    flips_fail(key, hb, hl, wb, wl);
    flips_fail(key, NULL, 0, rb, rl);
    flips_fail(key, rb, rl, db, dl);
}

Test(session_crypto, a_mac_answers_one_message_only)
{
    struct resil_msg r = sample_resume(), d = sample_resumed(),
                     h = sample_hello(RESIL_MSG_HELLO, 0),
                     w = sample_hello(RESIL_MSG_WELCOME, 0),
                     f = sample_refuse(1);
    uint8_t rb[128], r2[128], db[128], hb[128], wb[128], fb[16], key[32];
    size_t rl = encode_ok(&r, rb, sizeof rb), dl = encode_ok(&d, db, sizeof db);
    size_t hl = encode_ok(&h, hb, sizeof hb), wl = encode_ok(&w, wb, sizeof wb);
    size_t fl = encode_ok(&f, fb, sizeof fb);

    fill_seq(key, 32, 0x33);
    cr_assert_eq(resil_session_seal(key, rb, rl, db, dl), RESIL_OK);
    /* The same RESUMED against a RESUME with another nonce. */
    r.u.resume.nonce[5] ^= 1;
    encode_ok(&r, r2, sizeof r2);
    cr_expect_eq(resil_session_verify(key, r2, rl, db, dl), RESIL_EAUTH);
    /* Each type answers exactly one other. */
    cr_expect_eq(resil_session_seal(key, NULL, 0, db, dl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, hb, hl, db, dl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, NULL, 0, wb, wl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, rb, rl, wb, wl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, rb, rl, hb, hl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, hb, hl, rb, rl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, hb, hl - 1, wb, wl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, NULL, 0, fb, fl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, NULL, 0, rb, rl - 1), RESIL_EINVAL);
    cr_expect_eq(resil_session_verify(key, NULL, 0, fb, fl), RESIL_EINVAL);
    cr_expect_eq(resil_session_seal(key, hb, hl, wb, wl), RESIL_OK);
}

Test(session_crypto, hello_key_depends_on_the_psk)
{
    struct resil_msg h = sample_hello(RESIL_MSG_HELLO, 1);
    uint8_t b[RESIL_WIRE_MAX_LEN], k0[32], k1[32], psk[32];
    size_t len = encode_ok(&h, b, sizeof b);

    fill_seq(psk, 32, 0x61);
    cr_assert_eq(resil_session_hello_key(NULL, k0), RESIL_OK);
    cr_assert_eq(resil_session_hello_key(psk, k1), RESIL_OK);
    cr_assert_eq(resil_session_seal(k1, NULL, 0, b, len), RESIL_OK);
    cr_expect_eq(resil_session_verify(k1, NULL, 0, b, len), RESIL_OK);
    cr_expect_eq(resil_session_verify(k0, NULL, 0, b, len), RESIL_EAUTH);
}

Test(session_crypto, tail_hash_of_spans)
{
    uint8_t data[64], want[16], got[16];
    struct iovec iov[2];

    gen_fill(data, 1000, 64);
    crypto_generichash(want, 16, data, 64, NULL, 0);
    for (size_t cut = 0; cut <= 64; cut++) {
        iov[0] = (struct iovec){data, cut};
        iov[1] = (struct iovec){data + cut, 64 - cut};
        resil_session_tail(iov, 2, got);
        cr_expect_arr_eq(got, want, 16, "cut %zu", cut);
    }
    resil_session_tail(iov, 0, got);
    crypto_generichash(want, 16, NULL, 0, NULL, 0);
    cr_expect_arr_eq(got, want, 16, "empty tail");
    cr_expect(resil_session_eq16(want, got));
    got[15] ^= 0x80;
    cr_expect_not(resil_session_eq16(want, got));
}

/* Pre-shared key files. */
static char dir[64];

static void psk_setup(void)
{
    unit_setup();
    strcpy(dir, "/tmp/resil-psk-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void psk_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

static const char *file_of(const char *name, const void *data, size_t n,
                           mode_t mode)
{
    static char path[128];
    int fd;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, data, n), (ssize_t)n);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

Test(session_crypto, psk_file_good, .init = psk_setup, .fini = psk_teardown)
{
    static const char content[] = "0123456789abcdef0123456789abcdef\n";
    uint8_t key[32], want[32], in[15 + sizeof content - 1];
    char why[256] = "";
    const char *p = file_of("psk", content, sizeof content - 1, 0600);

    cr_assert_eq(resil_psk_load(p, key, why, sizeof why), RESIL_OK, "%s", why);
    memcpy(in, "libresil v1 psk", 15);
    memcpy(in + 15, content, sizeof content - 1);
    crypto_generichash(want, 32, in, sizeof in, NULL, 0);
    cr_expect_arr_eq(key, want, 32);
    EXPECT_HEX(key, 32,
               "c806fd378c8d18429e08cdbf1ba91b0c"
               "c93a02b945e59fafb812d7c81e15bb70");
    /* 0400 is fine too; the newline is part of the key. */
    p = file_of("psk2", content, sizeof content - 2, 0400);
    cr_assert_eq(resil_psk_load(p, want, why, sizeof why), RESIL_OK);
    cr_expect_arr_neq(key, want, 32);
    /* Through a symbolic link (Kubernetes mounts secrets so). */
    char link[160];
    snprintf(link, sizeof link, "%s/link", dir);
    cr_assert_eq(symlink("psk", link), 0);
    cr_assert_eq(resil_psk_load(link, want, why, sizeof why), RESIL_OK);
    cr_expect_arr_eq(key, want, 32);
}

Test(session_crypto, psk_file_sizes, .init = psk_setup, .fini = psk_teardown)
{
    static uint8_t big[RESIL_PSK_FILE_MAX + 1];
    uint8_t key[32];
    char why[256];
    const char *p;

    memset(big, 'k', sizeof big);
    p = file_of("max", big, RESIL_PSK_FILE_MAX, 0600);
    cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_OK);
    p = file_of("min", big, RESIL_PSK_FILE_MIN, 0600);
    cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_OK);
    memset(key, 0x5a, sizeof key);
    p = file_of("over", big, RESIL_PSK_FILE_MAX + 1, 0600);
    cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_ERANGE);
    cr_expect(strstr(why, "larger than 4096 bytes"), "%s", why);
    p = file_of("short", big, RESIL_PSK_FILE_MIN - 1, 0600);
    cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_EINVAL);
    cr_expect(strstr(why, "holds 31 bytes"), "%s", why);
    p = file_of("empty", big, 0, 0600);
    cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_EINVAL);
    cr_expect_eq(key[0], 0x5a, "key untouched on failure");
    cr_expect_eq(key[31], 0x5a);
}

Test(session_crypto, psk_file_permissions, .init = psk_setup,
     .fini = psk_teardown)
{
    static const mode_t bad[] = {0644, 0640, 0604, 0620, 0602,
                                 0610, 0601, 0666, 0660, 0444};
    uint8_t key[32];
    char why[256];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p =
            file_of("psk", "0123456789abcdef0123456789abcdef", 32, bad[i]);
        cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_EPERM,
                     "mode %o", bad[i]);
        cr_expect(strstr(why, "are too open"), "%s", why);
        cr_expect(strstr(why, "chmod 600"), "%s", why);
    }
    const char *p =
        file_of("psk", "0123456789abcdef0123456789abcdef", 32, 0644);
    cr_expect_eq(resil_psk_load(p, key, why, sizeof why), RESIL_EPERM);
    cr_expect(strstr(why, "permissions 0644 for '"), "%s", why);
    /* why may be NULL. */
    cr_expect_eq(resil_psk_load(p, key, NULL, 0), RESIL_EPERM);
}

Test(session_crypto, psk_not_a_regular_file, .init = psk_setup,
     .fini = psk_teardown)
{
    uint8_t key[32];
    char why[256], fifo[160];

    cr_expect_eq(resil_psk_load(dir, key, why, sizeof why), RESIL_EINVAL);
    cr_expect(strstr(why, "is not a regular file"), "%s", why);
    cr_expect_eq(resil_psk_load("/dev/null", key, why, sizeof why),
                 RESIL_EINVAL);
    /* A FIFO with no writer: refused, not waited on. */
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_expect_eq(resil_psk_load(fifo, key, why, sizeof why), RESIL_EINVAL);
    errno = 0;
    cr_expect_eq(resil_psk_load("/nonexistent/psk", key, why, sizeof why),
                 RESIL_ESYS);
    cr_expect_eq(errno, ENOENT);
    cr_expect(strstr(why, "cannot open '/nonexistent/psk'"), "%s", why);
}

/* A pair of public keys seen before: the remembered X25519 gives the keys
 * the computation gives (the server's pair made from a known secret, so
 * that each derive below computes or remembers the same thing), and two
 * sessions between the same pairs still differ by their nonces. */
Test(session_crypto, remembered_shared_secret)
{
    struct resil_kx c1, c2, s1, s2;
    struct resil_session_keys k1, k2, ks;
    uint8_t sks[32], ns[16];

    memset(sks, 0x42, sizeof sks);
    memset(ns, 0x17, sizeof ns);
    cr_assert_eq(resil_kx_new(&c1), RESIL_OK);
    c2 = c1; /* the same handshake, derived twice */
    cr_assert_eq(resil_kx_from(&s1, sks, ns), RESIL_OK);
    s2 = s1;
    cr_assert_eq(resil_session_derive(&c1, RESIL_ROLE_CLIENT, s1.pk, s1.nonce,
                                      NULL, &k1), RESIL_OK);
    cr_assert_eq(resil_session_derive(&c2, RESIL_ROLE_CLIENT, s1.pk, s1.nonce,
                                      NULL, &k2), RESIL_OK);
    cr_assert_eq(resil_session_derive(&s2, RESIL_ROLE_SERVER, c1.pk, c1.nonce,
                                      NULL, &ks), RESIL_OK);
    cr_expect_arr_eq(k1.k_mac, k2.k_mac, sizeof k1.k_mac);
    cr_expect_arr_eq(k1.k_mac, ks.k_mac, sizeof k1.k_mac);
    cr_expect_arr_eq(k1.id, ks.id, sizeof k1.id);
    cr_assert_eq(resil_kx_new(&c2), RESIL_OK);
    cr_assert_eq(resil_session_derive(&c2, RESIL_ROLE_CLIENT, s1.pk, s1.nonce,
                                      NULL, &k2), RESIL_OK);
    cr_expect_arr_neq(k1.id, k2.id, sizeof k1.id, "a fresh nonce, a new session");
    cr_expect_arr_neq(k1.k_mac, k2.k_mac, sizeof k1.k_mac);
}
