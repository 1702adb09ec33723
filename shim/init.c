/* Real-function table, lazy thread-safe init, configuration. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "events.h"
#include "fds.h"
#include "health.h"
#include "log.h"
#include "shim.h"

volatile int resil_ready;
static struct resil_config config;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void *must(const char *name, void *self)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p == NULL || p == self) {
        /* a mandatory symbol resolving to our own hook would recurse */
        static const char msg[] = "libresil: cannot resolve a libc symbol; "
                                  "aborting\n";
        (void)!write(2, msg, sizeof(msg) - 1);
        abort();
    }
    return p;
}

#define RESOLVE(f) real.f = must(#f, (void *)f)
#define OPTIONAL(f) real.f = dlsym(RTLD_NEXT, #f)

static void config_err(const char *where, const char *msg)
{
    rwarn("config %s: %s", where, msg);
}


static void init_once(void)
{
    resil_in_shim++;
    RESOLVE(socket);
    RESOLVE(connect);
    RESOLVE(bind);
    RESOLVE(listen);
    RESOLVE(accept);
    RESOLVE(accept4);
    RESOLVE(close);
    OPTIONAL(close_range);
    OPTIONAL(closefrom);
    RESOLVE(fcntl);
    OPTIONAL(fcntl64);
    RESOLVE(dup);
    RESOLVE(dup2);
    RESOLVE(dup3);
    RESOLVE(setsockopt);
    RESOLVE(getsockopt);
    RESOLVE(epoll_ctl);
    RESOLVE(epoll_wait);
    RESOLVE(epoll_pwait);
    OPTIONAL(epoll_pwait2);
    RESOLVE(poll);
    RESOLVE(__poll_chk);
    RESOLVE(ppoll);
    RESOLVE(select);
    RESOLVE(pselect);
    RESOLVE(getaddrinfo);
    RESOLVE(gethostbyname);
    RESOLVE(gethostbyname2);
    RESOLVE(gethostbyname_r);
    RESOLVE(gethostbyname2_r);
    RESOLVE(read);
    RESOLVE(readv);
    RESOLVE(recv);
    RESOLVE(recvfrom);
    RESOLVE(recvmsg);
    RESOLVE(__read_chk);
    RESOLVE(__recv_chk);
    RESOLVE(__recvfrom_chk);
    RESOLVE(write);
    RESOLVE(writev);
    RESOLVE(send);
    RESOLVE(sendto);
    RESOLVE(sendmsg);
    RESOLVE(sendfile);
    RESOLVE(sendfile64);

    /* not interposed: libc's own */
    real.getsockname = getsockname;
    real.getpeername = getpeername;
    real.shutdown = shutdown;
    real.ioctl = ioctl;

    resil_fds_init();
    /* setuid: ignore the environment (secure_getenv returns NULL) */
    resil_config_defaults(&config);
    const char *conf = secure_getenv("RESIL_CONF_FILE");
    const char *lvl = secure_getenv("RESIL_LOG_LEVEL");
    if (lvl) {
        /* so that config file problems are reported at the wanted level */
        char err[128];
        char line[64];
        struct resil_config tmp;
        resil_config_defaults(&tmp);
        snprintf(line, sizeof(line), "log_level %.40s", lvl);
        if (resil_config_line(&tmp, line, err, sizeof(err)) == RESIL_OK)
            resil_log_level = tmp.log_level;
    }
    if (conf && conf[0] &&
        resil_config_file(&config, conf, config_err) == RESIL_ESYS)
        rwarn("config %s: cannot read: %s; using defaults", conf,
              strerror(errno));
    resil_config_env(&config, secure_getenv, config_err);
    resil_log_level = config.log_level;
    resil_log_open(config.log_file);
    resil_events_open(config.events_file);
    resil_config_set(&config);
    resil_health_set_ttl((uint64_t)config.health_ttl_ms * RESIL_MS);
    pthread_atfork(resil_engine_atfork_prepare, resil_engine_atfork_parent,
                   resil_engine_atfork_child);
    rdebug("loaded: race=%d attempt_delay_ms=%d fail_timeout_ms=%d "
           "alternate groups=%d", config.race, config.attempt_delay_ms,
           config.fail_timeout_ms, config.n_alt);
    resil_ready = 1;
    resil_in_shim--;
}

void resil_init(void)
{
    int saved = errno;
    pthread_once(&once, init_once);
    errno = saved;
}

__attribute__((constructor)) static void resil_ctor(void)
{
    resil_init();
}
