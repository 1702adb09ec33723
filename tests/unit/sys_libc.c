/* The unit tests run lib/ against libc itself (no hooks in this process). */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "sys.h"

ssize_t __read_chk(int, void *, size_t, size_t);
int __poll_chk(struct pollfd *, nfds_t, int, size_t);
ssize_t __recv_chk(int, void *, size_t, size_t, int);
ssize_t __recvfrom_chk(int, void *, size_t, size_t, int, struct sockaddr *,
                       socklen_t *);

void resil_sys_use_libc(void)
{
    real = (struct resil_real){
        .socket = socket,
        .connect = connect,
        .bind = bind,
        .listen = listen,
        .accept = accept,
        .accept4 = accept4,
        .close = close,
        .close_range = close_range,
        .closefrom = closefrom,
        .fcntl64 = fcntl64,
        .dup2 = dup2,
        .dup3 = dup3,
        .setsockopt = setsockopt,
        .getsockopt = getsockopt,
        .epoll_ctl = epoll_ctl,
        .epoll_wait = epoll_wait,
        .epoll_pwait = epoll_pwait,
        .epoll_pwait2 = epoll_pwait2,
        .poll = poll,
        .__poll_chk = __poll_chk,
        .ppoll = ppoll,
        .select = select,
        .pselect = pselect,
        .getaddrinfo = getaddrinfo,
        .gethostbyname = gethostbyname,
        .gethostbyname2 = gethostbyname2,
        .gethostbyname_r = gethostbyname_r,
        .gethostbyname2_r = gethostbyname2_r,
        .read = read,
        .readv = readv,
        .recv = recv,
        .recvfrom = recvfrom,
        .recvmsg = recvmsg,
        .__read_chk = __read_chk,
        .__recv_chk = __recv_chk,
        .__recvfrom_chk = __recvfrom_chk,
        .write = write,
        .writev = writev,
        .send = send,
        .sendto = sendto,
        .sendmsg = sendmsg,
        .sendfile = sendfile,
        .sendfile64 = sendfile64,
        .fdopen = fdopen,
        .getsockname = getsockname,
        .getpeername = getpeername,
        .shutdown = shutdown,
        .fcntl = fcntl,
        .ioctl = ioctl,
        .dup = dup,
    };
}
