/* The session handshake and counting over real loopback TCP connections
 * (lib/session.c), no hooks: the unit tests call lib/ directly. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "engine.h"
#include "session.h"
#include "table.h"

TestSuite(session, .init = unit_setup);

/* A connected loopback pair: *c the client end, *s the accepted one. */
static void pair(int *c, int *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t l = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(lfd >= 0 && bind(lfd, (void *)&a, l) == 0 &&
              listen(lfd, 1) == 0 && getsockname(lfd, (void *)&a, &l) == 0);
    *c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(connect(*c, (void *)&a, l) == 0);
    *s = accept(lfd, NULL, NULL);
    cr_assert(*s >= 0);
    close(lfd);
}

static void wait_in(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 2000), 1);
}

static void handshake(struct resil_sess *cx, struct resil_sess *sx, int c,
                      int s)
{
    cr_assert_eq(resil_sess_client_hello(cx, c), RESIL_OK);
    cr_assert_eq(resil_sess_server_hello(sx, s, 1000), RESIL_OK);
    wait_in(c);
    cr_assert_eq(resil_sess_client_welcome(cx, c), RESIL_OK);
}

Test(session, handshake_agrees_and_leaves_the_program_bytes)
{
    struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    char buf[32];
    int c, s;

    pair(&c, &s);
    cr_assert_eq(resil_sess_client_hello(cx, c), RESIL_OK);
    /* the program's first bytes follow the HELLO on the wire */
    cr_assert_eq(write(c, "ping", 4), 4);
    cr_assert_eq(resil_sess_server_hello(sx, s, 1000), RESIL_OK);
    cr_expect_eq(atomic_load(&sx->state), RESIL_SESS_UP);
    cr_assert_eq(read(s, buf, sizeof(buf)), 4, "the server reads the "
                 "program's bytes, not the HELLO");
    cr_expect_eq(memcmp(buf, "ping", 4), 0);
    cr_assert_eq(write(s, "pong", 4), 4);
    wait_in(c);
    cr_assert_eq(resil_sess_client_welcome(cx, c), RESIL_OK);
    cr_expect_eq(atomic_load(&cx->state), RESIL_SESS_UP);
    cr_expect(memcmp(cx->keys.id, sx->keys.id, sizeof(cx->keys.id)) == 0);
    cr_expect(memcmp(cx->keys.k_mac, sx->keys.k_mac, 32) == 0);
    cr_assert_eq(read(c, buf, sizeof(buf)), 4);
    cr_expect_eq(memcmp(buf, "pong", 4), 0);
    /* both know the other's resume listener */
    cr_expect_neq(cx->peer_port, 0);
    cr_expect_eq(cx->peer_port, sx->peer_port, "one process, one listener");
    cr_expect_gt(cx->npeer, 0, "loopback addresses announced");
    /* the bases: the handshake is not part of either stream */
    cr_expect_eq(cx->kbase_in, sx->kbase_out);
    cr_expect_eq(cx->kbase_out, sx->kbase_in);
    /* the index finds each by id and role */
    resil_sess_index_lock();
    cr_expect_eq(resil_sess_find(cx->keys.id, RESIL_ROLE_CLIENT), cx);
    cr_expect_eq(resil_sess_find(cx->keys.id, RESIL_ROLE_SERVER), sx);
    resil_sess_index_unlock();
    resil_sess_free(cx);
    resil_sess_free(sx);
    resil_sess_index_lock();
    uint8_t zero[16] = {0};
    cr_expect_null(resil_sess_find(zero, RESIL_ROLE_CLIENT));
    resil_sess_index_unlock();
    close(c);
    close(s);
}

