#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "health.h"
#include "path.h"
#include "race.h"

/* An error that says the way to the address is dead, not the address:
 * the other addresses on that path are suspect too. */
static bool path_error(int err)
{
    return err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH ||
           err == EHOSTDOWN;
}

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

/* The paths interleave() has seen, and the step each was last used at. */
struct paths_used {
    uint32_t path[RESIL_RACE_MAX];
    int used_at[RESIL_RACE_MAX], n;
};

/* The index of path p, or u->n when it was never used. */
static int path_index(const struct paths_used *u, uint32_t p)
{
    int k = 0;
    while (k < u->n && u->path[k] != p)
        k++;
    return k;
}

static void path_used(struct paths_used *u, uint32_t p, int step)
{
    int k = path_index(u, p);
    if (k == u->n)
        u->path[u->n++] = p;
    u->used_at[k] = step;
}

/* Interleave att[lo, hi), already in preference order, after the
 * attempts att[0, lo) (started, or placed before this group): each pick is
 * the first candidate on the path used longest ago (never used first), of
 * the other family than the pick before it where that ties (RFC 8305
 * section 4). With one path (or every path unknown) that is RFC 8305's
 * family interleaving, the order within each family kept; with several,
 * consecutive attempts leave by different paths, round robin. */
static void interleave(struct resil_attempt *att, int lo, int hi)
{
    struct resil_attempt tmp[RESIL_RACE_MAX];
    bool taken[RESIL_RACE_MAX];
    struct paths_used u; /* entries [0, u.n) are written before read */
    int fam = lo > 0 ? att[lo - 1].ip.family : AF_UNSPEC;

    if (hi - lo < 2)
        return; /* one candidate: nothing to choose */
    u.n = 0;
    memset(taken, 0, sizeof(taken[0]) * (size_t)(hi - lo));
    for (int i = 0; i < lo; i++)
        path_used(&u, att[i].path, i);
    for (int step = lo; step < hi; step++) {
        int best = -1, best_age = -1, best_fam = -1;
        for (int k = lo; k < hi; k++) {
            int age = INT32_MAX, j, f;
            if (taken[k - lo])
                continue;
            j = path_index(&u, att[k].path);
            if (j < u.n)
                age = step - u.used_at[j];
            f = att[k].ip.family != fam;
            if (age > best_age || (age == best_age && f > best_fam)) {
                best = k;
                best_age = age;
                best_fam = f;
            }
        }
        taken[best - lo] = true;
        tmp[step - lo] = att[best];
        fam = att[best].ip.family;
        path_used(&u, att[best].path, step);
    }
    memcpy(&att[lo], tmp, sizeof(tmp[0]) * (size_t)(hi - lo));
}

void resil_race_order(struct resil_attempt *att, int lo, int hi)
{
    /* stable insertion sort; lists are tiny */
    for (int i = lo + 1; i < hi; i++) {
        struct resil_attempt a = att[i];
        int j = i;
        while (j > lo && before(&a, &att[j - 1])) {
            att[j] = att[j - 1];
            j--;
        }
        att[j] = a;
    }
    /* the groups stay in their order: interleaving must not pull a
     * sibling of a dead path, or an address that failed, forward */
    for (int a = lo, b; a < hi; a = b) {
        int group = att[a].tier <= RESIL_TIER_NEUTRAL ? 0 : att[a].tier;
        for (b = a + 1; b < hi; b++)
            if ((att[b].tier <= RESIL_TIER_NEUTRAL ? 0 : att[b].tier) != group)
                break;
        interleave(att, a, b);
    }
}

static void sort_waiting(struct resil_race *r)
{
    if (r->n - r->started > 1)
        resil_race_order(r->att, r->started, r->n);
}

static void set_health(struct resil_attempt *a, uint32_t path,
                       const struct resil_health_info *h)
{
    a->path = path;
    a->tier = (int)h->tier;
    a->rtt_ns = h->srtt_ns;
    a->rttvar_ns = h->rttvar_ns;
}

/* The health and path of a candidate. */
static void fill(struct resil_attempt *a, uint32_t path, uint64_t now)
{
    struct resil_health_info h;

    resil_health_look(&a->ip, path, now, &h);
    set_health(a, path, &h);
}

uint64_t resil_race_delay_rule(uint64_t srtt_ns, uint64_t rttvar_ns,
                               uint64_t max_ns)
{
    uint64_t d;

    if (srtt_ns == 0)
        return max_ns;
    /* TCP's retransmission timeout is srtt + 4 rttvar (RFC 6298): a live
     * path's SYN-ACK comes within it; the second srtt and the margin
     * leave room for a server slow to answer and for our own wake-up */
    d = 2 * srtt_ns + 4 * rttvar_ns + RESIL_RACE_DELAY_MARGIN_NS;
    if (d > max_ns)
        d = max_ns;
    if (d < RESIL_RACE_DELAY_MIN_NS)
        d = RESIL_RACE_DELAY_MIN_NS;
    return d;
}

