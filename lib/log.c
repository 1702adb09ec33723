#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fds.h"
#include "log.h"
#include "sys.h"

int resil_log_level = RESIL_LOG_WARN;
/* stderr, or the log file (owned by the registry, which may move it: every
 * write pins it) */
static int log_fd = 2;
static atomic_int log_pins;

static const char *const level_names[] = {"none",  "error", "warn",
                                          "info",  "debug", "trace"};

resil_status_t resil_log_open(const char *path)
{
    RESIL_KEEP_ERRNO();
    int fd;

    if (path == NULL || path[0] == '\0')
        return RESIL_OK;
    /* O_NONBLOCK: opening a FIFO for writing blocks until it has a reader
     * (before main(), for ever); with it the open fails with ENXIO instead,
     * and a reader that stops reading costs lost lines, never a blocked
     * program. It is set on our own open file description only. libc's
     * open is not interposed by libresil. */
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK,
              0644);
    if (fd < 0) {
        if (errno == ENXIO)
            resil_log(RESIL_LOG_WARN, "log file %s is a FIFO with no reader "
                      "(writing to it would block); logging to stderr", path);
        else
            resil_log(RESIL_LOG_WARN, "cannot open log file %s: %s; logging "
                      "to stderr", path, strerror(errno));
        return RESIL_ESYS;
    }
    if (resil_fds_own(&log_fd, fd, RESIL_FD_FILE, &log_pins) != RESIL_OK) {
        log_fd = 2;
        resil_log(RESIL_LOG_WARN, "no descriptor free for log file %s: %s; "
                  "logging to stderr", path, strerror(errno));
        return RESIL_ESYS;
    }
    return RESIL_OK;
}

void resil_log(int level, const char *fmt, ...)
{
    int saved = errno;
    char buf[1024];
    int n, m;
    va_list ap;

    if (level > resil_log_level || level <= RESIL_LOG_NONE)
        return;
    n = snprintf(buf, sizeof(buf), "libresil[%d]: %s: ", (int)getpid(),
                 level_names[level]);
    if (n < 0)
        n = 0;
    va_start(ap, fmt);
    m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (real.write) {
        int fd = resil_fds_pin(&log_fd, &log_pins);
        if (fd >= 0)
            (void)!real.write(fd, buf, (size_t)n);
        resil_fds_unpin(&log_pins);
    }
    errno = saved;
}
