/* Descriptors libresil does not manage behave exactly as without it
 * (DESIGN 4, "Zero cost where unused"). run.sh runs every subtest with and
 * without libresil; the assertions are the plain kernel's behaviour. */
#include <sys/stat.h>
#include <sys/un.h>

#include "drv.h"

static void file(void)
{
    char path[] = "/tmp/resil-drv-XXXXXX", buf[16] = "";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0, "mkstemp");
    unlink(path);
    CHECK(write(fd, "0123456789", 10) == 10, "write");
    CHECK(lseek(fd, 3, SEEK_SET) == 3, "lseek");
    CHECK(read(fd, buf, 4) == 4 && memcmp(buf, "3456", 4) == 0, "read '%s'",
          buf);
    CHECK(pread(fd, buf, 2, 8) == 2 && memcmp(buf, "89", 2) == 0, "pread");
    CHECK(read(fd, buf, 16) == 3, "read to EOF");
    CHECK(read(fd, buf, 16) == 0, "EOF");
    errno = 0;
    CHECK(connect(fd, (struct sockaddr *)&(struct sockaddr_in){
                          .sin_family = AF_INET},
                  sizeof(struct sockaddr_in)) == -1 &&
              errno == ENOTSOCK,
          "connect on a file");
    close(fd);
    errno = 0;
    CHECK(read(fd, buf, 1) == -1 && errno == EBADF, "read after close");
}

static void pipes(void)
{
    int p[2];
    char buf[8] = "";
    REQUIRE(pipe2(p, O_NONBLOCK) == 0, "pipe2");
    errno = 0;
    CHECK(read(p[0], buf, 8) == -1 && errno == EAGAIN, "empty pipe");
    CHECK(write(p[1], "pipe", 4) == 4, "write");
    CHECK(read(p[0], buf, 8) == 4 && memcmp(buf, "pipe", 4) == 0, "read");
    CHECK(fcntl(p[0], F_GETFL) & O_NONBLOCK, "flags");
    close(p[1]);
    CHECK(read(p[0], buf, 8) == 0, "EOF");
    close(p[0]);
}

static void udp(void)
{
    struct sockaddr_storage a, b, from;
    socklen_t la = mk_sa(DRV_LIVE, 0, &a), lb = mk_sa(DRV_LIVE, 0, &b), lf;
    int s1 = socket(AF_INET, SOCK_DGRAM, 0), s2 = socket(AF_INET, SOCK_DGRAM, 0);
    char buf[32] = "";

    REQUIRE(bind(s1, (void *)&a, la) == 0 && bind(s2, (void *)&b, lb) == 0,
            "bind");
    getsockname(s1, (void *)&a, &la);
    getsockname(s2, (void *)&b, &lb);
    CHECK(sendto(s1, "dgram", 5, 0, (void *)&b, lb) == 5, "sendto");
    lf = sizeof(from);
    CHECK(recvfrom(s2, buf, sizeof(buf), 0, (void *)&from, &lf) == 5 &&
              memcmp(buf, "dgram", 5) == 0,
          "recvfrom");
    CHECK(lf == la && memcmp(&from, &a, la) == 0, "source address");
    /* connected UDP to the dead address: "connects" at once (a send would
     * meet the test bed's nft drop: EPERM, with or without libresil) */
    struct sockaddr_storage d;
    socklen_t ld = mk_sa(DRV_DEAD, 9, &d);
    CHECK(connect(s1, (void *)&d, ld) == 0, "UDP connect");
    errno = 0;
    CHECK(send(s1, "x", 1, 0) == -1 && errno == EPERM, "UDP send to the "
          "dropped address");
    close(s1);
    close(s2);
}

