/* libresil: the dead-path monitor.
 *
 * Busy connections: a write marks its socket (resil_monitor_mark: an atomic
 * load, and on the clean->dirty transition one exchange and one CAS onto a
 * lock-free list; no lock, no system call). The engine thread looks at the
 * marked sockets on a coarse tick of stall_ms/4 while there are any, and
 * for a grace period after the last one, so request/response traffic never
 * needs to wake it; only a mark that finds the monitor idle wakes (or
 * starts) the engine. A socket with bytes unacknowledged and no ACK for
 * stall_ms, counted from when the bytes went out (the later of the last
 * ACK and the last segment sent, read when the monitor first sees them in
 * flight or sees progress: never earlier than the truth),
 * has a stalled path: TCP_USER_TIMEOUT is armed so that the program gets
 * ETIMEDOUT within fail_timeout_ms instead of TCP's minutes, and the
 * address is marked down in the health cache.
 *
 * Idle and receive-only connections: keepalive, sized to fail_timeout_ms
 * for every knob the program did not set itself (resil_monitor_tune).
 * When keepalive (or any timeout) kills one, the data or readiness call
 * that meets the error marks the address down (resil_monitor_failed,
 * resil_monitor_pollerr), so the program's reconnect avoids it.
 *
 * Who touches what: resil_sock.mon.dirty any thread (atomic);
 * mon.mark_next the pushing thread until its CAS, then the engine;
 * mon.next, mon.listed, mon.out_since the engine thread under the
 * monitor's own lock; mon.ut_armed, mon.failed and app_opts under s->mu.
 * The monitor never takes the engine lock; it takes s->mu for each check,
 * so that it never touches the fd number of a socket the program closed,
 * and writes its log lines and events only after releasing it (a close()
 * waits on s->mu).
 */
#ifndef RESIL_MONITOR_H
#define RESIL_MONITOR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "table.h"

/* Timing knobs the program set itself (resil_sock.app_opts): libresil
 * sizes only the others. */
#define RESIL_APP_KEEPALIVE 0x01     /* SO_KEEPALIVE set to 1 */
#define RESIL_APP_KEEPALIVE_OFF 0x02 /* SO_KEEPALIVE set to 0 */
#define RESIL_APP_KEEPIDLE 0x04
#define RESIL_APP_KEEPINTVL 0x08
#define RESIL_APP_KEEPCNT 0x10
#define RESIL_APP_USER_TIMEOUT 0x20

/* Slow half of resil_monitor_mark: queue s for the engine. */
void resil_monitor_push(struct resil_sock *s);

/* The program wrote to s (connected): have the monitor look at it. Any
 * thread, no lock held. */
static inline void resil_monitor_mark(struct resil_sock *s)
{
    if (!atomic_load_explicit(&s->mon.dirty, memory_order_relaxed) &&
        !atomic_exchange(&s->mon.dirty, true))
        resil_monitor_push(s);
}

/* Bytes move on s where no hook sees them (stdio on the socket): no write
 * marks it, so the monitor watches it on every tick for as long as it is
 * the program's connection. Any thread, no lock held. */
void resil_monitor_unseen(struct resil_sock *s);

/* Engine thread, with or without the engine lock: take the new marks and,
 * when due, check the marked sockets. Returns the next deadline
 * (UINT64_MAX when the monitor is idle). */
uint64_t resil_monitor_tick(uint64_t now_ns);

/* Bytes are in flight on a socket whose TCP_INFO says: acked bytes
 * acknowledged in all (tcpi_bytes_acked), the last ACK ack_age_ms ago and
 * the last segment sent sent_age_ms ago. Dates m->out_since, the start of
 * this episode in flight, which a stall counts from: kept while no byte is
 * acknowledged; else (first seen, or progress since) the later of the last
 * ACK and the last segment sent, never earlier than the truth (a
 * retransmission makes it later, by one RTO at most). A reply's ACK
 * between two ticks must not leave it at the request before: the next
 * write would be found stalled early. Engine thread, mon_mu held. */
void resil_monitor_in_flight(struct resil_sock_mon *m, uint64_t acked,
                             uint32_t ack_age_ms, uint32_t sent_age_ms,
                             uint64_t now);

/* Apply the dead-path detection settings (keepalive) that the program did
 * not choose itself to fd, a socket of s. s->mu held. */
void resil_monitor_tune(struct resil_sock *s, int fd);

/* True when no socket is watched; the monitor then goes idle (the next
 * mark wakes the engine). Engine lock held. */
bool resil_monitor_idle(void);

/* The program's setsockopt(level, name, val, len) on s succeeded: note
 * which timing knobs it chose; on a connected socket, size the others
 * again. s->mu held. */
void resil_monitor_app_opt(struct resil_sock *s, int level, int name,
                           const void *val, socklen_t len);

/* A data call on s failed with err: a timeout (keepalive, user timeout,
 * retransmissions) or an unreachable error marks the address down. No
 * lock held. */
void resil_monitor_failed(struct resil_sock *s, int err);

/* A readiness call reported POLLERR on s: when the kernel shows that the
 * connection died of a timeout, mark the address down (the error itself
 * is left for the program). No lock held. */
void resil_monitor_pollerr(struct resil_sock *s);

/* The child of a fork: the monitor list is the parent's. */
void resil_monitor_atfork_child(void);

#endif
