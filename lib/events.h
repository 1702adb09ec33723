/* libresil: machine-readable events, one JSON object per line.
 *
 * Written to RESIL_EVENTS (config key "events") with one write() per line on
 * an O_APPEND descriptor, so lines from threads and forked children never
 * interleave. No stdio, no malloc. A write failure (full disk, closed file)
 * is logged once, then events stop; the program is never affected.
 */
#ifndef RESIL_EVENTS_H
#define RESIL_EVENTS_H

#include <stdbool.h>

#include "status.h"

/* Open path for appending (non-blocking, registered in fds.h); NULL or ""
 * means no events. Returns RESIL_OK, or RESIL_ESYS (logged) on failure,
 * a FIFO nobody reads included. */
resil_status_t resil_events_open(const char *path);
bool resil_events_enabled(void);

/* Emit {"ts":..,"pid":..,"fd":..,"event":"type",<members>}. members is a
 * printf format producing zero or more `"key":value` pairs joined by commas
 * (strings already JSON-escaped, see resil_json_str). */
void resil_event(const char *type, int fd, const char *members, ...)
    __attribute__((format(printf, 3, 4)));

/* Escape s as a JSON string body into buf (no quotes added); returns buf. */
char *resil_json_str(const char *s, char *buf, unsigned len);

#endif
