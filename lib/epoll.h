/* libresil: the program's epoll registrations of managed sockets.
 *
 * A swap (swap.h) replaces the socket under a program fd; dup3 silently
 * drops the fd's epoll registrations (pitfalls 2.1), so the epoll_ctl hook
 * records them and the swap takes them out of every set and puts them back.
 * The record is kept twice: per socket (what the swap walks) and per epoll
 * set, indexed by the event data, so that an event returned by epoll_wait
 * finds the managed registrations that could have produced it in O(1)
 * without a walk of the fd table. The data alone never names an fd: a
 * program may give a pipe and a socket the same data (a proxy's session
 * pointer), and the record only knows the managed ones.
 *
 * Stale events. A swap that replaces a socket which was reporting an error
 * or hang-up (a dead connection re-raced) leaves a "stale report" on the
 * socket: the mask the old socket showed and a number from a process-wide
 * sequence taken after the old socket left fd and every epoll set. A
 * readiness call that read the sequence before its real call and finds a
 * newer report may hold an event harvested from the old socket, and only
 * such an event, with a mask that matches the report, is dropped (one per
 * registration for epoll). Anything else, in particular an event of another
 * fd sharing the data, is passed on.
 *
 * EPOLLONESHOT. The kernel disarms a one-shot registration when it reports
 * it; re-adding it after the swap would arm it again (two workers woken for
 * one fd). The epoll_wait hooks flag a one-shot registration whose data
 * they returned; the swap asks the kernel (/proc/self/fdinfo of the set:
 * after it fired, the events field keeps only the private bits) about a
 * flagged one and keeps a disarmed one out of the kernel, "pending": the
 * program's next MOD adds it (the kernel would answer ENOENT), DEL succeeds
 * and ADD fails with EEXIST, as they would on the disarmed registration.
 *
 * Locking (after resil_sock.mu, table.h; both are lock.h's word-sized
 * mutexes, since an event loop calls epoll_ctl several times a request):
 * resil_sock.ep_mu guards the socket's list and is held across the
 * program's epoll_ctl and across the whole swap (DEL, dup3, ADD: none
 * blocks), so that a registration is never made on the old socket behind
 * the swap's back; a set's mutex, inside it, guards the set's index and
 * the fields of its registrations, and is held across every epoll_ctl call
 * on the set (the program's and the swap's): a close() of the epoll fd
 * (which forgets the set first) can then never let the swap add fd to a
 * new set that took the number, and an epoll_wait that harvests a
 * registration the moment the kernel has it sees the mutex held and waits
 * to find it recorded. One exception: a MOD of a recorded registration
 * that changes neither its data nor EPOLLONESHOT (an event loop switching
 * between reading and writing) changes nothing the set's index or an
 * epoll_wait depends on, and holds s->ep_mu only; the events word is
 * atomic for it. Readers take a set's mutex alone.
 *
 * A socket's first registration lives in the socket (resil_sock.ep_own):
 * a socket in one set, the usual, costs no allocation.
 */
#ifndef RESIL_EPOLL_H
#define RESIL_EPOLL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "status.h"
#include "table.h"

struct resil_epset;

/* Epoll sets that ever held a managed registration: zero lets close() skip
 * the look-up. */
extern atomic_int resil_epoll_nsets;

/* epoll_ctl(epfd, op, fd, ev) on the managed socket s (fd is s->fd), done
 * and recorded. Always RESIL_OK (a registration that cannot be recorded
 * for lack of memory is logged), with *err set to 0 or to the errno
 * epoll_ctl must report. */
resil_status_t resil_epoll_ctl(struct resil_sock *s, int epfd, int op,
                               struct epoll_event *ev, int *err);

/* The same for fd when it is a managed socket (the hook's one call);
 * RESIL_ENOENT, and nothing done, when it is not. */
resil_status_t resil_epoll_ctl_fd(int fd, int epfd, int op,
                                  struct epoll_event *ev, int *err);

