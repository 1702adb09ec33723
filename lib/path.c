#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fds.h"
#include "log.h"
#include "path.h"
#include "sys.h"

struct pent {
    struct resil_ip ip;
    uint32_t oif;
    uint64_t at; /* when looked up */
};

/* interface names, for the log and the events */
struct lent {
    uint32_t oif;
    char name[16];
};
#define LINK_SLOTS 16

static struct pent tab[RESIL_PATH_SLOTS];
/* Slots [0, n_used) were ever filled, in order (as health.c's): a look-up
 * scans only those, and one with nothing ever cached takes no lock (every
 * connect to a group asks for its candidates' paths, and most processes
 * never race). Written under mu. */
static int n_used;
static struct lent links[LINK_SLOTS];
static int link_next; /* the slot replaced next, round robin */
/* replaced only by the unit tests, read with __atomic */
static resil_route_fn backend = resil_path_route_netlink;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- netlink ---------------------------------------------------------- */

/* Send one request to the kernel and take its one answer into buf (the
 * kernel answers inside sendmsg: nothing is waited for). Returns the
 * answer's header, or NULL. */
static struct nlmsghdr *nl_ask(int fd, struct nlmsghdr *req, char *buf,
                               size_t len)
{
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    struct nlmsghdr *nh = (struct nlmsghdr *)buf;
    ssize_t n;

    if (real.sendto(fd, req, req->nlmsg_len, 0, (struct sockaddr *)&k,
                    sizeof(k)) < 0)
        return NULL;
    n = real.recv(fd, buf, len, MSG_DONTWAIT);
    if (n < (ssize_t)sizeof(*nh) || !NLMSG_OK(nh, (size_t)n) ||
        nh->nlmsg_seq != req->nlmsg_seq)
        return NULL;
    return nh;
}

static void add_attr(struct nlmsghdr *nh, int type, const void *data,
                     size_t len)
{
    struct rtattr *ra =
        (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
    ra->rta_type = (unsigned short)type;
    ra->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(ra), data, len);
    nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(ra->rta_len);
}

static resil_status_t route_get(int fd, const struct resil_ip *dst,
                                struct resil_route *out)
{
    struct {
        struct nlmsghdr nh;
        struct rtmsg rt;
        char attrs[64];
    } req;
    char buf[1024] __attribute__((aligned(NLMSG_ALIGNTO)));
    size_t alen = dst->family == AF_INET ? 4 : 16;
    struct nlmsghdr *nh;
    struct rtmsg *rt;
    int l;

    memset(&req, 0, sizeof(req));
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    req.nh.nlmsg_type = RTM_GETROUTE;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = 1;
    req.rt.rtm_family = (unsigned char)dst->family;
    req.rt.rtm_dst_len = (unsigned char)(alen * 8);
    add_attr(&req.nh, RTA_DST, &dst->u, alen);
    nh = nl_ask(fd, &req.nh, buf, sizeof(buf));
    if (nh == NULL)
        return RESIL_ESYS;
    if (nh->nlmsg_type == NLMSG_ERROR)
        return RESIL_ENOENT; /* ENETUNREACH and the like: no route */
    if (nh->nlmsg_type != RTM_NEWROUTE ||
        nh->nlmsg_len < NLMSG_LENGTH(sizeof(*rt)))
        return RESIL_ESYS;
    rt = NLMSG_DATA(nh);
    l = (int)RTM_PAYLOAD(nh);
    for (struct rtattr *ra = RTM_RTA(rt); RTA_OK(ra, l); ra = RTA_NEXT(ra, l)) {
        if (ra->rta_type == RTA_OIF && RTA_PAYLOAD(ra) >= 4) {
            memcpy(&out->oif, RTA_DATA(ra), 4);
        } else if (ra->rta_type == RTA_GATEWAY && RTA_PAYLOAD(ra) == alen) {
            out->has_gw = true;
            out->gw.family = dst->family;
            memcpy(&out->gw.u, RTA_DATA(ra), alen);
        }
    }
    return out->oif ? RESIL_OK : RESIL_ENOENT;
}

