#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "sys.h"

enum kind { K_INT, K_BOOL, K_LEVEL, K_PATH, K_ALT };

struct key {
    const char *name;
    enum kind kind;
    size_t off;
    long min, max;
    int clamp; /* out of range: clamp with a warning instead of rejecting */
};

#define OFF(f) offsetof(struct resil_config, f)

static const struct key keys[] = {
    {"race", K_BOOL, OFF(race), 0, 1, 0},
    {"attempt_delay_ms", K_INT, OFF(attempt_delay_ms),
     RESIL_MIN_ATTEMPT_DELAY_MS, RESIL_MAX_ATTEMPT_DELAY_MS, 1},
    {"resolution_delay_ms", K_INT, OFF(resolution_delay_ms), 0, 2000, 1},
    {"dns", K_BOOL, OFF(dns), 0, 1, 0},
    {"dns_refresh_ms", K_INT, OFF(dns_refresh_ms), 0, 86400000, 1},
    {"fail_timeout_ms", K_INT, OFF(fail_timeout_ms), 500, 3600000, 1},
    {"stall_ms", K_INT, OFF(stall_ms), 200, 60000, 1},
    {"health_ttl_ms", K_INT, OFF(health_ttl_ms), 0, 86400000, 1},
    {"log_level", K_LEVEL, OFF(log_level), 0, 5, 1},
    {"strict", K_BOOL, OFF(strict), 0, 1, 0},
    {"log_file", K_PATH, OFF(log_file), 0, 0, 0},
    {"events", K_PATH, OFF(events_file), 0, 0, 0},
    {"alternates", K_ALT, 0, 0, 0, 0},
};

void resil_config_defaults(struct resil_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->race = 1;
    cfg->attempt_delay_ms = RESIL_DEF_ATTEMPT_DELAY_MS;
    cfg->resolution_delay_ms = RESIL_DEF_RESOLUTION_DELAY_MS;
    cfg->dns = 1;
    cfg->dns_refresh_ms = RESIL_DEF_DNS_REFRESH_MS;
    cfg->fail_timeout_ms = RESIL_DEF_FAIL_TIMEOUT_MS;
    cfg->stall_ms = RESIL_DEF_STALL_MS;
    cfg->health_ttl_ms = RESIL_DEF_HEALTH_TTL_MS;
    cfg->log_level = RESIL_LOG_WARN;
}

static struct resil_config default_cfg;
static const struct resil_config *current;

const struct resil_config *resil_config_get(void)
{
    if (__builtin_expect(current == NULL, 0)) {
        resil_config_defaults(&default_cfg);
        current = &default_cfg;
    }
    return current;
}

void resil_config_set(const struct resil_config *cfg)
{
    current = cfg;
}

/* A config file line, and so any value, is at most this long. */
#define CONFIG_LINE_MAX 1024

