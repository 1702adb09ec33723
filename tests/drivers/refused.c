/* Every address refused. run.sh runs these twice: against the alternates
 * group DRV_REF1,DRV_REF2 under libresil, and without libresil against
 * DRV_REF1 alone, so the assertions are the plain kernel's own behaviour.
 */
#include "drv.h"

static void blocking(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_REF1, free_port(), &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0), rc, e;
    double t0 = now_ms();

    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == ECONNREFUSED, "connect: %d %s, want ECONNREFUSED",
          rc, ename(e));
    CHECK(now_ms() - t0 < 1000, "took %.0f ms", now_ms() - t0);
    /* connect() consumed the error */
    CHECK(sockerr(fd) == 0, "SO_ERROR afterwards %s", ename(sockerr(fd)));
    close(fd);
}

/* Linux: after a failed blocking connect the socket is unconnected again and
 * a new connect is a new attempt (refused again here; ECONNABORTED would
 * mean the failure is sticky). */
static void blocking_retry(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_REF1, free_port(), &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0), rc, e;

    rc = connect(fd, (void *)&ss, l);
    CHECK(rc == -1 && errno == ECONNREFUSED, "connect: %d", rc);
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    CHECK(rc == -1 && e == ECONNREFUSED,
          "second connect: %d %s, want ECONNREFUSED", rc, ename(e));
    close(fd);
}

static int nb_refused(int *fdp)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_REF1, free_port(), &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), rc, e, r;

    *fdp = fd;
    errno = 0;
    rc = connect(fd, (void *)&ss, l);
    e = errno;
    if (rc == -1 && e == ECONNREFUSED) {
        printf("note: refused synchronously\n");
        return 0;
    }
    CHECK(rc == -1 && e == EINPROGRESS, "connect: %d %s", rc, ename(e));
    r = poll1(fd, POLLOUT, 2000);
    CHECK(r > 0 && (r & POLLOUT), "revents 0x%x", r);
    r = sockerr(fd);
    CHECK(r == ECONNREFUSED, "SO_ERROR %s, want ECONNREFUSED", ename(r));
    r = sockerr(fd);
    CHECK(r == 0, "second SO_ERROR %s, want 0 (reported once)", ename(r));
    return 1;
}

static void nonblocking(void)
{
    int fd;
    if (nb_refused(&fd)) {
        struct sockaddr_storage ss;
        socklen_t l = mk_sa(DRV_REF1, free_port(), &ss);
        errno = 0;
        int rc = connect(fd, (void *)&ss, l), e = errno;
        /* pitfalls 3.3: the next connect says ECONNABORTED */
        CHECK(rc == -1 && e == ECONNABORTED,
              "connect after the failure: %d %s, want ECONNABORTED", rc,
              ename(e));
    }
    close(fd);
}

/* ... and after that ECONNABORTED the socket is unconnected: a new connect
 * starts over (Linux __inet_stream_connect sock_error path) */
static void nonblocking_retry(void)
{
    int fd;
    if (nb_refused(&fd)) {
        struct sockaddr_storage ss;
        socklen_t l = mk_sa(DRV_REF1, free_port(), &ss);
        (void)connect(fd, (void *)&ss, l);
        errno = 0;
        int rc = connect(fd, (void *)&ss, l), e = errno;
        CHECK(rc == -1 && (e == EINPROGRESS || e == ECONNREFUSED),
              "third connect: %d %s, want a new attempt (EINPROGRESS)", rc,
              ename(e));
    }
    close(fd);
}

/* The error is reported by connect() too when SO_ERROR was not read. */
static void nonblocking_connect_reports(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_REF1, free_port(), &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), rc, e;

    rc = connect(fd, (void *)&ss, l);
    if (rc == -1 && errno == EINPROGRESS) {
        CHECK(poll1(fd, POLLOUT, 2000) & POLLOUT, "not writable");
        errno = 0;
        rc = connect(fd, (void *)&ss, l);
        e = errno;
        CHECK(rc == -1 && e == ECONNREFUSED,
              "connect after failure: %d %s, want ECONNREFUSED", rc,
              ename(e));
        CHECK(sockerr(fd) == 0, "SO_ERROR %s after connect reported it",
              ename(sockerr(fd)));
    }
    close(fd);
}

DRV_MAIN({"blocking", blocking}, {"blocking_retry", blocking_retry},
         {"nonblocking", nonblocking},
         {"nonblocking_retry", nonblocking_retry},
         {"nonblocking_connect_reports", nonblocking_connect_reports})
