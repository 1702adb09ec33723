#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "sys.h"

struct resil_sys resil_sys;
__thread int resil_in_shim __attribute__((tls_model("initial-exec")));

void resil_sys_use_libc(void)
{
    resil_sys.socket = socket;
    resil_sys.connect = connect;
    resil_sys.bind = bind;
    resil_sys.close = close;
    resil_sys.setsockopt = setsockopt;
    resil_sys.getsockopt = getsockopt;
    resil_sys.getsockname = getsockname;
    resil_sys.getpeername = getpeername;
    resil_sys.listen = listen;
    resil_sys.shutdown = shutdown;
    resil_sys.fcntl = fcntl;
    resil_sys.ioctl = ioctl;
    resil_sys.dup = dup;
    resil_sys.dup3 = dup3;
    resil_sys.poll = poll;
    resil_sys.epoll_ctl = epoll_ctl;
    resil_sys.epoll_wait = epoll_wait;
    resil_sys.read = read;
    resil_sys.write = write;
    resil_sys.recvfrom = recvfrom;
    resil_sys.sendmsg = sendmsg;
}
