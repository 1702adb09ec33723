/* libresil: the table of real libc functions.
 *
 * lib/ never calls a socket function by name: inside libresil.so such a call
 * would bind to our own exported hook. The shim fills this table with
 * dlsym(RTLD_NEXT) results before any lib/ code runs; unit tests call
 * resil_sys_use_libc() instead.
 */
#ifndef RESIL_SYS_H
#define RESIL_SYS_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

struct resil_sys {
    int (*socket)(int, int, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*close)(int);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*listen)(int, int);
    int (*shutdown)(int, int);
    int (*fcntl)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*dup)(int);
    int (*dup3)(int, int, int);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *,
                        socklen_t *);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
};

extern struct resil_sys resil_sys;

/* Non-zero while this thread runs libresil code (or is the engine thread):
 * every hook then goes straight to the real function. */
extern __thread int resil_in_shim __attribute__((tls_model("initial-exec")));

/* Point every entry at the libc symbol of the same name (unit tests). */
void resil_sys_use_libc(void);

#endif