Test(session, ordinary_client_keeps_its_bytes)
{
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    char buf[64];
    int c, s;

    pair(&c, &s);
    cr_assert_eq(write(c, "GET / HTTP/1.0\r\n\r\n", 18), 18);
    cr_expect_eq(resil_sess_server_hello(sx, s, 1000), RESIL_EUNSUPP);
    cr_expect_eq(read(s, buf, sizeof(buf)), 18, "nothing consumed");
    /* a binary protocol starting with a NUL byte too (PostgreSQL) */
    cr_assert_eq(write(c, "\0\0\0\x08\x04\xd2\x16\x2f", 8), 8);
    wait_in(s);
    cr_expect_eq(resil_sess_server_hello(sx, s, 0), RESIL_EUNSUPP);
    cr_expect_eq(read(s, buf, sizeof(buf)), 8);
    resil_sess_free(sx);
    close(c);
    close(s);
}

Test(session, server_first_waits_a_bounded_time)
{
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    uint64_t t0 = resil_now_ns();
    int c, s;

    pair(&c, &s);
    cr_expect_eq(resil_sess_server_hello(sx, s, 30), RESIL_EAGAIN,
                 "a silent client: nothing to classify");
    cr_expect_lt(resil_now_ns() - t0, 500 * MS_NS);
    resil_sess_free(sx);
    close(c);
    close(s);
}

Test(session, late_hello_is_swallowed)
{
    struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    char buf[64];
    int c, s;

    pair(&c, &s);
    /* the server spoke first, without waiting: its banner goes out */
    atomic_store(&sx->state, RESIL_SESS_LATE);
    cr_assert_eq(write(s, "220 hi\r\n", 8), 8);
    cr_assert_eq(resil_sess_client_hello(cx, c), RESIL_OK);
    cr_assert_eq(write(c, "QUIT\r\n", 6), 6);
    wait_in(s);
    cr_expect_eq(resil_sess_swallow_late(sx, s), RESIL_OK);
    cr_expect_eq(atomic_load(&sx->state), RESIL_SESS_PLAIN);
    cr_expect_eq(read(s, buf, sizeof(buf)), 6, "only the program's bytes");
    cr_expect_eq(memcmp(buf, "QUIT\r\n", 6), 0);
    /* the client sees the banner where a WELCOME would be: plain too */
    wait_in(c);
    cr_expect_eq(resil_sess_client_welcome(cx, c), RESIL_EUNSUPP);
    cr_expect_eq(atomic_load(&cx->state), RESIL_SESS_PLAIN);
    cr_expect_eq(read(c, buf, sizeof(buf)), 8, "the banner is intact");
    resil_sess_free(cx);
    resil_sess_free(sx);
    close(c);
    close(s);
}

Test(session, incomplete_welcome_waits)
{
    struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    int c, s;

    pair(&c, &s);
    cr_assert_eq(resil_sess_client_hello(cx, c), RESIL_OK);
    cr_expect_eq(resil_sess_client_welcome(cx, c), RESIL_EAGAIN,
                 "nothing yet");
    /* the first three bytes of a WELCOME: not yet decidable */
    cr_assert_eq(write(s, "\0RS", 3), 3);
    wait_in(c);
    cr_expect_eq(resil_sess_client_welcome(cx, c), RESIL_EAGAIN);
    resil_sess_free(cx);
    resil_sess_free(sx);
    close(c);
    close(s);
}

