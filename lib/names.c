#include <pthread.h>
#include <string.h>

#include "names.h"

struct ent {
    char name[RESIL_NAME_LEN];
    int n, ndns;
    struct resil_ip ip[RESIL_NAME_ADDRS];  /* the program's resolver */
    struct resil_ip dns[RESIL_NAME_ADDRS]; /* our c-ares lookups */
    uint64_t at, dns_at;
};

static struct ent tab[RESIL_NAMES_SLOTS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Slots [0, used) were ever filled (in order): every connect looks the
 * table up, and most processes never resolve a name. Written under mu. */
static int used;

/* Caller holds mu. The entry for name, created (in a slot never used, or
 * replacing the least recently recorded one) when create is set. */
static struct ent *find_name(const char *name, bool create)
{
    struct ent *oldest = NULL;
    for (int i = 0; i < used; i++) {
        if ((tab[i].n > 0 || tab[i].ndns > 0 || tab[i].dns_at) &&
            strcasecmp(tab[i].name, name) == 0)
            return &tab[i];
        if (oldest == NULL || tab[i].at < oldest->at)
            oldest = &tab[i];
    }
    if (!create)
        return NULL;
    if (used < RESIL_NAMES_SLOTS) {
        oldest = &tab[used];
        __atomic_store_n(&used, used + 1, __ATOMIC_RELAXED);
    }
    memset(oldest, 0, sizeof(*oldest));
    strcpy(oldest->name, name);
    return oldest;
}

static int add_unique(struct resil_ip *dst, int n, const struct resil_ip *ip)
{
    for (int j = 0; j < n; j++)
        if (resil_ip_equal(&dst[j], ip))
            return n;
    if (n < RESIL_NAME_ADDRS)
        dst[n++] = *ip;
    return n;
}

static bool usable(const char *name)
{
    struct resil_ip probe;
    return name && name[0] && strlen(name) < RESIL_NAME_LEN &&
           !resil_ip_parse(name, &probe);
}


void resil_names_record(const char *name, const struct resil_ip *ips, int n,
                        uint64_t now_ns)
{
    struct ent *e;

    if (!usable(name) || n <= 0)
        return;
    pthread_mutex_lock(&mu);
    e = find_name(name, true);
    e->n = 0;
    for (int i = 0; i < n; i++)
        e->n = add_unique(e->ip, e->n, &ips[i]);
    e->at = now_ns ? now_ns : 1;
    pthread_mutex_unlock(&mu);
}

void resil_names_dns(const char *name, const struct resil_ip *ips, int n,
                     uint64_t now_ns)
{
    struct ent *e;

    if (!usable(name))
        return;
    pthread_mutex_lock(&mu);
    e = find_name(name, true);
    if (e->at == 0)
        e->at = now_ns ? now_ns : 1;
    for (int i = 0; i < n; i++)
        e->ndns = add_unique(e->dns, e->ndns, &ips[i]);
    e->dns_at = now_ns ? now_ns : 1;
    pthread_mutex_unlock(&mu);
}

bool resil_names_dns_due(const char *name, uint64_t now_ns,
                         uint64_t interval_ns)
{
    struct ent *e;
    bool due;

    if (!usable(name))
        return false;
    pthread_mutex_lock(&mu);
    e = find_name(name, true);
    if (e->at == 0)
        e->at = now_ns ? now_ns : 1;
    due = e->dns_at == 0 || now_ns - e->dns_at >= interval_ns;
    if (due)
        e->dns_at = now_ns ? now_ns : 1;
    pthread_mutex_unlock(&mu);
    return due;
}

int resil_names_lookup(const struct resil_ip *ip, char *name, size_t namelen,
                       struct resil_ip *out, int max)
{
    struct ent *best = NULL;
    int n = 0;

    /* nothing ever recorded: no lock (a name recorded this instant is
     * found by the next look-up, as if it came a moment later) */
    if (__atomic_load_n(&used, __ATOMIC_RELAXED) == 0)
        return 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < used; i++) {
        struct ent *e = &tab[i];
        bool hit = false;
        if (best && e->at <= best->at)
            continue;
        for (int j = 0; j < e->n && !hit; j++)
            hit = resil_ip_equal(&e->ip[j], ip);
        for (int j = 0; j < e->ndns && !hit; j++)
            hit = resil_ip_equal(&e->dns[j], ip);
        if (hit)
            best = e;
    }
    if (best) {
        if (name && namelen) {
            strncpy(name, best->name, namelen - 1);
            name[namelen - 1] = '\0';
        }
        for (int j = 0; j < best->n && n < max; j++)
            out[n++] = best->ip[j];
        for (int j = 0; j < best->ndns && n < max; j++) {
            bool dup = false;
            for (int k = 0; k < best->n && !dup; k++)
                dup = resil_ip_equal(&best->ip[k], &best->dns[j]);
            if (!dup)
                out[n++] = best->dns[j];
        }
    }
    pthread_mutex_unlock(&mu);
    return n;
}

void resil_names_lock(void)
{
    pthread_mutex_lock(&mu);
}

void resil_names_unlock(void)
{
    pthread_mutex_unlock(&mu);
}

void resil_names_clear(void)
{
    pthread_mutex_lock(&mu);
    memset(tab, 0, sizeof(tab));
    __atomic_store_n(&used, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&mu);
}
