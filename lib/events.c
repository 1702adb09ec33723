#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "log.h"
#include "sys.h"

static int ev_fd = -1;
static int ev_failed;

int resil_events_open(const char *path)
{
    int saved = errno, fd;

    if (path == NULL || path[0] == '\0')
        return 0;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK,
              0644);
    if (fd < 0) {
        rwarn("cannot open events file %s: %s; events disabled", path,
              strerror(errno));
        errno = saved;
        return -1;
    }
    ev_fd = resil_fd_high(fd);
    errno = saved;
    return 0;
}

void resil_events_fds_closed(unsigned first, unsigned last)
{
    if (ev_fd >= 0 && (unsigned)ev_fd >= first && (unsigned)ev_fd <= last)
        ev_fd = -1;
}

bool resil_events_enabled(void)
{
    return ev_fd >= 0 && !ev_failed;
}

char *resil_json_str(const char *s, char *buf, unsigned len)
{
    unsigned o = 0;
    for (; *s && o + 7 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20) {
            o += (unsigned)snprintf(buf + o, len - o, "\\u%04x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o] = '\0';
    return buf;
}

void resil_event(const char *type, int fd, const char *members, ...)
{
    int saved = errno;
    char buf[2048];
    struct timespec ts;
    va_list ap;
    int n, m;

    if (!resil_events_enabled())
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    n = snprintf(buf, sizeof(buf),
                 "{\"ts\":%lld.%06ld,\"pid\":%d,\"fd\":%d,\"event\":\"%s\"",
                 (long long)ts.tv_sec, ts.tv_nsec / 1000, (int)getpid(), fd,
                 type);
    va_start(ap, members);
    if (members[0] != '\0') {
        buf[n++] = ',';
        m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 2, members, ap);
        if (m < 0 || (size_t)m >= sizeof(buf) - (size_t)n - 2) {
            /* never write a truncated object */
            va_end(ap);
            errno = saved;
            return;
        }
        n += m;
    }
    va_end(ap);
    buf[n++] = '}';
    buf[n++] = '\n';
    if (resil_sys.write(ev_fd, buf, (size_t)n) != n) {
        ev_failed = 1;
        rwarn("events file write failed (%s); events disabled",
              strerror(errno));
    }
    errno = saved;
}
