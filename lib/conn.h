/* libresil: connection races on the program's sockets.
 *
 * A connect() to an address with alternatives (its name's other addresses,
 * DNS answers, an alternate group) is first the plain connect of the
 * program's own socket to the race's first candidate (race.h orders them):
 * a first candidate that answers within the attempt delay costs what a
 * plain connect costs, with no other socket, no engine thread and no swap.
 * Only when it has not connected after the attempt delay, or fails first,
 * does the race start, with the program's socket as attempt 0 and the
 * other candidates on sockets of our own (the engine thread runs them);
 * the winner, when it is not attempt 0, is swapped onto the program's fd
 * (swap.h). While attempt 0 runs on the fd ("in place", s->inplace) the
 * program must never see its failure while other attempts may still win:
 * the hooks that could show it first (poll, epoll and select results,
 * SO_ERROR, data calls, connect again) check and park the fd at once
 * (a socket in progress is swapped in), as the engine does when it sees
 * the failure itself. A blocking connect() waits for the first candidate
 * in the kernel (SO_SNDTIMEO set to the attempt delay for that one call);
 * a non-blocking one returns EINPROGRESS at once and the engine looks at
 * the socket again after the attempt delay (a lock-free list it scans on
 * a coarse tick while connects are happening: no wake-up per connect).
 * When every attempt fails, the socket of the attempt whose errno is
 * reported goes onto the fd: after its error it behaves as the kernel's
 * own failed socket does, and the error itself, when we had to read it,
 * is emulated until the program consumes it (SO_ERROR, its next data call,
 * connect again), like the kernel's sk_err. A connection that dies before
 * carrying a byte is raced again the same way, once per connect().
 *
 * A session destination (session.h) is the exception: its connect always
 * races from a parked fd, every attempt on a socket of our own, so that
 * the HELLO goes out on the winner before the program can write a byte.
 *
 * The same list sizes keepalive (resil_monitor_tune) on connections still
 * open an attempt delay after their connect: a connection per request
 * never pays those four system calls; reading a keepalive option sizes it
 * at once, so the program never sees the difference.
 *
 * The shim calls the resil_conn_* functions with no lock held; they return
 * at once except where a blocking socket must wait like the kernel would.
 * Such waits run outside the recursion guard (resil_in_shim) and are
 * cancellation points: a handler that siglongjmps out of one, or a
 * pthread_cancel, leaves the thread's hooks working and leaks nothing but,
 * after a siglongjmp, one race's reference until the thread's next wait.
 * Everything else runs with cancellation disabled, so that a cancel never
 * unwinds a thread holding one of our locks.
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

/* Sockets with an emulated pending error (s->pending_err): when zero, data
 * hooks need not look for one. */
extern atomic_int resil_conn_errors;

/* Sockets whose fd holds a race's attempt 0, connecting (s->inplace): when
 * zero, no hook needs to look for one. */
extern atomic_int resil_conn_inplace;

/* Sockets that owe their session HELLO (s->hello_here): when zero, no
 * data hook needs to look for one. */
extern atomic_int resil_conn_hellos;

/* A data hook's call on fd (is_write: it sends n bytes, flags as given),
 * while resil_conn_hellos: when fd's socket owes the HELLO, it goes first
 * if the socket is connected; a write on one still connecting gets what
 * the kernel gives then (EAGAIN when non-blocking; a blocking one waits,
 * SO_SNDTIMEO included), without any chance of its bytes going first.
 * Returns 0 (make the call) or the errno to fail it with. */
int resil_conn_hello_due(int fd, bool is_write, size_t n, int flags);

/* At most this many transparent re-races per connect(). One: a re-race
 * routes around one dead path, and the race that makes it already tries
 * every address at once; a replacement that dies before carrying a byte
 * too is almost always the peer ending connections (a load balancer with
 * no backend accepts and resets on every address), which no re-race can
 * fix and each one only delays: the program then gets the real error, as
 * it would at once without libresil. */
#define RESIL_RERACE_MAX 1

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

/* connect() on a socket in RS_FAILED, or RS_CONNECTED with
 * fail_connecting (a winner reset right after its handshake, before the
 * program's next connect()): like the kernel's for a connect that failed,
 * the pending error (or ECONNABORTED once it was consumed) and the socket
 * is unconnected again (RS_FRESH). RESIL_OK with *err, or RESIL_ENOENT
 * when s is in neither state (any more). */
resil_status_t resil_conn_connect_failed(struct resil_sock *s,
                                         const struct sockaddr *sa,
                                         socklen_t len, int *err);

/* connect(AF_UNSPEC) on s: stop a race or the monitoring, disconnect the
 * socket on fd with the kernel's own call (its result in *err: 0 or an
 * errno) and make s RS_FRESH. RESIL_EUNSUPP when the call must simply be
 * passed through (s in RS_FRESH or RS_PASSTHRU, or not ours any more). */
resil_status_t resil_conn_disconnect(struct resil_sock *s,
                                     const struct sockaddr *sa, socklen_t len,
                                     int *err);

