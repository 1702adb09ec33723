#include <pthread.h>
#include <string.h>

#include "names.h"

struct ent {
    char name[RESIL_NAME_LEN];
    int n;
    struct resil_ip ip[RESIL_NAME_ADDRS];
    uint64_t at;
};

static struct ent tab[RESIL_NAMES_SLOTS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

void resil_names_record(const char *name, const struct resil_ip *ips, int n,
                        uint64_t now_ns)
{
    struct resil_ip probe;
    struct ent *e = NULL, *oldest = &tab[0];

    if (name == NULL || name[0] == '\0' || n <= 0 ||
        strlen(name) >= RESIL_NAME_LEN || resil_ip_parse(name, &probe))
        return;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < RESIL_NAMES_SLOTS; i++) {
        if (tab[i].n > 0 && strcasecmp(tab[i].name, name) == 0) {
            e = &tab[i];
            break;
        }
        if (tab[i].at < oldest->at)
            oldest = &tab[i];
    }
    if (e == NULL) {
        e = oldest;
        memset(e, 0, sizeof(*e));
        strcpy(e->name, name);
    }
    e->n = 0;
    for (int i = 0; i < n && e->n < RESIL_NAME_ADDRS; i++) {
        bool dup = false;
        for (int j = 0; j < e->n && !dup; j++)
            dup = resil_ip_equal(&e->ip[j], &ips[i]);
        if (!dup)
            e->ip[e->n++] = ips[i];
    }
    e->at = now_ns ? now_ns : 1;
    pthread_mutex_unlock(&mu);
}

int resil_names_lookup(const struct resil_ip *ip, char *name, size_t namelen,
                       struct resil_ip *out, int max)
{
    struct ent *best = NULL;
    int n = 0;

    pthread_mutex_lock(&mu);
    for (int i = 0; i < RESIL_NAMES_SLOTS; i++) {
        if (tab[i].n == 0 || (best && tab[i].at <= best->at))
            continue;
        for (int j = 0; j < tab[i].n; j++)
            if (resil_ip_equal(&tab[i].ip[j], ip)) {
                best = &tab[i];
                break;
            }
    }
    if (best) {
        if (name && namelen) {
            strncpy(name, best->name, namelen - 1);
            name[namelen - 1] = '\0';
        }
        for (n = 0; n < best->n && n < max; n++)
            out[n] = best->ip[n];
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
    pthread_mutex_unlock(&mu);
}
