/* The epoll registration record (lib/epoll.c) against real kernel objects:
 * epoll sets, pipes, loopback TCP sockets, and the swap's two halves
 * around a real dup3. */
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common.h"
#include "epoll.h"
#include "table.h"

TestSuite(epoll, .init = unit_setup);

static struct resil_sock *sock_of(int fd)
{
    struct resil_sock *s = resil_sock_new(fd, AF_INET, SOCK_STREAM);
    cr_assert_not_null(s);
    /* never re-raced here: the tests swap by hand */
    resil_sock_set_state(s, RS_PASSTHRU);
    return s;
}

static int ctl(struct resil_sock *s, int ep, int op, uint32_t events,
               uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    int err = -1;
    cr_assert_eq(resil_epoll_ctl(s, ep, op, &ev, &err), RESIL_OK);
    return err;
}

/* a connected loopback pair; *srv is the accepted end */
static int tcp_pair(int *srv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(lfd >= 0 && c >= 0);
    cr_assert_eq(bind(lfd, (void *)&sa, l), 0);
    cr_assert_eq(listen(lfd, 1), 0);
    cr_assert_eq(getsockname(lfd, (void *)&sa, &l), 0);
    cr_assert_eq(connect(c, (void *)&sa, l), 0);
    *srv = accept(lfd, NULL, NULL);
    cr_assert(*srv >= 0);
    close(lfd);
    return c;
}

/* reset c's connection from the other end: c reports ERR|HUP */
static int dead_socket(void)
{
    int srv, c = tcp_pair(&srv);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    struct pollfd p = {.fd = c, .events = POLLIN};
    setsockopt(srv, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(srv);
    cr_assert_eq(poll(&p, 1, 2000), 1);
    cr_assert(p.revents & POLLERR, "revents 0x%x", p.revents);
    return c;
}

/* the swap as swap.c does it, newfd onto s->fd */
static void swap(struct resil_sock *s, int newfd)
{
    resil_epoll_swap_begin(s);
    cr_assert(dup3(newfd, s->fd, O_CLOEXEC) >= 0);
    close(newfd);
    resil_epoll_swap_end(s, true);
}

Test(epoll, ctl_is_recorded_and_forgotten)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), ep2 = epoll_create1(EPOLL_CLOEXEC);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct resil_sock *s = sock_of(fd);

    cr_expect_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN, 7), 0);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN, 7), EEXIST);
    cr_expect_eq(ctl(s, ep2, EPOLL_CTL_MOD, EPOLLIN, 7), ENOENT);
    cr_expect_eq(resil_epoll_reg_state(s, ep2), 0);
    cr_expect_eq(ctl(s, ep2, EPOLL_CTL_ADD, EPOLLOUT | EPOLLET, 8), 0);
    cr_expect_eq(resil_epoll_reg_state(s, ep), 1);
    cr_expect_eq(resil_epoll_reg_state(s, ep2), 1);
    cr_assert_not_null(resil_epoll_set(ep));
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), 1);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_DEL, 0, 0), 0);
    cr_expect_eq(resil_epoll_reg_state(s, ep), 0);
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), 0);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_DEL, 0, 0), ENOENT);
    /* closing the set forgets what was in it */
    resil_epoll_fd_closed(ep2);
    cr_expect_eq(resil_epoll_reg_state(s, ep2), 0);
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep2)), 0);
    /* and the socket's close all of it */
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN, 9), 0);
    resil_epoll_sock_closed(s);
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), 0);
    resil_sock_unref(s);
    close(fd);
    close(ep);
    close(ep2);
}

