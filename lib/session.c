#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */

#include "config.h"
#include "engine.h"
#include "events.h"
#include "fds.h"
#include "log.h"
#include "resumer.h"
#include "session.h"
#include "sys.h"

/* include/net/tcp_states.h (not exported to user space) */
enum {
    ST_ESTABLISHED = 1,
    ST_FIN_WAIT1 = 4,
    ST_FIN_WAIT2 = 5,
    ST_TIME_WAIT = 6,
    ST_CLOSE = 7,
    ST_CLOSE_WAIT = 8,
    ST_LAST_ACK = 9,
    ST_CLOSING = 11,
};

/* ---- process-wide ---- */

atomic_int resil_sess_count;
atomic_uint resil_sess_shares;
atomic_int resil_sess_attention;

bool resil_sess_handshaking(int state)
{
    return state == RESIL_SESS_HELLO_SENT || state == RESIL_SESS_CLASSIFY ||
           state == RESIL_SESS_LATE;
}

void resil_sess_set_state(struct resil_sess *x, int state)
{
    int old = atomic_exchange(&x->state, state);
    if (x->sock == NULL)
        return; /* not attached: not counted */
    if (resil_sess_handshaking(old) && !resil_sess_handshaking(state))
        atomic_fetch_sub(&resil_sess_attention, 1);
    else if (!resil_sess_handshaking(old) && resil_sess_handshaking(state))
        atomic_fetch_add(&resil_sess_attention, 1);
}

void resil_sess_set_stashed(struct resil_sess *x, bool stashed)
{
    if (atomic_exchange(&x->stashed, stashed) == stashed || x->sock == NULL)
        return;
    atomic_fetch_add(&resil_sess_attention, stashed ? 1 : -1);
}

void resil_sess_set_frozen(struct resil_sess *x, bool frozen)
{
    if (atomic_exchange(&x->frozen, frozen) == frozen || x->sock == NULL)
        return;
    atomic_fetch_add(&resil_sess_attention, frozen ? 1 : -1);
}

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static resil_status_t setup_st = RESIL_EUNSUPP;
static bool have_psk;
static uint8_t psk[RESIL_SESSION_KEY_LEN];
static uint8_t k_hello[RESIL_SESSION_KEY_LEN];

static void setup(void)
{
    const struct resil_config *cfg = resil_config_get();
    char why[256];

    if (resil_crypto_init() != RESIL_OK) {
        rwarn("session layer off: libsodium cannot start");
        return;
    }
    if (cfg->psk_file[0]) {
        if (resil_psk_load(cfg->psk_file, psk, why, sizeof(why)) !=
            RESIL_OK) {
            /* a configured key that cannot be used must not silently
             * become no key: sessions stay off */
            rerror("session layer off: psk_file %s: %s", cfg->psk_file,
                   why);
            return;
        }
        have_psk = true;
    }
    if (resil_session_hello_key(have_psk ? psk : NULL, k_hello) != RESIL_OK)
        return;
    setup_st = RESIL_OK;
}

resil_status_t resil_session_setup(void)
{
    pthread_once(&setup_once, setup);
    return setup_st;
}

/* ---- the index of sessions by id ---- */

#define NBUCKETS 256
static pthread_mutex_t index_mu = PTHREAD_MUTEX_INITIALIZER;
static struct resil_sess *buckets[NBUCKETS];

static unsigned bucket(const uint8_t *id)
{
    return id[0]; /* ids are random: one byte spreads them */
}

void resil_sess_index_lock(void)
{
    pthread_mutex_lock(&index_mu);
}

void resil_sess_index_unlock(void)
{
    pthread_mutex_unlock(&index_mu);
}

struct resil_sess *resil_sess_find(const uint8_t *id, int role)
{
    for (struct resil_sess *x = buckets[bucket(id)]; x; x = x->idx_next)
        if (x->role == role && resil_session_eq16(x->keys.id, id))
            return x;
    return NULL;
}

static void index_add(struct resil_sess *x)
{
    unsigned b = bucket(x->keys.id);
    pthread_mutex_lock(&index_mu);
    x->idx_next = buckets[b];
    buckets[b] = x;
    x->indexed = true;
    pthread_mutex_unlock(&index_mu);
}

static void index_del(struct resil_sess *x)
{
    pthread_mutex_lock(&index_mu);
    if (x->indexed)
        for (struct resil_sess **pp = &buckets[bucket(x->keys.id)]; *pp;
             pp = &(*pp)->idx_next)
            if (*pp == x) {
                *pp = x->idx_next;
                break;
            }
    x->indexed = false;
    pthread_mutex_unlock(&index_mu);
}

void resil_sess_unindex(struct resil_sess *x)
{
    index_del(x);
}

