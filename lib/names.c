#include <pthread.h>
#include <stdatomic.h>
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
/* Every connect() looks its target up here. An entry is about 1 KiB, so a
 * scan of the whole table touches 128 KiB: the look-up reads only the
 * entries in use (tab[0, nused): slots are taken in order and never given
 * back), and of those only the ones whose summary sig[i] (a bit per
 * address, ip_bit) can hold the address. nused is written under mu; a
 * look-up with none in use takes no lock. */
static atomic_int nused;
static uint64_t sig[RESIL_NAMES_SLOTS];

static uint64_t ip_bit(const struct resil_ip *ip)
{
    uint32_t h = ip->u.v4.s_addr;
    if (ip->family == AF_INET6)
        h = ip->u.v6.s6_addr32[0] ^ ip->u.v6.s6_addr32[1] ^
            ip->u.v6.s6_addr32[2] ^ ip->u.v6.s6_addr32[3];
    return 1ull << ((h * 0x9e3779b9u) >> 26);
}

static void resign(int i)
{
    uint64_t m = 0;
    for (int j = 0; j < tab[i].n; j++)
        m |= ip_bit(&tab[i].ip[j]);
    for (int j = 0; j < tab[i].ndns; j++)
        m |= ip_bit(&tab[i].dns[j]);
    sig[i] = m;
}

/* Caller holds mu. The entry for name, created (in a free slot, else
 * replacing the least recently recorded one) when create is set. */
static struct ent *find_name(const char *name, bool create)
{
    int used = atomic_load_explicit(&nused, memory_order_relaxed);
    struct ent *oldest = &tab[0];
    for (int i = 0; i < used; i++) {
        if ((tab[i].n > 0 || tab[i].ndns > 0 || tab[i].dns_at) &&
            strcasecmp(tab[i].name, name) == 0)
            return &tab[i];
        if (tab[i].at < oldest->at)
            oldest = &tab[i];
    }
    if (!create)
        return NULL;
    if (used < RESIL_NAMES_SLOTS) {
        oldest = &tab[used];
        atomic_store_explicit(&nused, used + 1, memory_order_relaxed);
    }
    memset(oldest, 0, sizeof(*oldest));
    sig[oldest - tab] = 0;
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
    resign((int)(e - tab));
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
    resign((int)(e - tab));
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
    uint64_t bit = ip_bit(ip);
    int n = 0, used;

    if (atomic_load_explicit(&nused, memory_order_relaxed) == 0)
        return 0;
    pthread_mutex_lock(&mu);
    used = atomic_load_explicit(&nused, memory_order_relaxed);
    for (int i = 0; i < used; i++) {
        struct ent *e = &tab[i];
        bool hit = false;
        if (!(sig[i] & bit) || (best && e->at <= best->at))
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
    memset(sig, 0, sizeof(sig));
    atomic_store_explicit(&nused, 0, memory_order_relaxed);
    pthread_mutex_unlock(&mu);
}
