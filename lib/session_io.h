/* libresil: the program's data calls on a session socket (session_io.c). */
#ifndef RESIL_SESSION_IO_H
#define RESIL_SESSION_IO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <poll.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "session.h"
#include "table.h"

/* fd's socket with a reference taken, when it has a session state; else
 * NULL. */
struct resil_sock *resil_sess_sock(int fd);

/* ioctl(FIONREAD) on s's fd: the bytes the program can read (the
 * handshake still due done first, as a read would do it: its message is
 * not the program's; a resume's stash counted). False when the kernel's
 * answer is the program's (a plain or lost session). */
bool resil_sess_fionread(struct resil_sock *s, int fd, int *n);

/* The program closes fd: a session client whose WELCOME has not come, a
 * server socket whose client's HELLO was never read, is kept until it has
 * come (linger.h). Any thread, no lock held. */
void resil_sess_closing(int fd);

/* One data call of the program, as the hook describes it. */
struct resil_io {
    int fd;
    bool write;
    int flags;                 /* MSG_* of the call, 0 for read/write */
    size_t len;                /* bytes asked for */
    const struct iovec *iov;   /* the program's buffers */
    int iovcnt;
    const char *untracked;     /* bytes move without passing through iov
                                  (sendfile): why, for the log */
    bool locked;               /* between pre and post: rmu or wmu held */
    unsigned gen;              /* the connection (x->gen) the call went to */
    ssize_t rc;                /* RESIL_SESS_DONE: the call's result */
    int err;                   /* and its errno */
};

enum resil_sess_step {
    RESIL_SESS_CALL,  /* make the real call now, then resil_sess_post */
    RESIL_SESS_RETRY, /* start over (resil_sess_pre again) */
    RESIL_SESS_DONE,  /* return io->rc, errno io->err */
};

/* The two halves of a data call on session socket s (s->sess set), around
 * the real call: the handshake still due, the stash of a resume, the
 * waits while a resume runs; then the counting, and a resume after a path
 * error. pre returns CALL, RETRY or DONE; post (always after a CALL)
 * RETRY or DONE. No lock held by the caller. */
enum resil_sess_step resil_sess_pre(struct resil_sock *s, struct resil_io *io);
enum resil_sess_step resil_sess_post(struct resil_sock *s, struct resil_io *io,
                                     ssize_t rc, int err);

/* fd is handed to a path no hook sees: stdio (fdopen), or a duplicate
 * (dup, dup2, dup3, F_DUPFD: the new number is not managed). When it is a
 * session socket, the handshake still due is done now (a client waits for
 * the WELCOME, at most the linger time: with none by then the connection
 * is reset rather than let a read there meet a late one; a server
 * classifies the client as its first write would, but waiting for the
 * client's first bytes at least 200 ms: a later HELLO would reach the
 * program), and the session is made non-resumable (those bytes no hook
 * counts) and watched by the monitor as such. Any thread, no lock held;
 * errno kept. */
enum resil_unhooked { RESIL_UNHOOKED_STDIO, RESIL_UNHOOKED_DUP };
void resil_sess_unhooked(int fd, enum resil_unhooked how);

/* Readiness. A session socket whose handshake message is all the kernel
 * reports readable is not readable for the program (a blocking read would
 * wait for bytes it was told were there): the message is consumed and
 * the readiness taken back. One whose stash holds bytes is readable
 * whatever the kernel says. One whose connection a resume is replacing
 * (frozen) reports nothing, as the parked socket that stands in for it
 * does.
 *
 * The kernel's poll and select register a sleeper only on the files they
 * find in their first pass; a pass after a wake-up reads the fd table
 * again but registers nothing. A thread asleep on a session fd when a
 * resume swaps another connection onto it would sleep on with nothing
 * to wake it. So, in a process with sessions, _enter (before the real
 * call) counts the call in each session fd's `pollers` (a resume resets
 * the old connection, which wakes them, and waits until none is left
 * before the parked socket takes the fd), and leaves a frozen fd out of
 * the call (a negative fd for poll, a cleared bit for select; for poll
 * at most 16 of them, the others report nothing through _fix) and asks
 * for slices of RESIL_SESS_SLICE_MS, so that the next call registers on
 * the connection the resume puts in place. It also says READY when an fd
 * asked for input has stash bytes: the call must not sleep. _leave,
 * after the real call, undoes _enter (and restores the fds).
 *
 * _fix, after _leave, while resil_sess_attention is not 0: the events (or
 * bits) as the program must see them; returns the count to return (fds
 * with events; for select, bits set). *nap is set when a frozen fd's
 * events were taken back (its old connection reports at once: pause
 * before calling again rather than spin). r0 is the read set the program
 * passed. */
enum { RESIL_SESS_READY = 1, RESIL_SESS_SLICE = 2 };
#define RESIL_SESS_SLICE_MS 10

struct resil_sess_call {
    int what; /* RESIL_SESS_READY | RESIL_SESS_SLICE */
    int nheld, cap, nneg;
    struct resil_sock **held, *local[16];
    nfds_t neg[16];
};
void resil_sess_poll_enter(struct resil_sess_call *c, struct pollfd *fds,
                           nfds_t n);
void resil_sess_poll_leave(struct resil_sess_call *c, struct pollfd *fds);
void resil_sess_select_enter(struct resil_sess_call *c, int n, fd_set *r,
                             fd_set *w, fd_set *e);
void resil_sess_select_leave(struct resil_sess_call *c);
int resil_sess_poll_fix(struct pollfd *fds, nfds_t n, int rc, bool *nap);
int resil_sess_select_fix(int n, fd_set *r, fd_set *w, fd_set *e,
                          const fd_set *r0, int rc, bool *nap);

/* epoll_wait: an EPOLLIN that is only a handshake message is taken back
 * (a one-shot registration armed again); returns the events left (ev
 * compacted). Call after resil_epoll_filter. */
struct resil_epset;
int resil_sess_epoll_fix(struct resil_epset *set, struct epoll_event *ev,
                         int n);

/* The stash under epoll, where no event comes from the kernel for bytes
 * the socket does not hold: an eventfd, readable while the stash holds
 * bytes, stands in every epoll set the program registered the fd in for
 * input, with the same data (and EPOLLET/EPOLLONESHOT) as its
 * registration; closing it when the stash is empty takes it out of them.
 * _kick: after a resume's swap, rmu held. _epoll_ctl: the program's
 * epoll_ctl(epfd, op, fd, ev) succeeded: the stand-in follows it. */
void resil_sess_kick(struct resil_sock *s);
void resil_sess_kick_ctl(struct resil_sess *x, int epfd, int op,
                         const struct epoll_event *ev);
void resil_sess_epoll_ctl(int fd, int epfd, int op,
                          const struct epoll_event *ev);

#endif
