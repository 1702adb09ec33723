/* The real-function table (resolved lazily, one function at a time) and
 * the configuration (loaded once, at start-up when the environment asks
 * for libresil, else when the first hook needs it). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "shim.h"

volatile int resil_ready;
static struct resil_config config;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* ---- the real functions ----
 * Every entry of `real` starts at a resolver of its own type: its first
 * call looks the function up, stores it in the table and calls it, later
 * calls go straight to it. So the hooks' fast path calls through the table
 * with no test, nothing is resolved before a hook needs it (a process that
 * calls five of the functions pays five look-ups, at any time, from any
 * thread: another library's constructor may call a hook before ours ran),
 * and two threads resolving one function at once store the same value.
 * The price: dlsym is not async-signal-safe, and a signal handler that
 * makes the process's first call of a function (a self-pipe write) runs
 * it there: it waits while another thread holds the loader's lock (in
 * dlopen or dlsym), and is not safe if the code it interrupted was in the
 * loader itself. */

static void *found(void *p, const char *name)
{
    if (p == NULL) {
        /* write is our own hook in here, and may be what failed */
        char msg[128];
        int n = snprintf(msg, sizeof(msg),
                         "libresil: cannot resolve %s; aborting\n", name);
        if (n > 0)
            (void)!syscall(SYS_write, 2, msg,
                           (size_t)n < sizeof(msg) ? (size_t)n
                                                   : sizeof(msg) - 1);
        abort();
    }
    return p;
}

/* The next definition after ours (libc's, or that of a preload after us:
 * preloads chain). Our own hook instead would recurse for ever: abort. */
static void *next_of(const char *name, void *self)
{
    int saved = errno;
    void *p = dlsym(RTLD_NEXT, name);
    errno = saved;
    return found(p == self ? NULL : p, name);
}

/* A function the shim does not interpose: its global definition, as a
 * plain call from libresil.so would bind it. */
static void *global_of(const char *name)
{
    int saved = errno;
    void *p = dlsym(RTLD_DEFAULT, name);
    errno = saved;
    return found(p, name);
}

/* Resolve real.f, store it, and give the function to call. */
#define RESOLVE_NOW(f) (real.f = next_of(#f, (void *)f))
#define RESOLVE_GLOBAL_NOW(f) (real.f = global_of(#f))
#ifdef __SANITIZE_THREAD__
static void resolve_all_once(void);
/* an entry resolve_all() forgot would call its lazy stub for ever: it is
 * resolved here then (tests/drivers: every hook runs under TSan) */
#define RESOLVE(f)                                                             \
    (resolve_all_once(), real.f == lazy_##f ? RESOLVE_NOW(f) : real.f)
#define RESOLVE_GLOBAL(f)                                                      \
    (resolve_all_once(),                                                       \
     real.f == lazy_##f ? RESOLVE_GLOBAL_NOW(f) : real.f)
#else
#define RESOLVE(f) RESOLVE_NOW(f)
#define RESOLVE_GLOBAL(f) RESOLVE_GLOBAL_NOW(f)
#endif

static int lazy_socket(int domain, int type, int protocol)
{
    return RESOLVE(socket)(domain, type, protocol);
}

static int lazy_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    return RESOLVE(connect)(fd, sa, len);
}

static int lazy_bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    return RESOLVE(bind)(fd, sa, len);
}

static int lazy_listen(int fd, int backlog)
{
    return RESOLVE(listen)(fd, backlog);
}

static int lazy_accept(int fd, struct sockaddr *sa, socklen_t *len)
{
    return RESOLVE(accept)(fd, sa, len);
}

static int lazy_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    return RESOLVE(accept4)(fd, sa, len, flags);
}

static int lazy_close(int fd)
{
    return RESOLVE(close)(fd);
}

/* fcntl's argument, when there is one, is a pointer or an int: read as a
 * pointer, as glibc's own fcntl does */
static int lazy_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    return RESOLVE(fcntl)(fd, cmd, arg);
}

