#include <ares.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "dns.h"
#include "engine.h"
#include "fds.h"
#include "log.h"
#include "sys.h"

static ares_channel ch;
static enum { DNS_UNTRIED, DNS_OK, DNS_FAILED } dns_state;

/* A watcher per c-ares socket: c-ares keeps at most a few open. */
struct ares_watch {
    struct resil_watch w;
    int fd; /* -1: free */
};
static struct ares_watch watches[ARES_GETSOCK_MAXNUM];

/* ---- c-ares gets the real socket functions (c-ares 1.18 API) ---- */

static ares_socket_t a_socket(int d, int t, int p, void *u)
{
    /* non-blocking: c-ares leaves user-managed sockets as they are made,
     * and reads a UDP socket until it would block (read_packets) */
    int hi;

    (void)u;
    if (resil_fds_socket(&hi, d, t | SOCK_CLOEXEC | SOCK_NONBLOCK, p,
                         RESIL_FD_DNS, NULL) != RESIL_OK)
        return ARES_SOCKET_BAD;
    return hi;
}
/* A number c-ares holds is ours only while marked: after the program took
 * it (dup2, resil_engine_evict) c-ares must never touch the program's
 * file through it. */
static bool ours(ares_socket_t fd)
{
    if (resil_table_internal(fd))
        return true;
    errno = EBADF;
    return false;
}
static int a_close(ares_socket_t fd, void *u)
{
    (void)u;
    if (!ours(fd))
        return -1;
    resil_fds_close_fd(fd);
    return 0;
}
static int a_connect(ares_socket_t fd, const struct sockaddr *sa,
                     ares_socklen_t len, void *u)
{
    (void)u;
    return ours(fd) ? real.connect(fd, sa, len) : -1;
}
static ares_ssize_t a_recvfrom(ares_socket_t fd, void *b, size_t n, int fl,
                               struct sockaddr *sa, ares_socklen_t *len,
                               void *u)
{
    (void)u;
    return ours(fd) ? real.recvfrom(fd, b, n, fl, sa, len) : -1;
}
static ares_ssize_t a_sendv(ares_socket_t fd, const struct iovec *v, int n,
                            void *u)
{
    struct msghdr m = {.msg_iov = (struct iovec *)v, .msg_iovlen = (size_t)n};
    (void)u;
    return ours(fd) ? real.sendmsg(fd, &m, MSG_NOSIGNAL) : -1;
}
static const struct ares_socket_functions ares_funcs = {
    a_socket, a_close, a_connect, a_recvfrom, a_sendv};

static void ares_event(struct resil_watch *w, uint32_t events, uint64_t now)
{
    struct ares_watch *a = (struct ares_watch *)w;
    int fd = a->fd;
    (void)now;
    if (fd < 0)
        return;
    ares_process_fd(ch,
                    events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? fd
                                                           : ARES_SOCKET_BAD,
                    events & EPOLLOUT ? fd : ARES_SOCKET_BAD);
}

/* c-ares opens, changes or closes a socket: follow it in the engine. */
static void sock_state(void *data, ares_socket_t fd, int readable,
                       int writable)
{
    struct ares_watch *a = NULL, *free_slot = NULL;
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    (void)data;

    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
        if (watches[i].fd == fd)
            a = &watches[i];
        else if (watches[i].fd < 0 && free_slot == NULL)
            free_slot = &watches[i];
    }
    if (ev == 0) {
        if (a) {
            resil_engine_del(fd);
            a->fd = -1;
        }
        return;
    }
    if (a) {
        resil_engine_mod(fd, ev, &a->w);
        return;
    }
    if (free_slot == NULL) {
        rwarn("c-ares opened more than %d sockets; DNS answers may be late",
              ARES_GETSOCK_MAXNUM);
        return;
    }
    free_slot->fd = fd;
    if (resil_engine_add(fd, ev, &free_slot->w) != RESIL_OK)
        free_slot->fd = -1;
}

static bool setup(void)
{
    struct ares_options o;
    int mask = ARES_OPT_LOOKUPS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
               ARES_OPT_SOCK_STATE_CB;
    int rc;

    if (dns_state != DNS_UNTRIED)
        return dns_state == DNS_OK;
    dns_state = DNS_FAILED;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
        watches[i].w.fn = ares_event;
        watches[i].fd = -1;
    }
    if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return false;
    memset(&o, 0, sizeof(o));
    /* DNS before the hosts file: the point is to learn addresses the
     * program's own resolver (hosts first) may not have given it. */
    o.lookups = (char *)"bf";
    o.timeout = 1000;
    o.tries = 2;
    o.sock_state_cb = sock_state;
    rc = ares_init_options(&ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        rwarn("c-ares init failed: %s; racing uses the program's own "
              "addresses only", ares_strerror(rc));
        return false;
    }
    ares_set_socket_functions(ch, &ares_funcs, NULL);
    dns_state = DNS_OK;
    return true;
}

struct query {
    resil_dns_fn fn;
    void *arg;
    int family;
};

static void answered(void *arg, int status, int timeouts, struct hostent *h)
{
    struct query q = *(struct query *)arg;
    struct resil_ip ips[RESIL_NAME_ADDRS];
    int n = 0;

    (void)timeouts;
    free(arg);
    if (status == ARES_SUCCESS && h && h->h_addrtype == q.family) {
        for (char **p = h->h_addr_list; *p && n < RESIL_NAME_ADDRS; p++) {
            memset(&ips[n], 0, sizeof(ips[n]));
            ips[n].family = (sa_family_t)h->h_addrtype;
            memcpy(&ips[n].u, *p, h->h_addrtype == AF_INET ? 4 : 16);
            n++;
        }
    }
    q.fn(q.arg, q.family, ips, n,
         status == ARES_SUCCESS ? "no address" : ares_strerror(status));
}

resil_status_t resil_dns_lookup(const char *name, int family, resil_dns_fn fn,
                                void *arg)
{
    struct query *q;

    if (!setup())
        return RESIL_EUNSUPP;
    q = malloc(sizeof(*q));
    if (q == NULL)
        return RESIL_ENOMEM;
    q->fn = fn;
    q->arg = arg;
    q->family = family;
    ares_gethostbyname(ch, name, family, answered, q);
    return RESIL_OK;
}

uint64_t resil_dns_tick(uint64_t now)
{
    struct timeval tv;

    if (dns_state != DNS_OK || ares_timeout(ch, NULL, &tv) == NULL)
        return UINT64_MAX;
    if (tv.tv_sec == 0 && tv.tv_usec == 0) {
        ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        if (ares_timeout(ch, NULL, &tv) == NULL)
            return UINT64_MAX;
    }
    return now + (uint64_t)tv.tv_sec * 1000000000ull +
           (uint64_t)tv.tv_usec * 1000ull;
}

void resil_dns_cancel(void)
{
    if (dns_state == DNS_OK)
        ares_cancel(ch);
}

void resil_dns_atfork_child(void)
{
    /* c-ares sockets are shared with the parent: forget the channel
     * without closing them through the parent's state (its memory is
     * left as it is) */
    if (dns_state == DNS_OK)
        dns_state = DNS_UNTRIED;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++)
        watches[i].fd = -1;
}
