/* libresil: the program's data calls on a session socket (session_io.c). */
#ifndef RESIL_SESSION_IO_H
#define RESIL_SESSION_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "table.h"

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
    ssize_t (*call)(struct resil_io *io); /* the real call */
    void *args;                /* the hook's own arguments, for call */
};

/* Make the call on session socket s (s->sess set): the handshake still
 * due, the stash of a resume, the real call, the counting, the waits
 * while a resume runs. Returns what the hook returns (errno set). No lock
 * held. */
ssize_t resil_sess_io(struct resil_sock *s, struct resil_io *io);

#endif