static int lazy_fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;
    int saved = errno;
    void *p = dlsym(RTLD_NEXT, "fcntl64");

    errno = saved;
    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    /* before glibc 2.28 there is only fcntl (64-bit offsets already) */
    if (p == NULL)
        p = real.fcntl;
    else
        found(p == (void *)fcntl64 ? NULL : p, "fcntl64");
    return (real.fcntl64 = p)(fd, cmd, arg);
}

static int lazy_dup(int fd)
{
    return RESOLVE(dup)(fd);
}

static int lazy_dup2(int oldfd, int newfd)
{
    return RESOLVE(dup2)(oldfd, newfd);
}

static int lazy_dup3(int oldfd, int newfd, int flags)
{
    return RESOLVE(dup3)(oldfd, newfd, flags);
}

static int lazy_setsockopt(int fd, int level, int name, const void *val,
                           socklen_t len)
{
    return RESOLVE(setsockopt)(fd, level, name, val, len);
}

static int lazy_getsockopt(int fd, int level, int name, void *val,
                           socklen_t *len)
{
    return RESOLVE(getsockopt)(fd, level, name, val, len);
}

static int lazy_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    return RESOLVE(epoll_ctl)(epfd, op, fd, ev);
}

static int lazy_epoll_wait(int epfd, struct epoll_event *ev, int max,
                           int timeout)
{
    return RESOLVE(epoll_wait)(epfd, ev, max, timeout);
}

static int lazy_epoll_pwait(int epfd, struct epoll_event *ev, int max,
                            int timeout, const sigset_t *mask)
{
    return RESOLVE(epoll_pwait)(epfd, ev, max, timeout, mask);
}

/* before glibc 2.35: what the kernel says of a system call it lacks */
static int nosys_epoll_pwait2(int epfd, struct epoll_event *ev, int max,
                              const struct timespec *ts, const sigset_t *mask)
{
    (void)epfd, (void)ev, (void)max, (void)ts, (void)mask;
    errno = ENOSYS;
    return -1;
}

static int lazy_epoll_pwait2(int epfd, struct epoll_event *ev, int max,
                             const struct timespec *ts, const sigset_t *mask)
{
    int saved = errno;
    void *p = dlsym(RTLD_NEXT, "epoll_pwait2");

    errno = saved;
    if (p == NULL)
        p = (void *)nosys_epoll_pwait2;
    else
        found(p == (void *)epoll_pwait2 ? NULL : p, "epoll_pwait2");
    return (real.epoll_pwait2 = p)(epfd, ev, max, ts, mask);
}

static int lazy_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    return RESOLVE(poll)(fds, n, timeout);
}

static int lazy___poll_chk(struct pollfd *fds, nfds_t n, int timeout,
                           size_t fdslen)
{
    return RESOLVE(__poll_chk)(fds, n, timeout, fdslen);
}

static int lazy_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                      const sigset_t *mask)
{
    return RESOLVE(ppoll)(fds, n, ts, mask);
}

static int lazy_select(int n, fd_set *r, fd_set *w, fd_set *e,
                       struct timeval *tv)
{
    return RESOLVE(select)(n, r, w, e, tv);
}

static int lazy_pselect(int n, fd_set *r, fd_set *w, fd_set *e,
                        const struct timespec *ts, const sigset_t *mask)
{
    return RESOLVE(pselect)(n, r, w, e, ts, mask);
}

static int lazy_getaddrinfo(const char *node, const char *service,
                            const struct addrinfo *hints, struct addrinfo **res)
{
    return RESOLVE(getaddrinfo)(node, service, hints, res);
}

static struct hostent *lazy_gethostbyname(const char *name)
{
    return RESOLVE(gethostbyname)(name);
}

static struct hostent *lazy_gethostbyname2(const char *name, int af)
{
    return RESOLVE(gethostbyname2)(name, af);
}

static int lazy_gethostbyname_r(const char *name, struct hostent *ret,
                                char *buf, size_t len, struct hostent **result,
                                int *h_errnop)
{
    return RESOLVE(gethostbyname_r)(name, ret, buf, len, result, h_errnop);
}

static int lazy_gethostbyname2_r(const char *name, int af, struct hostent *ret,
                                 char *buf, size_t len, struct hostent **result,
                                 int *h_errnop)
{
    return RESOLVE(gethostbyname2_r)(name, af, ret, buf, len, result, h_errnop);
}

