/* libresil: connection races on the program's sockets.
 *
 * A connect() to an address with alternatives (its name's other addresses,
 * DNS answers, an alternate group) parks the program's socket (swap.h) and
 * races every candidate on sockets of our own (race.h decides the order
 * and the timing, the engine thread runs it); the winner is swapped onto
 * the program's fd. A connection that dies before carrying a byte is raced
 * again the same way. The shim calls the resil_conn_* functions with no
 * lock held; they return at once except where a blocking socket must wait
 * like connect() would.
 */
#ifndef RESIL_CONN_H
#define RESIL_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "table.h"

/* Races not yet decided in this process: when zero, readiness hooks need
 * not look for sockets being replaced. */
extern atomic_int resil_races_active;

/* connect() on a managed socket in RS_FRESH. Returns RESIL_OK with *err
 * set to what connect() must report (0, EINPROGRESS, EINTR or the race's
 * errno), or RESIL_EUNSUPP when the socket must be passed through (the
 * caller then calls the real connect; s is in RS_PASSTHRU or RS_DIRECT). */
resil_status_t resil_conn_connect(struct resil_sock *s,
                                  const struct sockaddr *sa, socklen_t len,
                                  int *err);

/* connect() again on a blocking socket in RS_RACING: wait for the race
 * like the kernel waits for a connect in progress. Returns RESIL_ENOENT
 * when s has no race to wait for (the caller looks at s->state again); else
 * RESIL_OK with *err: 0, the race's errno, EINTR, or EALREADY at
 * SO_SNDTIMEO. */
resil_status_t resil_conn_wait(struct resil_sock *s, const struct sockaddr *sa,
                               socklen_t len, int *err);

/* The program closes s->fd: stop its race and monitoring. */
void resil_conn_forget(struct resil_sock *s);

/* A data call on s failed with err. When the connection never carried a
 * byte, it is re-raced to another address: returns true, and when wait is
 * set, only after the new connection is in place (or failed). */
bool resil_conn_path_error(struct resil_sock *s, int err, bool wait);

/* A readiness call reported an error (pollerr) or hang-up on s. When s is
 * dead (TCP state CLOSE) and never carried a byte, it is re-raced at once
 * (non-blocking) and true is returned: the event is stale, the fd already
 * holds a socket in progress. Otherwise false; nothing is consumed. */
bool resil_conn_dead_unused(struct resil_sock *s, bool pollerr);

/* Advance every race; returns the next deadline. Engine thread, engine
 * lock held. */
uint64_t resil_conn_tick(uint64_t now_ns);

/* Fail every race in flight with err (the engine lost a descriptor it
 * cannot do without). Engine lock held. */
void resil_conn_abort_all(int err);

/* The child of a fork: races in flight fail with ECONNABORTED. */
void resil_conn_atfork_child(void);

#endif