/* connect() again on s while its fd holds attempt 0 (RS_TRYING, or
 * RS_RACING with s->inplace): what the kernel's socket answers, unless
 * that is attempt 0's failure while the race goes on (EALREADY then, as
 * for a connect in progress); a blocking socket waits for the race.
 * RESIL_OK with *err (0 or an errno), or RESIL_ENOENT when s is not in
 * that state (any more): the caller looks at s->state again. */
resil_status_t resil_conn_first_connect(struct resil_sock *s,
                                        const struct sockaddr *sa,
                                        socklen_t len, int *err);

/* getsockopt(SO_ERROR) on fd: when fd's socket is attempt 0 in place,
 * true with *err what the program reads (0 while the race goes on after
 * attempt 0 failed); false otherwise (the caller asks the kernel). */
bool resil_conn_first_sockerr(int fd, int *err);

/* A data call on s, whose fd held attempt 0, failed with err (consumed by
 * the call). True when that was attempt 0's failure and the race goes on:
 * the fd now holds a socket in progress, the caller retries on it. False:
 * the call reports err (the race ended with it, or it was no failure of
 * attempt 0). */
bool resil_conn_first_failed(struct resil_sock *s, int err);

/* A data call moved bytes on s in RS_TRYING: its connect completed. */
void resil_conn_first_done(struct resil_sock *s);

/* Data hooks, while resil_conn_inplace: around the real call on fd, so
 * that attempt 0's error is never read behind a call that may meet it.
 * begin returns s (a reference, the call counted) when fd holds attempt
 * 0, else NULL; end takes what begin returned. */
struct resil_sock *resil_conn_io_begin(int fd);
void resil_conn_io_end(struct resil_sock *s);

/* getsockopt of a keepalive option on fd: size keepalive now if it is
 * still due (the program reads what it would have read at once). */
void resil_conn_ka_now(int fd);

/* The program closes s->fd: mark s closed (nothing of ours touches the
 * number any more), and have the engine stop its race (a first attempt on
 * the list is dropped when the engine looks at it). Takes s->mu, never
 * the engine lock. */
void resil_conn_forget(struct resil_sock *s);

/* Consume the emulated pending error of fd's socket, if any: true with
 * *err set (the data call or SO_ERROR reports it). Cheap when no socket
 * has one. */
bool resil_conn_take_error(int fd, int *err);

/* POLLERR (== EPOLLERR) when fd's socket has an emulated pending error,
 * else 0: readiness hooks add it to what the kernel reported for fd. */
uint32_t resil_conn_poll_err(int fd);

/* A data call's result came from a socket that has been replaced on fd
 * since the call read resil_swap_seq (seq): true, and the caller retries
 * on the socket fd holds now. */
bool resil_conn_swapped(struct resil_sock *s, uint64_t seq);

/* A data call on s failed with err (consumed by that call). When the
 * connection never carried a byte and the re-race budget allows, it is
 * re-raced to another address: RESIL_OK, with *res 0 when the caller may
 * retry on the new socket (wait_ms 0: at once, the race runs on; else
 * after it ended, in success or not: a failed re-race puts the dead
 * socket back with err pending), or EINTR or EAGAIN (wait_ms > 0 elapsed)
 * that the call reports instead, as a blocking socket call would. wait_ms:
 * 0 non-blocking caller, -1 no timeout, else SO_RCVTIMEO/SO_SNDTIMEO.
 * RESIL_EUNSUPP: not re-raced, the call reports err. */
resil_status_t resil_conn_path_error(struct resil_sock *s, int err,
                                     int wait_ms, int *res);

/* A readiness call reported an error (pollerr) or hang-up on s. When s is
 * dead (TCP state CLOSE) and never carried a byte, it is re-raced at once
 * (non-blocking) and true is returned: the event is stale, the fd already
 * holds a socket in progress. The same when s's fd held attempt 0 and
 * that failed while the race goes on (the fd is parked). Otherwise false;
 * nothing is consumed. */
bool resil_conn_dead_unused(struct resil_sock *s, bool pollerr);

/* A race is in flight (its attempts may wait for events only), or a
 * socket waits to be looked at or for its HELLO: the engine must not
 * leave. Engine lock held. */
bool resil_conn_busy(void);

/* Advance every race and look at the sockets due since their connect;
 * returns the next deadline. Engine thread, engine lock held. */
uint64_t resil_conn_tick(uint64_t now_ns);

/* True when no socket waits to be looked at, nor for its HELLO (races are
 * counted in resil_races_active): the engine may stop. Engine lock
 * held. */
bool resil_conn_idle(void);

/* Fail every race in flight with err (the engine lost a descriptor it
 * cannot do without); the sockets waiting to be looked at are settled at
 * once (keepalive sized, a first attempt left to the kernel). Engine lock
 * held. */
void resil_conn_abort_all(int err);

/* Hold err for s, to be reported once like a pending socket error (the
 * socket on s->fd no longer has it: a lost session's ECONNRESET). s->mu
 * held. */
void resil_conn_hold_error(struct resil_sock *s, int err);

/* The child of a fork: races in flight fail with ECONNABORTED. */
void resil_conn_atfork_child(void);

#endif