static void link_name(int fd, uint32_t oif, char *name, size_t len)
{
    struct {
        struct nlmsghdr nh;
        struct ifinfomsg ifi;
        char attrs[16];
    } req;
    /* without its statistics a link's answer is about 1 KiB (this may run
     * on a program thread with a small stack) */
    char buf[4096] __attribute__((aligned(NLMSG_ALIGNTO)));
    uint32_t mask = RTEXT_FILTER_SKIP_STATS;
    struct nlmsghdr *nh;
    int l;

    memset(&req, 0, sizeof(req));
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    req.nh.nlmsg_type = RTM_GETLINK;
    req.nh.nlmsg_flags = NLM_F_REQUEST;
    req.nh.nlmsg_seq = 2;
    req.ifi.ifi_family = AF_UNSPEC;
    req.ifi.ifi_index = (int)oif;
    add_attr(&req.nh, IFLA_EXT_MASK, &mask, sizeof(mask));
    nh = nl_ask(fd, &req.nh, buf, sizeof(buf));
    if (nh == NULL || nh->nlmsg_type != RTM_NEWLINK ||
        nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
        return;
    l = (int)IFLA_PAYLOAD(nh);
    for (struct rtattr *ra = IFLA_RTA(NLMSG_DATA(nh)); RTA_OK(ra, l);
         ra = RTA_NEXT(ra, l))
        if (ra->rta_type == IFLA_IFNAME && RTA_PAYLOAD(ra) > 0) {
            size_t n = RTA_PAYLOAD(ra) < len ? RTA_PAYLOAD(ra) : len;
            memcpy(name, RTA_DATA(ra), n);
            name[n - 1] = '\0';
            return;
        }
}

resil_status_t resil_path_route_netlink(const struct resil_ip *dst,
                                        struct resil_route *out)
{
    atomic_int pins = 0;
    int nl = -1, fd;
    resil_status_t st;

    memset(out, 0, sizeof(*out));
    /* registered like every descriptor of ours (fds.h), and pinned while
     * used: the program's dup2() onto its number waits for us */
    if (resil_fds_socket(&nl, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
                         NETLINK_ROUTE, RESIL_FD_SOCK, &pins) != RESIL_OK)
        return RESIL_ESYS;
    fd = resil_fds_pin(&nl, &pins);
    st = fd >= 0 ? route_get(fd, dst, out) : RESIL_ESYS;
    if (st == RESIL_OK) {
        bool known = false;
        pthread_mutex_lock(&mu);
        for (int i = 0; i < LINK_SLOTS && !known; i++)
            if (links[i].oif == out->oif) {
                known = true;
                memcpy(out->ifname, links[i].name, sizeof(out->ifname));
            }
        pthread_mutex_unlock(&mu);
        if (!known)
            link_name(fd, out->oif, out->ifname, sizeof(out->ifname));
    }
    resil_fds_unpin(&pins);
    resil_fds_close(&nl);
    return st;
}

/* ---- the cache -------------------------------------------------------- */

void resil_path_set_backend(resil_route_fn fn)
{
    __atomic_store_n(&backend, fn, __ATOMIC_RELAXED);
    resil_path_clear();
}

/* mu held */
static struct pent *find(const struct resil_ip *ip)
{
    for (int i = 0; i < n_used; i++)
        if (resil_ip_equal(&tab[i].ip, ip))
            return &tab[i];
    return NULL;
}

uint32_t resil_path_of(const struct resil_ip *dst, uint64_t now_ns)
{
    struct resil_route rt;
    struct pent *e, *victim;
    resil_route_fn fn = __atomic_load_n(&backend, __ATOMIC_RELAXED);
    uint32_t oif;

    pthread_mutex_lock(&mu);
    e = find(dst);
    if (e && now_ns - e->at < RESIL_PATH_TTL_NS) {
        oif = e->oif;
        pthread_mutex_unlock(&mu);
        return oif;
    }
    pthread_mutex_unlock(&mu);
    if (fn == NULL)
        return 0;
    /* unlocked: another thread's cached answer does not wait for ours */
    memset(&rt, 0, sizeof(rt));
    if (fn(dst, &rt) != RESIL_OK)
        rt.oif = 0; /* unknown, and remembered so for the TTL too */
    if (resil_log_level >= RESIL_LOG_DEBUG) {
        char d[RESIL_ADDRSTRLEN], g[RESIL_ADDRSTRLEN];
        rdebug("route to %s: %s%s%s", resil_ip_format(dst, -1, d, sizeof(d)),
               rt.oif ? (rt.ifname[0] ? rt.ifname : "an interface") : "unknown",
               rt.has_gw ? " via " : "",
               rt.has_gw ? resil_ip_format(&rt.gw, -1, g, sizeof(g)) : "");
    }
    pthread_mutex_lock(&mu);
    victim = find(dst);
    if (victim == NULL && n_used < RESIL_PATH_SLOTS) {
        victim = &tab[n_used];
        __atomic_store_n(&n_used, n_used + 1, __ATOMIC_RELAXED);
    }
    if (victim == NULL) {
        victim = &tab[0]; /* the oldest answer goes */
        for (int i = 1; i < RESIL_PATH_SLOTS; i++)
            if (tab[i].at < victim->at)
                victim = &tab[i];
    }
    victim->ip = *dst;
    victim->oif = rt.oif;
    victim->at = now_ns;
    if (rt.oif && rt.ifname[0]) {
        int slot = -1;
        for (int i = 0; i < LINK_SLOTS && slot < 0; i++)
            if (links[i].oif == rt.oif)
                slot = i;
        if (slot < 0) {
            slot = link_next;
            link_next = (link_next + 1) % LINK_SLOTS;
        }
        links[slot].oif = rt.oif;
        memcpy(links[slot].name, rt.ifname, sizeof(links[slot].name));
        links[slot].name[sizeof(links[slot].name) - 1] = '\0';
    }
    pthread_mutex_unlock(&mu);
    return rt.oif;
}

void resil_path_cached_n(const struct resil_ip *dst, int n, uint32_t *out)
{
    /* nothing ever cached: no lock (as if these look-ups came a moment
     * before the first answer) */
    if (__atomic_load_n(&n_used, __ATOMIC_RELAXED) == 0) {
        for (int i = 0; i < n; i++)
            out[i] = 0;
        return;
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++) {
        struct pent *e = find(&dst[i]);
        out[i] = e ? e->oif : 0;
    }
    pthread_mutex_unlock(&mu);
}

uint32_t resil_path_cached(const struct resil_ip *dst)
{
    uint32_t oif;

    resil_path_cached_n(dst, 1, &oif);
    return oif;
}

char *resil_path_name(uint32_t path, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (path == 0)
        return buf;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < LINK_SLOTS; i++)
        if (links[i].oif == path && links[i].name[0]) {
            snprintf(buf, len, "%s", links[i].name);
            pthread_mutex_unlock(&mu);
            return buf;
        }
    pthread_mutex_unlock(&mu);
    snprintf(buf, len, "if%u", path);
    return buf;
}

void resil_path_clear(void)
{
    pthread_mutex_lock(&mu);
    memset(tab, 0, sizeof(tab));
    __atomic_store_n(&n_used, 0, __ATOMIC_RELAXED);
    memset(links, 0, sizeof(links));
    link_next = 0;
    pthread_mutex_unlock(&mu);
}

void resil_path_lock(void)
{
    pthread_mutex_lock(&mu);
}

void resil_path_unlock(void)
{
    pthread_mutex_unlock(&mu);
}