static const struct key *find_key(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strlen(keys[i].name) == len && strncmp(keys[i].name, name, len) == 0)
            return &keys[i];
    return NULL;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_level(const char *s, long *out)
{
    static const char *const names[] = {"none",  "error", "warn",
                                        "info",  "debug", "trace"};
    for (long i = 0; i < 6; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    if (strcasecmp(s, "warning") == 0) {
        *out = RESIL_LOG_WARN;
        return 0;
    }
    return parse_long(s, out);
}

/* alternates: addresses separated by spaces or commas, one group per key;
 * v[0, len) holds them (not NUL-terminated: the environment's groups are
 * parsed in place, however long the variable). */
static resil_status_t parse_alt(struct resil_config *cfg, const char *v,
                                size_t len, char *err, size_t errlen)
{
    struct resil_alt_group g;
    char tok[INET6_ADDRSTRLEN + 1];
    const char *end = v + len;

    memset(&g, 0, sizeof(g));
    while (v < end) {
        size_t n = 0;
        while (v + n < end && !strchr(" \t,", v[n]))
            n++;
        if (n == 0) {
            v++;
            continue;
        }
        if (n >= sizeof(tok)) {
            snprintf(err, errlen, "alternates: address too long");
            return RESIL_EINVAL;
        }
        memcpy(tok, v, n);
        tok[n] = '\0';
        if (g.n == RESIL_MAX_ALT_ADDRS) {
            snprintf(err, errlen, "alternates: more than %d addresses in one "
                     "group", RESIL_MAX_ALT_ADDRS);
            return RESIL_ERANGE;
        }
        if (!resil_ip_parse(tok, &g.ip[g.n])) {
            snprintf(err, errlen, "alternates: '%s' is not a numeric IPv4 or "
                     "IPv6 address", tok);
            return RESIL_EINVAL;
        }
        g.n++;
        v += n;
    }
    if (g.n < 2) {
        snprintf(err, errlen, "alternates: a group needs at least two "
                 "addresses");
        return RESIL_EINVAL;
    }
    if (cfg->n_alt == RESIL_MAX_ALT_GROUPS) {
        snprintf(err, errlen, "alternates: more than %d groups",
                 RESIL_MAX_ALT_GROUPS);
        return RESIL_ERANGE;
    }
    cfg->alt[cfg->n_alt++] = g;
    return RESIL_OK;
}

static resil_status_t apply(struct resil_config *cfg, const struct key *k,
                            const char *v, char *err, size_t errlen)
{
    long n;
    int *ip = (int *)((char *)cfg + k->off);

    switch (k->kind) {
    case K_ALT:
        return parse_alt(cfg, v, strlen(v), err, errlen);
    case K_PATH:
        if (strlen(v) >= RESIL_PATH_MAX) {
            snprintf(err, errlen, "%s: path longer than %d bytes", k->name,
                     RESIL_PATH_MAX - 1);
            return RESIL_ERANGE;
        }
        strcpy((char *)cfg + k->off, v);
        return RESIL_OK;
    case K_BOOL:
        if (strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0 ||
            strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0)
            *ip = 1;
        else if (strcmp(v, "0") == 0 || strcasecmp(v, "off") == 0 ||
                 strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0)
            *ip = 0;
        else {
            snprintf(err, errlen, "%s: '%s' is not a boolean (0/1, on/off, "
                     "yes/no)", k->name, v);
            return RESIL_EINVAL;
        }
        return RESIL_OK;
    case K_INT:
    case K_LEVEL:
        if ((k->kind == K_LEVEL ? parse_level(v, &n) : parse_long(v, &n)) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a %s", k->name, v,
                     k->kind == K_LEVEL ? "log level (0-5 or none, error, "
                                          "warn, info, debug, trace)"
                                        : "decimal integer");
            return RESIL_EINVAL;
        }
        if (n < k->min || n > k->max) {
            long c = n < k->min ? k->min : k->max;
            if (!k->clamp) {
                snprintf(err, errlen, "%s: %ld is outside [%ld, %ld]", k->name,
                         n, k->min, k->max);
                return RESIL_ERANGE;
            }
            *ip = (int)c;
            snprintf(err, errlen, "%s: %ld is outside [%ld, %ld]; using %ld",
                     k->name, n, k->min, k->max, c);
            return RESIL_ERANGE;
        }
        *ip = (int)n;
        return RESIL_OK;
    }
    return RESIL_EINVAL;
}

resil_status_t resil_config_line(struct resil_config *cfg, const char *line,
                                 char *err, size_t errlen)
{
    const char *p = line, *kend, *v;
    char val[CONFIG_LINE_MAX + 1]; /* 8 IPv6 addresses of 45 bytes fit */
    size_t vlen;
    const struct key *k;

    err[0] = '\0';
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return RESIL_OK;
    kend = p;
    while (*kend && !isspace((unsigned char)*kend) && *kend != '=')
        kend++;
    k = find_key(p, (size_t)(kend - p));
    if (k == NULL) {
        snprintf(err, errlen, "unknown key '%.*s'",
                 (int)((kend - p) > 64 ? 64 : (kend - p)), p);
        return RESIL_EINVAL;
    }
    v = kend;
    while (isspace((unsigned char)*v) || *v == '=')
        v++;
    vlen = strlen(v);
    /* strip a trailing comment and whitespace */
    const char *hash = strchr(v, '#');
    if (hash)
        vlen = (size_t)(hash - v);
    while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
        vlen--;
    if (vlen == 0) {
        snprintf(err, errlen, "%s: missing value", k->name);
        return RESIL_EINVAL;
    }
    if (vlen >= sizeof(val)) {
        snprintf(err, errlen, "%s: value too long", k->name);
        return RESIL_ERANGE;
    }
    memcpy(val, v, vlen);
    val[vlen] = '\0';
    return apply(cfg, k, val, err, errlen);
}

#define CONFIG_FILE_MAX (256 * 1024)