static ssize_t lazy_read(int fd, void *buf, size_t n)
{
    return RESOLVE(read)(fd, buf, n);
}

static ssize_t lazy_readv(int fd, const struct iovec *iov, int cnt)
{
    return RESOLVE(readv)(fd, iov, cnt);
}

static ssize_t lazy_recv(int fd, void *buf, size_t n, int flags)
{
    return RESOLVE(recv)(fd, buf, n, flags);
}

static ssize_t lazy_recvfrom(int fd, void *buf, size_t n, int flags,
                             struct sockaddr *sa, socklen_t *len)
{
    return RESOLVE(recvfrom)(fd, buf, n, flags, sa, len);
}

static ssize_t lazy_recvmsg(int fd, struct msghdr *msg, int flags)
{
    return RESOLVE(recvmsg)(fd, msg, flags);
}

static ssize_t lazy___read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    return RESOLVE(__read_chk)(fd, buf, n, buflen);
}

static ssize_t lazy___recv_chk(int fd, void *buf, size_t n, size_t buflen,
                               int flags)
{
    return RESOLVE(__recv_chk)(fd, buf, n, buflen, flags);
}

static ssize_t lazy___recvfrom_chk(int fd, void *buf, size_t n, size_t buflen,
                                   int flags, struct sockaddr *sa,
                                   socklen_t *len)
{
    return RESOLVE(__recvfrom_chk)(fd, buf, n, buflen, flags, sa, len);
}

static ssize_t lazy_write(int fd, const void *buf, size_t n)
{
    return RESOLVE(write)(fd, buf, n);
}

static ssize_t lazy_writev(int fd, const struct iovec *iov, int cnt)
{
    return RESOLVE(writev)(fd, iov, cnt);
}

static ssize_t lazy_send(int fd, const void *buf, size_t n, int flags)
{
    return RESOLVE(send)(fd, buf, n, flags);
}

static ssize_t lazy_sendto(int fd, const void *buf, size_t n, int flags,
                           const struct sockaddr *sa, socklen_t len)
{
    return RESOLVE(sendto)(fd, buf, n, flags, sa, len);
}

static ssize_t lazy_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return RESOLVE(sendmsg)(fd, msg, flags);
}

static ssize_t lazy_sendfile(int out, int in, off_t *off, size_t n)
{
    return RESOLVE(sendfile)(out, in, off, n);
}

static ssize_t lazy_sendfile64(int out, int in, off64_t *off, size_t n)
{
    return RESOLVE(sendfile64)(out, in, off, n);
}

static FILE *lazy_fdopen(int fd, const char *mode)
{
    return RESOLVE(fdopen)(fd, mode);
}

static int lazy_getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
    return RESOLVE_GLOBAL(getsockname)(fd, sa, len);
}

static int lazy_getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
    return RESOLVE_GLOBAL(getpeername)(fd, sa, len);
}

static int lazy_shutdown(int fd, int how)
{
    return RESOLVE_GLOBAL(shutdown)(fd, how);
}

static int lazy_ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    return RESOLVE(ioctl)(fd, req, arg);
}

