/* libresil: the one table of real libc functions.
 *
 * Neither lib/ nor shim/ calls an interposed function by name: inside
 * libresil.so such a call would bind to our own exported hook. The shim
 * fills this table once, with dlsym(RTLD_NEXT) for every function it
 * interposes and the plain libc symbol for the few it does not (ioctl,
 * shutdown, getsockname, getpeername); the unit tests point
 * every entry at libc instead (tests/unit/sys_libc.c).
 */
#ifndef RESIL_SYS_H
#define RESIL_SYS_H

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct resil_real {
    /* interposed: dlsym(RTLD_NEXT) */
    int (*socket)(int, int, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*close)(int);
    int (*close_range)(unsigned, unsigned, int); /* NULL before glibc 2.34 */
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);               /* NULL before glibc 2.28 */
    void (*closefrom)(int);                      /* NULL before glibc 2.34 */
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    int (*epoll_pwait2)(int, struct epoll_event *, int,
                        const struct timespec *, const sigset_t *); /* NULL
                        before glibc 2.35 */
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*__poll_chk)(struct pollfd *, nfds_t, int, size_t);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *,
                 const sigset_t *);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                   const sigset_t *);
    int (*getaddrinfo)(const char *, const char *, const struct addrinfo *,
                       struct addrinfo **);
    struct hostent *(*gethostbyname)(const char *);
    struct hostent *(*gethostbyname2)(const char *, int);
    int (*gethostbyname_r)(const char *, struct hostent *, char *, size_t,
                           struct hostent **, int *);
    int (*gethostbyname2_r)(const char *, int, struct hostent *, char *,
                            size_t, struct hostent **, int *);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *,
                        socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    ssize_t (*__read_chk)(int, void *, size_t, size_t);
    ssize_t (*__recv_chk)(int, void *, size_t, size_t, int);
    ssize_t (*__recvfrom_chk)(int, void *, size_t, size_t, int,
                              struct sockaddr *, socklen_t *);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *,
                      socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*sendfile64)(int, int, off64_t *, size_t);
    /* not interposed: libc's own */
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*shutdown)(int, int);
    int (*ioctl)(int, unsigned long, ...);
};

extern struct resil_real real;

/* Non-zero while this thread runs libresil code (or is the engine thread):
 * every hook then goes straight to the real function. */
extern __thread int resil_in_shim __attribute__((tls_model("initial-exec")));

/* Point every entry at the libc symbol of the same name (unit tests only:
 * inside libresil.so those names are our own hooks). */
void resil_sys_use_libc(void);

/* Keep errno across the rest of the enclosing block: for bookkeeping that
 * must not change what the program sees in errno. */
static inline void resil_errno_restore_(const int *saved)
{
    errno = *saved;
}
#define RESIL_KEEP_ERRNO()                                                     \
    const int resil_saved_errno_                                               \
        __attribute__((cleanup(resil_errno_restore_), unused)) = errno

#endif