Test(session, counting_and_the_ring)
{
    struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    char big[100000], back[100000];
    struct iovec v;
    int c, s;
    size_t got = 0;

    pair(&c, &s);
    handshake(cx, sx, c, s);
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    v = (struct iovec){big, sizeof(big)};
    cr_assert_eq(write(c, big, sizeof(big)), (ssize_t)sizeof(big));
    resil_sess_sent(cx, c, &v, 1, sizeof(big));
    cr_expect_eq(cx->w, sizeof(big));
    cr_expect_eq(resil_ring_held(&cx->ring), sizeof(big));
    while (got < sizeof(back)) {
        ssize_t n = read(s, back + got, sizeof(back) - got);
        cr_assert_gt(n, 0);
        v = (struct iovec){back + got, (size_t)n};
        resil_sess_received(sx, &v, 1, (size_t)n);
        got += (size_t)n;
    }
    cr_expect_eq(sx->r, sizeof(big));
    cr_expect_eq(memcmp(big, back, sizeof(big)), 0);
    /* all acknowledged: the ring keeps only the tail */
    /* the last ACK may be delayed: until the kernel has it all */
    for (int i = 0, q = 1; i < 200 && q > 0; i++) {
        cr_assert_eq(ioctl(c, SIOCOUTQ, &q), 0);
        if (q > 0)
            usleep(10000);
    }
    /* written since the last look: the memory stays for the next writes
     * (a bulk sender's socket drains between two of them) */
    cr_expect(resil_sess_trim(cx, c), "nothing kept right after writes");
    cr_expect_leq(resil_ring_held(&cx->ring), 64);
    cr_expect_not_null(cx->ring.heap, "given back right after writes");
    /* a look with no write since: it goes */
    cr_expect_not(resil_sess_trim(cx, c));
    cr_expect_null(cx->ring.heap, "kept by an idle session");
    resil_sess_free(cx);
    resil_sess_free(sx);
    close(c);
    close(s);
}

struct trim_call {
    struct resil_sess *x;
    int fd;
    bool kept;
};

static void *trim_thread(void *arg)
{
    struct trim_call *t = arg;
    t->kept = resil_sess_trim(t->x, t->fd);
    return NULL;
}

/* The engine's trim while a program write holds wmu (blocked in the
 * kernel on a full send buffer, for good when the path just died): it
 * returns at once, "look again". The build before waited for the write,
 * and the whole engine with it: a stream server's dead path went unseen
 * until the client's own timeout, 9 s later (bench failover rx). */
Test(session, trim_never_waits_for_a_write)
{
    struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
    struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
    struct trim_call t;
    struct timespec dl;
    pthread_t th;
    int c, s, rc;

    pair(&c, &s);
    handshake(cx, sx, c, s);
    t = (struct trim_call){.x = cx, .fd = c, .kept = false};
    pthread_mutex_lock(&cx->wmu); /* a write in progress */
    cr_assert_eq(pthread_create(&th, NULL, trim_thread, &t), 0);
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 2;
    rc = pthread_timedjoin_np(th, NULL, &dl);
    pthread_mutex_unlock(&cx->wmu);
    if (rc != 0)
        pthread_join(th, NULL);
    cr_expect_eq(rc, 0, "trim waited for the write's lock");
    cr_expect(t.kept, "a busy ring is looked at again");
    resil_sess_free(cx);
    resil_sess_free(sx);
    close(c);
    close(s);
}

Test(session, psk_mismatch_refused_then_plain)
{
    static struct resil_config cfg;
    struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
    char buf[64];
    int c, s, fd, st;
    pid_t pid;

    /* the server is a process with a pre-shared key, the client (this
     * one) has none: the HELLO is refused and both go plain */
    fd = open("/tmp/resil-unit-psk", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "0123456789abcdef0123456789abcdef", 32), 32);
    close(fd);
    pair(&c, &s);
    /* fork first: the key is loaded once per process */
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct resil_sess *sx = resil_sess_new(RESIL_ROLE_SERVER);
        resil_config_defaults(&cfg);
        strcpy(cfg.psk_file, "/tmp/resil-unit-psk");
        resil_config_set(&cfg);
        if (resil_sess_server_hello(sx, s, 1000) != RESIL_EUNSUPP)
            _exit(1);
        if (atomic_load(&sx->state) == RESIL_SESS_UP)
            _exit(2);
        /* the HELLO consumed, the program's bytes left */
        if (read(s, buf, sizeof(buf)) != 2 || memcmp(buf, "hi", 2) != 0)
            _exit(3);
        _exit(0);
    }
    cr_assert_eq(resil_sess_client_hello(cx, c), RESIL_OK);
    cr_assert_eq(write(c, "hi", 2), 2);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server side: %d", st);
    wait_in(c);
    cr_expect_eq(resil_sess_client_welcome(cx, c), RESIL_EUNSUPP,
                 "a REFUSE: plain");
    cr_expect_eq(atomic_load(&cx->state), RESIL_SESS_PLAIN);
    cr_expect_eq(recv(c, buf, sizeof(buf), MSG_DONTWAIT), -1,
                 "the REFUSE was consumed, nothing else came");
    resil_sess_free(cx);
    close(c);
    close(s);
    unlink("/tmp/resil-unit-psk");
}

