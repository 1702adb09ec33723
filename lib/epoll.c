/* libresil: the program's epoll registrations of managed sockets (see
 * epoll.h for the design and the locking). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conn.h"
#include "epoll.h"
#include "fds.h"
#include "log.h"
#include "sys.h"

#define CHUNK_BITS RESIL_TABLE_CHUNK_BITS
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS (RESIL_TABLE_MAX / CHUNK)

/* What the kernel keeps of a one-shot registration it disarmed
 * (fs/eventpoll.c, EP_PRIVATE_BITS; checked on 6.18: "events: c0000000"
 * for EPOLLONESHOT|EPOLLET after it fired). */
#define PRIVATE_BITS                                                           \
    ((uint32_t)(EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE))
/* Everything a socket can report: what the swap asks of the old one. */
#define ALL_POLL                                                               \
    (POLLIN | POLLPRI | POLLOUT | POLLRDNORM | POLLRDBAND | POLLWRNORM |      \
     POLLWRBAND | POLLMSG | POLLRDHUP)
/* Sockets looked at by one epoll_wait with error or hang-up events; past
 * this, events are passed on untouched (a data call meets a dead socket). */
#define MAX_CAND 64

struct resil_epset {
    struct resil_epset *all_next; /* every set (sets_mu) */
    int epfd;
    resil_lock_t mu;
    atomic_uint epoch;   /* bumped when the program closes epfd */
    atomic_int nregs;    /* registrations in the index (written under mu) */
    atomic_int noneshot; /* of which EPOLLONESHOT (written under mu) */
    unsigned nbuckets;   /* 0 or a power of two */
    struct resil_epreg **bucket;
};

typedef _Atomic(struct resil_epset *) set_slot_t;

atomic_int resil_epoll_nsets;
static _Atomic(set_slot_t *) set_chunks[NCHUNKS];
static pthread_mutex_t sets_mu = PTHREAD_MUTEX_INITIALIZER;
static struct resil_epset *all_sets;
static _Atomic uint64_t swap_seq;

static struct resil_epset *set_find(int epfd)
{
    set_slot_t *c;

    if ((unsigned)epfd >= RESIL_TABLE_MAX)
        return NULL;
    c = atomic_load_explicit(&set_chunks[epfd >> CHUNK_BITS],
                             memory_order_acquire);
    return c ? atomic_load_explicit(&c[epfd & (CHUNK - 1)],
                                    memory_order_acquire)
             : NULL;
}

static struct resil_epset *__attribute__((noinline)) set_make(int epfd)
{
    set_slot_t *c;
    struct resil_epset *set = NULL;
    int i = epfd & (CHUNK - 1);

    if ((unsigned)epfd >= RESIL_TABLE_MAX)
        return NULL;
    pthread_mutex_lock(&sets_mu);
    c = atomic_load(&set_chunks[epfd >> CHUNK_BITS]);
    if (c == NULL && (c = calloc(CHUNK, sizeof(*c))) != NULL)
        atomic_store_explicit(&set_chunks[epfd >> CHUNK_BITS], c,
                              memory_order_release);
    if (c && (set = atomic_load(&c[i])) == NULL &&
        (set = calloc(1, sizeof(*set))) != NULL) {
        set->epfd = epfd;
        resil_lock_init(&set->mu);
        set->all_next = all_sets;
        all_sets = set;
        atomic_store_explicit(&c[i], set, memory_order_release);
        atomic_fetch_add(&resil_epoll_nsets, 1);
    }
    pthread_mutex_unlock(&sets_mu);
    return set;
}

static struct resil_epset *set_get(int epfd, bool create)
{
    struct resil_epset *set = set_find(epfd);
    return set || !create ? set : set_make(epfd);
}

struct resil_epset *resil_epoll_set(int epfd)
{
    return set_find(epfd);
}

int resil_epoll_set_regs(const struct resil_epset *set)
{
    return atomic_load_explicit(&set->nregs, memory_order_relaxed);
}

/* ---- a set's index of registrations by event data (set->mu held) ---- */

