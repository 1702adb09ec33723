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
 *   3. leaf locks: a table stripe (the slot pointer and the reference taken
 *      by resil_table_get), health, names.
 * A hook never holds resil_sock.mu while calling into the engine.
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
#include "status.h"

enum resil_sock_state {
    RS_FRESH = 0,  /* socket() seen, no connect yet */
    RS_DIRECT,     /* connected by the real connect(): nothing to race */
    RS_RACING,     /* a race runs; the fd holds a parked socket */
    RS_CONNECTED,  /* a race was won; the winner sits on the fd */
    RS_FAILED,     /* every attempt failed; race_errno says why */
    RS_PASSTHRU,   /* libresil stays out of this socket's way */
};

struct resil_sockopt {
    struct resil_sockopt *next;
    int level, name;
    socklen_t len;
    unsigned char val[];
};

struct resil_epreg {
    struct resil_epreg *next;
    int epfd;
    struct epoll_event ev;
};

struct resil_race_ctx;
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
    uint64_t out_since;           /* first seen with data in flight, ns;
                                     0: not in flight */
};

struct resil_sock {
    atomic_int refs;
    pthread_mutex_t mu;
    int fd;
    int family;   /* AF_INET or AF_INET6, fixed at socket() */
    int type;     /* SOCK_STREAM | flags as passed to socket() */
    enum resil_sock_state state;
    bool closed;          /* the program closed fd: abandon any swap */
    bool v6only;          /* IPV6_V6ONLY set: no v4-mapped candidates */
    unsigned app_opts;    /* RESIL_APP_* (monitor.h): timing knobs the
                             program set itself */
    bool fastopen;        /* TCP_FASTOPEN_CONNECT: connect stays real */
    bool bound;           /* bind() with port 0 seen: replay it */
    bool eof_seen;        /* the program saw EOF: never re-race */
    int race_errno;       /* RS_FAILED: errno for SO_ERROR / connect */
    bool error_reported;  /* race_errno was read through SO_ERROR */
    uint64_t cookie;      /* SO_COOKIE of the socket on fd */
    struct sockaddr_storage bind_sa;
    socklen_t bind_len;
    struct resil_ip peer_ip; /* the program's target */
    uint16_t peer_port;
    struct resil_ip cur_ip;  /* the address actually connected */
    uint64_t connected_ns;
    struct resil_sockopt *opts; /* replayed on every attempt, in order */
    atomic_flag ep_lock;        /* guards ep and ep_spare: a spinlock, as
                                   event loops call epoll_ctl per request */
    struct resil_epreg *ep;     /* epoll sets holding fd */
    struct resil_epreg *ep_spare; /* one freed node, reused by the next ADD
                                     (event loops ADD/DEL per request) */
    struct resil_race_ctx *race;/* engine-owned while RS_RACING */
    struct resil_sock_mon mon;  /* the dead-path monitor's (monitor.c) */
};

/* Allocate a socket entry with one reference. NULL when out of memory. */
struct resil_sock *resil_sock_new(int fd, int family, int type);
void resil_sock_ref(struct resil_sock *s);
void resil_sock_unref(struct resil_sock *s);

/* Record a setsockopt for replay (the latest value of an option wins). */
resil_status_t resil_sock_add_opt(struct resil_sock *s, int level, int name,
                                  const void *val, socklen_t len);
void resil_sock_ep_lock(struct resil_sock *s);
void resil_sock_ep_unlock(struct resil_sock *s);
/* Track epoll_ctl(epfd, op, fd, ev). Caller holds the ep lock. */
resil_status_t resil_sock_epoll(struct resil_sock *s, int epfd, int op,
                                const struct epoll_event *ev);
/* Forget every registration in epfd (it was closed). */
void resil_sock_epoll_forget(struct resil_sock *s, int epfd);

/* Limit of fds the table covers: larger fds are never managed. */
#define RESIL_TABLE_MAX (1 << 20)
#define RESIL_TABLE_CHUNK_BITS 12

typedef _Atomic(struct resil_sock *) resil_slot_t;
extern _Atomic(resil_slot_t *) resil_table_chunks[RESIL_TABLE_MAX >>
                                                  RESIL_TABLE_CHUNK_BITS];

/* Number of entries in the table (approximate under concurrency): zero
 * lets readiness hooks skip their scan. */
extern atomic_int resil_table_count;

/* Fast check without a reference: true if fd has an entry. This is the
 * one lookup every hook on an unmanaged fd pays, so it is inline. */
static inline bool resil_table_has(int fd)
{
    resil_slot_t *c;
    if ((unsigned)fd >= RESIL_TABLE_MAX)
        return false;
    c = (resil_slot_t *)atomic_load_explicit(
        &resil_table_chunks[fd >> RESIL_TABLE_CHUNK_BITS],
        memory_order_acquire);
    return c && atomic_load_explicit(
                    &c[fd & ((1 << RESIL_TABLE_CHUNK_BITS) - 1)],
                    memory_order_relaxed) != NULL;
}
/* The entry for fd with a reference taken, or NULL. */
struct resil_sock *resil_table_get(int fd);
/* Install s at fd (taking a reference); an old entry is released.
 * Returns RESIL_OK, RESIL_ERANGE (fd too large) or RESIL_ENOMEM. */
resil_status_t resil_table_set(int fd, struct resil_sock *s);
/* Remove and return fd's entry (the caller owns the table's reference),
 * or NULL. */
struct resil_sock *resil_table_take(int fd);
/* fork(): hold every stripe across it (prepare), release in parent and
 * child, so the child never inherits a stripe held by a vanished thread. */
void resil_table_lock_all(void);
void resil_table_unlock_all(void);

/* The fd of the entry registered in epfd with event data `data`, or -1. */
int resil_table_find_epoll(int epfd, uint64_t data);

/* Call fn on every entry (with its reference held during the call). */
void resil_table_foreach(void (*fn)(struct resil_sock *, void *), void *arg);

#endif
