#include <pthread.h>
#include <string.h>

#include "health.h"

struct ent {
    struct resil_ip ip;
    uint64_t fail_at, win_at, touched, rtt;
    int used;
};

static struct ent tab[RESIL_HEALTH_SLOTS];
static uint64_t ttl = 30ull * 1000000000ull;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Slots [0, used) were ever filled (in order): every raced connect looks
 * up its candidates, and a process talks to few addresses. Written under
 * mu. */
static int used;

void resil_health_set_ttl(uint64_t ttl_ns)
{
    ttl = ttl_ns;
}

/* Caller holds mu. */
static struct ent *find(const struct resil_ip *ip, int create, uint64_t now)
{
    struct ent *victim = NULL; /* a free slot, else the least recent one */
    for (int i = 0; i < used; i++) {
        struct ent *e = &tab[i];
        if (e->used && resil_ip_equal(&e->ip, ip))
            return e;
        if (victim == NULL || (victim->used && (!e->used ||
                                                e->touched < victim->touched)))
            victim = e;
    }
    if (!create)
        return NULL;
    if (used < RESIL_HEALTH_SLOTS && (victim == NULL || victim->used)) {
        victim = &tab[used];
        __atomic_store_n(&used, used + 1, __ATOMIC_RELAXED);
    }
    memset(victim, 0, sizeof(*victim));
    victim->used = 1;
    victim->ip = *ip;
    victim->touched = now;
    return victim;
}

void resil_health_fail(const struct resil_ip *ip, uint64_t now_ns)
{
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 1, now_ns);
    e->fail_at = now_ns;
    e->win_at = 0;
    e->touched = now_ns;
    pthread_mutex_unlock(&mu);
}

void resil_health_win(const struct resil_ip *ip, uint64_t rtt_ns,
                      uint64_t now_ns)
{
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 1, now_ns);
    e->win_at = now_ns;
    e->fail_at = 0;
    e->rtt = rtt_ns;
    e->touched = now_ns;
    pthread_mutex_unlock(&mu);
}

enum resil_health_tier resil_health_tier(const struct resil_ip *ip,
                                         uint64_t now_ns, uint64_t *rtt_ns)
{
    enum resil_health_tier t = RESIL_TIER_NEUTRAL;
    /* nothing ever recorded: no lock (as if a record of this instant came
     * a moment later) */
    if (__atomic_load_n(&used, __ATOMIC_RELAXED) == 0)
        return t;
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 0, now_ns);
    if (e && e->fail_at && now_ns - e->fail_at < ttl)
        t = RESIL_TIER_BAD;
    else if (e && e->win_at && now_ns - e->win_at < ttl) {
        t = RESIL_TIER_GOOD;
        if (rtt_ns)
            *rtt_ns = e->rtt;
    }
    pthread_mutex_unlock(&mu);
    return t;
}

void resil_health_lock(void)
{
    pthread_mutex_lock(&mu);
}

void resil_health_unlock(void)
{
    pthread_mutex_unlock(&mu);
}

void resil_health_clear(void)
{
    pthread_mutex_lock(&mu);
    memset(tab, 0, sizeof(tab));
    __atomic_store_n(&used, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&mu);
}