static uint32_t events_of(const struct resil_epreg *r)
{
    return atomic_load_explicit(&r->events, memory_order_relaxed);
}

/* The counters have one writer at a time (set->mu); readers glance at them
 * without it. */
static void count(atomic_int *c, int d)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

static unsigned bucket_of(unsigned nbuckets, uint64_t data)
{
    /* Fibonacci hashing: spreads pointers and small counters alike */
    return (unsigned)((data * 0x9e3779b97f4a7c15ull) >> 32) & (nbuckets - 1);
}

static struct resil_epreg *chain_of(const struct resil_epset *set,
                                    uint64_t data)
{
    return set->nbuckets ? set->bucket[bucket_of(set->nbuckets, data)] : NULL;
}

static bool __attribute__((noinline)) grow(struct resil_epset *set)
{
    unsigned n = set->nbuckets ? set->nbuckets * 2 : 16;
    struct resil_epreg **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return set->nbuckets != 0; /* a longer chain will do */
    for (unsigned i = 0; i < set->nbuckets; i++)
        for (struct resil_epreg *r = set->bucket[i], *nx; r; r = nx) {
            unsigned k = bucket_of(n, r->data);
            nx = r->h_next;
            r->h_next = b[k];
            b[k] = r;
        }
    free(set->bucket);
    set->bucket = b;
    set->nbuckets = n;
    return true;
}

static inline bool link_reg(struct resil_epset *set, struct resil_epreg *r)
{
    unsigned k;

    if ((unsigned)atomic_load_explicit(&set->nregs, memory_order_relaxed) >=
            set->nbuckets &&
        !grow(set))
        return false;
    k = bucket_of(set->nbuckets, r->data);
    r->h_next = set->bucket[k];
    set->bucket[k] = r;
    r->linked = true;
    count(&set->nregs, 1);
    if (events_of(r) & EPOLLONESHOT)
        count(&set->noneshot, 1);
    return true;
}

static inline void unlink_reg(struct resil_epset *set, struct resil_epreg *r)
{
    struct resil_epreg **pp;

    if (!r->linked)
        return;
    for (pp = &set->bucket[bucket_of(set->nbuckets, r->data)]; *pp != r;
         pp = &(*pp)->h_next)
        ;
    *pp = r->h_next;
    r->linked = false;
    count(&set->nregs, -1);
    if (events_of(r) & EPOLLONESHOT)
        count(&set->noneshot, -1);
}

static void not_indexed(const struct resil_epreg *r)
{
    rwarn("fd %d: epoll %d registration not indexed (out of memory); its "
          "stale events cannot be told apart", r->s->fd, r->set->epfd);
}

/* New events for r (its data, so its chain, may change). */
static void set_ev(struct resil_epset *set, struct resil_epreg *r,
                   const struct epoll_event *ev)
{
    unlink_reg(set, r);
    r->data = ev->data.u64;
    atomic_store_explicit(&r->events, ev->events, memory_order_relaxed);
    if (!link_reg(set, r))
        not_indexed(r);
}

static bool current(const struct resil_epreg *r)
{
    return r->epoch == atomic_load(&r->set->epoch);
}

/* ---- a socket's registrations (s->ep_mu held) ---- */

/* A record for s, not yet on its list: its own when free. */
static struct resil_epreg *reg_new(struct resil_sock *s)
{
    return s->ep_own.set == NULL ? &s->ep_own : malloc(sizeof(s->ep_own));
}

/* r is off s's list and out of every index: free it. */
static void reg_release(struct resil_sock *s, struct resil_epreg *r)
{
    if (r == &s->ep_own)
        r->set = NULL;
    else
        free(r);
}

static void reg_free(struct resil_epreg *r)
{
    resil_lock(&r->set->mu);
    unlink_reg(r->set, r);
    resil_unlock(&r->set->mu);
    reg_release(r->s, r);
}

/* s's record in epfd's set, freeing on the way those of sets the program
 * closed since. */
static struct resil_epreg *reg_find_all(struct resil_sock *s, int epfd)
{
    struct resil_epreg **pp = &s->ep, *r, *found = NULL;