/* ---- life ---- */

struct resil_sess *resil_sess_new(int role)
{
    struct resil_sess *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    pthread_mutex_init(&x->rmu, NULL);
    pthread_mutex_init(&x->wmu, NULL);
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    x->role = role;
    x->resumable = true;
    x->old_fd = -1;
    x->kick_fd = -1;
    atomic_init(&x->state, role == RESIL_ROLE_CLIENT ? RESIL_SESS_HELLO_SENT
                                                     : RESIL_SESS_CLASSIFY);
    resil_lastbytes_init(&x->last);
    return x;
}

void resil_sess_free(struct resil_sess *x)
{
    if (x == NULL)
        return;
    if (x->sock) {
        atomic_fetch_sub(&resil_sess_count, 1);
        /* what it still counts for */
        resil_sess_set_state(x, RESIL_SESS_BROKEN);
        resil_sess_set_stashed(x, false);
        resil_sess_set_frozen(x, false);
    }
    resil_fds_close(&x->kick_fd);
    index_del(x);
    resil_ring_free(&x->ring);
    resil_kx_wipe(&x->kx);
    resil_session_keys_wipe(&x->keys);
    free(x->hello);
    free(x->stash);
    pthread_mutex_destroy(&x->rmu);
    pthread_mutex_destroy(&x->wmu);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x);
}

/* ---- what a handshake announces ---- */

/* The host's addresses a handshake may announce, loopback ones apart,
 * RESIL_WIRE_MAX_ADDR of each at most, in getifaddrs() order. */
struct local_addrs {
    struct resil_ip ip[2][RESIL_WIRE_MAX_ADDR]; /* [0] others, [1] loopback */
    int n[2];
};

static bool read_local(struct local_addrs *t)
{
    struct ifaddrs *ifs, *i;
    uint16_t port;

    if (getifaddrs(&ifs) < 0)
        return false;
    t->n[0] = t->n[1] = 0;
    for (i = ifs; i; i = i->ifa_next) {
        struct resil_ip ip;
        int lo;
        if (i->ifa_addr == NULL || !(i->ifa_flags & IFF_UP) ||
            (i->ifa_addr->sa_family != AF_INET &&
             i->ifa_addr->sa_family != AF_INET6) ||
            !resil_ip_from_sa(i->ifa_addr,
                              i->ifa_addr->sa_family == AF_INET
                                  ? sizeof(struct sockaddr_in)
                                  : sizeof(struct sockaddr_in6),
                              &ip, &port))
            continue;
        /* link-local addresses name an interface of ours, useless to the
         * peer without its scope */
        if (ip.family == AF_INET6 && IN6_IS_ADDR_LINKLOCAL(&ip.u.v6))
            continue;
        lo = (i->ifa_flags & IFF_LOOPBACK) != 0;
        if (t->n[lo] < RESIL_WIRE_MAX_ADDR)
            t->ip[lo][t->n[lo]++] = ip;
    }
    freeifaddrs(ifs);
    return true;
}

/* Read at most every LOCAL_TTL: getifaddrs() dumps every link and address
 * of the host over netlink, a cost that grows with its interfaces (a node
 * with hundreds of container veths), and was paid by every handshake at
 * both ends. An address gone since is tried by a resume and fails like
 * any dead one. local_mu is only tried: a thread that finds it held (or
 * the child of a fork taken while another thread held it) reads afresh. */
#define LOCAL_TTL_NS (1000 * RESIL_MS)
static pthread_mutex_t local_mu = PTHREAD_MUTEX_INITIALIZER;
static struct local_addrs local;
static uint64_t local_at; /* 0: never read */

int resil_sess_local_addrs(int fd, struct resil_ip *out, int max)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    struct resil_ip self;
    struct local_addrs fresh;
    const struct local_addrs *t = &fresh;
    uint16_t port;
    int lo = 0, n;
    bool cached = pthread_mutex_trylock(&local_mu) == 0;

    /* loopback addresses only to a peer on this host, and then only they */
    if (real.getsockname(fd, (struct sockaddr *)&ss, &l) == 0 &&
        resil_ip_from_sa((struct sockaddr *)&ss, l, &self, &port))
        lo = self.family == AF_INET ? (ntohl(self.u.v4.s_addr) >> 24) == 127
                                    : IN6_IS_ADDR_LOOPBACK(&self.u.v6);
    if (cached) {
        uint64_t now = resil_now_ns();
        if ((local_at == 0 || now - local_at >= LOCAL_TTL_NS) &&
            read_local(&local))
            local_at = now;
        t = &local;
    } else if (!read_local(&fresh)) {
        fresh.n[0] = fresh.n[1] = 0;
    }
    n = t->n[lo] < max ? t->n[lo] : max;
    memcpy(out, t->ip[lo], (size_t)n * sizeof(*out));
    if (cached)
        pthread_mutex_unlock(&local_mu);
    return n;
}

