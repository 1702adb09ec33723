/* libresil: resuming a session over a new connection (doc/session.md).
 *
 * Each process with sessions has one resume listener of its own (any
 * address, an ephemeral port announced in HELLO/WELCOME): a resume
 * connection never reaches a listening socket of the program. A resume
 * runs in a worker thread of its own (all signals blocked, resil_in_shim
 * set), which may block: connecting, freezing the session (its readers and
 * writers are woken and wait), the RESUME/RESUMED exchange, the replay and
 * the swap. Resumes are rare; a thread each keeps the engine thread and the
 * engine lock out of every wait. At most RESIL_RESUME_WORKERS run at once
 * (a flood of bogus resume connections costs bounded memory and CPU), of
 * which at most RESIL_RESUME_INITIATORS resume sessions this end
 * suspected: the others answer the peers' resumes (two processes whose
 * many sessions fail at once would otherwise each fill every worker with
 * its own resumes, and drop the other's). A resume with no worker free
 * waits in a queue for the next one, in order: a burst of failures (every
 * session of a server on the uplink that died) is resumed in full.
 */
#ifndef RESIL_RESUMER_H
#define RESIL_RESUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "table.h"

#define RESIL_RESUME_WORKERS 32
#define RESIL_RESUME_INITIATORS 24

/* The port of this process's resume listener, set up on first use; 0 when
 * it cannot be (the HELLO/WELCOME then announces none). Any thread, no
 * lock held. */
uint16_t resil_resumer_port(void);

/* s's session path is suspected dead (why: for the log): resume it unless
 * a resume already runs. Any thread; no lock held; returns at once. */
void resil_resume_start(struct resil_sock *s, const char *why);

/* A data call on session socket s is to wait for a resume (a blocking
 * call, at most the linger time) or not (wait false): a reader until the
 * new connection is on the fd, a writer (writer true) until the replay is
 * out as well. failed_at: the call met its connection's error when
 * x->gen was *failed_at; it then waits for a resume after that one
 * (the dead connection would answer a false EOF), and when none runs the
 * error stands. Returns 0 when the call should be made again, -1 when the
 * error the call met is the program's, else the errno for the program
 * (EAGAIN while a resume runs and the call must not wait, ECONNRESET when
 * the session is lost). No lock held. */
int resil_resume_wait(struct resil_sock *s, bool wait, bool writer,
                      const unsigned *failed_at);

/* The child of a fork: the listener and the workers are the parent's. */
void resil_resumer_atfork_child(void);

#endif
