/* libresil: the session layer's per-socket state (doc/session.md, "Socket
 * glue").
 *
 * A session socket carries, before any program byte, the client's HELLO
 * and the server's WELCOME; afterwards the program's bytes flow unframed
 * and are counted here: every byte written is copied into the replay ring
 * (trimmed to what the peer's kernel acknowledged), every byte read moves R
 * and the last received bytes (the tail the resume checks). A resume
 * (resumer.c) freezes the session, exchanges RESUME/RESUMED on a new
 * connection, replays what the peer lacks and swaps the new connection
 * onto the program's fd.
 *
 * Locking: rmu is held by a program read across the real call and its
 * counting (two threads reading one stream must count in the kernel's
 * order), wmu likewise by a program write (the ring must hold the bytes in
 * the order the kernel took them); mu guards the rest. Order: rmu, wmu,
 * mu; none of them is taken under the engine lock or resil_sock.mu, except
 * mu (leaf).
 */
#ifndef RESIL_SESSION_H
#define RESIL_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "addr.h"
#include "ring.h"
#include "session_crypto.h"
#include "session_wire.h"
#include "status.h"

enum resil_sess_state {
    RESIL_SESS_HELLO_SENT, /* client: HELLO out, WELCOME not read yet */
    RESIL_SESS_CLASSIFY,   /* server: accepted, first bytes not seen */
    RESIL_SESS_LATE,       /* server: taken for ordinary before its first
                              bytes came: a late HELLO is swallowed */
    RESIL_SESS_UP,         /* established: counting */
    RESIL_SESS_PLAIN,      /* not a session (ordinary peer, refused) */
    RESIL_SESS_BROKEN,     /* failed: the program gets ECONNRESET */
};

enum { RESIL_RESUME_INIT = 1, RESIL_RESUME_RESP = 2 };

struct resil_sess {
    pthread_mutex_t rmu, wmu, mu;
    pthread_cond_t cv;        /* a frozen session thawed (mu) */
    _Atomic int state;        /* enum resil_sess_state */
    int role;                 /* RESIL_ROLE_CLIENT or RESIL_ROLE_SERVER */
    unsigned share;           /* resil_sess_shares when it began */
    atomic_bool replaying;    /* the replay goes out: writers wait */
    atomic_bool frozen;       /* a resume is switching connections (set
                                 under mu, read by the hooks without) */
    atomic_bool stashed;      /* the stash holds bytes (set under rmu,
                                 read by the readiness hooks without) */
    int kick_fd;              /* an eventfd standing for the stash in the
                                 program's epoll sets, or -1 (fds.h; rmu) */
    atomic_int kick_pins;
    atomic_int pollers;       /* threads in a real poll/select with the fd
                                 in their set (session_io.h) */
    bool resumable;           /* counts agree with the kernel's (mu) */
    const char *why_not;      /* why not resumable (static) */
    struct resil_session_keys keys;
    struct resil_kx kx;       /* client: until the WELCOME */
    uint8_t *hello;           /* client: its HELLO until the WELCOME */
    uint16_t hello_len;
    /* our stream (wmu) */
    uint64_t w;
    uint64_t trim_w;          /* w at the last trim (resil_sess_trim) */
    struct resil_ring ring;
    /* the peer's stream (rmu) */
    uint64_t r;
    struct resil_lastbytes last;
    uint8_t *stash;           /* drained from a replaced connection */
    size_t stash_len, stash_off;
    /* the current connection: handshake bytes on it, and the stream
     * positions where it started */
    uint64_t kbase_out, kbase_in, pos_out_base, pos_in_base;
    unsigned syn;             /* 1 when tcpi_bytes_acked counts our SYN */
    /* the peer */
    uint16_t peer_port;       /* its resume listener, 0: none */
    uint8_t npeer;
    struct resil_ip peer[RESIL_WIRE_MAX_ADDR];
    uint32_t peer_rcvbuf;
    uint64_t counter;         /* our last RESUME counter */
    uint64_t peer_counter;    /* the peer's last accepted one */
    bool fin_out, fin_in;     /* our program shut down writing / saw EOF */
    /* resume (mu) */
    int busy;                 /* 0, or who resumes: RESUME_INIT/RESP */
    struct resil_sess *init_next; /* resumer.c's queue of resumes waiting
                                     for a worker (its lock) */
    uint64_t init_ns;         /* when this end's resume was asked for (mu) */
    bool abort_init;          /* a client's RESUME wins over our attempt */
    bool detached;            /* frozen, the old connection put aside */
    int old_fd;               /* the old connection, aside (fds.h) */
    unsigned resumes;         /* completed resumes */
    unsigned gen;             /* connections put on the fd by resumes
                                 (a call that met an error compares);
                                 stored atomically under mu, loaded
                                 without it (session_io.c gen_now) */
    uint64_t detached_ns;     /* when the path failed */
    uint64_t suspect_ns;      /* when we first suspected it (0: we did
                                 not), for the resume's event */
    bool told;                /* a failure of a session that cannot be
                                 resumed was reported */
    struct resil_sock *sock;  /* the socket this state belongs to (weak:
                                 valid while indexed, resil_sock frees us) */
    struct resil_sess *idx_next; /* the index of sessions by id */
    bool indexed;
};