static bool is_loopback(const struct resil_ip *ip)
{
    return ip->family == AF_INET ? (ntohl(ip->u.v4.s_addr) >> 24) == 127
                                 : IN6_IS_ADDR_LOOPBACK(&ip->u.v6);
}

/* What a handshake announces: to a peer on this host (the socket's own
 * address is a loopback one) only loopback addresses, else only the
 * others, never a link-local one; at most max. The second read comes from
 * the cache and says the same. */
Test(session, local_addrs_announced)
{
    struct sockaddr_in lo = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct resil_ip a[RESIL_WIRE_MAX_ADDR], b[RESIL_WIRE_MAX_ADDR];
    int fl = socket(AF_INET, SOCK_STREAM, 0), fo = socket(AF_INET,
                                                          SOCK_STREAM, 0);
    int n, m;
    bool v4lo = false;

    cr_assert(fl >= 0 && fo >= 0);
    cr_assert_eq(bind(fl, (struct sockaddr *)&lo, sizeof(lo)), 0);
    n = resil_sess_local_addrs(fl, a, RESIL_WIRE_MAX_ADDR);
    cr_assert_gt(n, 0, "no loopback address announced");
    for (int i = 0; i < n; i++) {
        cr_expect(is_loopback(&a[i]), "a non-loopback address to a local peer");
        v4lo |= a[i].family == AF_INET &&
                a[i].u.v4.s_addr == htonl(INADDR_LOOPBACK);
    }
    cr_expect(v4lo, "127.0.0.1 not announced");
    m = resil_sess_local_addrs(fl, b, RESIL_WIRE_MAX_ADDR);
    cr_expect_eq(m, n);
    cr_expect_eq(memcmp(a, b, (size_t)n * sizeof(*a)), 0);
    cr_expect_leq(resil_sess_local_addrs(fl, b, 1), 1);
    /* unbound: 0.0.0.0, a peer elsewhere */
    n = resil_sess_local_addrs(fo, a, RESIL_WIRE_MAX_ADDR);
    for (int i = 0; i < n; i++) {
        cr_expect(!is_loopback(&a[i]), "a loopback address to a remote peer");
        cr_expect(a[i].family != AF_INET6 ||
                      !IN6_IS_ADDR_LINKLOCAL(&a[i].u.v6),
                  "a link-local address announced");
    }
    close(fl);
    close(fo);
}

/* Destinations found ordinary: remembered per address and port for
 * RESIL_SESS_ORDINARY_MS, the one expiring first giving room. */