/* many registrations sharing one set: the index grows and finds each */
Test(epoll, index_grows)
{
    enum { N = 200 };
    int ep = epoll_create1(EPOLL_CLOEXEC), fds[N];
    struct resil_sock *s[N];

    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        s[i] = sock_of(fds[i]);
        cr_assert_eq(ctl(s[i], ep, EPOLL_CTL_ADD, EPOLLIN, 1000 + i), 0);
    }
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), N);
    for (int i = 0; i < N; i += 2)
        cr_assert_eq(ctl(s[i], ep, EPOLL_CTL_MOD, EPOLLOUT, 5000 + i), 0);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(resil_epoll_reg_state(s[i], ep), 1);
        resil_epoll_sock_closed(s[i]);
        resil_sock_unref(s[i]);
        close(fds[i]);
    }
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), 0);
    close(ep);
}

Test(epoll, stale_match)
{
    uint32_t dead = EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    cr_expect(resil_epoll_stale_match(dead, dead));
    /* harvested between tcp_write_err and tcp_done, or the reverse */
    cr_expect(resil_epoll_stale_match(EPOLLERR | EPOLLOUT, dead));
    cr_expect(resil_epoll_stale_match(dead, EPOLLERR | EPOLLOUT));
    /* a pipe's hang-up is never the dead socket's */
    cr_expect_not(resil_epoll_stale_match(EPOLLHUP, dead));
    cr_expect_not(resil_epoll_stale_match(EPOLLHUP | EPOLLIN, dead));
    cr_expect_not(resil_epoll_stale_match(EPOLLHUP, EPOLLHUP | EPOLLIN));
    /* without an error, only the exact mask */
    cr_expect(resil_epoll_stale_match(EPOLLHUP | EPOLLIN, EPOLLHUP | EPOLLIN));
    cr_expect_not(resil_epoll_stale_match(EPOLLERR | EPOLLPRI, dead));
}

/* a pipe shares a managed socket's data: its event is never touched */
Test(epoll, shared_data_passed_on)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2], srv;
    int fd = tcp_pair(&srv), n;
    struct resil_sock *s = sock_of(fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42}, got[4];

    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev), 0);
    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN, 42), 0);
    close(p[1]);
    uint64_t seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 4, 1000);
    cr_assert_eq(n, 1);
    n = resil_epoll_filter(resil_epoll_set(ep), got, n, seq0);
    cr_expect_eq(n, 1);
    cr_expect_eq(got[0].events, EPOLLHUP);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(p[0]);
    close(ep);
}

/* a dead socket swapped away during the call: exactly its event goes,
 * the pipe's stays; a call that began after the swap keeps everything */
Test(epoll, stale_event_dropped_once)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2], n;
    int fd = dead_socket();
    struct resil_sock *s = sock_of(fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42}, got[4];

    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN, 42), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev), 0);
    close(p[1]);
    uint64_t seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 4, 1000);
    cr_assert_eq(n, 2);
    /* the fresh socket swapped in reports EPOLLOUT|EPOLLHUP, not asked */
    swap(s, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    n = resil_epoll_filter(resil_epoll_set(ep), got, n, seq0);
    cr_expect_eq(n, 1);
    cr_expect_eq(got[0].events, EPOLLHUP, "left 0x%x", got[0].events);
    /* the registration was put back on the new socket: its events are
     * its own */
    cr_expect_eq(resil_epoll_reg_state(s, ep), 1);
    seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 4, 1000);
    cr_assert_eq(n, 2);
    cr_expect_eq(resil_epoll_filter(resil_epoll_set(ep), got, n, seq0), 2);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(p[0]);
    close(ep);
}

/* EPOLLONESHOT fired before the swap: kept out of the kernel, and the
 * program's next call answers as on the disarmed registration */
