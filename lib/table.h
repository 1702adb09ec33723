/* libresil: the fd table and the per-socket state.
 *
 * The table is an array indexed by fd (two levels, chunks allocated on first
 * use) of pointers to reference-counted struct resil_sock. A NULL slot means
 * "not managed": hooks pass straight through after this one lookup.
 *
 * Locking (outer to inner; no lock is held across a blocking call except
 * where noted):
 *   1. engine lock (engine.h): races (conn.c), c-ares (dns.c), the
 *      parking listeners (swap.c). The monitor's list has its own lock,
 *      taken only by the engine thread, never with s->mu held
 *      (monitor.h).
 *   2. resil_sock.mu: protects every mutable field of one socket. The engine
 *      holds it across the swap (dup3 + epoll DEL/ADD, all non-blocking), so
 *      that a concurrent close() of the fd waits for the swap to finish.
 *   3. resil_sock.ep_mu, then an epoll set's lock (epoll.h): the program's
 *      epoll registrations of the socket.
 *   4. the registry lock of libresil's own descriptors (fds.h): taken
 *      under the engine lock and resil_sock.mu, takes only table stripes.
 *   5. leaf locks: a table stripe (the slot pointer and the reference taken
 *      by resil_table_get), health, names, paths (path.h: a look-up's
 *      netlink request runs outside it, under the locks its caller holds,
 *      a race's engine lock and resil_sock.mu; the kernel answers inside
 *      the request, nothing waits).
 * A hook never holds resil_sock.mu while calling into the engine. close()
 * takes resil_sock.mu and the epoll locks, never the engine lock (the
 * engine stops a closed socket's race itself), and those locks are never
 * held across a log line or an event (debug lines and out-of-memory
 * warnings aside): a close() never waits for a log write.
 */
#ifndef RESIL_TABLE_H
#define RESIL_TABLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "addr.h"
#include "lock.h"
#include "status.h"

enum resil_sock_state {
    RS_FRESH = 0,  /* socket() seen, no connect yet */
    RS_DIRECT,     /* connected by the real connect(): nothing to race */
    RS_RACING,     /* a race runs; the fd holds a parked socket */
    RS_CONNECTED,  /* a race was won; the winner sits on the fd */
    RS_FAILED,     /* every attempt failed; the fd holds the socket of the
                      attempt whose errno is reported (pending_err) */
    RS_PASSTHRU,   /* libresil stays out of this socket's way */
    RS_TRYING,     /* the program's own socket connects to the race's first
                      candidate (cur_ip) since conn_ns; the race starts,
                      with it as attempt 0, only if it has not connected
                      after the attempt delay or fails first (conn.h).
                      Never a session destination's (want_sess) */
};

struct resil_sockopt {
    struct resil_sockopt *next;
    uint32_t seq; /* resil_sock.opt_seq when recorded */
    int level, name;
    socklen_t len;
    unsigned char val[];
};
#define RESIL_OPT_BOXES 2
#define RESIL_OPT_BOX_LEN 16 /* an int, a struct linger or timeval */

/* One epoll registration of a managed socket (epoll.h; epoll.c's). */
struct resil_epset;
struct resil_epreg {
    struct resil_epreg *s_next; /* s->ep (s->ep_mu) */
    struct resil_epreg *h_next; /* the set's index chain (set->mu) */
    struct resil_epset *set;    /* NULL: the socket's own record, unused */
    struct resil_sock *s;
    uint64_t data;              /* the program's event data */
    _Atomic uint32_t events;    /* its events: written with s->ep_mu and,
                                   unless only interest bits change,
                                   set->mu held */
    unsigned epoch;             /* the set's epoch it was made in */
    bool linked;                /* in the set's index (set->mu) */
    bool pending;               /* disarmed one-shot kept out of the kernel
                                   (s->ep_mu and set->mu) */
    bool fired;                 /* one-shot whose data an epoll_wait
                                   returned since it was last armed
                                   (set->mu) */
};

struct resil_race_ctx;
struct resil_sess;
struct resil_sock;

/* The dead-path monitor's part of a socket (monitor.c says who touches
 * what). */