static uint32_t rcvbuf_ceiling(int fd)
{
    int v = 0;
    socklen_t l = sizeof(v);
    if (real.getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &l) < 0 || v < 0)
        v = 0;
    return (uint32_t)v;
}

/* The most bytes the kernel can hold unacknowledged for fd: its send
 * buffer, autotuned up to net.ipv4.tcp_wmem's ceiling. */
static size_t sndbuf_ceiling(int fd)
{
    static long wmem_max;
    long w = __atomic_load_n(&wmem_max, __ATOMIC_RELAXED);
    int v = 0;
    socklen_t l = sizeof(v);

    if (w == 0) {
        FILE *f;
        long a, b, c;
        w = 4 << 20; /* the kernel's default ceiling */
        resil_fds_making(); /* a low number, for a moment */
        if ((f = fopen("/proc/sys/net/ipv4/tcp_wmem", "re")) != NULL) {
            if (fscanf(f, "%ld %ld %ld", &a, &b, &c) == 3 && c > 0)
                w = c;
            fclose(f);
        }
        resil_fds_made();
        __atomic_store_n(&wmem_max, w, __ATOMIC_RELAXED);
    }
    if (real.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &l) == 0 && v > w)
        w = v;
    return (size_t)w;
}

static void fill_hello(struct resil_msg *m, int type, int fd,
                       const struct resil_kx *kx)
{
    memset(m, 0, sizeof(*m));
    m->type = (uint8_t)type;
    m->u.hello.flags = have_psk ? RESIL_HELLO_F_PSK : 0;
    memcpy(m->u.hello.pub, kx->pk, sizeof(kx->pk));
    memcpy(m->u.hello.nonce, kx->nonce, sizeof(kx->nonce));
    m->u.hello.rcvbuf = rcvbuf_ceiling(fd);
    m->u.hello.resume_port = resil_resumer_port();
    m->u.hello.naddr = (uint8_t)resil_sess_local_addrs(
        fd, m->u.hello.addr, RESIL_WIRE_MAX_ADDR);
}

static void note_peer(struct resil_sess *x, const struct resil_msg_hello *h)
{
    x->peer_port = h->resume_port;
    x->npeer = h->naddr;
    memcpy(x->peer, h->addr, sizeof(x->peer[0]) * h->naddr);
    x->peer_rcvbuf = h->rcvbuf;
}

/* Write all of buf on a fresh connection (its send buffer is empty: a
 * message this small never goes out in part). */
static resil_status_t send_all(int fd, const void *buf, size_t len)
{
    ssize_t n;
    do
        n = real.send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)len)
        return RESIL_OK;
    if (n >= 0)
        errno = EMSGSIZE;
    return RESIL_ESYS;
}

/* Consume exactly len bytes that are known to be queued on fd. */
static resil_status_t consume(int fd, size_t len)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN];
    ssize_t n;
    do
        n = real.recv(fd, buf, len, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? RESIL_OK : RESIL_ESYS;
}

static ssize_t peek(int fd, void *buf, size_t len)
{
    ssize_t n;
    do
        n = real.recv(fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n;
}

resil_status_t resil_sess_read_off(int fd, int want)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN];
    struct resil_msg m;
    ssize_t n = peek(fd, buf, sizeof(buf));
    resil_status_t st;

    if (n < 0 && errno == EAGAIN)
        return RESIL_EAGAIN;
    if (n <= 0)
        return RESIL_ENOENT;
    st = resil_wire_decode(buf, (size_t)n, &m, NULL);
    if (st == RESIL_EAGAIN)
        return RESIL_EAGAIN;
    if (st != RESIL_OK ||
        (m.type != want &&
         !(want == RESIL_MSG_WELCOME && m.type == RESIL_MSG_REFUSE)))
        return RESIL_ENOENT;
    return consume(fd, m.len) == RESIL_OK ? RESIL_OK : RESIL_ENOENT;
}

/* The ring holds what the kernel may still lack, and the tail the peer's
 * resume checks; our stream starts at 0 after the handshake. */
static void ring_start(struct resil_sess *x, int fd)
{
    x->w = 0;
    resil_ring_free(&x->ring);
    resil_ring_init(&x->ring, 0, sndbuf_ceiling(fd) + RESIL_SESSION_TAIL_BYTES,
                    RESIL_SESSION_TAIL_BYTES);
}

void resil_sess_hex(const void *buf, size_t n, char *out, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *b = buf;
    size_t o = 0;

    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        out[o++] = digits[b[i] >> 4];
        out[o++] = digits[b[i] & 15];
    }
    if (cap > 0)
        out[o] = '\0';
}