/* Take s->fd out of the kernel's epoll sets it was added to by the
 * program, before a close() that will not release the socket (linger.h
 * keeps a duplicate): the kernel drops an epoll registration only with
 * the last reference to the file, and the program must not hear of a
 * number it closed. */
void resil_epoll_sock_unwatch(struct resil_sock *s);

/* The program closed s->fd (or it was replaced): forget its registrations.
 * Nothing may be registered for s after this. */
void resil_epoll_sock_closed(struct resil_sock *s);

/* s is freed: release what is left of its record. */
void resil_epoll_sock_free(struct resil_sock *s);

/* The set for epoll fd epfd, or NULL when no managed socket was ever
 * registered in it. Sets are never freed (a closed one is emptied and
 * reused by the next set of that number), so the pointer stays valid. */
struct resil_epset *resil_epoll_set(int epfd);

/* fd is about to be closed (close, dup2/dup3 onto it, close_range): if it
 * is an epoll set, forget its registrations. */
void resil_epoll_forget_set(int fd);
void resil_epoll_fds_closed(unsigned first, unsigned last);

static inline void resil_epoll_fd_closed(int fd)
{
    if (atomic_load_explicit(&resil_epoll_nsets, memory_order_relaxed))
        resil_epoll_forget_set(fd);
}

/* The swap, in two halves around its dup3, s->mu held; begin takes
 * s->ep_mu and end releases it. begin notes what the old socket on s->fd
 * reports and takes fd out of every set it is registered in (keeping a
 * fired one-shot one pending); end puts fd back with the recorded events
 * and, when swapped is set and the old socket was reporting an error or
 * hang-up, leaves the stale report. */
void resil_epoll_swap_begin(struct resil_sock *s);
void resil_epoll_swap_end(struct resil_sock *s, bool swapped);

/* The swap sequence now: read it before a readiness call's real call. */
uint64_t resil_epoll_swap_seq(void);

/* true when s was swapped away from a socket that reported an error or
 * hang-up after seq0 was read; *mask (poll bits) is what that socket
 * reported. Waits for a swap of s in progress. */
bool resil_epoll_stale_report(struct resil_sock *s, uint64_t seq0,
                              uint32_t *mask);

/* Does an event mask `got` (as returned, filtered by the registration's
 * interest) match a stale report filtered the same way? */
bool resil_epoll_stale_match(uint32_t got, uint32_t want);

/* The epoll_wait hooks, after the real call returned n > 0 events of set
 * (seq0 read before it): flag fired one-shot registrations, let a dead
 * never-used socket among the managed ones that could have produced an
 * error or hang-up event be re-raced (resil_conn_dead_unused), and drop
 * the events that provably came from a replaced socket. Returns how many
 * events are left (ev compacted). Call with resil_in_shim raised. */
int resil_epoll_filter(struct resil_epset *set, struct epoll_event *ev, int n,
                       uint64_t seq0);

/* The registrations of s the kernel holds now (not pending, in sets still
 * open): at most max of them, each set's epoll fd into epfd[] and the
 * registration's events and data into ev[]. Returns how many. */
int resil_epoll_regs_of(struct resil_sock *s, int *epfd,
                        struct epoll_event *ev, int max);

/* The managed sockets with a registration of data in set, each with a
 * reference taken (resil_sock_unref) and the registration's events: at
 * most max. Returns how many. */
int resil_epoll_socks_of(struct resil_epset *set, uint64_t data,
                         struct resil_sock **out, uint32_t *interest,
                         int max);

/* s's one-shot registration in set had an event the program will not
 * see (dropped by a readiness hook): arm it again. */
void resil_epoll_rearm(struct resil_sock *s, struct resil_epset *set);

/* Tracked registrations in set (0: nothing to filter). */
int resil_epoll_set_regs(const struct resil_epset *set);

/* Child of fork: every lock of this module held by a thread that is gone
 * is made anew (the forking thread holds none). */
void resil_epoll_atfork_child(void);

/* For tests: is (epfd, s->fd) recorded, and pending? 0 not recorded,
 * 1 recorded, 2 recorded and pending. */
int resil_epoll_reg_state(struct resil_sock *s, int epfd);

#endif
