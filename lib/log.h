/* libresil: logging.
 *
 * Lines are formatted into a stack buffer and written with one real write():
 * no stdio, no malloc, errno preserved. Prefix "libresil[pid]: LEVEL: ".
 */
#ifndef RESIL_LOG_H
#define RESIL_LOG_H

#include <stdbool.h>

enum resil_log_level {
    RESIL_LOG_NONE = 0,
    RESIL_LOG_ERROR = 1,
    RESIL_LOG_WARN = 2,
    RESIL_LOG_INFO = 3,
    RESIL_LOG_DEBUG = 4,
    RESIL_LOG_TRACE = 5,
};

extern int resil_log_level;

/* Open path for appending (O_CLOEXEC, moved to a high fd) and log there;
 * NULL or failure keeps stderr. Returns 0, or -1 when the file could not be
 * opened (a line saying so goes to stderr). */
int resil_log_open(const char *path);

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

/* The program closed [first, last] behind our back (close_range): forget
 * our descriptors in that range so we never write into a reused fd. */
void resil_log_fds_closed(unsigned first, unsigned last);

/* Move fd to a descriptor >= RESIL_HIGH_FD with FD_CLOEXEC, closing the
 * original, so that programs which assume low numbers never meet our fds.
 * Returns the new fd, or the old one when that fails. */
int resil_fd_high(int fd);
#define RESIL_HIGH_FD 900

static inline bool resil_fd_in_range(int fd, unsigned first, unsigned last)
{
    return fd >= 0 && (unsigned)fd >= first && (unsigned)fd <= last;
}

#endif
