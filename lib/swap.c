#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "epoll.h"
#include "fds.h"
#include "log.h"
#include "swap.h"
#include "sys.h"

/* [0] IPv4, [1] IPv6; engine lock; owned by the registry (fds.h) */
static int park_lfd[2] = {-1, -1}, park_filler[2] = {-1, -1};
static struct sockaddr_storage park_sa[2];
static socklen_t park_len[2];

static resil_status_t park_setup(int v6)
{
    struct sockaddr_storage ss;
    socklen_t len;

    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s4);
    }
    if (resil_fds_socket(&park_lfd[v6], ss.ss_family,
                         SOCK_STREAM | SOCK_CLOEXEC, 0, RESIL_FD_SOCK,
                         NULL) != RESIL_OK)
        goto fail;
    if (real.bind(park_lfd[v6], (struct sockaddr *)&ss, len) < 0 ||
        real.listen(park_lfd[v6], 0) < 0 ||
        real.getsockname(park_lfd[v6], (struct sockaddr *)&ss, &len) < 0)
        goto fail;
    if (resil_fds_socket(&park_filler[v6], ss.ss_family,
                         SOCK_STREAM | SOCK_CLOEXEC, 0, RESIL_FD_SOCK,
                         NULL) != RESIL_OK)
        goto fail;
    /* blocking: completes at once, filling the only queue slot */
    if (real.connect(park_filler[v6], (struct sockaddr *)&ss, len) < 0)
        goto fail;
    park_sa[v6] = ss;
    park_len[v6] = len;
    return RESIL_OK;
fail:
    rdebug("parking listener (%s) unavailable: %s", v6 ? "IPv6" : "IPv4",
           strerror(errno));
    resil_fds_close(&park_lfd[v6]);
    resil_fds_close(&park_filler[v6]);
    return RESIL_ESYS;
}

void resil_park_release(void)
{
    for (int v6 = 0; v6 < 2; v6++) {
        resil_fds_close(&park_filler[v6]);
        resil_fds_close(&park_lfd[v6]);
    }
}

void resil_unpark(int fd)
{
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    real.connect(fd, &unspec, sizeof(unspec));
}

resil_status_t resil_park(int fd, int family, bool v6only)
{
    struct sockaddr_storage sa;
    socklen_t len;
    int fl, rc, v6 = family == AF_INET6;

    if (park_lfd[v6] < 0 && park_setup(v6) != RESIL_OK) {
        if (!v6 || v6only)
            return RESIL_ESYS;
        v6 = 0; /* an AF_INET6 socket may park on 127.0.0.1, v4-mapped */
        if (park_lfd[0] < 0 && park_setup(0) != RESIL_OK)
            return RESIL_ESYS;
    }
    sa = park_sa[v6];
    len = park_len[v6];
    if (family == AF_INET6 && v6 == 0) {
        struct resil_ip ip;
        uint16_t port;
        resil_ip_from_sa((struct sockaddr *)&sa, len, &ip, &port);
        len = resil_ip_to_sa(&ip, port, AF_INET6, &sa);
    }
    fl = real.fcntl(fd, F_GETFL);
    if (fl < 0)
        return RESIL_ESYS;
    if (!(fl & O_NONBLOCK))
        real.fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    rc = real.connect(fd, (struct sockaddr *)&sa, len);
    int e = errno;
    if (!(fl & O_NONBLOCK))
        real.fcntl(fd, F_SETFL, fl);
    if (rc == 0 || e != EINPROGRESS) {
        rdebug("fd %d: parking failed: %s", fd,
               rc == 0 ? "connected at once" : strerror(e));
        return RESIL_ESYS;
    }
    return RESIL_OK;
}

_Atomic uint64_t resil_swap_seq;

uint64_t resil_sock_cookie(int fd)
{
    uint64_t ck = 0;
    socklen_t l = sizeof(ck);
    RESIL_KEEP_ERRNO();

    if (real.getsockopt(fd, SOL_SOCKET, SO_COOKIE, &ck, &l) < 0)
        return 0;
    return ck;
}

bool resil_sock_is_ours(const struct resil_sock *s)
{
    /* cookie 0: the kernel had none to give when the entry was made */
    return !resil_sock_closed(s) &&
           (s->cookie == 0 || resil_sock_cookie(s->fd) == s->cookie);
}

static resil_status_t swap_in(struct resil_sock *s, int newfd, bool shut)
{
    int fd = s->fd, old = -1, fdfl, fl;
    uint64_t cookie;

    if (resil_sock_closed(s)) {
        resil_fds_close_fd(newfd);
        return RESIL_ENOENT;
    }
    if (!resil_sock_is_ours(s)) {
        /* a dup3 now would overwrite whatever the program opened on the
         * reused number (pitfalls 1.2). The check and the dup3 are two
         * calls: a close and reuse that slips in between cannot be seen.
         * The caller logs it, after s->mu. */
        atomic_store_explicit(&s->closed, true, memory_order_relaxed);
        resil_table_take_if(fd, s);
        resil_fds_close_fd(newfd);
        return RESIL_ENOENT;
    }
    cookie = resil_sock_cookie(newfd);
    fdfl = real.fcntl(fd, F_GETFD);
    fl = real.fcntl(fd, F_GETFL);
    if (fdfl < 0 || fl < 0) {
        RESIL_KEEP_ERRNO();
        resil_fds_close_fd(newfd);
        return RESIL_ESYS;
    }
    if (shut)
        resil_fds_dup(&old, fd, RESIL_FD_SOCK);
    /* out of every epoll set while fd still names the old socket (after
     * dup3 the registration would live on as a zombie: pitfalls 2.2) */
    resil_epoll_swap_begin(s);
    real.fcntl(newfd, F_SETFL,
               (real.fcntl(newfd, F_GETFL) & ~O_NONBLOCK) |
                   (fl & (O_NONBLOCK | O_ASYNC)));
    if (real.dup3(newfd, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        RESIL_KEEP_ERRNO();
        resil_epoll_swap_end(s, false);
        resil_fds_close_fd(newfd);
        resil_fds_close(&old);
        return RESIL_ESYS;
    }
    resil_fds_close_fd(newfd);
    s->cookie = cookie;
    s->swap_seq = atomic_fetch_add(&resil_swap_seq, 1) + 1;
    resil_epoll_swap_end(s, true);
    if (old >= 0) {
        real.shutdown(old, SHUT_RDWR);
        resil_fds_close(&old);
    }
    return RESIL_OK;
}

resil_status_t resil_swap_in(struct resil_sock *s, int newfd)
{
    return swap_in(s, newfd, true);
}

resil_status_t resil_swap_in_keep(struct resil_sock *s, int newfd)
{
    return swap_in(s, newfd, false);
}