/* Sockets with a session state in this process: while 0 the data hooks
 * never look for one. */
extern atomic_int resil_sess_count;
/* Bumped by every fork and every dup of a managed socket: a session whose
 * share is still the current count has its file on one descriptor of one
 * process (linger.h). */
extern atomic_uint resil_sess_shares;
/* Sessions whose readiness is not the kernel's: a handshake message may
 * be all that makes the socket readable (HELLO_SENT, CLASSIFY, LATE), the
 * stash holds bytes the socket does not have, or a resume is switching
 * connections under the fd (frozen). While 0 the readiness hooks never
 * look (session_io.h). */
extern atomic_int resil_sess_attention;

/* Set x's state (attention counted). */
void resil_sess_set_state(struct resil_sess *x, int state);
/* Whether state is one of the handshake's (HELLO_SENT, CLASSIFY, LATE). */
bool resil_sess_handshaking(int state);
/* The stash holds bytes (true) or not (rmu held; attention counted). */
void resil_sess_set_stashed(struct resil_sess *x, bool stashed);
/* A resume freezes x (true) or thaws it (x->mu held; attention counted). */
void resil_sess_set_frozen(struct resil_sess *x, bool frozen);

/* Process-wide set-up (libsodium, the PSK file): once, any thread. Returns
 * RESIL_OK, or an error (logged) that keeps sessions off in this process. */
resil_status_t resil_session_setup(void);

struct resil_sess *resil_sess_new(int role);
void resil_sess_free(struct resil_sess *x);

/* Client: write the HELLO on fd, a connected socket nothing was written to
 * yet. Returns RESIL_OK, or an error (the connection is unusable: a HELLO
 * cut short would corrupt the stream). */
resil_status_t resil_sess_client_hello(struct resil_sess *x, int fd);

/* Client: read the WELCOME at the head of fd's stream, consuming exactly
 * it. Returns RESIL_OK (established), RESIL_EAGAIN (not all there yet:
 * the caller waits or answers EAGAIN), RESIL_EUNSUPP (no WELCOME: the
 * server is not a session server, or refused: plain from now on, nothing
 * consumed but a REFUSE), RESIL_EPROTO/RESIL_EAUTH (a bad answer: the
 * connection fails). rmu held. */
resil_status_t resil_sess_client_welcome(struct resil_sess *x, int fd);

/* Server: classify fd's first bytes, waiting for them at most wait_ms
 * (0: do not wait). A HELLO is checked, consumed and answered (WELCOME,
 * or REFUSE and plain). Returns RESIL_OK (established), RESIL_EAGAIN (a
 * HELLO is coming but incomplete), RESIL_EUNSUPP (an ordinary client:
 * nothing consumed), or an error (the connection fails). rmu held. */
resil_status_t resil_sess_server_hello(struct resil_sess *x, int fd,
                                       int wait_ms);

/* Server, RESIL_SESS_LATE: a complete HELLO at the head of the stream is
 * consumed without an answer (the program already spoke). Returns
 * RESIL_OK when done with this (the state is then PLAIN), RESIL_EAGAIN
 * when a HELLO may still be arriving. rmu held. */
resil_status_t resil_sess_swallow_late(struct resil_sess *x, int fd);

/* The handshake message fd's peer owes it (want: RESIL_MSG_WELCOME, which
 * a REFUSE also answers, or RESIL_MSG_HELLO) is at the head of fd's
 * queue: read it off (RESIL_OK). RESIL_EAGAIN while nothing or a part of
 * it is there; RESIL_ENOENT when something else came (EOF, an error, the
 * peer program's bytes, another message), left where it is. */
