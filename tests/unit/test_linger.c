/* Reading a handshake message off a socket's queue (lib/session.c
 * resil_sess_read_off: a closed socket kept by lib/linger.c, a late
 * HELLO), over a local stream pair. */
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "session.h"
#include "session_util.h"

TestSuite(linger, .init = unit_setup);

/* A stream pair: sv[0] the peer that writes, sv[1] the kept socket. */
static void pair(int sv[2])
{
    cr_assert(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
}

static size_t encode(uint8_t type, uint8_t *buf, size_t cap)
{
    struct resil_msg m = sample_hello(type, 2);
    size_t len = 0;
    cr_assert(resil_wire_encode(&m, buf, cap, &len) == RESIL_OK);
    return len;
}

static void put(int fd, const void *p, size_t n)
{
    cr_assert(write(fd, p, n) == (ssize_t)n);
}

/* bytes left in fd's queue */
static ssize_t left(int fd, void *buf, size_t cap)
{
    return recv(fd, buf, cap, MSG_DONTWAIT);
}

Test(linger, nothing_yet_then_the_welcome)
{
    uint8_t w[RESIL_WIRE_MAX_LEN], b[64];
    size_t n = encode(RESIL_MSG_WELCOME, w, sizeof w);
    int sv[2];

    pair(sv);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME),
                 RESIL_EAGAIN);
    put(sv[0], w, n);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME), RESIL_OK);
    cr_expect_eq(left(sv[1], b, sizeof b), -1, "the WELCOME was read off");
    close(sv[0]);
    close(sv[1]);
}

Test(linger, a_part_waits_for_the_rest)
{
    uint8_t w[RESIL_WIRE_MAX_LEN];
    size_t n = encode(RESIL_MSG_WELCOME, w, sizeof w);
    int sv[2];

    pair(sv);
    put(sv[0], w, 5);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME),
                 RESIL_EAGAIN, "the magic and a byte: more to come");
    put(sv[0], w + 5, n - 20);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME),
                 RESIL_EAGAIN);
    put(sv[0], w + n - 15, 15);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME), RESIL_OK);
    close(sv[0]);
    close(sv[1]);
}

Test(linger, the_peer_programs_bytes_after_it_stay)
{
    uint8_t w[RESIL_WIRE_MAX_LEN], b[64];
    size_t n = encode(RESIL_MSG_WELCOME, w, sizeof w);
    int sv[2];

    pair(sv);
    put(sv[0], w, n);
    put(sv[0], "+OK\r\n", 5);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME), RESIL_OK);
    cr_expect_eq(left(sv[1], b, sizeof b), 5);
    cr_expect(memcmp(b, "+OK\r\n", 5) == 0);
    close(sv[0]);
    close(sv[1]);
}

Test(linger, a_refuse_answers_a_hello_too)
{
    struct resil_msg m;
    uint8_t r[RESIL_WIRE_MAX_LEN];
    size_t n = 0;
    int sv[2];

    memset(&m, 0, sizeof m);
    m.type = RESIL_MSG_REFUSE;
    m.u.refuse.reason = RESIL_REFUSE_VERSION;
    cr_assert(resil_wire_encode(&m, r, sizeof r, &n) == RESIL_OK);
    pair(sv);
    put(sv[0], r, n);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME), RESIL_OK);
    close(sv[0]);
    close(sv[1]);
}

Test(linger, anything_else_is_left_alone)
{
    uint8_t h[RESIL_WIRE_MAX_LEN], b[RESIL_WIRE_MAX_LEN];
    size_t n = encode(RESIL_MSG_HELLO, h, sizeof h);
    int sv[2];

    /* a plain server's bytes */
    pair(sv);
    put(sv[0], "220 ready\r\n", 11);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME),
                 RESIL_ENOENT);
    cr_expect_eq(left(sv[1], b, sizeof b), 11, "left where they were");
    close(sv[0]);
    close(sv[1]);
    /* the message the other side owes, not this one's */
    pair(sv);
    put(sv[0], h, n);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME),
                 RESIL_ENOENT);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_HELLO), RESIL_OK);
    close(sv[0]);
    close(sv[1]);
    /* garbage after the magic */
    pair(sv);
    memset(h + 4, 0xff, 12);
    put(sv[0], h, 16);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_HELLO), RESIL_ENOENT);
    cr_expect_eq(left(sv[1], b, sizeof b), 16);
    close(sv[0]);
    close(sv[1]);
}

Test(linger, eof_ends_the_wait)
{
    int sv[2];

    pair(sv);
    close(sv[0]);
    cr_expect_eq(resil_sess_read_off(sv[1], RESIL_MSG_WELCOME),
                 RESIL_ENOENT);
    close(sv[1]);
}
