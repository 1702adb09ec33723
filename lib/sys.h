/* libresil: the one table of real libc functions.
 *
 * Neither lib/ nor shim/ calls an interposed function by name: inside
 * libresil.so such a call would bind to our own exported hook. Every entry
 * starts at a resolver of the same type (shim/init.c) that looks the
 * function up on its first call, dlsym(RTLD_NEXT) for the functions the
 * shim interposes and the global definition for the few it does not
 * (shutdown, getsockname, getpeername), stores it and calls it: a
 * call through the table never tests anything, and a process pays only for
 * the functions it uses. The entries are atomic: a resolver may store one
 * while other threads call through it (both store the same value). The
 * unit tests point every entry at libc instead (tests/unit/sys_libc.c).
 */
#ifndef RESIL_SYS_H
#define RESIL_SYS_H

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct resil_real {
    /* interposed: dlsym(RTLD_NEXT) */
    int (*_Atomic socket)(int, int, int);
    int (*_Atomic connect)(int, const struct sockaddr *, socklen_t);
    int (*_Atomic bind)(int, const struct sockaddr *, socklen_t);
    int (*_Atomic listen)(int, int);
    int (*_Atomic accept)(int, struct sockaddr *, socklen_t *);
    int (*_Atomic accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*_Atomic close)(int);
    /* NULL before glibc 2.34, resolved by resil_real_optional() */
    int (*_Atomic close_range)(unsigned, unsigned, int);
    int (*_Atomic fcntl)(int, int, ...);
    /* libc's fcntl before glibc 2.28 */
    int (*_Atomic fcntl64)(int, int, ...);
    /* NULL before glibc 2.34, resolved by resil_real_optional() */
    void (*_Atomic closefrom)(int);
    int (*_Atomic dup)(int);
    int (*_Atomic dup2)(int, int);
    int (*_Atomic dup3)(int, int, int);
    int (*_Atomic setsockopt)(int, int, int, const void *, socklen_t);
    int (*_Atomic getsockopt)(int, int, int, void *, socklen_t *);
    int (*_Atomic epoll_ctl)(int, int, int, struct epoll_event *);
    int (*_Atomic epoll_wait)(int, struct epoll_event *, int, int);
    int (*_Atomic epoll_pwait)(int, struct epoll_event *, int, int,
                               const sigset_t *);
    /* fails with ENOSYS before glibc 2.35 */
    int (*_Atomic epoll_pwait2)(int, struct epoll_event *, int,
                                const struct timespec *, const sigset_t *);
    int (*_Atomic poll)(struct pollfd *, nfds_t, int);
    int (*_Atomic __poll_chk)(struct pollfd *, nfds_t, int, size_t);
    int (*_Atomic ppoll)(struct pollfd *, nfds_t, const struct timespec *,
                         const sigset_t *);
    int (*_Atomic select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*_Atomic pselect)(int, fd_set *, fd_set *, fd_set *,
                           const struct timespec *, const sigset_t *);
    int (*_Atomic getaddrinfo)(const char *, const char *,
                               const struct addrinfo *, struct addrinfo **);
    struct hostent *(*_Atomic gethostbyname)(const char *);
    struct hostent *(*_Atomic gethostbyname2)(const char *, int);
    int (*_Atomic gethostbyname_r)(const char *, struct hostent *, char *,
                                   size_t, struct hostent **, int *);
    int (*_Atomic gethostbyname2_r)(const char *, int, struct hostent *, char *,
                                    size_t, struct hostent **, int *);
    ssize_t (*_Atomic read)(int, void *, size_t);
    ssize_t (*_Atomic readv)(int, const struct iovec *, int);
    ssize_t (*_Atomic recv)(int, void *, size_t, int);
    ssize_t (*_Atomic recvfrom)(int, void *, size_t, int, struct sockaddr *,
                                socklen_t *);
    ssize_t (*_Atomic recvmsg)(int, struct msghdr *, int);
    ssize_t (*_Atomic __read_chk)(int, void *, size_t, size_t);
    ssize_t (*_Atomic __recv_chk)(int, void *, size_t, size_t, int);
    ssize_t (*_Atomic __recvfrom_chk)(int, void *, size_t, size_t, int,
                                      struct sockaddr *, socklen_t *);
    ssize_t (*_Atomic write)(int, const void *, size_t);
    ssize_t (*_Atomic writev)(int, const struct iovec *, int);
    ssize_t (*_Atomic send)(int, const void *, size_t, int);
    ssize_t (*_Atomic sendto)(int, const void *, size_t, int,
                              const struct sockaddr *, socklen_t);
    ssize_t (*_Atomic sendmsg)(int, const struct msghdr *, int);
    ssize_t (*_Atomic sendfile)(int, int, off_t *, size_t);
    ssize_t (*_Atomic sendfile64)(int, int, off64_t *, size_t);
    FILE *(*_Atomic fdopen)(int, const char *);
    /* not interposed: the global definition (libc's own) */
    int (*_Atomic getsockname)(int, struct sockaddr *, socklen_t *);
    int (*_Atomic getpeername)(int, struct sockaddr *, socklen_t *);
    int (*_Atomic shutdown)(int, int);
    int (*_Atomic ioctl)(int, unsigned long, ...);
};

/* hidden: the hooks call through it rip-relative, with no GOT load */
extern struct resil_real real __attribute__((visibility("hidden")));

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