resil_status_t resil_sess_read_off(int fd, int want);

/* The program wrote n bytes of iov on fd (wmu held): into the ring. */
void resil_sess_sent(struct resil_sess *x, int fd, const struct iovec *iov,
                     int cnt, size_t n);
/* The program read n bytes into iov (rmu held). */
void resil_sess_received(struct resil_sess *x, const struct iovec *iov,
                         int cnt, size_t n);
/* Bytes moved on the session's socket through a path that does not copy
 * them here (sendfile, MSG_TRUNC, ...): the session cannot be resumed. */
void resil_sess_untracked(struct resil_sess *x, const char *why);
/* Nothing is in flight on fd (the monitor saw it): drop the ring's bytes
 * the peer has. Its memory goes back only when nothing was written since
 * the previous call: a writer whose socket drains between two writes
 * (a bulk sender faster than nothing, on its own core) would otherwise
 * free megabytes and fault them in again on every monitor tick. Returns
 * true while memory is kept that a later call may give back (the monitor
 * then looks again on its next tick). wmu is tried, never waited for (the
 * engine calls it): a write in progress makes it return true at once. */
bool resil_sess_trim(struct resil_sess *x, int fd);

/* Our counts against the kernel's on fd, the session's connection:
 * bytes received less those still queued (rmu held: the stash counts as
 * received; *state, if not NULL, gets the TCP state), bytes written (wmu
 * held). Returns 0 when they agree, 1 when they agree but for a FIN (in:
 * the peer's, out: ours), -1 otherwise (or the kernel cannot be asked). */
int resil_sess_in_check(struct resil_sess *x, int fd, int *state);
int resil_sess_out_check(struct resil_sess *x, int fd);

/* The session with this id where we have role, or NULL; a reference is
 * not taken: the caller holds the index lock (resil_sess_index_lock). */
void resil_sess_index_lock(void);
void resil_sess_index_unlock(void);
struct resil_sess *resil_sess_find(const uint8_t *id, int role);
/* Take x out of the index (its program closed its socket): no RESUME finds
 * it any more. Idempotent; resil_sess_free does it too. */
void resil_sess_unindex(struct resil_sess *x);

/* A destination whose answer to the program's first bytes (sent after the
 * HELLO) was bytes of its own program, no session message: no libresil
 * server there, and its program read the HELLO as data (session.c
 * spoke_first says why bytes that came sooner prove nothing). No HELLO
 * goes to ip:port for RESIL_SESS_ORDINARY_MS
 * after resil_sess_ordinary_note (now: resil_now_ns()), so that a
 * RESIL_SESSION pattern wider than the servers that run libresil costs
 * each such server one connection per process in that time, not every
 * one. resil_sess_ordinary: true while ip:port is remembered so. At most
 * RESIL_SESS_ORDINARY_MAX are remembered (the one expiring first makes
 * room). */
#define RESIL_SESS_ORDINARY_MS (300 * 1000)
#define RESIL_SESS_ORDINARY_MAX 64
void resil_sess_ordinary_note(const struct resil_ip *ip, uint16_t port,
                              uint64_t now);
bool resil_sess_ordinary(const struct resil_ip *ip, uint16_t port,
                         uint64_t now);

/* Whether a connect to ip:port (name: the name ip came from, or NULL)
 * speaks the session protocol (RESIL_SESSION, and not found ordinary
 * above; sessions set up). */
bool resil_sess_wanted(const struct resil_ip *ip, uint16_t port,
                       const char *name);
/* Whether listening socket fd offers sessions (its local address and
 * port match RESIL_SESSION). */
bool resil_sess_listening(int fd);
/* Give s a session state of role (client: before its HELLO; server: an
 * accepted socket to classify). Returns RESIL_OK or RESIL_ENOMEM. */
struct resil_sock;
resil_status_t resil_sess_attach(struct resil_sock *s, int role);

/* buf[0, n) in lower-case hex into out (NUL-terminated, cut to cap). */
void resil_sess_hex(const void *buf, size_t n, char *out, size_t cap);

/* Our addresses worth announcing for a connection on fd (global-scope
 * addresses of interfaces that are up; loopback ones when fd's local
 * address is loopback). Returns how many, at most max. */
int resil_sess_local_addrs(int fd, struct resil_ip *out, int max);

#endif
