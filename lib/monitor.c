#include <errno.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/tcp.h> /* glibc's struct tcp_info is too old; not both */

#include "config.h"
#include "engine.h"
#include "events.h"
#include "health.h"
#include "log.h"
#include "monitor.h"
#include "sys.h"

/* include/net/tcp_states.h; netinet/tcp.h clashes with linux/tcp.h */
#define TCP_ESTABLISHED 1

static struct resil_sock *mon; /* linked by mon_next; engine lock */

void resil_monitor_tune(struct resil_sock *s, int fd)
{
    const struct resil_config *cfg = resil_config_get();
    int on = 1, idle, intvl, cnt = 2;

    if (s->app_keepalive)
        return;
    /* keepalive finds a dead idle path in about fail_timeout: half of it
     * idle, then two unanswered probes */
    idle = cfg->fail_timeout_ms / 2000;
    if (idle < 1)
        idle = 1;
    intvl = (cfg->fail_timeout_ms / 1000 - idle) / cnt;
    if (intvl < 1)
        intvl = 1;
    real.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    real.setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    real.setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    real.setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/* Take *pp off the monitor list, dropping the list's reference. */
static void unlink_sock(struct resil_sock **pp)
{
    struct resil_sock *s = *pp;
    *pp = s->mon_next;
    s->mon_next = NULL;
    s->on_monitor = false;
    resil_sock_unref(s);
}

void resil_monitor_forget(struct resil_sock *s)
{
    if (!s->on_monitor)
        return;
    for (struct resil_sock **pp = &mon; *pp; pp = &(*pp)->mon_next)
        if (*pp == s) {
            unlink_sock(pp);
            return;
        }
}

void resil_monitor_watch(struct resil_sock *s)
{
    bool added = false;

    if (atomic_exchange(&s->dirty, true))
        return;
    resil_engine_lock();
    if (!s->on_monitor && !s->closed) {
        resil_sock_ref(s);
        s->on_monitor = true;
        s->mon_next = mon;
        mon = s;
        added = true;
        /* a process that never raced has no engine yet */
        if (resil_engine_start() != RESIL_OK)
            rwarn("fd %d: no engine thread; dead paths are left to TCP",
                  s->fd);
    }
    resil_engine_unlock();
    /* the engine may sleep in epoll_wait(-1): it must start ticking */
    if (added)
        resil_engine_wake();
}

static void set_user_timeout(int fd, unsigned ms)
{
    real.setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
}

/* Check one written-to socket. Returns false when it needs no more
 * watching. */
static bool check(struct resil_sock *s, uint64_t now)
{
    const struct resil_config *cfg = resil_config_get();
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    int outq = 0;

    if (s->closed)
        return false;
    memset(&ti, 0, sizeof(ti));
    if (real.getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 ||
        ti.tcpi_state != TCP_ESTABLISHED) {
        /* not ours to watch now; the next write puts it back */
        atomic_store(&s->dirty, false);
        return false;
    }
    real.ioctl(s->fd, SIOCOUTQ, &outq);
    if (ti.tcpi_unacked == 0 && outq == 0) {
        atomic_store(&s->dirty, false);
        if (s->user_timeout_armed) {
            set_user_timeout(s->fd, 0);
            s->user_timeout_armed = false;
        }
        return false;
    }
    /* A zero window is not a failure: the peer's ACKs to window probes keep
     * last_ack_recv fresh and nothing is unacknowledged. */
    if (ti.tcpi_unacked > 0 &&
        ti.tcpi_last_ack_recv >= (unsigned)cfg->stall_ms) {
        if (!s->user_timeout_armed && !s->app_user_timeout) {
            char a[RESIL_ADDRSTRLEN];
            resil_ip_format(&s->cur_ip, s->peer_port, a, sizeof(a));
            /* The kernel aborts the connection with ETIMEDOUT at the
             * user timeout, counted from the first unanswered segment;
             * since 4.19 it clamps the RTO timer to that deadline. */
            set_user_timeout(s->fd, (unsigned)cfg->fail_timeout_ms);
            s->user_timeout_armed = true;
            resil_health_fail(&s->cur_ip, now);
            rinfo("fd %d: path to %s stalled (%u bytes unacked, no ACK for "
                  "%u ms); failing within %d ms", s->fd, a, ti.tcpi_unacked,
                  ti.tcpi_last_ack_recv, cfg->fail_timeout_ms);
            resil_event("path_stall", s->fd,
                        "\"peer\":\"%s\",\"unacked\":%u,\"last_ack_ms\":%u",
                        a, ti.tcpi_unacked, ti.tcpi_last_ack_recv);
        }
    } else if (s->user_timeout_armed) {
        set_user_timeout(s->fd, 0);
        s->user_timeout_armed = false;
    }
    return true;
}

uint64_t resil_monitor_tick(uint64_t now)
{
    if (mon == NULL)
        return UINT64_MAX;
    for (struct resil_sock **pp = &mon; *pp;) {
        struct resil_sock *s = *pp;
        if (check(s, now))
            pp = &s->mon_next;
        else
            unlink_sock(pp);
    }
    return mon ? now + (uint64_t)resil_config_get()->stall_ms * RESIL_MS / 4
               : UINT64_MAX;
}

void resil_monitor_atfork_child(void)
{
    for (struct resil_sock *s = mon, *nx; s; s = nx) {
        nx = s->mon_next;
        s->on_monitor = false;
        s->mon_next = NULL;
        atomic_store(&s->dirty, false);
    }
    mon = NULL;
}

bool resil_monitor_idle(void)
{
    return mon == NULL;
}