struct resil_real real = {
    .socket = lazy_socket,
    .connect = lazy_connect,
    .bind = lazy_bind,
    .listen = lazy_listen,
    .accept = lazy_accept,
    .accept4 = lazy_accept4,
    .close = lazy_close,
    .fcntl = lazy_fcntl,
    .fcntl64 = lazy_fcntl64,
    .dup = lazy_dup,
    .dup2 = lazy_dup2,
    .dup3 = lazy_dup3,
    .setsockopt = lazy_setsockopt,
    .getsockopt = lazy_getsockopt,
    .epoll_ctl = lazy_epoll_ctl,
    .epoll_wait = lazy_epoll_wait,
    .epoll_pwait = lazy_epoll_pwait,
    .epoll_pwait2 = lazy_epoll_pwait2,
    .poll = lazy_poll,
    .__poll_chk = lazy___poll_chk,
    .ppoll = lazy_ppoll,
    .select = lazy_select,
    .pselect = lazy_pselect,
    .getaddrinfo = lazy_getaddrinfo,
    .gethostbyname = lazy_gethostbyname,
    .gethostbyname2 = lazy_gethostbyname2,
    .gethostbyname_r = lazy_gethostbyname_r,
    .gethostbyname2_r = lazy_gethostbyname2_r,
    .read = lazy_read,
    .readv = lazy_readv,
    .recv = lazy_recv,
    .recvfrom = lazy_recvfrom,
    .recvmsg = lazy_recvmsg,
    .__read_chk = lazy___read_chk,
    .__recv_chk = lazy___recv_chk,
    .__recvfrom_chk = lazy___recvfrom_chk,
    .write = lazy_write,
    .writev = lazy_writev,
    .send = lazy_send,
    .sendto = lazy_sendto,
    .sendmsg = lazy_sendmsg,
    .sendfile = lazy_sendfile,
    .sendfile64 = lazy_sendfile64,
    .fdopen = lazy_fdopen,
    .getsockname = lazy_getsockname,
    .getpeername = lazy_getpeername,
    .shutdown = lazy_shutdown,
    .ioctl = lazy_ioctl,
};

#ifdef __SANITIZE_THREAD__
/* Under ThreadSanitizer only: every entry resolved before main(). GCC
 * calls through an _Atomic function pointer with a plain load (checked:
 * __tsan_read8, not __tsan_atomic64_load), so TSan would report each
 * first call's store against another thread's call. On x86-64 that load
 * is one aligned mov and cannot tear (the same reasoning as ld.so's lazy
 * binding of the GOT), but TSan cannot know it; resolving the whole table
 * at the first call (the constructor, or an earlier library's constructor
 * calling a hook), once, keeps its reports to races of libresil's own
 * logic. */
static void resolve_all(void)
{
    (void)RESOLVE_NOW(socket);
    (void)RESOLVE_NOW(connect);
    (void)RESOLVE_NOW(bind);
    (void)RESOLVE_NOW(listen);
    (void)RESOLVE_NOW(accept);
    (void)RESOLVE_NOW(accept4);
    (void)RESOLVE_NOW(close);
    (void)RESOLVE_NOW(fcntl);
    (void)RESOLVE_NOW(fcntl64);
    (void)RESOLVE_NOW(dup);
    (void)RESOLVE_NOW(dup2);
    (void)RESOLVE_NOW(dup3);
    (void)RESOLVE_NOW(setsockopt);
    (void)RESOLVE_NOW(getsockopt);
    (void)RESOLVE_NOW(epoll_ctl);
    (void)RESOLVE_NOW(epoll_wait);
    (void)RESOLVE_NOW(epoll_pwait);
    (void)RESOLVE_NOW(epoll_pwait2);
    (void)RESOLVE_NOW(poll);
    (void)RESOLVE_NOW(__poll_chk);
    (void)RESOLVE_NOW(ppoll);
    (void)RESOLVE_NOW(select);
    (void)RESOLVE_NOW(pselect);
    (void)RESOLVE_NOW(getaddrinfo);
    (void)RESOLVE_NOW(gethostbyname);
    (void)RESOLVE_NOW(gethostbyname2);
    (void)RESOLVE_NOW(gethostbyname_r);
    (void)RESOLVE_NOW(gethostbyname2_r);
    (void)RESOLVE_NOW(read);
    (void)RESOLVE_NOW(readv);
    (void)RESOLVE_NOW(recv);
    (void)RESOLVE_NOW(recvfrom);
    (void)RESOLVE_NOW(recvmsg);
    (void)RESOLVE_NOW(__read_chk);
    (void)RESOLVE_NOW(__recv_chk);
    (void)RESOLVE_NOW(__recvfrom_chk);
    (void)RESOLVE_NOW(write);
    (void)RESOLVE_NOW(writev);
    (void)RESOLVE_NOW(send);
    (void)RESOLVE_NOW(sendto);
    (void)RESOLVE_NOW(sendmsg);
    (void)RESOLVE_NOW(sendfile);
    (void)RESOLVE_NOW(sendfile64);
    (void)RESOLVE_GLOBAL_NOW(getsockname);
    (void)RESOLVE_GLOBAL_NOW(getpeername);
    (void)RESOLVE_GLOBAL_NOW(shutdown);
    (void)RESOLVE_NOW(ioctl);
    (void)RESOLVE_NOW(fdopen);
}