resil_status_t resil_config_file(struct resil_config *cfg, const char *path,
                                 resil_config_err_fn fn)
{
    char where[RESIL_PATH_MAX + 32], err[256];
    struct stat st;
    char *buf = NULL;
    size_t have = 0, lineno = 0;
    resil_status_t ret = RESIL_OK;
    int fd;

    /* O_NONBLOCK: opening a FIFO (or some devices) for reading would
     * otherwise wait for a writer, before main(), for ever. Only a regular
     * file is a config file: a FIFO or a device could also block the
     * reads, or never end. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return RESIL_ESYS;
    if (fstat(fd, &st) < 0) {
        ret = RESIL_ESYS;
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        fn(path, S_ISDIR(st.st_mode)
                     ? "is a directory, not a config file; ignored"
                     : "is not a regular file (a FIFO, socket or device); "
                       "ignored");
        ret = RESIL_EINVAL;
        goto done;
    }
    buf = malloc(CONFIG_FILE_MAX + 1);
    if (buf == NULL) {
        ret = RESIL_ENOMEM;
        goto done;
    }
    for (;;) {
        ssize_t r = real.read(fd, buf + have, CONFIG_FILE_MAX + 1 - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            ret = RESIL_ESYS;
            goto done;
        }
        if (r == 0)
            break;
        have += (size_t)r;
        if (have > CONFIG_FILE_MAX) {
            fn(path, "file larger than 256 KiB; ignored");
            ret = RESIL_EINVAL;
            goto done;
        }
    }
    buf[have] = '\0';
    for (char *line = buf; line < buf + have;) {
        char *nl = memchr(line, '\n', (size_t)(buf + have - line));
        size_t len = nl ? (size_t)(nl - line) : (size_t)(buf + have - line);
        lineno++;
        snprintf(where, sizeof(where), "%s:%zu", path, lineno);
        line[len] = '\0';
        if (strlen(line) != len) {
            fn(where, "NUL byte in line; line ignored");
            ret = RESIL_EINVAL;
        } else if (len > CONFIG_LINE_MAX) {
            fn(where, "line longer than 1024 bytes; line ignored");
            ret = RESIL_EINVAL;
        } else if (resil_config_line(cfg, line, err, sizeof(err)) != RESIL_OK) {
            fn(where, err);
            ret = RESIL_EINVAL;
        }
        line += len + 1;
    }
done:
    free(buf);
    real.close(fd);
    return ret;
}

resil_status_t resil_config_env(struct resil_config *cfg,
                                char *(*get)(const char *),
                                resil_config_err_fn fn)
{
    char name[64], line[CONFIG_LINE_MAX + 80], err[256];
    resil_status_t ret = RESIL_OK;

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v;
        size_t j, n = strlen(keys[i].name);
        memcpy(name, "RESIL_", 6);
        for (j = 0; j < n; j++)
            name[6 + j] = (char)toupper((unsigned char)keys[i].name[j]);
        name[6 + n] = '\0';
        v = get(name);
        if (v == NULL)
            continue;
        if (v[strspn(v, " \t")] == '\0') {
            /* RESIL_EVENTS= as scripts write it: an empty path means off,
             * any other empty value means unset; never a warning, which
             * would otherwise come from every process of a pipeline */
            if (keys[i].kind == K_PATH)
                ((char *)cfg + keys[i].off)[0] = '\0';
            continue;
        }
        if (keys[i].kind == K_ALT) {
            /* RESIL_ALTERNATES: groups separated by ';', parsed in place
             * (32 groups of 8 IPv6 addresses run to about 12 KB) */
            while (*v) {
                size_t glen = strcspn(v, ";"), k = 0;
                const char *g = v;
                v += glen + (v[glen] == ';');
                while (k < glen && (g[k] == ' ' || g[k] == '\t'))
                    k++;
                if (k == glen)
                    continue; /* an empty group, as in "a,b;;c,d;" */
                if (parse_alt(cfg, g, glen, err, sizeof(err)) != RESIL_OK) {
                    fn(name, err);
                    ret = RESIL_EINVAL;
                }
            }
            continue;
        }
        if (snprintf(line, sizeof(line), "%s %s", keys[i].name, v) >=
            (int)sizeof(line)) {
            fn(name, "value too long");
            ret = RESIL_EINVAL;
            continue;
        }
        if (strchr(v, '#') != NULL || strchr(v, '\n') != NULL) {
            fn(name, "value contains '#' or a newline");
            ret = RESIL_EINVAL;
            continue;
        }
        if (resil_config_line(cfg, line, err, sizeof(err)) != RESIL_OK) {
            fn(name, err);
            ret = RESIL_EINVAL;
        }
    }
    return ret;
}

const struct resil_alt_group *
resil_config_alt_find(const struct resil_config *cfg,
                      const struct resil_ip *ip)
{
    for (int g = 0; g < cfg->n_alt; g++)
        for (int i = 0; i < cfg->alt[g].n; i++)
            if (resil_ip_equal(&cfg->alt[g].ip[i], ip))
                return &cfg->alt[g];
    return NULL;
}