static void established(struct resil_sess *x, int fd, size_t in, size_t out)
{
    char id[2 * RESIL_WIRE_ID_LEN + 1];

    /* tcpi_bytes_acked counts our SYN where we opened the connection (the
     * passive side's SYN-ACK is not counted: measured on 6.x) */
    x->syn = x->role == RESIL_ROLE_CLIENT;
    x->kbase_in = in;
    x->kbase_out = out;
    x->pos_in_base = x->pos_out_base = 0;
    /* a client's ring started with its HELLO: what its program wrote
     * before the WELCOME came is in it already */
    if (x->role == RESIL_ROLE_SERVER)
        ring_start(x, fd);
    resil_sess_set_state(x, RESIL_SESS_UP);
    index_add(x);
    /* what a test (or an operator tracing one session) needs to find it
     * at the resume listener (resumer.c logs the port) */
    resil_sess_hex(x->keys.id, sizeof(x->keys.id), id, sizeof(id));
    rdebug("fd %d: session id %s (%s), peer resume port %u", fd, id,
           x->role == RESIL_ROLE_CLIENT ? "client" : "server", x->peer_port);
    if (resil_events_enabled()) {
        struct sockaddr_storage ss;
        socklen_t l = sizeof(ss);
        struct resil_ip ip;
        uint16_t port = 0;
        char a[RESIL_ADDRSTRLEN] = "?";
        if (real.getpeername(fd, (struct sockaddr *)&ss, &l) == 0 &&
            resil_ip_from_sa((struct sockaddr *)&ss, l, &ip, &port))
            resil_ip_format(&ip, port, a, sizeof(a));
        resil_event("session", fd,
                    "\"peer\":\"%s\",\"role\":\"%s\",\"resume_port\":%u", a,
                    x->role == RESIL_ROLE_CLIENT ? "client" : "server",
                    x->peer_port);
    }
}

/* ---- destinations found ordinary (session.h) ---- */

static struct {
    struct resil_ip ip;
    uint16_t port;
    uint64_t until; /* 0: a free slot */
} ordinary[RESIL_SESS_ORDINARY_MAX];
static pthread_mutex_t ordinary_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int ordinary_n; /* ever noted: a lookup before any is free */

void resil_sess_ordinary_note(const struct resil_ip *ip, uint16_t port,
                              uint64_t now)
{
    int k = 0;

    pthread_mutex_lock(&ordinary_mu);
    for (int i = 0; i < RESIL_SESS_ORDINARY_MAX; i++) {
        if (ordinary[i].until != 0 && ordinary[i].port == port &&
            resil_ip_equal(&ordinary[i].ip, ip)) {
            k = i;
            break;
        }
        if (ordinary[i].until < ordinary[k].until)
            k = i;
    }
    ordinary[k].ip = *ip;
    ordinary[k].port = port;
    ordinary[k].until = now + (uint64_t)RESIL_SESS_ORDINARY_MS * RESIL_MS;
    pthread_mutex_unlock(&ordinary_mu);
    atomic_fetch_add(&ordinary_n, 1);
}

bool resil_sess_ordinary(const struct resil_ip *ip, uint16_t port,
                         uint64_t now)
{
    bool found = false;

    if (atomic_load_explicit(&ordinary_n, memory_order_relaxed) == 0)
        return false;
    pthread_mutex_lock(&ordinary_mu);
    for (int i = 0; i < RESIL_SESS_ORDINARY_MAX && !found; i++)
        found = ordinary[i].until > now && ordinary[i].port == port &&
                resil_ip_equal(&ordinary[i].ip, ip);
    pthread_mutex_unlock(&ordinary_mu);
    return found;
}

static bool fin_state(int st, bool out);

/* Whether the program wrote bytes after the HELLO: its request was on the
 * stream before the server's answer. Then the answer proves the server
 * read the HELLO as data (in order, before the request). A server that
 * speaks first may have written before the HELLO came: a libresil server
 * does so when the HELLO is late (doc/session.md), and is no ordinary
 * server for that. */
static bool spoke_first(const struct resil_sess *x, int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int q = 0;
    uint64_t k;

    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        real.ioctl(fd, SIOCOUTQ, &q) < 0)
        return false;
    /* every byte written: acknowledged (less our SYN) plus queued, less
     * our FIN (resil_sess_out_check) */
    k = ti.tcpi_bytes_acked - 1 + (uint64_t)q;
    if (fin_state(ti.tcpi_state, true))
        k--;
    return k > x->kbase_out;
}

/* The destination of x's socket, and the address its connection went to
 * if that is another (a race's winner): ordinary (above). */