static void unix_stream(void)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int l = socket(AF_UNIX, SOCK_STREAM, 0), c, a;
    char buf[16] = "";

    snprintf(sun.sun_path, sizeof(sun.sun_path), "/tmp/resil-drv-%d.sock",
             (int)getpid());
    unlink(sun.sun_path);
    REQUIRE(bind(l, (void *)&sun, sizeof(sun)) == 0 && listen(l, 4) == 0,
            "unix listen");
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (void *)&sun, sizeof(sun)) == 0, "unix connect");
    a = accept(l, NULL, NULL);
    CHECK(a >= 0, "accept");
    CHECK(write(c, "unix", 4) == 4, "write");
    CHECK(read(a, buf, 16) == 4 && memcmp(buf, "unix", 4) == 0, "read");
    CHECK(send(a, "back", 4, 0) == 4, "send");
    CHECK(recv(c, buf, 16, 0) == 4 && memcmp(buf, "back", 4) == 0, "recv");
    close(c);
    CHECK(read(a, buf, 16) == 0, "EOF");
    close(a);
    close(l);
    unlink(sun.sun_path);
    /* a refused unix connect keeps its errno */
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    errno = 0;
    CHECK(connect(c, (void *)&sun, sizeof(sun)) == -1 && errno == ENOENT,
          "unix connect to nothing");
    close(c);
}

/* TCP to one address in no alternates group: the real connect. */
static void tcp_single(void)
{
    int port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_ms();
    REQUIRE(connect(fd, (void *)&ss, l) == 0, "connect");
    CHECK(now_ms() - t0 < 100, "took %.0f ms", now_ms() - t0);
    CHECK(echo_roundtrip(fd, "single\n", 3000), "echo");
    errno = 0;
    CHECK(connect(fd, (void *)&ss, l) == -1 && errno == EISCONN, "EISCONN");
    close(fd);

    /* non-blocking: EINPROGRESS (or 0 at once on loopback), then 0 once,
     * then EISCONN */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, (void *)&ss, l);
    CHECK(rc == 0 || errno == EINPROGRESS, "nb connect %s", ename(errno));
    CHECK(poll1(fd, POLLOUT, 2000) & POLLOUT, "writable");
    CHECK(sockerr(fd) == 0, "SO_ERROR");
    CHECK(connect(fd, (void *)&ss, l) == 0, "connect after completion: 0");
    errno = 0;
    CHECK(connect(fd, (void *)&ss, l) == -1 && errno == EISCONN, "EISCONN");
    CHECK(echo_roundtrip(fd, "single nb\n", 3000), "echo");
    close(fd);
}

static void tcp_refused(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, free_port(), &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    CHECK(connect(fd, (void *)&ss, l) == -1 && errno == ECONNREFUSED,
          "blocking refused");
    errno = 0;
    CHECK(connect(fd, (void *)&ss, l) == -1 && errno == ECONNREFUSED,
          "blocking refused again");
    close(fd);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, (void *)&ss, l);
    if (rc == -1 && errno == EINPROGRESS) {
        CHECK(poll1(fd, POLLOUT, 2000) & POLLOUT, "writable");
        CHECK(sockerr(fd) == ECONNREFUSED, "SO_ERROR");
    } else {
        CHECK(rc == -1 && errno == ECONNREFUSED, "nb connect %s",
              ename(errno));
    }
    close(fd);
}

/* a TCP socket that never connects: options, getsockopt, close */
static void tcp_unconnected(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), v = 0, one = 1;
    socklen_t ol = sizeof(v);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0,
          "setsockopt");
    CHECK(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &ol) == 0 && v == 1,
          "getsockopt");
    CHECK(poll1(fd, POLLOUT, 0) == (POLLOUT | POLLHUP),
          "unconnected socket polls 0x%x", poll1(fd, POLLOUT, 0));
    errno = 0;
    CHECK(send(fd, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "send: %s",
          ename(errno));
    CHECK(setsockopt(fd, SOL_SOCKET, 9999, &one, sizeof(one)) == -1 &&
              errno == ENOPROTOOPT,
          "bad option");
    close(fd);
}

DRV_MAIN({"file", file}, {"pipes", pipes}, {"udp", udp},
         {"unix_stream", unix_stream}, {"tcp_single", tcp_single},
         {"tcp_refused", tcp_refused}, {"tcp_unconnected", tcp_unconnected})