Test(epoll, oneshot_pending)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), srv, n;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct resil_sock *s = sock_of(fd);
    struct epoll_event got[2];

    /* a fresh socket polls EPOLLOUT|EPOLLHUP: fires at once */
    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLOUT | EPOLLONESHOT, 3), 0);
    uint64_t seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 2, 1000);
    cr_assert_eq(n, 1);
    cr_assert_eq(resil_epoll_filter(resil_epoll_set(ep), got, n, seq0), 1);
    swap(s, tcp_pair(&srv));
    cr_expect_eq(resil_epoll_reg_state(s, ep), 2, "not pending");
    cr_expect_eq(epoll_wait(ep, got, 2, 100), 0, "re-armed by the swap");
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLOUT, 4), EEXIST);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_MOD, EPOLLOUT | EPOLLEXCLUSIVE, 4),
                 EINVAL);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_MOD, EPOLLOUT | EPOLLONESHOT, 4), 0);
    cr_expect_eq(resil_epoll_reg_state(s, ep), 1);
    n = epoll_wait(ep, got, 2, 1000);
    cr_expect(n == 1 && got[0].events == EPOLLOUT && got[0].data.u64 == 4,
              "%d events 0x%x", n, n > 0 ? got[0].events : 0);
    /* an armed one-shot registration is armed after the swap */
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_MOD, EPOLLIN | EPOLLONESHOT, 5), 0);
    int srv2;
    swap(s, tcp_pair(&srv2));
    cr_expect_eq(resil_epoll_reg_state(s, ep), 1);
    cr_assert_eq(write(srv2, "x", 1), 1);
    n = epoll_wait(ep, got, 2, 1000);
    cr_expect(n == 1 && got[0].events == EPOLLIN && got[0].data.u64 == 5,
              "%d events 0x%x", n, n > 0 ? got[0].events : 0);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(srv2);
    close(ep);
}

/* pending, then the set is closed and its number reused: forgotten */
Test(epoll, oneshot_pending_set_closed)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), srv, n, ep2;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct resil_sock *s = sock_of(fd);
    struct epoll_event got[2];

    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLOUT | EPOLLONESHOT, 3), 0);
    uint64_t seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 2, 1000);
    cr_assert_eq(resil_epoll_filter(resil_epoll_set(ep), got, n, seq0), 1);
    swap(s, tcp_pair(&srv));
    cr_expect_eq(resil_epoll_reg_state(s, ep), 2);
    resil_epoll_fd_closed(ep);
    close(ep);
    ep2 = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_eq(ep2, ep);
    cr_expect_eq(resil_epoll_reg_state(s, ep2), 0);
    cr_expect_eq(ctl(s, ep2, EPOLL_CTL_ADD, EPOLLOUT, 6), 0);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(ep2);
}

/* another fd's event with the one-shot registration's data flags it, but
 * the kernel has it armed: the swap asks and keeps it armed */
Test(epoll, oneshot_flag_checked_with_kernel)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2], srv, srv2, n;
    int fd = tcp_pair(&srv);
    struct resil_sock *s = sock_of(fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42}, got[2];
    char c;

    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev), 0);
    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN | EPOLLONESHOT, 42), 0);
    cr_assert_eq(write(p[1], "x", 1), 1);
    uint64_t seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 2, 1000);
    cr_assert_eq(n, 1);
    cr_assert_eq(resil_epoll_filter(resil_epoll_set(ep), got, n, seq0), 1);
    cr_assert_eq(read(p[0], &c, 1), 1);
    swap(s, tcp_pair(&srv2));
    cr_expect_eq(resil_epoll_reg_state(s, ep), 1, "kept disarmed");
    cr_assert_eq(write(srv2, "y", 1), 1);
    n = epoll_wait(ep, got, 2, 1000);
    cr_expect(n == 1 && got[0].events == EPOLLIN, "%d events 0x%x", n,
              n > 0 ? got[0].events : 0);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(srv2);
    close(p[0]);
    close(p[1]);
    close(ep);
}

/* pending, but another process sharing the set (a fork) added fd again:
 * MOD and DEL act on that registration, as they would without libresil */