struct resil_sock_mon {
    atomic_bool dirty;            /* written since the monitor last found
                                     nothing in flight: any thread */
    struct resil_sock *mark_next; /* on the lock-free list of new marks */
    struct resil_sock *next;      /* on the monitor's own list */
    bool listed;                  /* on the monitor's own list */
    bool ut_armed;                /* TCP_USER_TIMEOUT armed (s->mu) */
    bool failed;                  /* address marked down for this
                                     connection (s->mu) */
    uint64_t out_since;           /* data in flight since, ns (the later
                                     of the last ACK and the last segment
                                     sent when first seen); 0: not in
                                     flight */
    uint64_t acked;               /* tcpi_bytes_acked when out_since was
                                     set: a change is progress */
    bool unseen;                  /* bytes move where no hook sees them
                                     (stdio): watched on every tick, not
                                     only after a write marked it (s->mu) */
};

struct resil_sock {
    atomic_int refs;
    pthread_mutex_t mu;
    int fd;
    int family;   /* AF_INET or AF_INET6, fixed at socket() */
    int type;     /* SOCK_STREAM | flags as passed to socket() */
    /* written under mu; read without it (resil_sock_state) only where a
     * stale value is harmless, each such reader says why */
    _Atomic(enum resil_sock_state) state;
    /* the program closed fd: abandon any swap. Written under mu, read
     * under it, and without it by the engine (resil_sock_closed) to stop
     * the socket's race, so that close() needs no engine lock */
    atomic_bool closed;
    bool v6only;          /* IPV6_V6ONLY set: no v4-mapped candidates */
    unsigned app_opts;    /* RESIL_APP_* (monitor.h): timing knobs the
                             program set itself */
    bool fastopen;        /* TCP_FASTOPEN_CONNECT: connect stays real */
    bool listening;       /* a listening socket of a session port */
    bool want_sess;       /* connect: the destination speaks sessions */
    bool hello_here;      /* a session destination's first attempt, on
                             the fd, owes the HELLO: whoever finds it
                             connected sends it before the program can
                             write (conn.c set_hello) */
    void *hello_w;        /* conn.c: the engine's watch for it (engine
                             lock; read without it by close(), through
                             __atomic), or NULL */
    bool bound;           /* bind() with port 0 seen: replay it */
    bool eof_seen;        /* the program saw EOF: never re-race */
    /* an error the kernel would report once (SO_ERROR, the next data call,
     * connect in RS_FAILED) but the socket on fd no longer holds: emulated
     * by conn.c (resil_conn_take_error); written under mu */
    atomic_int pending_err;
    bool fail_connecting; /* the socket on fd failed a connect in progress
                             (RS_FAILED) or was reset right after its
                             handshake (RS_CONNECTED) and is still
                             SS_CONNECTING: connect() goes through the
                             kernel's own error path */
    bool rerace;          /* RS_RACING: re-racing a connection the program
                             already had (its connect() says EISCONN) */
    int reraces;          /* re-races since the program's connect() */
    uint64_t cookie;      /* SO_COOKIE of the socket on fd; 0: unknown */
    uint64_t swap_seq;    /* resil_swap_seq of the last swap onto fd */
    uint32_t opt_seq;     /* seq of the last option recorded */
    bool bind_shared;     /* bind_sa holds the port bind() got: attempts
                             share it (see conn.c start_attempt) */
    struct sockaddr_storage bind_sa;
    socklen_t bind_len;
    struct resil_ip peer_ip; /* the program's target */
    uint16_t peer_port;
    struct resil_ip cur_ip;  /* the address actually connected */
    uint64_t connected_ns;
    struct resil_sockopt *opts; /* replayed on every attempt, in order */
    /* the first RESIL_OPT_BOXES options of at most RESIL_OPT_BOX_LEN bytes
     * live here (table.c opt_alloc): a program setting TCP_NODELAY or
     * SO_LINGER allocates nothing for it */
    _Alignas(struct resil_sockopt) unsigned char
        opt_box[RESIL_OPT_BOXES]
               [sizeof(struct resil_sockopt) + RESIL_OPT_BOX_LEN];
    unsigned char opt_box_used; /* bit i: opt_box[i] holds a record */
    resil_lock_t ep_mu;         /* epoll.h: guards the four below */
    bool ep_gone;               /* fd closed: record nothing more */
    struct resil_epreg *ep;     /* the program's epoll registrations of fd */
    struct resil_epreg ep_own;  /* the first one lives here: a socket in
                                   one set (the usual) allocates nothing,
                                   and an event loop's ADD/DEL per request
                                   touch no other memory */
    uint32_t ep_old_mask;       /* a swap in progress: what the old socket
                                   reported (poll bits) */
    _Atomic uint64_t stale_seq; /* epoll.h: the last stale report */
    atomic_uint stale_mask;
    struct resil_race_ctx *race;/* engine-owned while RS_RACING */
    struct resil_sess *sess;    /* the session layer's state, or NULL
                                   (session.h); freed with the socket */
    struct resil_sock_mon mon;  /* the dead-path monitor's (monitor.c) */
    /* conn.c: the first attempt on the program's own socket, and the
     * sockets it looks at again an attempt delay after their connect */
    atomic_bool inplace;     /* fd holds the race's attempt 0, connecting:
                                RS_TRYING, or RS_RACING with attempt 0 on
                                fd (written under mu) */
    atomic_int io_busy;      /* data calls in flight on it (io.c) */
    bool try_blocking;       /* RS_TRYING: a blocking connect() on fd
                                waits for it itself */
    atomic_bool ka_due;      /* keepalive not sized yet (resil_monitor_tune
                                runs an attempt delay after the connect) */
    atomic_bool pend_listed; /* on conn.c's list of sockets to look at */
    struct resil_sock *pend_next;
    uint64_t conn_ns;        /* when the connect started */
    uint64_t try_delay_ns;   /* its first attempt's delay (0: the
                                configured one; conn.c sock_delay) */
};

