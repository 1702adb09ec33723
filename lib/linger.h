/* libresil: a session client's socket that its program closed before the
 * server's WELCOME came, kept open until it has; and a session server's
 * accepted socket closed before its first data call, kept for the
 * client's HELLO (which would reset the client just the same).
 *
 * The WELCOME leaves the server at its program's first data call. A client
 * program that closes first (a health check that connects and closes, a
 * client that writes a request or a file and closes without reading)
 * would leave a socket to which the WELCOME is data after close: the
 * kernel answers that with a reset (RFC 1122 4.2.2.13), which throws away
 * whatever our program wrote that is still in the send queue and gives
 * the server program ECONNRESET, where plain TCP delivers every byte and
 * then EOF. So the close keeps a duplicate of the socket, sends the FIN
 * that the close would have sent (after the queued bytes), and the engine
 * reads the WELCOME off the duplicate when it comes, then closes it. Any
 * other first byte (the server program's own: a reset follows, as it
 * would have without libresil), EOF, an error or session_linger_ms close
 * it at once.
 *
 * Only for a socket whose file no other descriptor or process may share
 * (no fork and no dup since its session began: resil_sess_shares), and
 * whose program did not ask for a reset on close (SO_LINGER 0).
 */
#ifndef RESIL_LINGER_H
#define RESIL_LINGER_H

#include <stdbool.h>
#include <stdint.h>

struct resil_sock;

/* The program closes fd, s's (a session client's, its WELCOME not read):
 * keep it as above. True when a duplicate was taken (the FIN is sent, the
 * program's epoll sets no longer hold fd; the caller closes fd as usual);
 * false when nothing was done. No lock held. */
bool resil_linger_start(struct resil_sock *s, int fd);

/* The engine's turn (engine lock held): close what is due; returns the
 * next deadline (UINT64_MAX: none). */
uint64_t resil_linger_tick(uint64_t now);

/* In a forked child: the parent's kept sockets are the parent's. */
void resil_linger_atfork_child(void);

#endif