Test(epoll, oneshot_pending_readded_elsewhere)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), srv, n;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct resil_sock *s = sock_of(fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 11}, got[2];

    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLOUT | EPOLLONESHOT, 3), 0);
    uint64_t seq0 = resil_epoll_swap_seq();
    n = epoll_wait(ep, got, 2, 1000);
    cr_assert_eq(resil_epoll_filter(resil_epoll_set(ep), got, n, seq0), 1);
    swap(s, tcp_pair(&srv));
    cr_assert_eq(resil_epoll_reg_state(s, ep), 2);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0); /* behind us */
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_MOD, EPOLLOUT, 12), 0);
    n = epoll_wait(ep, got, 2, 1000);
    cr_expect(n == 1 && got[0].events == EPOLLOUT && got[0].data.u64 == 12,
              "%d events 0x%x", n, n > 0 ? got[0].events : 0);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_DEL, 0, 0), 0);
    cr_expect_eq(epoll_wait(ep, got, 2, 50), 0);
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_DEL, 0, 0), ENOENT);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(ep);
}

/* a MOD that changes only the interest is recorded without touching the
 * set's index: the swap puts the new interest back, and a MOD the kernel
 * refuses with ENOENT (the registration went behind our back) forgets it */
Test(epoll, interest_mod_recorded)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), srv, srv2, n;
    int fd = tcp_pair(&srv);
    struct resil_sock *s = sock_of(fd);
    struct epoll_event got[2];

    cr_assert_eq(ctl(s, ep, EPOLL_CTL_ADD, EPOLLIN, 7), 0);
    cr_expect_eq(epoll_wait(ep, got, 2, 0), 0);
    cr_assert_eq(ctl(s, ep, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT, 7), 0);
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), 1);
    swap(s, tcp_pair(&srv2));
    n = epoll_wait(ep, got, 2, 1000);
    cr_expect(n == 1 && got[0].events == EPOLLOUT && got[0].data.u64 == 7,
              "%d events 0x%x", n, n > 0 ? got[0].events : 0);
    cr_assert_eq(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL), 0); /* behind us */
    cr_expect_eq(ctl(s, ep, EPOLL_CTL_MOD, EPOLLIN, 7), ENOENT);
    cr_expect_eq(resil_epoll_reg_state(s, ep), 0);
    cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(ep)), 0);
    resil_epoll_sock_closed(s);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(srv2);
    close(ep);
}

/* the socket's own record serves its first registration, others are
 * allocated, and a freed own record serves the next: whichever a
 * registration got, the swap puts every one back */
Test(epoll, own_record_and_others)
{
    int ep1 = epoll_create1(EPOLL_CLOEXEC), ep2 = epoll_create1(EPOLL_CLOEXEC);
    int ep3 = epoll_create1(EPOLL_CLOEXEC), srv, srv2, n;
    int fd = tcp_pair(&srv);
    struct resil_sock *s = sock_of(fd);
    struct epoll_event got[2];

    cr_assert_eq(ctl(s, ep1, EPOLL_CTL_ADD, EPOLLOUT, 1), 0);
    cr_assert_eq(ctl(s, ep2, EPOLL_CTL_ADD, EPOLLOUT, 2), 0);
    cr_assert_eq(ctl(s, ep1, EPOLL_CTL_DEL, 0, 0), 0);
    cr_assert_eq(ctl(s, ep3, EPOLL_CTL_ADD, EPOLLOUT, 3), 0);
    cr_assert_eq(ctl(s, ep1, EPOLL_CTL_ADD, EPOLLOUT, 4), 0);
    swap(s, tcp_pair(&srv2));
    for (int i = 0; i < 3; i++) {
        int e = i == 0 ? ep1 : i == 1 ? ep2 : ep3;
        uint64_t want = i == 0 ? 4 : (uint64_t)i + 1;
        cr_expect_eq(resil_epoll_reg_state(s, e), 1);
        cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(e)), 1);
        n = epoll_wait(e, got, 2, 1000);
        cr_expect(n == 1 && got[0].data.u64 == want, "set %d: %d events",
                  i, n);
    }
    resil_epoll_sock_closed(s);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(resil_epoll_set_regs(resil_epoll_set(
                         i == 0 ? ep1 : i == 1 ? ep2 : ep3)),
                     0);
    resil_sock_unref(s);
    close(fd);
    close(srv);
    close(srv2);
    close(ep1);
    close(ep2);
    close(ep3);
}
