#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "events.h"
#include "fds.h"
#include "log.h"
#include "sys.h"

static int ev_fd = -1;          /* owned by the registry (fds.h) */
static atomic_int ev_pins;
static int ev_failed;

/* Per-process counts for the summary at exit (log level info), kept even
 * without an events file. A forked child starts from zero: the first event
 * after a fork resets them, so each process reports only its own.
 * count_gen is resil_fork_gen + 1 of the process that counted (0: none). */
enum { C_CONNECT, C_FAILED, C_RERACE, C_STALL, C_RESUME, C_DROPPED, C_N };
static unsigned long counts[C_N];
static unsigned count_gen;

static void count(const char *type)
{
    unsigned gen = resil_fork_gen + 1;
    int c;

    if (__atomic_load_n(&count_gen, __ATOMIC_RELAXED) != gen) {
        for (c = 0; c < C_N; c++)
            __atomic_store_n(&counts[c], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&count_gen, gen, __ATOMIC_RELAXED);
    }
    if (strcmp(type, "connect") == 0)
        c = C_CONNECT;
    else if (strcmp(type, "connect_failed") == 0)
        c = C_FAILED;
    else if (strcmp(type, "rerace") == 0)
        c = C_RERACE;
    else if (strcmp(type, "path_stall") == 0)
        c = C_STALL;
    else if (strcmp(type, "resume") == 0)
        c = C_RESUME;
    else
        return;
    __atomic_fetch_add(&counts[c], 1, __ATOMIC_RELAXED);
}

/* Runs at exit() (not _exit, not exec). */
__attribute__((destructor)) static void events_summary(void)
{
    if (resil_log_level < RESIL_LOG_INFO ||
        __atomic_load_n(&count_gen, __ATOMIC_RELAXED) != resil_fork_gen + 1)
        return;
    rinfo("summary: %lu connects, %lu failed, %lu re-raced, %lu path "
          "stalls, %lu resumes; %lu events not written",
          counts[C_CONNECT], counts[C_FAILED], counts[C_RERACE],
          counts[C_STALL], counts[C_RESUME], counts[C_DROPPED]);
}

resil_status_t resil_events_open(const char *path)
{
    RESIL_KEEP_ERRNO();
    int fd;

    if (path == NULL || path[0] == '\0')
        return RESIL_OK;
    /* O_NONBLOCK: a FIFO with no reader fails with ENXIO instead of
     * blocking the open (before main()), and a full one drops lines */
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK,
              0644);
    if (fd < 0) {
        if (errno == ENXIO)
            rwarn("events file %s is a FIFO with no reader (writing to it "
                  "would block); events disabled", path);
        else
            rwarn("cannot open events file %s: %s; events disabled", path,
                  strerror(errno));
        return RESIL_ESYS;
    }
    if (resil_fds_own(&ev_fd, fd, RESIL_FD_FILE, &ev_pins) != RESIL_OK) {
        rwarn("no descriptor free for events file %s: %s; events disabled",
              path, strerror(errno));
        return RESIL_ESYS;
    }
    return RESIL_OK;
}

bool resil_events_enabled(void)
{
    return __atomic_load_n(&ev_fd, __ATOMIC_RELAXED) >= 0 && !ev_failed;
}

char *resil_json_str(const char *s, char *buf, unsigned len)
{
    unsigned o = 0;
    for (; *s && o + 7 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            /* control bytes, and bytes that may not be valid UTF-8: a
             * JSON line must always parse (host names are ASCII) */
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
    char buf[4096];
    struct timespec ts;
    va_list ap;
    int n, m;

    count(type);
    if (!resil_events_enabled()) {
        if (__atomic_load_n(&ev_fd, __ATOMIC_RELAXED) >= 0)
            __atomic_fetch_add(&counts[C_DROPPED], 1, __ATOMIC_RELAXED);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    n = snprintf(buf, sizeof(buf),
                 "{\"ts\":%lld.%06ld,\"pid\":%d,\"fd\":%d,\"event\":\"%s\"",
                 (long long)ts.tv_sec, ts.tv_nsec / 1000, (int)resil_getpid(),
                 fd, type);
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
    int efd = resil_fds_pin(&ev_fd, &ev_pins);
    ssize_t w = efd >= 0 ? real.write(efd, buf, (size_t)n) : -1;
    resil_fds_unpin(&ev_pins);
    if (w != n) {
        __atomic_fetch_add(&counts[C_DROPPED], 1, __ATOMIC_RELAXED);
        /* full disk, quota, file gone: say so once, then stay silent */
        if (__atomic_exchange_n(&ev_failed, 1, __ATOMIC_RELAXED) == 0)
            rwarn("events file write failed (%s); events disabled",
                  strerror(errno));
    }
    errno = saved;
}