Test(session, ordinary_destinations_remembered)
{
    struct resil_ip a, b;
    const uint64_t ttl = (uint64_t)RESIL_SESS_ORDINARY_MS * RESIL_MS;
    uint64_t t0 = 1000 * RESIL_MS;

    cr_assert(resil_ip_parse("10.1.2.3", &a) && resil_ip_parse("fd00::3", &b));
    cr_expect_not(resil_sess_ordinary(&a, 80, t0), "none noted yet");
    resil_sess_ordinary_note(&a, 80, t0);
    cr_expect(resil_sess_ordinary(&a, 80, t0 + 1));
    cr_expect(resil_sess_ordinary(&a, 80, t0 + ttl - 1));
    cr_expect_not(resil_sess_ordinary(&a, 80, t0 + ttl), "expired");
    cr_expect_not(resil_sess_ordinary(&a, 81, t0 + 1), "another port");
    cr_expect_not(resil_sess_ordinary(&b, 80, t0 + 1), "another address");
    /* noted again: its time starts again, in the same slot */
    resil_sess_ordinary_note(&a, 80, t0 + ttl);
    cr_expect(resil_sess_ordinary(&a, 80, t0 + ttl + 1));
    /* full: the next one takes the slot expiring first (a's, the oldest) */
    for (int i = 0; i < RESIL_SESS_ORDINARY_MAX - 1; i++)
        resil_sess_ordinary_note(&b, (uint16_t)(1000 + i), t0 + ttl + 1 + i);
    cr_expect(resil_sess_ordinary(&a, 80, t0 + ttl + 100), "still room");
    resil_sess_ordinary_note(&b, 9, t0 + ttl + 100);
    cr_expect_not(resil_sess_ordinary(&a, 80, t0 + ttl + 101),
                  "the oldest made room");
    cr_expect(resil_sess_ordinary(&b, 9, t0 + ttl + 101));
    cr_expect(resil_sess_ordinary(&b, 1000, t0 + ttl + 101));
    cr_expect(resil_sess_ordinary(&b, (uint16_t)(1000 + RESIL_SESS_ORDINARY_MAX - 2),
                                  t0 + ttl + 101));
}

/* A client whose HELLO met an ordinary server (its request, after the
 * HELLO, answered with bytes of the server program's own) remembers the
 * destination. One that met a close does not (EOF: a libresil server's
 * program may close at once), nor one that wrote nothing before the
 * server's bytes (a libresil server that speaks first writes before a
 * late HELLO, doc/session.md). */
Test(session, ordinary_server_noted_eof_and_banner_not)
{
    enum { ANSWER, EOF_, BANNER };
    for (int k = ANSWER; k <= BANNER; k++) {
        struct resil_sess *cx = resil_sess_new(RESIL_ROLE_CLIENT);
        struct resil_sock *sk;
        struct resil_ip ip;
        char buf[64];
        int c, s;

        pair(&c, &s);
        sk = resil_sock_new(c, AF_INET, SOCK_STREAM);
        cr_assert_not_null(sk);
        cr_assert(resil_ip_parse("127.0.0.1", &ip));
        sk->peer_ip = sk->cur_ip = ip;
        sk->peer_port = (uint16_t)(6379 + 10 * k); /* one table */
        cx->sock = sk;
        cr_assert_eq(resil_sess_client_hello(cx, c), RESIL_OK);
        if (k != BANNER)
            cr_assert_eq(write(c, "PING\r\n", 6), 6);
        if (k == EOF_) {
            shutdown(s, SHUT_WR);
        } else {
            if (k == ANSWER)
                cr_assert_gt(read(s, buf, sizeof(buf)), 0, "HELLO as data");
            cr_assert_eq(write(s, "-ERR unknown command\r\n", 22), 22);
        }
        wait_in(c);
        cr_expect_eq(resil_sess_client_welcome(cx, c), RESIL_EUNSUPP);
        cr_expect_eq(resil_sess_ordinary(&ip, sk->peer_port, resil_now_ns()),
                     k == ANSWER, "case %d: %s", k,
                     k == ANSWER ? "an ordinary server not remembered"
                                 : "taken for an ordinary server");
        cr_expect_not(resil_sess_ordinary(&ip, 6380, resil_now_ns()),
                      "another port");
        if (k != EOF_)
            cr_expect_eq(read(c, buf, sizeof(buf)), 22,
                         "the server's bytes are the program's");
        cx->sock = NULL;
        resil_sess_free(cx);
        resil_sock_unref(sk);
        close(c);
        close(s);
    }
}
