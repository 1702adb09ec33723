/* libresil: logging.
 *
 * Lines are formatted into a stack buffer and written with one real write():
 * no stdio, no malloc, errno preserved. Prefix "libresil[pid]: LEVEL: ".
 */
#ifndef RESIL_LOG_H
#define RESIL_LOG_H

#include <stdbool.h>

#include "status.h"

enum resil_log_level {
    RESIL_LOG_NONE = 0,
    RESIL_LOG_ERROR = 1,
    RESIL_LOG_WARN = 2,
    RESIL_LOG_INFO = 3,
    RESIL_LOG_DEBUG = 4,
    RESIL_LOG_TRACE = 5,
};

extern int resil_log_level;

/* Open path for appending (O_CLOEXEC, non-blocking, registered in fds.h)
 * and log there; NULL or "" keeps stderr. A path that cannot be opened, or
 * a FIFO nobody reads (opening it for writing would block), is refused with
 * a line on stderr. Returns RESIL_OK or RESIL_ESYS. */
resil_status_t resil_log_open(const char *path);

/* Log when level <= resil_log_level. Never changes errno. */
void resil_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define RLOG(lvl, ...)                                                         \
    do {                                                                       \
        if ((lvl) <= resil_log_level)                                          \
            resil_log((lvl), __VA_ARGS__);                                     \
    } while (0)
#define rerror(...) RLOG(RESIL_LOG_ERROR, __VA_ARGS__)
#define rwarn(...) RLOG(RESIL_LOG_WARN, __VA_ARGS__)
#define rinfo(...) RLOG(RESIL_LOG_INFO, __VA_ARGS__)
#define rdebug(...) RLOG(RESIL_LOG_DEBUG, __VA_ARGS__)
#define rtrace(...) RLOG(RESIL_LOG_TRACE, __VA_ARGS__)

#endif
