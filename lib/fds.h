/* libresil: the registry of libresil's own descriptors.
 *
 * Every descriptor libresil keeps (log and events files, the engine's epoll
 * set and wake eventfd, parking listeners and fillers, c-ares sockets, race
 * attempt sockets and race "done" eventfds) is created, then handed here:
 * it is moved near the top of the program's descriptor space and marked in
 * the fd table (table.h), so that the hooks' one lookup tells "ours" from a
 * program's fd. The program never opened those numbers, so:
 *   - close() of one fails with EBADF and closes nothing;
 *   - close_range()/closefrom() close the program's descriptors around ours;
 *   - a data call on one fails with EBADF;
 *   - dup2()/dup3() onto one first moves ours to another number (the
 *     owner's variable follows, engine.c resil_engine_evict), then the
 *     program's call proceeds exactly as plain.
 *
 * Placement: the lowest free number at or above a floor just under
 * min(soft RLIMIT_NOFILE, RESIL_FDS_TOP_MAX), found with F_DUPFD_CLOEXEC;
 * never a fixed number. The cap: a fork copies the kernel's fd table up to
 * the highest open descriptor, and containers commonly run with a soft limit
 * of 2^20, where a descriptor near the limit makes every fork copy 8 MiB
 * (measured here: +23 % per fork at fd 19000 against fd 1000). A program
 * that opens more than the cap meets our numbers only in the order it is
 * given fds; no call of it ever reaches our files.
 *
 * Owners: the registry keeps a pointer to the owner's int and rewrites it
 * when it moves the descriptor, under the registry lock; owners whose
 * descriptor is used by threads holding no lock (log, events, the engine's
 * wake eventfd, a race's done eventfd) "pin" it around each use, and a move
 * waits for the pins to drain before the old number goes to the program.
 * Lock order: engine lock, then the registry lock; pins take no lock.
 */
#ifndef RESIL_FDS_H
#define RESIL_FDS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "table.h"

#define RESIL_FDS_TOP_MAX 4096

enum resil_fd_kind {
    RESIL_FD_FILE,  /* log, events: no owner lock, pinned */
    RESIL_FD_SOCK,  /* parking, attempts: engine lock */
    RESIL_FD_EPOLL, /* the engine's epoll set: engine lock + handshake */
    RESIL_FD_WAKE,  /* eventfds: engine lock for writers, pinned waiters */
    RESIL_FD_DNS,   /* c-ares keeps the number itself: never moved */
};

/* Note the process that owns the registry (init, then each fork child). */
void resil_fds_init(void);

/* The process owning the registry's state; false in the child of a vfork
 * (or of a raw clone) that shares our memory but not our fd table: there
 * nothing may be moved or rewritten. */
bool resil_fds_here(void);

/* Take ownership of fd, a descriptor libresil just created (consumed in
 * every case): move it to a free number near the top of the descriptor
 * space with FD_CLOEXEC, mark it, and store its number in *owner (for
 * RESIL_FD_DNS the registry does not keep owner: c-ares keeps the number).
 * With the top of the space full it stays where it is, marked all the
 * same. pins, when not NULL, counts the owner's lock-free users (see
 * resil_fds_pin). Returns RESIL_OK, or RESIL_ESYS (errno ENOMEM, or
 * EMFILE for a duplicate when no number is free) with *owner = -1. */
resil_status_t resil_fds_own(int *owner, int fd, enum resil_fd_kind kind,
                             atomic_int *pins);

/* The same for a duplicate of fd, which stays the caller's. */
resil_status_t resil_fds_dup(int *owner, int fd, enum resil_fd_kind kind);

/* Descriptors of ours being made on a thread of libresil (an engine's race
 * attempt, a resume's connection, the resume listener's accept): the
 * kernel gives a new one the lowest free number, and it is ours there
 * until resil_fds_own moves it high. A program thread that makes one of
 * its own in that instant would get the next number, not the one plain
 * TCP gives it. Low 32 bits: how many are being made; high 32: how many
 * were made (resil_fds_made). The program's socket and accept hooks read
 * it around the real call (resil_fds_mark) and settle the number they got
 * when one was made meanwhile (resil_fds_settle). */
extern _Atomic uint64_t resil_fds_making_word;

static inline void resil_fds_making(void)
{
    atomic_fetch_add(&resil_fds_making_word, 1);
}

/* The one made since resil_fds_making is where it goes (or gone). */
static inline void resil_fds_made(void)
{
    atomic_fetch_add(&resil_fds_making_word, (1ull << 32) - 1);
}

static inline uint64_t resil_fds_mark(void)
{
    return atomic_load(&resil_fds_making_word);
}

/* raw, made by the caller since resil_fds_making (or -1 with errno, when
 * that failed): resil_fds_own, then resil_fds_made. RESIL_ESYS with errno
 * and *owner = -1 when either fails. */
resil_status_t resil_fds_own_made(int *owner, int raw,
                                  enum resil_fd_kind kind, atomic_int *pins);

/* A socket of ours (socket(2)'s arguments), counted as being made until
 * it is owned at its place (resil_fds_own). RESIL_ESYS with errno and
 * *owner = -1 when either fails. */