    while ((r = *pp) != NULL) {
        if (!current(r)) {
            *pp = r->s_next;
            reg_free(r);
            continue;
        }
        if (r->set->epfd == epfd)
            found = r;
        pp = &r->s_next;
    }
    return found;
}

static inline struct resil_epreg *reg_find(struct resil_sock *s, int epfd)
{
    struct resil_epreg *r = s->ep;

    /* none, or one in a set still open (the usual): no walk */
    if (r == NULL)
        return NULL;
    if (r->s_next == NULL && current(r))
        return r->set->epfd == epfd ? r : NULL;
    return reg_find_all(s, epfd);
}

/* Take r off s's list. */
static void reg_unlist(struct resil_sock *s, struct resil_epreg *r)
{
    struct resil_epreg **pp;

    for (pp = &s->ep; *pp != r; pp = &(*pp)->s_next)
        ;
    *pp = r->s_next;
}

/* Take r off s's list and out of its set's index, free (set->mu not
 * held). */
static void reg_drop(struct resil_sock *s, struct resil_epreg *r)
{
    reg_unlist(s, r);
    reg_free(r);
}

/* Record a registration the kernel accepted (ADD, or MOD of one we had not
 * seen). s->ep_mu and set->mu held. */
static void reg_record(struct resil_sock *s, struct resil_epset *set,
                       struct resil_epreg *r, const struct epoll_event *ev)
{
    if (r == NULL) {
        r = reg_new(s);
        if (r == NULL) {
            rwarn("fd %d: cannot track epoll %d registration (out of "
                  "memory); a reconnect would lose it", s->fd, set->epfd);
            return;
        }
        r->set = set;
        r->s = s;
        r->epoch = atomic_load_explicit(&set->epoch, memory_order_relaxed);
        r->data = ev->data.u64;
        atomic_store_explicit(&r->events, ev->events, memory_order_relaxed);
        r->linked = false;
        if (!link_reg(set, r))
            not_indexed(r);
        r->s_next = s->ep;
        s->ep = r;
    } else if (r->linked && r->data == ev->data.u64 &&
               !((events_of(r) ^ ev->events) & EPOLLONESHOT)) {
        /* same chain, same counts */
        atomic_store_explicit(&r->events, ev->events, memory_order_relaxed);
    } else {
        set_ev(set, r, ev);
    }
    r->pending = false;
    r->fired = false;
}

/* Take r off s's list and out of its set's index (set->mu held), free. */
static inline void reg_drop_locked(struct resil_sock *s, struct resil_epreg *r)
{
    reg_unlist(s, r);
    unlink_reg(r->set, r);
    reg_release(s, r);
}

/* epoll_ctl on a pending (disarmed, not in the kernel) registration: what
 * the kernel would answer for the disarmed one. */
static int pending_ctl(struct resil_sock *s, struct resil_epreg *r, int op,
                       struct epoll_event *ev)
{
    struct resil_epset *set = r->set;
    int rc, err = 0;

    /* the kernel is still asked, for what it alone knows: whether epfd is
     * valid, and whether another process sharing the set (fork) added fd
     * again meanwhile */
    switch (op) {
    case EPOLL_CTL_ADD:
        return EEXIST;
    case EPOLL_CTL_DEL:
        if (real.epoll_ctl(set->epfd, EPOLL_CTL_DEL, s->fd, ev) < 0 &&
            errno != ENOENT)
            return errno;
        reg_drop(s, r);
        return 0;
    case EPOLL_CTL_MOD:
        /* the one check MOD makes that ADD does not (ep_ctl) */
        if (ev && (ev->events & EPOLLEXCLUSIVE))
            return EINVAL;
        resil_lock(&set->mu);
        rc = real.epoll_ctl(set->epfd, EPOLL_CTL_ADD, s->fd, ev);
        if (rc < 0 && errno == EEXIST)
            rc = real.epoll_ctl(set->epfd, EPOLL_CTL_MOD, s->fd, ev);
        if (rc < 0) {
            err = errno;
        } else {
            set_ev(set, r, ev);
            r->pending = false;
            r->fired = false;
        }
        resil_unlock(&set->mu);
        return err;
    }
    return EINVAL;
}

