#include <pthread.h>
#include <string.h>

#include "health.h"
#include "path.h"

struct ent {
    struct resil_ip ip;
    uint64_t fail_at, win_at, touched;
    uint64_t srtt, rttvar, rtt_at; /* RFC 6298 smoothing, last sample */
    int used;
};

/* A path: when it last lost an address (fail_at) and when an address on
 * it last answered (ok_at: a win or a refusal). */
struct pent {
    uint32_t path;
    uint64_t fail_at, ok_at, touched;
};

static struct ent tab[RESIL_HEALTH_SLOTS];
static struct pent paths[RESIL_HEALTH_PATHS];
static uint64_t ttl = 30ull * 1000000000ull;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Slots [0, used) were ever filled (in order): every raced connect looks
 * up its candidates, and a process talks to few addresses. Written under
 * mu; a look-up with nothing ever recorded takes no lock. */
static int used;
/* A path was ever recorded (paths[] in use). Written under mu. */
static int any_path;

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

/* Caller holds mu. The record of path (never 0), created when asked. */
static struct pent *find_path(uint32_t path, int create, uint64_t now)
{
    struct pent *victim = &paths[0];
    for (int i = 0; i < RESIL_HEALTH_PATHS; i++) {
        if (paths[i].path == path)
            return &paths[i];
        if (paths[i].touched < victim->touched)
            victim = &paths[i];
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->path = path;
    victim->touched = now;
    __atomic_store_n(&any_path, 1, __ATOMIC_RELAXED);
    return victim;
}

static bool recent(uint64_t at, uint64_t now)
{
    return at != 0 && now - at < ttl;
}

/* RFC 6298 section 2, in nanoseconds; a sample after the old ones
 * expired starts afresh. mu held. */
static void sample(struct ent *e, uint64_t rtt, uint64_t now)
{
    if (!recent(e->rtt_at, now)) {
        e->srtt = rtt;
        e->rttvar = rtt / 2;
    } else {
        uint64_t d = e->srtt > rtt ? e->srtt - rtt : rtt - e->srtt;
        e->rttvar = (3 * e->rttvar + d) / 4;
        e->srtt = (7 * e->srtt + rtt) / 8;
    }
    /* a sample of 0 (a connect inside one clock tick) must still count */
    if (e->srtt == 0)
        e->srtt = 1;
    e->rtt_at = now;
}

void resil_health_fail_path(const struct resil_ip *ip, uint32_t path,
                            uint64_t now_ns)
{
    if (path == 0)
        path = resil_path_cached(ip); /* before mu: never nested */
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 1, now_ns);
    e->fail_at = now_ns;
    e->win_at = 0;
    e->touched = now_ns;
    if (path) {
        struct pent *p = find_path(path, 1, now_ns);
        p->fail_at = now_ns;
        p->touched = now_ns;
    }
    pthread_mutex_unlock(&mu);
}

void resil_health_fail(const struct resil_ip *ip, uint64_t now_ns)
{
    resil_health_fail_path(ip, 0, now_ns);
}

/* ip's path answered. mu held. */
static void path_ok(uint32_t path, uint64_t now)
{
    struct pent *p;
    if (path == 0)
        return;
    p = find_path(path, 1, now);
    p->ok_at = now;
    p->touched = now;
}

void resil_health_refused(const struct resil_ip *ip, uint32_t path,
                          uint64_t now_ns)
{
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 1, now_ns);
    e->fail_at = now_ns;
    e->win_at = 0;
    e->touched = now_ns;
    path_ok(path, now_ns);
    pthread_mutex_unlock(&mu);
}

void resil_health_win_path(const struct resil_ip *ip, uint32_t path,
                           uint64_t rtt_ns, uint64_t now_ns)
{
    if (path == 0)
        path = resil_path_cached(ip);
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 1, now_ns);
    e->win_at = now_ns;
    e->fail_at = 0;
    e->touched = now_ns;
    if (rtt_ns)
        sample(e, rtt_ns, now_ns);
    path_ok(path, now_ns);
    pthread_mutex_unlock(&mu);
}

void resil_health_win(const struct resil_ip *ip, uint64_t rtt_ns,
                      uint64_t now_ns)
{
    resil_health_win_path(ip, 0, rtt_ns, now_ns);
}

void resil_health_rtt(const struct resil_ip *ip, uint64_t rtt_ns,
                      uint64_t now_ns)
{
    if (rtt_ns == 0)
        return;
    pthread_mutex_lock(&mu);
    struct ent *e = find(ip, 1, now_ns);
    e->touched = now_ns;
    sample(e, rtt_ns, now_ns);
    pthread_mutex_unlock(&mu);
}

/* mu held */
static void look(const struct resil_ip *ip, uint32_t path, uint64_t now,
                 struct resil_health_info *out)
{
    struct ent *e = find(ip, 0, now);
    struct pent *p = path ? find_path(path, 0, now) : NULL;

    out->tier = RESIL_TIER_NEUTRAL;
    out->srtt_ns = out->rttvar_ns = 0;
    if (e && recent(e->rtt_at, now)) {
        out->srtt_ns = e->srtt;
        out->rttvar_ns = e->rttvar;
    }
    if (e && recent(e->fail_at, now))
        out->tier = RESIL_TIER_BAD;
    else if (p && recent(p->fail_at, now) && p->fail_at > p->ok_at)
        /* a sibling died with the path, and nothing answered on it since
         * (a win of ip itself after that would have set ok_at) */
        out->tier = RESIL_TIER_SUSPECT;
    else if (e && recent(e->win_at, now))
        out->tier = RESIL_TIER_GOOD;
}

void resil_health_look_n(const struct resil_ip *ip, const uint32_t *path,
                         int n, uint64_t now_ns,
                         struct resil_health_info *out)
{
    /* nothing ever recorded: no lock (as if a record of this instant came
     * a moment later) */
    if (__atomic_load_n(&used, __ATOMIC_RELAXED) == 0 &&
        __atomic_load_n(&any_path, __ATOMIC_RELAXED) == 0) {
        for (int i = 0; i < n; i++) {
            out[i].tier = RESIL_TIER_NEUTRAL;
            out[i].srtt_ns = out[i].rttvar_ns = 0;
        }
        return;
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++)
        look(&ip[i], path[i], now_ns, &out[i]);
    pthread_mutex_unlock(&mu);
}

void resil_health_look(const struct resil_ip *ip, uint32_t path,
                       uint64_t now_ns, struct resil_health_info *out)
{
    resil_health_look_n(ip, &path, 1, now_ns, out);
}

enum resil_health_tier resil_health_tier(const struct resil_ip *ip,
                                         uint64_t now_ns, uint64_t *rtt_ns)
{
    struct resil_health_info h;
    uint32_t path = 0;

    if (__atomic_load_n(&any_path, __ATOMIC_RELAXED) != 0)
        path = resil_path_cached(ip);
    resil_health_look(ip, path, now_ns, &h);
    if (rtt_ns && h.tier == RESIL_TIER_GOOD)
        *rtt_ns = h.srtt_ns;
    return h.tier;
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
    memset(paths, 0, sizeof(paths));
    __atomic_store_n(&used, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&any_path, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&mu);
}
