/* libresil shim: the real-function table and the shape every hook shares.
 *
 * A hook: make sure init ran; if we are inside libresil already, or the fd
 * is not managed, return real.X(...) at once; else call into lib/.
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

/* Resolve the real functions and load the configuration, once (any thread,
 * any order: constructors of other libraries may call hooks first). */
void resil_init(void);

#define RESIL_INIT()                                                           \
    do {                                                                       \
        if (__builtin_expect(!resil_ready, 0))                                 \
            resil_init();                                                      \
    } while (0)

/* Forget fd's entry (the fd is being closed or replaced). */
void resil_shim_drop(int fd);

/* Data-path bookkeeping shared by the io hooks (io.c). */
bool resil_io_blocking(int fd, int flags);

#endif