/* MOD of a recorded registration that changes only its interest: neither
 * its data (its place in the index) nor one-shot (whose fired flag an
 * epoll_wait may set in between) before or after. The set's index does
 * not change, and an epoll_wait that harvests an event of it finds it
 * recorded either way: s->ep_mu alone (against a swap) will do. */
static bool mod_only_interest(const struct resil_epreg *r, int op,
                              const struct epoll_event *ev)
{
    return op == EPOLL_CTL_MOD && ev && r->data == ev->data.u64 &&
           !((events_of(r) | ev->events) & EPOLLONESHOT) && current(r);
}

/* The program's call itself: 0 or the errno it fails with. */
static inline int ctl_real(int epfd, int op, int fd, struct epoll_event *ev)
{
    return real.epoll_ctl(epfd, op, fd, ev) == 0 ? 0 : errno;
}

static inline void ctl(struct resil_sock *s, int epfd, int op,
                       struct epoll_event *ev, int *err)
{
    struct resil_epreg *r = NULL;
    struct resil_epset *set;

    resil_lock(&s->ep_mu);
    if (__builtin_expect(s->ep_gone, 0)) {
        /* the fd was closed meanwhile: nothing of ours */
        *err = ctl_real(epfd, op, s->fd, ev);
        goto out;
    }
    if (s->ep != NULL && (r = reg_find(s, epfd)) != NULL) {
        if (r->pending) {
            *err = pending_ctl(s, r, op, ev);
            goto out;
        }
        if (mod_only_interest(r, op, ev)) {
            *err = ctl_real(epfd, op, s->fd, ev);
            if (*err == 0)
                atomic_store_explicit(&r->events, ev->events,
                                      memory_order_relaxed);
            else if (*err == ENOENT)
                reg_drop(s, r); /* the kernel has it no more */
            goto out;
        }
        set = r->set;
    } else if (op == EPOLL_CTL_DEL) {
        /* nothing recorded, nothing to forget */
        *err = ctl_real(epfd, op, s->fd, ev);
        goto out;
    } else if ((set = set_get(epfd, true)) == NULL) {
        *err = ctl_real(epfd, op, s->fd, ev);
        if (*err == 0)
            rwarn("fd %d: cannot track epoll %d registration (out of "
                  "memory); a reconnect would lose it", s->fd, epfd);
        goto out;
    }
    /* the set's mutex across the real call: an epoll_wait that harvests
     * the registration the moment the kernel has it sees the mutex held
     * and waits for the record (resil_epoll_filter), and the set cannot
     * be forgotten by a close() in between */
    resil_lock(&set->mu);
    if (r && !current(r))
        r = NULL; /* closed since reg_find: freed by the next one */
    *err = ctl_real(epfd, op, s->fd, ev);
    if (op == EPOLL_CTL_DEL) {
        if (r && (*err == 0 || *err == ENOENT))
            reg_drop_locked(s, r); /* the kernel has it no more */
    } else if (*err == 0) {
        if (ev)
            reg_record(s, set, r, ev);
    } else if (r && *err == ENOENT && op == EPOLL_CTL_MOD) {
        reg_drop_locked(s, r);
    }
    resil_unlock(&set->mu);
out:
    resil_unlock(&s->ep_mu);
}

resil_status_t resil_epoll_ctl(struct resil_sock *s, int epfd, int op,
                               struct epoll_event *ev, int *err)
{
    ctl(s, epfd, op, ev, err);
    return RESIL_OK;
}

resil_status_t resil_epoll_ctl_fd(int fd, int epfd, int op,
                                  struct epoll_event *ev, int *err)
{
    struct resil_sock *s = resil_table_get(fd);

    if (s == NULL)
        return RESIL_ENOENT;
    ctl(s, epfd, op, ev, err);
    resil_sock_unref(s);
    return RESIL_OK;
}

static void forget_all(struct resil_sock *s)
{
    for (struct resil_epreg *r; (r = s->ep) != NULL;) {
        s->ep = r->s_next;
        reg_free(r);
    }
}

