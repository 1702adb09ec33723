/* libresil: configuration.
 *
 * One format: "key value" lines in a file (RESIL_CONF_FILE), '#' comments,
 * and an environment variable RESIL_<KEY> for every key, which wins over the
 * file. The shim loads it once at init; afterwards it is immutable and read
 * without locks. Every key, its default and its bounds are in the table in
 * config.c and in README.md.
 */
#ifndef RESIL_CONFIG_H
#define RESIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "status.h"

#define RESIL_MAX_ALT_GROUPS 32
#define RESIL_MAX_ALT_ADDRS 8
#define RESIL_PATH_MAX 256

/* Defaults (also documented in README.md). */
#define RESIL_DEF_ATTEMPT_DELAY_MS 250    /* RFC 8305 section 5 */
#define RESIL_MIN_ATTEMPT_DELAY_MS 10     /* RFC 8305 section 8: MUST NOT < 10 */
#define RESIL_MAX_ATTEMPT_DELAY_MS 2000   /* RFC 8305 section 8 */
#define RESIL_DEF_RESOLUTION_DELAY_MS 50  /* RFC 8305 section 3 */
#define RESIL_DEF_FAIL_TIMEOUT_MS 10000
#define RESIL_DEF_STALL_MS 1000
#define RESIL_DEF_HEALTH_TTL_MS 30000
#define RESIL_DEF_DNS_REFRESH_MS 30000
#define RESIL_DEF_SESSION_LINGER_MS 10000
#define RESIL_MAX_SESSION_PATS 32
#define RESIL_PAT_NAME_LEN 254 /* a DNS name's text form, NUL included */

struct resil_alt_group {
    int n;
    struct resil_ip ip[RESIL_MAX_ALT_ADDRS];
};

/* One RESIL_SESSION pattern: HOST:PORT. */
struct resil_session_pat {
    enum { RESIL_PAT_ANY, RESIL_PAT_NAME, RESIL_PAT_NET } kind;
    struct resil_ip net;  /* RESIL_PAT_NET: the address ... */
    int prefix;           /* ... and its prefix length */
    uint16_t port;        /* 0: any port */
    char name[RESIL_PAT_NAME_LEN]; /* RESIL_PAT_NAME, lower case */
};

struct resil_config {
    int race;                /* race connects (0 = pass-through) */
    int attempt_delay_ms;    /* stagger between attempts */
    int resolution_delay_ms; /* wait for AAAA after A */
    int dns;                 /* refresh candidates with c-ares */
    int dns_refresh_ms;      /* at most one c-ares lookup per name per this */
    int fail_timeout_ms;     /* bound on detecting a dead path */
    int stall_ms;            /* no ACK for this long with data in flight */
    int health_ttl_ms;       /* how long a failed address is tried last */
    int log_level;
    int strict;              /* internal failure -> error, not pass-through */
    char log_file[RESIL_PATH_MAX];
    char events_file[RESIL_PATH_MAX];
    int n_alt;
    struct resil_alt_group alt[RESIL_MAX_ALT_GROUPS];
    int n_session;           /* RESIL_SESSION patterns */
    struct resil_session_pat session[RESIL_MAX_SESSION_PATS];
    char psk_file[RESIL_PATH_MAX];
    int session_linger_ms;   /* a detached session waits this long */
};

/* Reports one problem; `where` is "FILE:LINE" or "RESIL_KEY". */
typedef void (*resil_config_err_fn)(const char *where, const char *msg);

void resil_config_defaults(struct resil_config *cfg);

/* The process's configuration: what resil_config_set() installed (kept by
 * pointer, immutable from then on, read without locks), the defaults
 * before that. Never NULL. */
const struct resil_config *resil_config_get(void);
void resil_config_set(const struct resil_config *cfg);

/* Apply one "key value" line (comments and blank lines are accepted and do
 * nothing). Returns RESIL_OK, or RESIL_EINVAL/RESIL_ERANGE with a message in
 * err (key and reason) and cfg unchanged for that key. */
resil_status_t resil_config_line(struct resil_config *cfg, const char *line,
                                 char *err, size_t errlen);

/* Read a config file line by line; each bad line is reported through fn and
 * skipped. Returns RESIL_OK, RESIL_ESYS when the file cannot be read, or
 * RESIL_EINVAL when some line was rejected (the others still apply). */
resil_status_t resil_config_file(struct resil_config *cfg, const char *path,
                                 resil_config_err_fn fn);

/* Apply RESIL_<KEY> variables read through get (getenv or secure_getenv). */
resil_status_t resil_config_env(struct resil_config *cfg,
                                char *(*get)(const char *),
                                resil_config_err_fn fn);

/* Whether the session layer applies to ip:port. name: the name ip came
 * from, or NULL. For a listening socket pass its local address (the
 * unspecified address matches a pattern of any host). */
bool resil_config_session_match(const struct resil_config *cfg,
                                const struct resil_ip *ip, const char *name,
                                uint16_t port);

/* The alternate-address group holding ip, or NULL. */
const struct resil_alt_group *
resil_config_alt_find(const struct resil_config *cfg,
                      const struct resil_ip *ip);

#endif