/* The history to size the delay after a (its own, else the slowest of
 * the destination's addresses that have one): *srtt 0 when none. */
static void history(const struct resil_attempt *a,
                    const struct resil_attempt *all, int n, uint64_t *srtt,
                    uint64_t *rttvar)
{
    *srtt = a->rtt_ns;
    *rttvar = a->rttvar_ns;
    if (*srtt)
        return;
    for (int i = 0; i < n; i++)
        if (all[i].rtt_ns > *srtt) {
            *srtt = all[i].rtt_ns;
            *rttvar = all[i].rttvar_ns;
        }
}

uint64_t resil_race_delay(const struct resil_race *r, int i)
{
    uint64_t srtt, var;

    if (i < 0 || i >= r->n)
        return r->delay_ns;
    history(&r->att[i], r->att, r->n, &srtt, &var);
    return resil_race_delay_rule(srtt, var, r->delay_ns);
}

/* c[0, n) with their health and the paths known already (no system
 * call: the first pick depends on paths only through a dead sibling, which
 * a race looked up), in c's order: what resil_race_first and
 * resil_race_delay_for read. Returns n, clamped to RESIL_RACE_MAX. */
static int look_all(const struct resil_ip *c, int n, uint64_t now_ns,
                    struct resil_attempt *all)
{
    uint32_t path[RESIL_RACE_MAX];
    struct resil_health_info h[RESIL_RACE_MAX];

    if (n > RESIL_RACE_MAX)
        n = RESIL_RACE_MAX;
    if (n <= 0)
        return 0;
    /* each cache's lock once, not once per candidate */
    resil_path_cached_n(c, n, path);
    resil_health_look_n(c, path, n, now_ns, h);
    for (int i = 0; i < n; i++) {
        memset(&all[i], 0, sizeof(all[i]));
        all[i].ip = c[i];
        set_health(&all[i], path[i], &h[i]);
    }
    return n;
}

static uint64_t delay_of(const struct resil_attempt *all, int n, int first,
                         uint64_t max_ns)
{
    uint64_t srtt, var;

    if (first < 0 || first >= n)
        return max_ns;
    history(&all[first], all, n, &srtt, &var);
    return resil_race_delay_rule(srtt, var, max_ns);
}

uint64_t resil_race_delay_for(const struct resil_ip *c, int n, int first,
                              uint64_t max_ns, uint64_t now_ns)
{
    struct resil_attempt all[RESIL_RACE_MAX];

    if (first < 0 || first >= n || first >= RESIL_RACE_MAX)
        return max_ns;
    n = look_all(c, n, now_ns, all);
    return delay_of(all, n, first, max_ns);
}

/* The attempt started last is still waited for on its delay: candidates
 * that joined may change that delay (their history). */
static void rearm(struct resil_race *r)
{
    struct resil_attempt *a;
    uint64_t d;

    if (r->started == 0 || r->winner >= 0)
        return;
    a = &r->att[r->started - 1];
    if (a->state != RESIL_ATT_RUNNING ||
        r->next_ns != a->started_ns + a->delay_ns)
        return; /* a failure already moved the next start */
    d = resil_race_delay(r, r->started - 1);
    a->delay_ns = d;
    r->next_ns = a->started_ns + d;
}

int resil_race_add(struct resil_race *r, const struct resil_ip *ip,
                   uint64_t now_ns)
{
    struct resil_attempt *a;
    uint32_t path;

    if (!reachable(r, ip) || r->n == RESIL_RACE_MAX)
        return -1;
    for (int i = 0; i < r->n; i++)
        if (resil_ip_equal(&r->att[i].ip, ip))
            return -1;
    /* looked up before the slot is taken: the only call that may take
     * time (path.h), and no state of r depends on it yet */
    path = resil_path_of(ip, now_ns);
    a = &r->att[r->n++];
    memset(a, 0, sizeof(*a));
    a->ip = *ip;
    fill(a, path, now_ns);
    /* a sibling died with this path earlier in this race */
    for (int i = 0; i < r->started && path; i++)
        if (r->att[i].path == path && r->att[i].state == RESIL_ATT_FAILED &&
            path_error(r->att[i].err) && a->tier < RESIL_TIER_SUSPECT)
            a->tier = RESIL_TIER_SUSPECT;
    sort_waiting(r);
    rearm(r);
    for (int i = r->started; i < r->n; i++)
        if (resil_ip_equal(&r->att[i].ip, ip))
            return i;
    return -1;
}