static void note_ordinary(const struct resil_sess *x, int fd)
{
    const struct resil_sock *s = x->sock;
    char a[RESIL_ADDRSTRLEN];
    uint64_t now = resil_now_ns();

    if (s == NULL)
        return;
    resil_sess_ordinary_note(&s->peer_ip, s->peer_port, now);
    if (!resil_ip_equal(&s->cur_ip, &s->peer_ip) && s->cur_ip.family != 0)
        resil_sess_ordinary_note(&s->cur_ip, s->peer_port, now);
    rinfo("fd %d: no libresil server at %s (its program read the HELLO as "
          "data): no HELLO to it for %d s",
          fd, resil_ip_format(&s->peer_ip, s->peer_port, a, sizeof(a)),
          RESIL_SESS_ORDINARY_MS / 1000);
}

/* The "no_session" event: a connection to a session destination goes on
 * as plain TCP (why: a sentence; remembered: the destination is now taken
 * for one that runs no libresil). */
static void no_session(const struct resil_sess *x, int fd, const char *why,
                       bool remembered)
{
    char a[RESIL_ADDRSTRLEN] = "?", w[160];

    if (!resil_events_enabled())
        return;
    if (x->sock)
        resil_ip_format(&x->sock->peer_ip, x->sock->peer_port, a, sizeof(a));
    resil_event("no_session", fd,
                "\"dst\":\"%s\",\"why\":\"%s\",\"remembered\":%s", a,
                resil_json_str(why, w, sizeof(w)),
                remembered ? "true" : "false");
}

/* ---- client ---- */

resil_status_t resil_sess_client_hello(struct resil_sess *x, int fd)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN];
    struct resil_msg m;
    size_t len;
    resil_status_t st;

    if ((st = resil_session_setup()) != RESIL_OK ||
        (st = resil_kx_new(&x->kx)) != RESIL_OK)
        return st;
    fill_hello(&m, RESIL_MSG_HELLO, fd, &x->kx);
    if ((st = resil_wire_encode(&m, buf, sizeof(buf), &len)) != RESIL_OK ||
        (st = resil_session_seal(k_hello, NULL, 0, buf, len)) != RESIL_OK)
        return st;
    free(x->hello);
    x->hello = malloc(len);
    if (x->hello == NULL)
        return RESIL_ENOMEM;
    memcpy(x->hello, buf, len);
    x->hello_len = (uint16_t)len;
    if ((st = send_all(fd, buf, len)) != RESIL_OK)
        return st;
    x->kbase_out = len;
    /* the program's bytes count from here, WELCOME or not yet */
    ring_start(x, fd);
    resil_sess_set_state(x, RESIL_SESS_HELLO_SENT);
    return RESIL_OK;
}

resil_status_t resil_sess_client_welcome(struct resil_sess *x, int fd)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN];
    struct resil_wire_err why = {0};
    struct resil_msg m;
    size_t out = x->kbase_out;
    ssize_t n = peek(fd, buf, sizeof(buf));
    resil_status_t st;

    if (n < 0)
        return errno == EAGAIN ? RESIL_EAGAIN : RESIL_ESYS;
    if (resil_wire_sniff(buf, (size_t)n) == RESIL_SNIFF_NO || n == 0) {
        /* not a session server (or it closed at once): the bytes are the
         * program's */
        bool ord = n > 0 && spoke_first(x, fd);
        rinfo("fd %d: the server answered without a WELCOME; plain TCP",
              fd);
        if (ord)
            note_ordinary(x, fd);
        no_session(x, fd,
                   n == 0 ? "the server closed without a WELCOME"
                          : "the server answered without a WELCOME",
                   ord);
        goto plain;
    }
    st = resil_wire_decode(buf, (size_t)n, &m, &why);
    if (st == RESIL_EAGAIN)
        return RESIL_EAGAIN;
    if (st == RESIL_OK && m.type == RESIL_MSG_REFUSE) {
        char why_s[96];
        rinfo("fd %d: the server refused the session (%s); plain TCP", fd,
              resil_refuse_str(m.u.refuse.reason));
        if (consume(fd, m.len) != RESIL_OK)
            return RESIL_ESYS;
        snprintf(why_s, sizeof(why_s), "the server refused the session (%s)",
                 resil_refuse_str(m.u.refuse.reason));
        no_session(x, fd, why_s, false);
        goto plain;
    }
    if (st != RESIL_OK || m.type != RESIL_MSG_WELCOME) {
        rwarn("fd %d: bad session answer from the server: %s", fd,
              st != RESIL_OK ? why.why : "not a WELCOME");
        /* our own HELLO back: an echo, no libresil server */
        if (st == RESIL_OK && m.type == RESIL_MSG_HELLO)
            note_ordinary(x, fd);
        return RESIL_EPROTO;
    }
    if ((m.u.hello.flags & RESIL_HELLO_F_PSK) != (have_psk ? 1u : 0u)) {
        rwarn("fd %d: the server's WELCOME %s a pre-shared key; refused", fd,
              have_psk ? "lacks" : "uses");
        return RESIL_EAUTH;
    }
    st = resil_session_derive(&x->kx, RESIL_ROLE_CLIENT, m.u.hello.pub,
                              m.u.hello.nonce, have_psk ? psk : NULL,
                              &x->keys);
    if (st != RESIL_OK)
        return st;
    st = resil_session_verify(x->keys.k_confirm, x->hello, x->hello_len, buf,
                              m.len);
    if (st != RESIL_OK) {
        rwarn("fd %d: the server's WELCOME does not prove the session "
              "secret (%s); refused", fd, resil_strerror(st));
        return RESIL_EAUTH;
    }
    if (consume(fd, m.len) != RESIL_OK)
        return RESIL_ESYS;
    note_peer(x, &m.u.hello);
    free(x->hello);
    x->hello = NULL;
    established(x, fd, m.len, out);
    rinfo("fd %d: session established (client)", fd);
    return RESIL_OK;
