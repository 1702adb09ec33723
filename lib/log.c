#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sys.h"

int resil_log_level = RESIL_LOG_WARN;
static int log_fd = 2;

static const char *const level_names[] = {"none",  "error", "warn",
                                          "info",  "debug", "trace"};

int resil_fd_high(int fd)
{
    int hi = real.fcntl(fd, F_DUPFD_CLOEXEC, RESIL_HIGH_FD);
    if (hi < 0)
        return fd;
    real.close(fd);
    return hi;
}

void resil_log_fds_closed(unsigned first, unsigned last)
{
    if (log_fd > 2 && resil_fd_in_range(log_fd, first, last))
        log_fd = 2;
}

int resil_log_open(const char *path)
{
    int saved = errno;
    int fd;

    if (path == NULL || path[0] == '\0')
        return 0;
    /* openat via libc open is not interposed by libresil. */
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        resil_log(RESIL_LOG_WARN, "cannot open log file %s: %s; logging to "
                  "stderr", path, strerror(errno));
        errno = saved;
        return -1;
    }
    log_fd = resil_fd_high(fd);
    errno = saved;
    return 0;
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
    if (real.write)
        (void)!real.write(log_fd, buf, (size_t)n);
    errno = saved;
}