static void resolve_all_once(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, resolve_all);
}
#endif

/* close_range and closefrom, NULL where libc lacks them: their hooks test
 * them, so they are looked up before the test, once. */
static pthread_once_t optional_once = PTHREAD_ONCE_INIT;

static void optional_lookup(void)
{
    int saved = errno;
    void *p;

    if ((p = dlsym(RTLD_NEXT, "close_range")) != (void *)close_range)
        real.close_range = p;
    if ((p = dlsym(RTLD_NEXT, "closefrom")) != (void *)closefrom)
        real.closefrom = p;
    errno = saved;
}

void resil_real_optional(void)
{
    pthread_once(&optional_once, optional_lookup);
}

/* ---- the configuration ---- */

static void config_err(const char *where, const char *msg)
{
    rwarn("config %s: %s", where, msg);
}

/* Set by the constructor when the environment had no RESIL_ variable at
 * start-up: there is nothing in it to read later. __atomic: a thread an
 * earlier constructor started may be in a hook meanwhile. */
static bool env_empty;

/* secure_getenv called, not its address taken: a call binds lazily, an
 * address is a symbol look-up at every start */
static char *env_get(const char *name)
{
    return secure_getenv(name);
}

static void init_once(void)
{
    resil_in_shim++;
    /* setuid: ignore the environment (secure_getenv returns NULL) */
    resil_config_defaults(&config);
    if (!__atomic_load_n(&env_empty, __ATOMIC_RELAXED)) {
        const char *conf = secure_getenv("RESIL_CONF_FILE");
        const char *lvl = secure_getenv("RESIL_LOG_LEVEL");
        if (lvl) {
            /* so that config file problems are reported at the wanted
             * level */
            char err[128];
            char line[64];
            struct resil_config tmp;
            resil_config_defaults(&tmp);
            snprintf(line, sizeof(line), "log_level %.40s", lvl);
            if (resil_config_line(&tmp, line, err, sizeof(err)) == RESIL_OK)
                resil_log_level = tmp.log_level;
        }
        if (conf && conf[0] &&
            resil_config_file(&config, conf, config_err) == RESIL_ESYS)
            rwarn("config %s: cannot read: %s; using defaults", conf,
                  strerror(errno));
        resil_config_env(&config, env_get, config_err);
    }
    resil_log_level = config.log_level;
    resil_log_open(config.log_file);
    resil_events_open(config.events_file);
    resil_config_set(&config);
    resil_health_set_ttl((uint64_t)config.health_ttl_ms * RESIL_MS);
    /* before the first entry or name is recorded: the locks the handlers
     * take guard state that only exists after init, so a fork before it
     * has nothing to protect */
    pthread_atfork(resil_engine_atfork_prepare, resil_engine_atfork_parent,
                   resil_engine_atfork_child);
    rdebug("loaded: race=%d attempt_delay_ms=%d fail_timeout_ms=%d "
           "alternate groups=%d", config.race, config.attempt_delay_ms,
           config.fail_timeout_ms, config.n_alt);
    resil_ready = 1;
    resil_in_shim--;
}

void resil_init(void)
{
    int saved = errno;
    pthread_once(&once, init_once);
    errno = saved;
}

/* Configured through the environment (resil-run, a systemd drop-in): load
 * it now, as the process started, since the program may clear its
 * environment, chroot or drop privileges before its first connection.
 * Otherwise there is nothing to read, and nothing to do until a hook
 * needs the configuration: starting a process costs no more than mapping
 * the library. */
__attribute__((constructor)) static void resil_ctor(int argc, char **argv,
                                                    char **envp)
{
    /* glibc hands constructors main's arguments: the environment without
     * a relocation for `environ` (a symbol look-up at every start) */
    (void)argc, (void)argv;
#ifdef __SANITIZE_THREAD__
    resolve_all_once();
#endif
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, "RESIL_", 6) == 0) {
            resil_init();
            return;
        }
    __atomic_store_n(&env_empty, true, __ATOMIC_RELAXED);
}