plain:
    resil_kx_wipe(&x->kx);
    resil_sess_set_state(x, RESIL_SESS_PLAIN);
    return RESIL_EUNSUPP;
}

/* ---- server ---- */

static resil_status_t refuse(int fd, size_t hello_len, uint8_t reason)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN];
    struct resil_msg m = {.type = RESIL_MSG_REFUSE};
    size_t len;

    m.u.refuse.reason = reason;
    if (consume(fd, hello_len) != RESIL_OK ||
        resil_wire_encode(&m, buf, sizeof(buf), &len) != RESIL_OK)
        return RESIL_ESYS;
    return send_all(fd, buf, len);
}

resil_status_t resil_sess_server_hello(struct resil_sess *x, int fd,
                                       int wait_ms)
{
    uint8_t buf[RESIL_WIRE_MAX_LEN], out[RESIL_WIRE_MAX_LEN];
    struct resil_wire_err why = {0};
    struct resil_msg m, w;
    size_t olen;
    ssize_t n = peek(fd, buf, sizeof(buf));
    resil_status_t st;

    if (n < 0 && errno == EAGAIN && wait_ms > 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        rdebug("fd %d: nothing from the client yet; a HELLO is waited for "
               "up to %d ms", fd, wait_ms);
        if (real.poll(&p, 1, wait_ms) == 1)
            n = peek(fd, buf, sizeof(buf));
    }
    if (n < 0 && errno != EAGAIN)
        return RESIL_ESYS;
    if (n <= 0)
        return n == 0 ? RESIL_EUNSUPP /* closed */ : RESIL_EAGAIN;
    if (resil_wire_sniff(buf, (size_t)n) == RESIL_SNIFF_NO)
        return RESIL_EUNSUPP;
    st = resil_wire_decode(buf, (size_t)n, &m, &why);
    if (st == RESIL_EAGAIN)
        return RESIL_EAGAIN;
    if (st == RESIL_EVERSION) {
        rinfo("fd %d: a session HELLO of version %u; refused, plain TCP", fd,
              m.version);
        return refuse(fd, m.len, RESIL_REFUSE_VERSION) == RESIL_OK
                   ? RESIL_EUNSUPP
                   : RESIL_ESYS;
    }
    if (st != RESIL_OK || m.type != RESIL_MSG_HELLO) {
        /* the magic, then garbage: not ours to answer; an ordinary client
         * whose bytes happen to start that way keeps them */
        rinfo("fd %d: first bytes look like a session message but are not "
              "a HELLO (%s); an ordinary client", fd,
              st != RESIL_OK ? why.why : resil_msg_type_str(m.type));
        return RESIL_EUNSUPP;
    }
    if (resil_session_setup() != RESIL_OK ||
        (m.u.hello.flags & RESIL_HELLO_F_PSK) != (have_psk ? 1u : 0u) ||
        resil_session_verify(k_hello, NULL, 0, buf, m.len) != RESIL_OK) {
        rwarn("fd %d: a session HELLO %s; refused, plain TCP", fd,
              resil_session_setup() != RESIL_OK ? "while sessions are off"
              : (m.u.hello.flags & RESIL_HELLO_F_PSK) != (have_psk ? 1u : 0u)
                  ? "disagreeing on the pre-shared key"
                  : "whose MAC does not verify");
        return refuse(fd, m.len, RESIL_REFUSE_BAD_MAC) == RESIL_OK
                   ? RESIL_EUNSUPP
                   : RESIL_ESYS;
    }
    if ((st = resil_kx_new(&x->kx)) != RESIL_OK ||
        (st = resil_session_derive(&x->kx, RESIL_ROLE_SERVER, m.u.hello.pub,
                                   m.u.hello.nonce, have_psk ? psk : NULL,
                                   &x->keys)) != RESIL_OK)
        return st;
    fill_hello(&w, RESIL_MSG_WELCOME, fd, &x->kx);
    resil_kx_wipe(&x->kx);
    if ((st = resil_wire_encode(&w, out, sizeof(out), &olen)) != RESIL_OK ||
        (st = resil_session_seal(x->keys.k_confirm, buf, m.len, out,
                                 olen)) != RESIL_OK)
        return st;
    if ((st = consume(fd, m.len)) != RESIL_OK ||
        (st = send_all(fd, out, olen)) != RESIL_OK)
        return st;
    note_peer(x, &m.u.hello);
    established(x, fd, m.len, olen);
    rinfo("fd %d: session established (server)", fd);
    return RESIL_OK;
}

