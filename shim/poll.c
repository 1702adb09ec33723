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
    /* under s->mu so that a concurrent swap sees a consistent list */
    pthread_mutex_lock(&s->mu);
    rc = real.epoll_ctl(epfd, op, fd, ev);
    saved = errno;
    if (rc == 0 && resil_sock_epoll(s, epfd, op, ev) != RESIL_OK)
        rwarn("fd %d: cannot track epoll %d registration (out of memory); "
              "a reconnect would lose it", fd, epfd);
    pthread_mutex_unlock(&s->mu);
    resil_sock_unref(s);
    errno = saved;
    return rc;
}
