/* libresil shim: the shape every hook shares.
 *
 * A hook on a descriptor: if the fd is not managed, or we are inside
 * libresil already, return real.X(...) at once (a tail jump); else call
 * its out-of-line managed part, which calls into lib/. Nothing comes
 * before that test, not even init: the table is empty until resil_init()
 * ran (only the hooks that add entries run it), and every real.X is
 * callable before it is resolved (lib/sys.h). Hooks that need the
 * configuration themselves (socket, the resolver hooks) run RESIL_INIT()
 * first, off their own fast path.
 */
#ifndef RESIL_SHIM_H
#define RESIL_SHIM_H

#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "sys.h"
#include "table.h"

#define RESIL_EXPORT __attribute__((visibility("default")))


/* glibc's fortified entry points (declared only under _FORTIFY_SOURCE) */
ssize_t __read_chk(int, void *, size_t, size_t);
int __poll_chk(struct pollfd *, nfds_t, int, size_t);
ssize_t __recv_chk(int, void *, size_t, size_t, int);
ssize_t __recvfrom_chk(int, void *, size_t, size_t, int, struct sockaddr *,
                       socklen_t *);

extern volatile int resil_ready;

/* Load the configuration and register the fork handlers, once (any
 * thread, any order: constructors of other libraries may call hooks
 * first). */
void resil_init(void);

#define RESIL_INIT()                                                           \
    do {                                                                       \
        if (__builtin_expect(!resil_ready, 0))                                 \
            resil_init();                                                      \
    } while (0)

/* Look up real.close_range and real.closefrom (NULL where libc lacks
 * them), once: their hooks call it before testing them. */
void resil_real_optional(void);

/* The managed part of a hook: out of line, so that the fast path saves no
 * register and ends in a tail jump. */
#define RESIL_SLOW __attribute__((noinline))

/* The test in front of every hook on a descriptor: the program's own call
 * (not libresil's) on a number that has an entry in the table (a managed
 * socket or one of libresil's own descriptors). An unmanaged number costs
 * the table lookup alone. */
static inline bool resil_hooked(int fd)
{
    return __builtin_expect(resil_table_has(fd) && !resil_in_shim, 0);
}

/* Forget fd's entry (the fd is being closed or replaced). */
void resil_shim_drop(int fd);

/* Data-path bookkeeping shared by the io hooks (io.c). */
bool resil_io_blocking(int fd, int flags);

#endif
