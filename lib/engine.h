/* libresil: the engine thread.
 *
 * One background thread per process (started on first need, all signals
 * blocked, resil_in_shim set so that every libc call it makes goes straight
 * to the real function). It sleeps in epoll_wait on one epoll set whose
 * event data point at a struct resil_watch (a tagged watcher: an event
 * finds its owner without a search), and on each turn asks its clients for
 * their next deadline:
 *   conn.c     connection races (attempt sockets, attempt delays)
 *   monitor.c  the dead-path monitor
 *   dns.c      c-ares (its sockets are watchers too)
 * Watcher callbacks and the races' and c-ares' ticks run on the engine
 * thread with the engine lock held; the monitor's tick runs without it
 * (monitor.h). Lock order: engine lock, then resil_sock.mu, then leaf locks
 * (table stripes, health, names); see table.h.
 */
#ifndef RESIL_ENGINE_H
#define RESIL_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

#define RESIL_MS 1000000ull

uint64_t resil_now_ns(void);

/* Bumped in the child of every fork (the atfork handler): state kept per
 * process compares it instead of calling getpid() per use. */
extern unsigned resil_fork_gen;
/* This process's pid, read from the kernel once per process. */
pid_t resil_getpid(void);

void resil_engine_lock(void);
void resil_engine_unlock(void);

/* Start the engine thread unless this process runs one. Engine lock held.
 * Returns RESIL_OK or RESIL_ESYS. */
resil_status_t resil_engine_start(void);

/* Start a detached thread of libresil's own, named name (at most 15
 * characters, "resil-..."), all signals blocked, a small stack when the
 * program's TLS allows. Returns 0 or pthread_create's error. */
int resil_thread_start(const char *name, void *(*fn)(void *), void *arg);

/* Whether an engine thread serves this process (a hint: any thread, no
 * lock; resil_engine_start() under the lock is the answer). */
bool resil_engine_running(void);

/* Make the engine thread recompute its deadlines now. Any thread. */
void resil_engine_wake(void);

struct resil_watch {
    void (*fn)(struct resil_watch *w, uint32_t events, uint64_t now_ns);
};

/* Watch fd in the engine's epoll set (EPOLL_CTL_ADD / MOD / DEL). Engine
 * lock held; RESIL_OK or RESIL_ESYS. */
resil_status_t resil_engine_add(int fd, uint32_t events, struct resil_watch *w);
resil_status_t resil_engine_mod(int fd, uint32_t events, struct resil_watch *w);
void resil_engine_del(int fd);

/* pthread_atfork handlers. In the child the engine thread does not exist:
 * races in flight fail with ECONNABORTED there, connected sockets go on. */
void resil_engine_atfork_prepare(void);
void resil_engine_atfork_parent(void);
void resil_engine_atfork_child(void);

/* A connect fell back to plain TCP (racing unavailable, typically for
 * want of a descriptor): give back every descriptor of ours that no race
 * and no monitored socket needs (engine thread and its epoll set, wake
 * eventfd, parking listeners, c-ares sockets), so that the program's
 * descriptor budget is what it would be without libresil. They come back
 * on next need. Any thread, engine lock not held. */
void resil_engine_release(void);

/* The program's dup2/dup3 is about to replace fd, one of libresil's own
 * descriptors (fds.h): move ours to another number, its owner following
 * (for the epoll set, after bringing the engine thread round; a c-ares
 * socket is closed by cancelling the lookups instead). The old number is
 * left open as a duplicate nobody owns (*orphan true), for the program's
 * call to replace atomically; the caller closes it if that call fails (a
 * c-ares socket is closed already: *orphan false). Any thread, no lock
 * held. RESIL_OK, RESIL_ENOENT (fd is not ours) or RESIL_EUNSUPP (the
 * child of a vfork: nothing may be moved, the call just proceeds). */
resil_status_t resil_engine_evict(int fd, bool *orphan);

#endif