resil_status_t resil_fds_socket(int *owner, int domain, int type,
                                int protocol, enum resil_fd_kind kind,
                                atomic_int *pins);

/* fd, just made by the program (mark: resil_fds_mark() before the call),
 * at the number plain TCP would have given it: unchanged unless one of
 * ours was being made meanwhile; then, once ours has moved away, a lower
 * free number takes it (FD_CLOEXEC as cloexec). The wait is bounded (100
 * ms: a thread of ours descheduled in the instant on a loaded machine
 * takes a few ms; 5 ms was not enough on a 2-CPU CI machine). */
int resil_fds_settle_slow(int fd, bool cloexec);
static inline int resil_fds_settle(int fd, uint64_t mark, bool cloexec)
{
    if (__builtin_expect(fd < 0 || ((uint32_t)mark == 0 &&
                                    resil_fds_mark() == mark), 1))
        return fd;
    return resil_fds_settle_slow(fd, cloexec);
}

/* True when at least one more descriptor can be opened (fd: any open
 * descriptor, duplicated once to find out). A race needs one for its first
 * attempt: without it, it would fail with EMFILE where the plain connect,
 * which needs none, succeeds. */
bool resil_fds_spare(int fd);

/* Close the descriptor in *owner (if any) through the registry; *owner
 * becomes -1. Waits for the owner's pins to drain first. */
void resil_fds_close(int *owner);

/* resil_fds_close() for an owner that pinned the descriptor itself for as
 * long as it runs (a resume worker): closed without waiting for those
 * pins, which are the caller's. */
void resil_fds_release(int *owner);
/* Close fd: through the registry when it is ours, else the real close. */
void resil_fds_close_fd(int fd);

/* The caller takes the number out of *owner (which becomes -1); it stays
 * ours, owned by nobody, until resil_fds_close_fd. Returns it. */
int resil_fds_take(int *owner);

/* Move the descriptor in *from to the owner variable *to (*from becomes
 * -1): what the registry rewrites on a move follows. */
void resil_fds_transfer(int *from, int *to);
/* Forget the mark of fd without closing it (c-ares was told to drop it and
 * the program's dup2 will replace the file). */
void resil_fds_forget(int fd);

/* The engine watches fd with events and watcher w (NULL: not watched):
 * recorded so that a move can re-register it. */
void resil_fds_set_watch(int fd, uint32_t events, void *w);

/* Pin the descriptor in *owner for a call made without the owner's lock;
 * returns its number (-1 when none). Always pair with resil_fds_unpin. */
static inline int resil_fds_pin(const int *owner, atomic_int *pins)
{
    atomic_fetch_add_explicit(pins, 1, memory_order_seq_cst);
    return __atomic_load_n(owner, __ATOMIC_SEQ_CST);
}

static inline void resil_fds_unpin(atomic_int *pins)
{
    atomic_fetch_sub_explicit(pins, 1, memory_order_release);
}

/* Wait until no pinned user is left (no lock held by the caller that such
 * a user could need). */
void resil_fds_drain(atomic_int *pins);

/* What resil_fds_move did. */
struct resil_fds_moved {
    enum resil_fd_kind kind;
    int oldfd, newfd;     /* newfd -1: no number was free, ours is lost */
    atomic_int *pins;     /* the owner's: valid only while it is ours */
    void *watch;          /* engine watcher to re-register, or NULL */
    uint32_t events;
    void *ent;            /* the entry moved, and its serial number */
    unsigned long serial;
};

/* After a move: wait until no user pinned the old number (no lock held
 * that such a user could need). Reads the owner's counter only while the
 * entry is still registered: an owner frees its counter (a race's) only
 * after closing the descriptor, under the registry lock. */
void resil_fds_drain_moved(const struct resil_fds_moved *m);

/* Move our descriptor at fd to another free number, rewrite its owner and
 * its mark, and leave the old number open (a duplicate of ours nobody owns)
 * for the program's dup2/dup3 to replace atomically; the caller holds the
 * engine lock and finishes the move (re-registration, handshake, drain).
 * Returns RESIL_OK (*m filled), RESIL_ENOENT (fd is not ours), or
 * RESIL_EUNSUPP (a c-ares socket: cancel the lookups instead). When not
 * one number is free the owner loses the descriptor (*owner = -1, m->newfd
 * -1) and RESIL_OK is returned all the same: the program's call wins. */
resil_status_t resil_fds_move(int fd, struct resil_fds_moved *m);

/* close_range(first, last, flags) for the program (flags without
 * CLOSE_RANGE_CLOEXEC): close its descriptors in the sub-ranges around
 * ours. Returns RESIL_OK, or RESIL_ESYS with errno from the first failed
 * call. */
resil_status_t resil_fds_close_range(unsigned first, unsigned last,
                                     int flags);

/* fork() handlers (engine.c calls them in its own, in lock order). */
void resil_fds_atfork_prepare(void);
void resil_fds_atfork_parent(void);
void resil_fds_atfork_child(void);

/* Number of descriptors in the registry (tests, diagnostics). */
int resil_fds_count(void);

#endif
