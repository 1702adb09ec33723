/* Hooks: readiness. epoll_ctl is tracked so that a socket swapped onto a
 * managed fd goes back into every epoll set the program put the fd in
 * (dup2/dup3 silently drop the registration: pitfalls 2.1). */
#include <errno.h>

#include "log.h"
#include "shim.h"

RESIL_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    struct resil_sock *s;
    int rc, saved;

    RESIL_INIT();
    if (resil_in_shim || !resil_table_has(fd))
        return real.epoll_ctl(epfd, op, fd, ev);
    s = resil_table_get(fd);
    if (s == NULL)
        return real.epoll_ctl(epfd, op, fd, ev);
    /* the real call and the record under one lock, so that a concurrent
     * swap (which holds it across DEL, dup3, ADD) sees every registration */
    resil_sock_ep_lock(s);
    rc = real.epoll_ctl(epfd, op, fd, ev);
    saved = errno;
    if (rc == 0 && resil_sock_epoll(s, epfd, op, ev) != RESIL_OK)
        rwarn("fd %d: cannot track epoll %d registration (out of memory); "
              "a reconnect would lose it", fd, epfd);
    resil_sock_ep_unlock(s);
    resil_sock_unref(s);
    errno = saved;
    return rc;
}