resil_status_t resil_sess_swallow_late(struct resil_sess *x, int fd)
{
    resil_status_t st = resil_sess_read_off(fd, RESIL_MSG_HELLO);

    if (st == RESIL_EAGAIN)
        return RESIL_EAGAIN;
    if (st == RESIL_OK)
        /* the client sees our program's bytes where a WELCOME would be
         * and goes plain as well */
        rinfo("fd %d: a late session HELLO swallowed; plain TCP", fd);
    resil_sess_set_state(x, RESIL_SESS_PLAIN);
    return RESIL_OK;
}

/* ---- counting ---- */

void resil_sess_untracked(struct resil_sess *x, const char *why)
{
    pthread_mutex_lock(&x->mu);
    if (x->resumable)
        rinfo("session no longer resumable: %s", why);
    x->resumable = false;
    x->why_not = why;
    pthread_mutex_unlock(&x->mu);
}

/* The position of the first byte the peer's kernel has not acknowledged,
 * or 0 when it cannot be read. */
static uint64_t acked_pos(struct resil_sess *x, int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    uint64_t a;
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        ti.tcpi_bytes_acked < x->syn + x->kbase_out)
        return 0;
    a = x->pos_out_base + (ti.tcpi_bytes_acked - x->syn - x->kbase_out);
    /* our FIN, once acknowledged, counts one more */
    return a > x->ring.end ? x->ring.end : a;
}

/* TCP states (include/net/tcp_states.h) where our FIN has been queued
 * (out) or the peer's received (in); TCP_CLOSE in both: a connection
 * that ended (reset, timed out, or gone through TIME_WAIT) may have. */
static bool fin_state(int st, bool out)
{
    if (out)
        return st == ST_FIN_WAIT1 || st == ST_FIN_WAIT2 ||
               st == ST_CLOSING || st == ST_LAST_ACK || st == ST_CLOSE ||
               st == ST_TIME_WAIT;
    return st == ST_CLOSE_WAIT || st == ST_CLOSING || st == ST_LAST_ACK ||
           st == ST_CLOSE || st == ST_TIME_WAIT;
}

int resil_sess_in_check(struct resil_sess *x, int fd, int *state)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int q = 0;
    uint64_t k, mine = x->kbase_in + x->r +
                       (x->stash_len - x->stash_off) - x->pos_in_base;

    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        real.ioctl(fd, SIOCINQ, &q) < 0)
        return -1;
    if (state)
        *state = ti.tcpi_state;
    k = ti.tcpi_bytes_received - (uint64_t)q;
    if (k == mine)
        return 0;
    /* the peer's FIN takes one sequence number, counted as received */
    if (k == mine + 1 && fin_state(ti.tcpi_state, false))
        return 1;
    rdebug("fd %d: read: kernel %llu (received %llu, queued %d), libresil "
           "%llu", fd, (unsigned long long)k,
           (unsigned long long)ti.tcpi_bytes_received, q,
           (unsigned long long)mine);
    return -1;
}

int resil_sess_out_check(struct resil_sess *x, int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int q = 0;
    uint64_t k, mine = x->kbase_out + x->w - x->pos_out_base;

    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        real.ioctl(fd, SIOCOUTQ, &q) < 0)
        return -1;
    /* acknowledged (less our SYN) plus queued is every byte written,
     * and our FIN once the program shut down writing */
    k = ti.tcpi_bytes_acked - x->syn + (uint64_t)q;
    if (k == mine)
        return 0;
    if (k == mine + 1 && fin_state(ti.tcpi_state, true))
        return 1;
    rdebug("fd %d: written: kernel %llu (acked %llu, queued %d), libresil "
           "%llu", fd, (unsigned long long)k,
           (unsigned long long)ti.tcpi_bytes_acked, q,
           (unsigned long long)mine);
    return -1;
}