/* s->state. Relaxed: the writer holds s->mu, and a reader that needs a
 * state consistent with other fields takes it too; a lock-free reader only
 * uses the value as a hint it can afford to get stale. */
static inline enum resil_sock_state
resil_sock_state(const struct resil_sock *s)
{
    return atomic_load_explicit(&s->state, memory_order_relaxed);
}

static inline void resil_sock_set_state(struct resil_sock *s,
                                        enum resil_sock_state st)
{
    atomic_store_explicit(&s->state, st, memory_order_relaxed);
}

/* s->closed. Relaxed: it goes from false to true once, under s->mu; a
 * reader that must not touch a closed fd holds s->mu. */
static inline bool resil_sock_closed(const struct resil_sock *s)
{
    return atomic_load_explicit(&s->closed, memory_order_relaxed);
}

/* A connection the program has: won by a race, or made by the real
 * connect (one load of the state). */
static inline bool resil_sock_connected(const struct resil_sock *s)
{
    enum resil_sock_state st = resil_sock_state(s);
    return st == RS_CONNECTED || st == RS_DIRECT;
}

/* Allocate a socket entry with one reference. NULL when out of memory. */
struct resil_sock *resil_sock_new(int fd, int family, int type);
void resil_sock_ref(struct resil_sock *s);
void resil_sock_free_(struct resil_sock *s);
/* Drop a reference (NULL: nothing); the last one frees s. */
static inline void resil_sock_unref(struct resil_sock *s)
{
    if (s &&
        atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        resil_sock_free_(s);
}

/* Record a setsockopt for replay. The list keeps the latest value of each
 * option, ordered by when it was last set (so replaying it ends in the
 * state the program's own sequence of calls left: SO_SNDBUF and
 * SO_SNDBUFFORCE, for one, set the same field); the record gets the next
 * s->opt_seq. */
resil_status_t resil_sock_add_opt(struct resil_sock *s, int level, int name,
                                  const void *val, socklen_t len);

/* Limit of fds the table covers: larger fds are never managed. */
#define RESIL_TABLE_MAX (1 << 20)
#define RESIL_TABLE_CHUNK_BITS 12

typedef _Atomic(struct resil_sock *) resil_slot_t;
extern _Atomic(resil_slot_t *) resil_table_chunks[RESIL_TABLE_MAX >>
                                                  RESIL_TABLE_CHUNK_BITS];

/* A slot holds either a managed socket or, with the low bit set, an entry
 * of the registry of libresil's own descriptors (fds.h): the hooks' one
 * lookup then tells "ours" from "the program's managed socket" for free.
 * resil_table_get/take/set never return or replace such a slot. */
#define RESIL_SLOT_INTERNAL ((uintptr_t)1)

static inline struct resil_sock *resil_table_slot_(int fd)
{
    resil_slot_t *c;
    if ((unsigned)fd >= RESIL_TABLE_MAX)
        return NULL;
    /* unsigned: no sign extension on every hook's fast path */
    c = (resil_slot_t *)atomic_load_explicit(
        &resil_table_chunks[(unsigned)fd >> RESIL_TABLE_CHUNK_BITS],
        memory_order_acquire);
    return c ? atomic_load_explicit(
                   &c[fd & ((1 << RESIL_TABLE_CHUNK_BITS) - 1)],
                   memory_order_relaxed)
             : NULL;
}

/* Number of entries in the table (approximate under concurrency): zero
 * lets readiness hooks skip their scan. */
extern atomic_int resil_table_count;

/* Fast check without a reference: true if fd has an entry. This is the
 * one lookup every hook on an unmanaged fd pays, so it is inline. */
static inline bool resil_table_has(int fd)
{
    return resil_table_slot_(fd) != NULL;
}
/* True if fd is one of libresil's own descriptors (fds.h). */
static inline bool resil_table_internal(int fd)
{
    return ((uintptr_t)resil_table_slot_(fd) & RESIL_SLOT_INTERNAL) != 0;
}
/* Stripe locks guard a few instructions (load a slot, take a reference),
 * so they spin: a pthread mutex costs more than the work it protects on the
 * hot path of every hook on a managed fd. */
#define RESIL_TABLE_NSTRIPES 64
extern atomic_flag resil_table_stripes[RESIL_TABLE_NSTRIPES];
void resil_table_stripe_wait_(atomic_flag *f);

static inline void resil_table_stripe_lock_(int fd)
{
    atomic_flag *f = &resil_table_stripes[(unsigned)fd % RESIL_TABLE_NSTRIPES];
    if (__builtin_expect(
            atomic_flag_test_and_set_explicit(f, memory_order_acquire), 0))
        resil_table_stripe_wait_(f);
}

static inline void resil_table_stripe_unlock_(int fd)
{
    atomic_flag_clear_explicit(
        &resil_table_stripes[(unsigned)fd % RESIL_TABLE_NSTRIPES],
        memory_order_release);
}

/* The entry for fd with a reference taken, or NULL. Every hook on a
 * managed fd comes here first: inline, the stripe taken only for a slot
 * in use. */
static inline struct resil_sock *resil_table_get(int fd)
{
    resil_slot_t *c, *sl;
    struct resil_sock *s;

    if ((unsigned)fd >= RESIL_TABLE_MAX)
        return NULL;
    c = (resil_slot_t *)atomic_load_explicit(
        &resil_table_chunks[fd >> RESIL_TABLE_CHUNK_BITS],
        memory_order_acquire);
    if (c == NULL)
        return NULL;
    sl = &c[fd & ((1 << RESIL_TABLE_CHUNK_BITS) - 1)];
    if (atomic_load_explicit(sl, memory_order_relaxed) == NULL)
        return NULL;
    resil_table_stripe_lock_(fd);
    s = atomic_load_explicit(sl, memory_order_relaxed);
    if (s && !((uintptr_t)s & RESIL_SLOT_INTERNAL))
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    else
        s = NULL;
    resil_table_stripe_unlock_(fd);
    return s;
}
/* Install s at fd (taking a reference); an old entry is released.
 * Returns RESIL_OK, RESIL_ERANGE (fd too large), RESIL_ENOMEM, or
 * RESIL_EUNSUPP when fd is marked as libresil's own (left as it is). */
resil_status_t resil_table_set(int fd, struct resil_sock *s);
/* Remove and return fd's entry (the caller owns the table's reference),
 * or NULL. */
struct resil_sock *resil_table_take(int fd);
/* Mark fd as libresil's own descriptor, entry being its registry entry
 * (fds.c, which serialises these calls); unmark clears the mark. Returns
 * RESIL_OK, RESIL_ERANGE or RESIL_ENOMEM; a managed socket is never in a
 * slot being marked (the kernel does not hand out an open number). */
resil_status_t resil_table_mark(int fd, void *entry);
void resil_table_unmark(int fd);
/* The registry entry marked at fd, or NULL. */
void *resil_table_marked(int fd);

/* The lowest fd >= from whose slot is in use (a managed socket or one of
 * libresil's own), or -1. Walks occupancy bitmaps: the cost is in the
 * number of chunks and slots in use, not in the width of the range. */
int resil_table_next(int from);

/* Remove fd's entry only if it is s; true (and the table's reference is
 * dropped) when it was. */
bool resil_table_take_if(int fd, struct resil_sock *s);
/* fork(): hold every stripe across it (prepare), release in parent and
 * child, so the child never inherits a stripe held by a vanished thread. */
void resil_table_lock_all(void);
void resil_table_unlock_all(void);

/* Call fn on every entry (with its reference held during the call). */
void resil_table_foreach(void (*fn)(struct resil_sock *, void *), void *arg);

#endif