/* resil_race_first over candidates look_all filled. */
static int first_of(const struct resil_attempt *c, int n, int family,
                    bool v6only)
{
    const struct resil_race probe = {.family = family, .v6only = v6only};
    struct resil_attempt all[RESIL_RACE_MAX];
    int m = 0;

    for (int i = 0; i < n; i++) {
        bool dup = false;
        for (int j = 0; j < m && !dup; j++)
            dup = resil_ip_equal(&all[j].ip, &c[i].ip);
        if (dup || !reachable(&probe, &c[i].ip))
            continue;
        all[m++] = c[i];
    }
    if (m == 0)
        return -1;
    resil_race_order(all, 0, m);
    for (int i = 0; i < n; i++)
        if (resil_ip_equal(&c[i].ip, &all[0].ip))
            return i;
    return -1;
}

int resil_race_first(const struct resil_ip *c, int n, int family,
                     bool v6only, uint64_t now_ns)
{
    struct resil_attempt all[RESIL_RACE_MAX];

    n = look_all(c, n, now_ns, all);
    return first_of(all, n, family, v6only);
}

int resil_race_pick(const struct resil_ip *c, int n, int family, bool v6only,
                    uint64_t max_ns, uint64_t now_ns, uint64_t *delay_ns)
{
    struct resil_attempt all[RESIL_RACE_MAX];
    int fi;

    n = look_all(c, n, now_ns, all);
    fi = first_of(all, n, family, v6only);
    *delay_ns = delay_of(all, n, fi, max_ns);
    return fi;
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
    r->att[i].delay_ns = resil_race_delay(r, i);
    r->next_ns = now_ns + r->att[i].delay_ns;
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
    /* its path died with it: the candidates waiting on that path go
     * behind the others (the next attempt leaves by another way) */
    if (path_error(err) && r->att[i].path) {
        bool moved = false;
        for (int k = r->started; k < r->n; k++)
            if (r->att[k].path == r->att[i].path &&
                r->att[k].tier < RESIL_TIER_SUSPECT) {
                r->att[k].tier = RESIL_TIER_SUSPECT;
                moved = true;
            }
        if (moved)
            sort_waiting(r);
    }
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

void resil_race_report(const struct resil_race *r, uint64_t now_ns)
{
    for (int i = 0; i < r->n; i++) {
        const struct resil_attempt *a = &r->att[i];
        if (a->state == RESIL_ATT_WON)
            resil_health_win_path(&a->ip, a->path,
                                  a->ended_ns - a->started_ns, now_ns);
        else if (a->state != RESIL_ATT_FAILED)
            continue;
        else if (path_error(a->err))
            resil_health_fail_path(&a->ip, a->path, now_ns);
        else
            /* a refusal came back over the path; a local error (no
             * socket, no port) says nothing about it */
            resil_health_refused(&a->ip,
                                 a->err == ECONNREFUSED ? a->path : 0,
                                 now_ns);
    }
}

/* Append s at *o (counting what does not fit: *o >= len then). */
static void app(char *buf, size_t len, size_t *o, const char *s)
{
    size_t n = strlen(s);
    if (*o < len)
        memcpy(buf + *o, s, n + 1 <= len - *o ? n + 1 : len - *o);
    *o += n;
}

/* The three lists for the first fit attempts; returns the length it
 * needed (>= len: did not fit). No printf: this runs for every race
 * while events are written. */
static size_t json_lists(const struct resil_race *r, int fit, char *buf,
                         size_t len)
{
    static const char *const key[3] = {"\"tried\":[", ",\"paths\":[",
                                       ",\"delays_ms\":["};
    size_t o = 0;

    for (int m = 0; m < 3; m++) {
        app(buf, len, &o, key[m]);
        for (int i = 0; i < fit; i++) {
            char a[RESIL_ADDRSTRLEN];
            if (i)
                app(buf, len, &o, ",");
            if (m < 2) {
                app(buf, len, &o, "\"");
                app(buf, len, &o,
                    m == 0 ? resil_ip_format(&r->att[i].ip, -1, a, sizeof(a))
                           : resil_path_name(r->att[i].path, a, sizeof(a)));
                app(buf, len, &o, "\"");
            } else {
                /* ms with one decimal */
                unsigned long long t = (r->att[i].delay_ns + 50000) / 100000;
                char *p = a + sizeof(a) - 1;
                *p = '\0';
                *--p = (char)('0' + t % 10);
                *--p = '.';
                t /= 10;
                do
                    *--p = (char)('0' + t % 10);
                while ((t /= 10) != 0);
                app(buf, len, &o, p);
            }
        }
        app(buf, len, &o, "]");
    }
    if (o >= len && len > 0)
        buf[len - 1] = '\0';
    return o;
}

char *resil_race_json(const struct resil_race *r, char *buf, size_t len)
{
    /* an attempt that does not fit is left out of all three lists, so
     * that they stay parallel */
    int fit = r->started;

    if (len == 0)
        return buf;
    while (json_lists(r, fit, buf, len) >= len)
        if (fit-- == 0) {
            buf[0] = '\0';
            break;
        }
    return buf;
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