void resil_sess_sent(struct resil_sess *x, int fd, const struct iovec *iov,
                     int cnt, size_t n)
{
    size_t left = n;

    for (int i = 0; i < cnt && left > 0; i++) {
        size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
        resil_status_t st = resil_ring_append(&x->ring, iov[i].iov_base, k);
        if (st == RESIL_EFULL) {
            /* the kernel holds at most its send buffer unacknowledged:
             * what it acknowledged makes room (one TCP_INFO per ring
             * full, not per call) */
            uint64_t a = acked_pos(x, fd);
            /* the bytes of this very call may be acknowledged already */
            if (a > x->ring.end)
                a = x->ring.end;
            if (a > x->ring.start)
                resil_ring_drop(&x->ring, a);
            if (resil_ring_space(&x->ring) < k)
                /* the program raised SO_SNDBUF since the handshake */
                x->ring.max = resil_ring_held(&x->ring) + k +
                              sndbuf_ceiling(fd);
            st = resil_ring_append(&x->ring, iov[i].iov_base, k);
        }
        if (st != RESIL_OK) {
            size_t max = x->ring.max, keep = x->ring.keep;
            uint64_t end = x->ring.end + k;
            resil_sess_untracked(x, "the replay ring cannot hold the bytes");
            /* empty from here on, its positions still right */
            resil_ring_free(&x->ring);
            resil_ring_init(&x->ring, end, max, keep);
        }
        left -= k;
    }
    x->w += n;
}

void resil_sess_received(struct resil_sess *x, const struct iovec *iov,
                         int cnt, size_t n)
{
    size_t left = n;
    for (int i = 0; i < cnt && left > 0; i++) {
        size_t k = iov[i].iov_len < left ? iov[i].iov_len : left;
        resil_lastbytes_feed(&x->last, iov[i].iov_base, k);
        left -= k;
    }
    x->r += n;
}

bool resil_sess_trim(struct resil_sess *x, int fd)
{
    bool kept = false;

    /* a program write holds wmu across its real call, which blocks while
     * the send buffer is full (and for good when the path just died):
     * waiting here stopped the whole engine with it, the monitor that
     * would have seen the path die included. Busy: look next tick. */
    if (pthread_mutex_trylock(&x->wmu) != 0)
        return true;
    /* not while a resume uses the ring (its replay reads it unlocked) */
    if (atomic_load(&x->state) == RESIL_SESS_UP && !atomic_load(&x->frozen) &&
        !atomic_load(&x->replaying)) {
        uint64_t a = acked_pos(x, fd);
        if (a > x->ring.end)
            a = x->ring.end;
        if (x->w != x->trim_w) {
            /* written since the last look: in use */
            if (a > x->ring.start)
                resil_ring_drop(&x->ring, a);
            x->trim_w = x->w;
            kept = x->ring.heap != NULL;
        } else {
            /* idle for a whole tick: the memory goes */
            resil_ring_trim(&x->ring, a);
        }
    }
    pthread_mutex_unlock(&x->wmu);
    return kept;
}

/* ---- attaching sessions to sockets ---- */

bool resil_sess_wanted(const struct resil_ip *ip, uint16_t port,
                       const char *name)
{
    const struct resil_config *cfg = resil_config_get();
    return cfg->n_session > 0 &&
           resil_config_session_match(cfg, ip, name && name[0] ? name : NULL,
                                      port) &&
           !resil_sess_ordinary(ip, port, resil_now_ns()) &&
           resil_session_setup() == RESIL_OK;
}

bool resil_sess_listening(int fd)
{
    const struct resil_config *cfg = resil_config_get();
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    struct resil_ip ip;
    uint16_t port;

    return cfg->n_session > 0 &&
           real.getsockname(fd, (struct sockaddr *)&ss, &l) == 0 &&
           resil_ip_from_sa((struct sockaddr *)&ss, l, &ip, &port) &&
           resil_config_session_match(cfg, &ip, NULL, port) &&
           resil_session_setup() == RESIL_OK;
}

resil_status_t resil_sess_attach(struct resil_sock *s, int role)
{
    struct resil_sess *x;

    if (s->sess)
        return RESIL_OK;
    x = resil_sess_new(role);
    if (x == NULL)
        return RESIL_ENOMEM;
    x->sock = s;
    x->share = atomic_load(&resil_sess_shares);
    s->sess = x;
    atomic_fetch_add(&resil_sess_count, 1);
    atomic_fetch_add(&resil_sess_attention, 1); /* a handshake state */
    return RESIL_OK;
}
