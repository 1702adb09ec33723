/* libresil: putting a socket on the program's fd.
 *
 * Parking keeps a non-blocking program socket "connecting" while a race
 * runs elsewhere: it connects to our own loopback listener whose one-slot
 * accept queue is already full, so its SYN is dropped and it sits in
 * SYN_SENT (not writable, SO_ERROR 0: exactly a connect in progress) until
 * the winner replaces it (pitfalls note 3.5). The swap replaces it.
 */
#ifndef RESIL_SWAP_H
#define RESIL_SWAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "status.h"
#include "table.h"

/* Start a connect of fd to the parking listener (set up on first use).
 * Engine lock held. RESIL_OK when fd is now parked (SYN_SENT). */
resil_status_t resil_park(int fd, int family, bool v6only);

/* Undo resil_park(): disconnect fd (connect AF_UNSPEC), for when no race
 * follows. */
void resil_unpark(int fd);

/* Put newfd on s->fd: DEL from every epoll set the program registered fd
 * in, dup3 (keeping FD_CLOEXEC and O_NONBLOCK as the program has them),
 * ADD back with the saved events, then shut the old socket down so that
 * threads sleeping in poll/select on it wake and re-read the fd table
 * (pitfalls 2.3-2.5). s->mu held. Consumes newfd. RESIL_OK (s->cookie and
 * s->swap_seq now describe newfd's socket), RESIL_ESYS (errno says why;
 * nothing changed on s->fd) or RESIL_ENOENT: the program closed fd,
 * through a hook (s->closed) or behind our back (resil_sock_is_ours()
 * false: the entry is dropped from the table, s->closed set, and fd,
 * which may name another file now, is never touched). Logs nothing: the
 * caller does, once s->mu is released (a close() waits on s->mu). */
resil_status_t resil_swap_in(struct resil_sock *s, int newfd);

/* The same, leaving the old socket as it is (no shutdown): for one that a
 * race keeps (the program's own socket, a failed attempt 0, whose state
 * must stay the kernel's; its failure already woke its sleepers). */
resil_status_t resil_swap_in_keep(struct resil_sock *s, int newfd);

/* Close the parking listeners and fillers (no socket may be parked).
 * Engine lock held; the next resil_park() sets them up again. */
void resil_park_release(void);

/* Bumped by every swap; s->swap_seq is its value after the last swap onto
 * s->fd. A call that read it before going to the kernel knows its result
 * came from a socket that was replaced meanwhile when s->swap_seq is
 * greater than what it read. */
extern _Atomic uint64_t resil_swap_seq;

/* SO_COOKIE of the socket on fd (unique for the socket's life, the same
 * through dup and fork); 0 when it cannot be read. */
uint64_t resil_sock_cookie(int fd);

/* Whether s->fd still holds the socket s describes: false when the program
 * closed it behind our back (fclose() of an fdopen()ed socket, a raw
 * close system call) and the number was reused, or closed it for good.
 * s->mu held. */
bool resil_sock_is_ours(const struct resil_sock *s);


#endif
