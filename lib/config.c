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

enum kind { K_INT, K_BOOL, K_LEVEL, K_PATH, K_ALT, K_SESSION };

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
    {"session", K_SESSION, 0, 0, 0, 0},
    {"psk_file", K_PATH, OFF(psk_file), 0, 0, 0},
    {"session_linger_ms", K_INT, OFF(session_linger_ms), 0, 3600000, 1},
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
    cfg->session_linger_ms = RESIL_DEF_SESSION_LINGER_MS;
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

/* One session pattern tok (NUL-terminated): HOST:PORT, IPv6 in brackets. */
static resil_status_t parse_pat(struct resil_session_pat *p, const char *tok,
                                char *err, size_t errlen)
{
    char host[RESIL_PAT_NAME_LEN];
    const char *colon, *port;
    size_t hl;
    char *end;

    memset(p, 0, sizeof(*p));
    if (tok[0] == '[') {
        const char *rb = strchr(tok, ']');
        if (rb == NULL || rb[1] != ':') {
            snprintf(err, errlen, "session: '%s': expected [IPv6]:PORT", tok);
            return RESIL_EINVAL;
        }
        hl = (size_t)(rb - tok - 1);
        memcpy(host, tok + 1, hl < sizeof(host) ? hl : 0);
        colon = rb + 1;
    } else {
        colon = strrchr(tok, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "session: '%s': expected HOST:PORT", tok);
            return RESIL_EINVAL;
        }
        hl = (size_t)(colon - tok);
        if (memchr(tok, ':', hl) != NULL) {
            snprintf(err, errlen, "session: '%s': an IPv6 host goes in "
                     "brackets ([fd00::1]:PORT)", tok);
            return RESIL_EINVAL;
        }
        memcpy(host, tok, hl < sizeof(host) ? hl : 0);
    }
    if (hl == 0 || hl >= sizeof(host)) {
        snprintf(err, errlen, "session: '%s': %s host", tok,
                 hl ? "too long a" : "no");
        return RESIL_EINVAL;
    }
    host[hl] = '\0';
    port = colon + 1;
    if (strcmp(port, "*") == 0) {
        p->port = 0;
    } else {
        long v;
        errno = 0;
        v = strtol(port, &end, 10);
        if (errno || end == port || *end || v < 1 || v > 65535) {
            snprintf(err, errlen, "session: '%s': the port is a number "
                     "1-65535 or *", tok);
            return RESIL_EINVAL;
        }
        p->port = (uint16_t)v;
    }
    if (strcmp(host, "*") == 0) {
        p->kind = RESIL_PAT_ANY;
        return RESIL_OK;
    }
    char *slash = strchr(host, '/');
    if (slash)
        *slash = '\0';
    if (resil_ip_parse(host, &p->net)) {
        int max = p->net.family == AF_INET ? 32 : 128;
        p->kind = RESIL_PAT_NET;
        p->prefix = max;
        if (slash) {
            long v;
            errno = 0;
            v = strtol(slash + 1, &end, 10);
            if (errno || end == slash + 1 || *end || v < 0 || v > max) {
                snprintf(err, errlen, "session: '%s': the prefix length is "
                         "0-%d", tok, max);
                return RESIL_EINVAL;
            }
            p->prefix = (int)v;
        }
        return RESIL_OK;
    }
    if (slash || strspn(host, "abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") !=
                     strlen(host)) {
        snprintf(err, errlen, "session: '%s': the host is *, a name, an "
                 "address or a prefix (address/length)", tok);
        return RESIL_EINVAL;
    }
    p->kind = RESIL_PAT_NAME;
    for (size_t i = 0; host[i]; i++)
        p->name[i] = (char)tolower((unsigned char)host[i]);
    return RESIL_OK;
}

/* session: patterns separated by spaces or commas in v[0, len). */
static resil_status_t parse_session(struct resil_config *cfg, const char *v,
                                    size_t len, char *err, size_t errlen)
{
    char tok[RESIL_PAT_NAME_LEN + 16];
    const char *end = v + len;
    int n = cfg->n_session;

    while (v < end) {
        size_t k = 0;
        while (v + k < end && !strchr(" \t,", v[k]))
            k++;
        if (k == 0) {
            v++;
            continue;
        }
        if (k >= sizeof(tok)) {
            snprintf(err, errlen, "session: a pattern longer than %zu bytes",
                     sizeof(tok) - 1);
            return RESIL_EINVAL;
        }
        if (n == RESIL_MAX_SESSION_PATS) {
            snprintf(err, errlen, "session: more than %d patterns",
                     RESIL_MAX_SESSION_PATS);
            return RESIL_ERANGE;
        }
        memcpy(tok, v, k);
        tok[k] = '\0';
        if (parse_pat(&cfg->session[n], tok, err, errlen) != RESIL_OK)
            return RESIL_EINVAL;
        n++;
        v += k;
    }
    /* all or nothing: a line with one bad pattern adds none */
    cfg->n_session = n;
    return RESIL_OK;
}

static bool net_match(const struct resil_ip *net, int prefix,
                      const struct resil_ip *ip)
{
    const uint8_t *a, *b;
    int full, bits;

    if (net->family != ip->family)
        return false;
    a = (const uint8_t *)&net->u;
    b = (const uint8_t *)&ip->u;
    full = prefix / 8;
    bits = prefix % 8;
    if (memcmp(a, b, (size_t)full) != 0)
        return false;
    return bits == 0 ||
           ((a[full] ^ b[full]) & (uint8_t)(0xff << (8 - bits))) == 0;
}

static bool unspecified(const struct resil_ip *ip)
{
    static const uint8_t zero[16];
    return memcmp(&ip->u, zero, ip->family == AF_INET ? 4 : 16) == 0;
}

bool resil_config_session_match(const struct resil_config *cfg,
                                const struct resil_ip *ip, const char *name,
                                uint16_t port)
{
    for (int i = 0; i < cfg->n_session; i++) {
        const struct resil_session_pat *p = &cfg->session[i];
        if (p->port != 0 && p->port != port)
            continue;
        switch (p->kind) {
        case RESIL_PAT_ANY:
            return true;
        case RESIL_PAT_NET:
            if (ip && (net_match(&p->net, p->prefix, ip) || unspecified(ip)))
                return true;
            break;
        case RESIL_PAT_NAME:
            if ((name && strcasecmp(name, p->name) == 0) ||
                (ip && unspecified(ip)))
                return true;
            break;
        }
    }
    return false;
}

static resil_status_t apply(struct resil_config *cfg, const struct key *k,
                            const char *v, char *err, size_t errlen)
{
    long n;
    int *ip = (int *)((char *)cfg + k->off);

    switch (k->kind) {
    case K_ALT:
        return parse_alt(cfg, v, strlen(v), err, errlen);
    case K_SESSION:
        return parse_session(cfg, v, strlen(v), err, errlen);
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
        if (keys[i].kind == K_SESSION) {
            /* any length: parsed in place, like RESIL_ALTERNATES */
            if (parse_session(cfg, v, strlen(v), err, sizeof(err)) !=
                RESIL_OK) {
                fn(name, err);
                ret = RESIL_EINVAL;
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
