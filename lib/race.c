#include <errno.h>
#include <string.h>

#include "health.h"
#include "race.h"

void resil_race_init(struct resil_race *r, int family, bool v6only,
                     uint64_t delay_ns, uint64_t now_ns)
{
    memset(r, 0, sizeof(*r));
    r->family = family;
    r->v6only = v6only;
    r->delay_ns = delay_ns;
    r->next_ns = now_ns;
    r->winner = -1;
}

static bool reachable(const struct resil_race *r, const struct resil_ip *ip)
{
    if (r->family == AF_INET)
        return ip->family == AF_INET;
    return ip->family == AF_INET6 || !r->v6only;
}

/* Sort key: tier, then RTT among recent winners; stable otherwise. */
static bool before(const struct resil_attempt *a, const struct resil_attempt *b)
{
    if (a->tier != b->tier)
        return a->tier < b->tier;
    if (a->tier == RESIL_TIER_GOOD)
        return a->rtt_ns < b->rtt_ns;
    return false;
}

/* Interleave the families of att[lo, hi) in place, keeping the order within
 * each family, starting with `first` (RFC 8305 section 4). */
static void interleave(struct resil_attempt *att, int lo, int hi, int first)
{
    struct resil_attempt tmp[RESIL_RACE_MAX];
    int i6 = lo, i4 = lo, out = 0, want = first;

    while (out < hi - lo) {
        int *ip = want == AF_INET6 ? &i6 : &i4;
        while (*ip < hi && att[*ip].ip.family != want)
            (*ip)++;
        if (*ip < hi) {
            tmp[out++] = att[(*ip)++];
        } else {
            /* this family is exhausted: the rest of the other one */
            int other = want == AF_INET6 ? AF_INET : AF_INET6;
            int *op = other == AF_INET6 ? &i6 : &i4;
            while (*op < hi) {
                if (att[*op].ip.family == other)
                    tmp[out++] = att[*op];
                (*op)++;
            }
        }
        want = want == AF_INET6 ? AF_INET : AF_INET6;
    }
    memcpy(&att[lo], tmp, sizeof(tmp[0]) * (size_t)(hi - lo));
}

static void sort_waiting(struct resil_race *r)
{
    int lo = r->started, hi = r->n, bad;
    int first;

    /* stable insertion sort; lists are tiny */
    for (int i = lo + 1; i < hi; i++) {
        struct resil_attempt a = r->att[i];
        int j = i;
        while (j > lo && before(&a, &r->att[j - 1])) {
            r->att[j] = r->att[j - 1];
            j--;
        }
        r->att[j] = a;
    }
    if (hi - lo < 2)
        return;
    for (bad = lo; bad < hi && r->att[bad].tier != RESIL_TIER_BAD; bad++)
        ;
    /* continue the alternation of the attempts already started */
    if (lo > 0)
        first = r->att[lo - 1].ip.family == AF_INET6 ? AF_INET : AF_INET6;
    else
        first = r->att[lo].ip.family;
    if (bad - lo > 1)
        interleave(r->att, lo, bad, first);
    if (hi - bad > 1)
        interleave(r->att, bad, hi, r->att[bad].ip.family);
}

int resil_race_add(struct resil_race *r, const struct resil_ip *ip,
                   uint64_t now_ns)
{
    struct resil_attempt *a;

    if (!reachable(r, ip) || r->n == RESIL_RACE_MAX)
        return -1;
    for (int i = 0; i < r->n; i++)
        if (resil_ip_equal(&r->att[i].ip, ip))
            return -1;
    a = &r->att[r->n++];
    memset(a, 0, sizeof(*a));
    a->ip = *ip;
    a->tier = (int)resil_health_tier(ip, now_ns, &a->rtt_ns);
    sort_waiting(r);
    for (int i = r->started; i < r->n; i++)
        if (resil_ip_equal(&r->att[i].ip, ip))
            return i;
    return -1;
}

int resil_race_first(const struct resil_ip *c, int n, int family,
                     bool v6only, uint64_t now_ns)
{
    const struct resil_race probe = {.family = family, .v6only = v6only};
    struct resil_attempt best = {.tier = 0}, a;
    int bi = -1;

    /* sort_waiting's order: its stable sort puts the first of the best
     * keys first, and the interleaving starts with that one's family */
    for (int i = 0; i < n; i++) {
        bool dup = false;
        for (int j = 0; j < i && !dup; j++)
            dup = resil_ip_equal(&c[j], &c[i]);
        if (dup || !reachable(&probe, &c[i]))
            continue;
        a.tier = (int)resil_health_tier(&c[i], now_ns, &a.rtt_ns);
        if (bi < 0 || before(&a, &best)) {
            best = a;
            bi = i;
        }
    }
    return bi;
}

int resil_race_next(struct resil_race *r, uint64_t now_ns, uint64_t *wake_ns)
{
    *wake_ns = UINT64_MAX;
    if (r->winner >= 0 || r->started == r->n)
        return -1;
    if (now_ns < r->next_ns) {
        *wake_ns = r->next_ns;
        return -1;
    }
    int i = r->started++;
    r->att[i].state = RESIL_ATT_RUNNING;
    r->att[i].started_ns = now_ns;
    r->next_ns = now_ns + r->delay_ns;
    if (r->started < r->n)
        *wake_ns = r->next_ns;
    return i;
}

void resil_race_failed(struct resil_race *r, int i, int err, uint64_t now_ns)
{
    if (i < 0 || i >= r->started || r->att[i].state != RESIL_ATT_RUNNING)
        return;
    r->att[i].state = RESIL_ATT_FAILED;
    r->att[i].err = err;
    r->att[i].ended_ns = now_ns;
    /* HEv3 section 6: a failed attempt starts the next one at once. */
    r->next_ns = now_ns;
}

void resil_race_won(struct resil_race *r, int i, uint64_t now_ns)
{
    if (i < 0 || i >= r->started || r->att[i].state != RESIL_ATT_RUNNING ||
        r->winner >= 0)
        return;
    r->att[i].state = RESIL_ATT_WON;
    r->att[i].ended_ns = now_ns;
    r->winner = i;
}

bool resil_race_finished(const struct resil_race *r)
{
    if (r->winner >= 0)
        return true;
    if (r->more_coming > 0 || r->started < r->n)
        return false;
    for (int i = 0; i < r->n; i++)
        if (r->att[i].state == RESIL_ATT_RUNNING)
            return false;
    return true;
}

/* How much an errno says about the destination: a refusal proves the host
 * is reachable, a timeout or unreachable says the path is dead, anything
 * else is local trouble. The most telling error wins; ties go to the
 * earliest attempt, which is the program's own choice unless the health
 * cache moved it. */
static int relevance(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return 4;
    case ETIMEDOUT:
    case ECONNRESET:
        return 3;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
        return 2;
    default:
        return 1;
    }
}

int resil_race_error_att(const struct resil_race *r)
{
    int best = -1;

    for (int i = 0; i < r->n; i++) {
        if (r->att[i].state != RESIL_ATT_FAILED)
            continue;
        if (best < 0 || relevance(r->att[i].err) > relevance(r->att[best].err))
            best = i;
    }
    return best;
}

int resil_race_errno(const struct resil_race *r)
{
    int best;

    if (r->winner >= 0 || !resil_race_finished(r))
        return 0;
    best = resil_race_error_att(r);
    return best < 0 ? ENETUNREACH : r->att[best].err;
}
