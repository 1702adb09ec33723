/* libresil: the program's data calls on a session socket (session_io.c). */
#ifndef RESIL_SESSION_IO_H
#define RESIL_SESSION_IO_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "session.h"
#include "table.h"

/* fd's socket with a reference taken, when it has a session state; else
 * NULL. */
struct resil_sock *resil_sess_sock(int fd);

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

#endif