void resil_epoll_sock_closed(struct resil_sock *s)
{
    resil_lock(&s->ep_mu);
    s->ep_gone = true;
    forget_all(s);
    resil_unlock(&s->ep_mu);
}

void resil_epoll_sock_unwatch(struct resil_sock *s)
{
    resil_lock(&s->ep_mu);
    for (struct resil_epreg *r = s->ep; r; r = r->s_next)
        if (r->set != NULL)
            /* not registered there any more: ENOENT, harmless */
            real.epoll_ctl(r->set->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    resil_unlock(&s->ep_mu);
}

void resil_epoll_sock_free(struct resil_sock *s)
{
    /* nobody else holds s; the sets' indexes may still point at it */
    forget_all(s);
}

static void forget_set(struct resil_epset *set)
{
    resil_lock(&set->mu);
    for (unsigned i = 0; i < set->nbuckets; i++) {
        for (struct resil_epreg *r = set->bucket[i]; r; r = r->h_next)
            r->linked = false;
        set->bucket[i] = NULL;
    }
    atomic_store(&set->nregs, 0);
    atomic_store(&set->noneshot, 0);
    /* the registrations stay on their sockets' lists until those are next
     * walked (reg_find, the swap), which free them for this */
    atomic_fetch_add(&set->epoch, 1);
    resil_unlock(&set->mu);
}

void resil_epoll_forget_set(int fd)
{
    struct resil_epset *set = set_get(fd, false);
    if (set)
        forget_set(set);
}

void resil_epoll_fds_closed(unsigned first, unsigned last)
{
    if (atomic_load(&resil_epoll_nsets) == 0)
        return;
    pthread_mutex_lock(&sets_mu);
    for (struct resil_epset *set = all_sets; set; set = set->all_next)
        if ((unsigned)set->epfd >= first && (unsigned)set->epfd <= last)
            forget_set(set);
    pthread_mutex_unlock(&sets_mu);
}

/* ---- the swap ---- */

/* One line of /proc/self/fdinfo/<epfd> (fs/eventpoll.c ep_show_fdinfo):
 * "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x". -1 when
 * it is not fd's registration of inode ino; else 1 when it is disarmed. */
static int fdinfo_line(const char *l, int fd, unsigned long ino)
{
    const char *p;
    char *end;
    unsigned long ev, in;

    if (strncmp(l, "tfd:", 4) != 0 || strtol(l + 4, &end, 10) != fd)
        return -1;
    if ((p = strstr(end, "events:")) == NULL)
        return -1;
    ev = strtoul(p + 7, &end, 16);
    if ((p = strstr(end, "ino:")) == NULL)
        return -1;
    in = strtoul(p + 4, NULL, 16);
    if (ino && in != ino)
        return -1;
    return (ev & ~(unsigned long)PRIVATE_BITS) == 0;
}

/* Has the kernel disarmed the one-shot registration of fd (inode ino) in
 * epfd? 1 yes, 0 no, -1 cannot tell (no /proc). The file lists every
 * registration of the set (about 3 us each), which is why only a
 * registration seen firing is asked about. */
static int oneshot_disarmed(int epfd, int fd, unsigned long ino)
{
    char path[48], buf[4096];
    size_t have = 0;
    int pfd, res = -1;

    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", epfd);
    resil_fds_making(); /* a low number while it is read (fds.h) */
    pfd = open(path, O_RDONLY | O_CLOEXEC);
    if (pfd < 0) {
        resil_fds_made();
        return -1;
    }
    for (;;) {
        ssize_t n = real.read(pfd, buf + have, sizeof(buf) - 1 - have);
        char *line = buf, *nl;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        while ((nl = memchr(line, '\n', (size_t)(buf + have - line)))) {
            *nl = 0;
            if ((res = fdinfo_line(line, fd, ino)) >= 0)
                goto done;
            line = nl + 1;
        }
        have -= (size_t)(line - buf);
        memmove(buf, line, have);
        if (have == sizeof(buf) - 1)
            have = 0; /* a line that long is not a registration */
    }
    res = -1;
done:
    real.close(pfd);
    resil_fds_made();
    return res;
}

void resil_epoll_swap_begin(struct resil_sock *s)
{
    RESIL_KEEP_ERRNO();
    struct pollfd p = {.fd = s->fd, .events = ALL_POLL};
    struct resil_epreg **pp, *r;
    unsigned long ino = 0;
    bool ino_known = false;

    resil_lock(&s->ep_mu);
    /* what the old socket reports, for the stale report (swap_end) */
    s->ep_old_mask = real.poll(&p, 1, 0) == 1 ? (uint32_t)p.revents : 0;
    for (pp = &s->ep; (r = *pp) != NULL;) {
        struct resil_epset *set = r->set;
        bool keep = true;
        resil_lock(&set->mu);
        if (!current(r)) {
            keep = false;
        } else if (!r->pending) {
            int dis = 0;
            if ((events_of(r) & EPOLLONESHOT) && r->fired) {
                struct stat st;
                if (!ino_known) {
                    ino = fstat(s->fd, &st) == 0 ? st.st_ino : 0;
                    ino_known = true;
                }
                dis = oneshot_disarmed(set->epfd, s->fd, ino);
                if (dis < 0) {
                    /* cannot ask the kernel: an epoll_wait returned its
                     * data, so it most likely fired */
                    rdebug("fd %d: epoll %d: one-shot state unknown (no "
                           "/proc); kept disarmed", s->fd, set->epfd);
                    dis = 1;
                }
            }
            if (real.epoll_ctl(set->epfd, EPOLL_CTL_DEL, s->fd, NULL) < 0)
                /* not registered there any more: the program closed that
                 * set where we did not see it, and its number may now
                 * name another one, where fd must never be added */
                keep = false;
            else if (dis) {
                r->pending = true;
                rdebug("fd %d: epoll %d: one-shot registration fired; kept "
                       "disarmed across the swap", s->fd, set->epfd);
            }
        }
        resil_unlock(&set->mu);
        if (keep) {
            pp = &r->s_next;
        } else {
            *pp = r->s_next;
            reg_free(r);
        }
    }
    /* s->ep_mu stays held until resil_epoll_swap_end */
}

void resil_epoll_swap_end(struct resil_sock *s, bool swapped)
{
    RESIL_KEEP_ERRNO();
    struct resil_epreg **pp, *r;

    if (swapped && (s->ep_old_mask & (POLLERR | POLLHUP))) {
        /* numbered after the old socket left fd and every set: a
         * readiness call that read the sequence earlier may hold its
         * events, a later one cannot */
        atomic_store_explicit(&s->stale_mask, s->ep_old_mask,
                              memory_order_relaxed);
        atomic_store_explicit(&s->stale_seq,
                              atomic_fetch_add(&swap_seq, 1) + 1,
                              memory_order_release);
    }
    for (pp = &s->ep; (r = *pp) != NULL;) {
        struct resil_epset *set = r->set;
        bool keep = true;
        resil_lock(&set->mu);
        if (!current(r)) {
            keep = false;
        } else if (!r->pending) {
            struct epoll_event ev = {.events = events_of(r),
                                     .data.u64 = r->data};
            if (real.epoll_ctl(set->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0) {
                rdebug("fd %d: epoll %d re-add: %s", s->fd, set->epfd,
                       strerror(errno));
                keep = false;
            }
            r->fired = false;
        }
        resil_unlock(&set->mu);
        if (keep) {
            pp = &r->s_next;
        } else {
            *pp = r->s_next;
            reg_free(r);
        }
    }
    resil_unlock(&s->ep_mu);
}

/* ---- readiness ---- */

uint64_t resil_epoll_swap_seq(void)
{
    return atomic_load_explicit(&swap_seq, memory_order_acquire);
}

bool resil_epoll_stale_report(struct resil_sock *s, uint64_t seq0,
                              uint32_t *mask)
{
    /* a swap of s in progress holds ep_mu from before its DEL to after its
     * report: wait for it */
    resil_lock(&s->ep_mu);
    resil_unlock(&s->ep_mu);
    if (atomic_load_explicit(&s->stale_seq, memory_order_acquire) <= seq0)
        return false;
    *mask = atomic_load_explicit(&s->stale_mask, memory_order_relaxed);
    return true;
}

bool resil_epoll_stale_match(uint32_t got, uint32_t want)
{
    /* tcp_write_err() reports the error (waking pollers) a moment before
     * tcp_done() adds the hang-up and the read bits: a report harvested in
     * between, or an old socket polled in between by the swap, differs
     * from the other in those bits only */
    const uint32_t late = EPOLLHUP | EPOLLIN | EPOLLRDNORM | EPOLLRDHUP;
    return got == want ||
           ((got & want & EPOLLERR) && ((got ^ want) & ~late) == 0);
}

static bool sock_tryref(struct resil_sock *s)
{
    int r = atomic_load(&s->refs);
    while (r > 0 && !atomic_compare_exchange_weak(&s->refs, &r, r + 1))
        ;
    return r > 0;
}

/* A one-shot registration whose stale event was dropped: the kernel
 * disarmed it for an event the program never saw, so arm it again. */
void resil_epoll_rearm(struct resil_sock *s, struct resil_epset *set)
{
    struct resil_epreg *r;

    resil_lock(&s->ep_mu);
    r = s->ep_gone ? NULL : reg_find(s, set->epfd);
    if (r && r->set == set && (events_of(r) & EPOLLONESHOT)) {
        struct epoll_event ev = {.events = events_of(r), .data.u64 = r->data};
        resil_lock(&set->mu);
        if (current(r)) {
            if (!r->pending)
                real.epoll_ctl(set->epfd, EPOLL_CTL_MOD, s->fd, &ev);
            else if (real.epoll_ctl(set->epfd, EPOLL_CTL_ADD, s->fd, &ev) ==
                     0)
                r->pending = false;
            r->fired = false;
        }
        resil_unlock(&set->mu);
    }
    resil_unlock(&s->ep_mu);
}

struct cand {
    struct resil_sock *s;
    uint64_t data;
    uint32_t interest; /* the registration's events */
    uint32_t mask;     /* the stale report */
    bool stale;
};

int resil_epoll_filter(struct resil_epset *set, struct epoll_event *ev, int n,
                       uint64_t seq0)
{
    RESIL_KEEP_ERRNO();
    struct cand c[MAX_CAND];
    int nc = 0, out = 0;
    bool busy, oneshot;

    /* an epoll_ctl in progress (it holds the set's mutex across its real
     * call) may have handed the kernel a registration (whose events we may
     * hold) that it has not recorded yet: wait for it on the mutex */
    busy = resil_lock_held(&set->mu);
    if (!busy && atomic_load(&set->nregs) == 0)
        return n;
    oneshot = busy || atomic_load(&set->noneshot) != 0;
    if (!oneshot) {
        int i = 0;
        while (i < n && !(ev[i].events & (EPOLLERR | EPOLLHUP)))
            i++;
        if (i == n)
            return n; /* the usual case: nothing to look up */
    }
    /* the managed registrations that could have produced each event: one
     * look-up of its data (another fd may share it: the record does not
     * know unmanaged fds, and needs not) */
    resil_lock(&set->mu);
    oneshot = atomic_load(&set->noneshot) != 0;
    for (int i = 0; i < n; i++) {
        bool errhup = ev[i].events & (EPOLLERR | EPOLLHUP);
        if (!errhup && !oneshot)
            continue;
        for (struct resil_epreg *r = chain_of(set, ev[i].data.u64); r;
             r = r->h_next) {
            int k;
            if (r->data != ev[i].data.u64)
                continue;
            if (events_of(r) & EPOLLONESHOT)
                r->fired = true;
            if (!errhup || nc == MAX_CAND)
                continue;
            for (k = 0; k < nc && c[k].s != r->s; k++)
                ;
            if (k < nc || !sock_tryref(r->s))
                continue;
            c[nc++] = (struct cand){.s = r->s,
                                    .data = r->data,
                                    .interest = events_of(r)};
        }
    }
    resil_unlock(&set->mu);
    if (nc == 0)
        return n;
    /* a candidate that reports an error or hang-up itself may be dead and
     * never used: re-raced now, it leaves a stale report */
    for (int k = 0; k < nc; k++) {
        struct resil_sock *s = c[k].s;
        uint32_t m;
        if (!resil_epoll_stale_report(s, seq0, &m)) {
            struct pollfd p = {.fd = s->fd, .events = ALL_POLL};
            if (real.poll(&p, 1, 0) == 1 &&
                (p.revents & (POLLERR | POLLHUP)))
                resil_conn_dead_unused(s, p.revents & POLLERR);
        }
        c[k].stale = resil_epoll_stale_report(s, seq0, &c[k].mask);
    }
    /* one event per replaced socket, with its data and the mask it
     * reported (an exact match first): never another fd's */
    for (int k = 0; k < nc; k++) {
        uint32_t want;
        int best = -1;
        if (!c[k].stale)
            continue;
        want = c[k].mask & (c[k].interest | EPOLLERR | EPOLLHUP);
        for (int i = 0; i < n; i++) {
            if (ev[i].events == 0 || ev[i].data.u64 != c[k].data)
                continue;
            if (ev[i].events == want) {
                best = i;
                break;
            }
            if (best < 0 && resil_epoll_stale_match(ev[i].events, want))
                best = i;
        }
        if (best < 0)
            continue;
        rdebug("fd %d: epoll %d: event 0x%x of the replaced socket dropped",
               c[k].s->fd, set->epfd, ev[best].events);
        ev[best].events = 0; /* the kernel never returns an empty one */
        if (c[k].interest & EPOLLONESHOT)
            resil_epoll_rearm(c[k].s, set);
    }
    /* a failed race's error that the program has not consumed yet: the
     * kernel's own socket would report it (conn.c holds it) */
    for (int k = 0; k < nc; k++) {
        uint32_t err = resil_conn_poll_err(c[k].s->fd);
        for (int i = 0; err && i < n; i++)
            if (ev[i].events && ev[i].data.u64 == c[k].data)
                ev[i].events |= err;
    }
    for (int i = 0; i < n; i++)
        if (ev[i].events)
            ev[out++] = ev[i];
    for (int k = 0; k < nc; k++)
        resil_sock_unref(c[k].s);
    return out;
}

int resil_epoll_regs_of(struct resil_sock *s, int *epfd,
                        struct epoll_event *ev, int max)
{
    int n = 0;

    resil_lock(&s->ep_mu);
    for (struct resil_epreg *r = s->ep; r && n < max && !s->ep_gone;
         r = r->s_next) {
        if (!current(r) || r->pending)
            continue;
        epfd[n] = r->set->epfd;
        ev[n].events = events_of(r);
        ev[n].data.u64 = r->data;
        n++;
    }
    resil_unlock(&s->ep_mu);
    return n;
}

int resil_epoll_socks_of(struct resil_epset *set, uint64_t data,
                         struct resil_sock **out, uint32_t *interest,
                         int max)
{
    int n = 0;

    resil_lock(&set->mu);
    for (struct resil_epreg *r = chain_of(set, data); r && n < max;
         r = r->h_next)
        if (r->data == data && sock_tryref(r->s)) {
            interest[n] = events_of(r);
            out[n++] = r->s;
        }
    resil_unlock(&set->mu);
    return n;
}

int resil_epoll_reg_state(struct resil_sock *s, int epfd)
{
    struct resil_epreg *r;
    int st;

    resil_lock(&s->ep_mu);
    r = reg_find(s, epfd);
    st = r == NULL ? 0 : r->pending ? 2 : 1;
    resil_unlock(&s->ep_mu);
    return st;
}

void resil_epoll_atfork_child(void)
{
    pthread_mutex_init(&sets_mu, NULL);
    for (struct resil_epset *set = all_sets; set; set = set->all_next)
        resil_lock_init(&set->mu);
}
