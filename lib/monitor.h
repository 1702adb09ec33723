/* libresil: the dead-path monitor.
 *
 * A socket the program wrote to is put on the monitor list; the engine
 * checks every socket on it each tick (TCP_INFO, SIOCOUTQ) while it has
 * bytes in flight, and arms TCP_USER_TIMEOUT on a stalled path so that the
 * program gets ETIMEDOUT within fail_timeout_ms instead of TCP's minutes.
 * Idle connections are covered by keepalive (resil_monitor_tune).
 */
#ifndef RESIL_MONITOR_H
#define RESIL_MONITOR_H

#include <stdbool.h>
#include <stdint.h>

#include "table.h"

/* The program wrote to s: watch it for a stalled path. Any thread, no lock
 * held. */
void resil_monitor_watch(struct resil_sock *s);

/* Stop watching s (it is being closed). Engine lock held. */
void resil_monitor_forget(struct resil_sock *s);

/* Check the watched sockets; returns the next deadline (UINT64_MAX when
 * nothing is watched). Engine lock held. */
uint64_t resil_monitor_tick(uint64_t now_ns);

/* Apply the dead-path detection settings (keepalive) to fd, a socket of s.
 * s->mu held. */
void resil_monitor_tune(struct resil_sock *s, int fd);

/* True when no socket is watched. Engine lock held. */
bool resil_monitor_idle(void);

/* The child of a fork: the list is the parent's. */
void resil_monitor_atfork_child(void);

#endif
