/* libresil: the engine.
 *
 * One background thread per process (started on first need, all signals
 * blocked, resil_in_shim set so every libc call it makes goes straight to
 * the real function) runs the connection races, the c-ares lookups that
 * refresh a race's candidates, and the dead-path monitor. Hooks talk to it
 * through the functions below; all of them return at once except
 * resil_engine_connect() for a blocking socket, which waits like connect().
 */
#ifndef RESIL_ENGINE_H
#define RESIL_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "table.h"

uint64_t resil_now_ns(void);

/* Races not yet decided in this process: when zero, readiness hooks need
 * not look for sockets being replaced. */
extern atomic_int resil_races_active;

/* Set the configuration (kept by pointer; immutable from now on). */
void resil_engine_configure(const struct resil_config *cfg);
const struct resil_config *resil_engine_config(void);

/* connect() on a managed socket in RS_FRESH. Returns RESIL_OK with *err
 * set to what connect() must report (0, EINPROGRESS, EINTR or the race's
 * errno), or RESIL_EUNSUPP when the socket must be passed through (the
 * caller then calls the real connect; s is in RS_PASSTHRU or RS_DIRECT). */
resil_status_t resil_engine_connect(struct resil_sock *s,
                                    const struct sockaddr *sa, socklen_t len,
                                    int *err);

/* connect() again on a blocking socket in RS_RACING: wait for the race
 * like the kernel waits for a connect in progress. Returns false when s has
 * no race to wait for (the caller looks at s->state again); else true with
 * *err: 0, the race's errno, EINTR, or EALREADY at SO_SNDTIMEO. */
bool resil_engine_connect_wait(struct resil_sock *s, const struct sockaddr *sa,
                               socklen_t len, int *err);

/* The program closes s->fd: stop its race and monitoring. s->mu held. */
void resil_engine_forget(struct resil_sock *s);

/* The program wrote to s: watch it for a stalled path. */
void resil_engine_watch(struct resil_sock *s);

/* A data call on s failed with err. When the connection never carried a
 * byte, it is re-raced to another address: returns true, and when wait is
 * set, only after the new connection is in place (or failed). */
bool resil_engine_path_error(struct resil_sock *s, int err, bool wait);

/* A readiness call reported an error (pollerr) or hang-up on s. When s is dead
 * (TCP state CLOSE) and never carried a byte, it is re-raced at once
 * (non-blocking) and true is returned: the event is stale, the fd already
 * holds a socket in progress. Otherwise false; nothing is consumed. */
bool resil_engine_dead_unused(struct resil_sock *s, bool pollerr);

/* pthread_atfork handlers. In the child the engine thread does not exist:
 * races in flight fail with ECONNABORTED there, connected sockets go on. */
void resil_engine_atfork_prepare(void);
void resil_engine_atfork_parent(void);
void resil_engine_atfork_child(void);

/* The program closed [first, last] (close_range): forget our descriptors
 * in that range (log, events, parking, engine) so nothing of ours ever
 * touches a reused fd number; the engine restarts on next need. */
void resil_engine_fds_closed(unsigned first, unsigned last);

/* Apply the dead-path detection settings (keepalive) to a socket. */
void resil_engine_tune(struct resil_sock *s, int fd);

#endif
