/* Writes the seed corpus of fuzz_session into the directory argv[1]:
 * valid messages of every type (sealed with the keys of fixture.h, so that
 * the decisions run to the end), some truncated, some refused.
 * Deterministic: `make fuzz-corpus` rewrites the same files. */
#include <errno.h>
#include <stdio.h>

#include "fixture.h"

static const char *dir;

static void put(const char *name, const void *b, size_t n)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_corpus: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static size_t resume(const struct fixture *fx, uint64_t counter, uint64_t r,
                     uint8_t *b)
{
    uint8_t tail[RESIL_WIRE_TAIL_LEN], nonce[RESIL_WIRE_NONCE_LEN];
    struct resil_resume_view peer = fx->client;
    size_t len;

    fx_tail(r, tail);
    fx_seq(nonce, sizeof nonce, (uint8_t)counter);
    if (resil_resume_request(&peer, counter, r, tail, 0, nonce, b,
                             RESIL_WIRE_MAX_LEN, &len) != RESIL_OK)
        abort();
    return len;
}

int main(int argc, char **argv)
{
    struct fixture fx;
    uint8_t b[RESIL_WIRE_MAX_LEN + 64], tail[RESIL_WIRE_TAIL_LEN];
    size_t len;
    char name[64];

    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    dir = argv[1];
    fx_init(&fx);

    put("hello-2addr", fx.hello, fx.hello_len);
    put("hello-trunc-40", fx.hello, 40);
    put("hello-trunc-3", fx.hello, 3);
    len = fx_hello(&fx, RESIL_MSG_HELLO, 0, b, sizeof b);
    put("hello-0addr", b, len);
    len = fx_hello(&fx, RESIL_MSG_HELLO, 8, b, sizeof b);
    put("hello-8addr", b, len);
    /* The program's first bytes right behind the HELLO. */
    memcpy(b + len, "GET / HTTP/1.1\r\n\r\n", 18);
    put("hello-then-http", b, len + 18);
    b[5] = 2;
    put("hello-version-2", b, len);
    len = fx_hello(&fx, RESIL_MSG_WELCOME, 3, b, sizeof b);
    put("welcome-3addr", b, len);
    put("welcome-trunc-90", b, 90);

    /* RESUMEs from the client to the server of the fixture, each meant to
     * reach one row of the decision table. */
    len = resume(&fx, 6, FX_PEER_R, b);
    put("resume-accepted", b, len);
    put("resume-trunc-97", b, len - 1);
    put("resume-trunc-8", b, 8);
    b[len - 1] ^= 1;
    put("resume-bad-mac", b, len);
    len = resume(&fx, 5, FX_PEER_R, b);
    put("resume-replayed", b, len);
    len = resume(&fx, 7, FX_WRITTEN + 1, b);
    put("resume-out-of-window", b, len);
    len = resume(&fx, 8, FX_PEER_R, b);
    b[42] ^= 1; /* the tail */
    resil_session_seal(fx.k_mac, NULL, 0, b, len);
    put("resume-tail-mismatch", b, len);

    /* RESUMEDs answering the fixture's RESUME. */
    fx_tail(FX_WRITTEN, tail);
    if (resil_resume_answer(&fx.server, fx.req, fx.req_len, FX_WRITTEN, tail,
                            RESIL_RESUME_F_FIN, b, sizeof b, &len) != RESIL_OK)
        abort();
    put("resumed-accepted", b, len);
    put("resumed-trunc-30", b, 30);
    fx_tail(3500, tail);
    if (resil_resume_answer(&fx.server, fx.req, fx.req_len, 3500, tail, 0, b,
                            sizeof b, &len) != RESIL_OK)
        abort();
    put("resumed-r3500", b, len);

    for (unsigned r = RESIL_REFUSE_UNKNOWN; r < RESIL_REFUSE_MAX; r++) {
        struct resil_msg m = {.type = RESIL_MSG_REFUSE};
        m.u.refuse.reason = (uint8_t)r;
        if (resil_wire_encode(&m, b, sizeof b, &len) != RESIL_OK)
            abort();
        snprintf(name, sizeof name, "refuse-%u", r);
        put(name, b, len);
    }
    b[5] = 7;
    put("refuse-version-7", b, len);
    put("not-ours-http", "GET / HTTP/1.1\r\n", 16);
    put("not-ours-pg", "\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);
    return 0;
}
