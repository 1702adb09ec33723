#include <errno.h>
#include <pthread.h>
#include <sched.h>

#include "common.h"
#include "table.h"

TestSuite(table, .init = unit_setup);

Test(table, empty_and_out_of_range)
{
    cr_expect_not(resil_table_has(-1));
    cr_expect_not(resil_table_has(RESIL_TABLE_MAX));
    cr_expect_not(resil_table_has(123456));
    cr_expect_null(resil_table_get(-5));
    cr_expect_null(resil_table_get(RESIL_TABLE_MAX + 7));
    cr_expect_null(resil_table_take(77));
    struct resil_sock *s = resil_sock_new(RESIL_TABLE_MAX, AF_INET, 1);
    cr_expect_eq(resil_table_set(RESIL_TABLE_MAX, s), RESIL_ERANGE);
    cr_expect_eq(resil_table_set(-1, s), RESIL_ERANGE);
    resil_sock_unref(s);
}

Test(table, set_get_take_refcounts)
{
    struct resil_sock *s = resil_sock_new(40, AF_INET6, 1);
    cr_assert_not_null(s);
    cr_assert_eq(resil_table_set(40, s), RESIL_OK);
    cr_expect_eq(atomic_load(&s->refs), 2);
    cr_expect(resil_table_has(40));
    cr_expect_not(resil_table_has(41));
    struct resil_sock *g = resil_table_get(40);
    cr_expect_eq(g, s);
    cr_expect_eq(atomic_load(&s->refs), 3);
    resil_sock_unref(g);
    struct resil_sock *t = resil_table_take(40);
    cr_expect_eq(t, s);
    cr_expect_not(resil_table_has(40));
    cr_expect_null(resil_table_get(40));
    resil_sock_unref(t);
    cr_expect_eq(atomic_load(&s->refs), 1);
    resil_sock_unref(s);
}

Test(table, replacing_an_entry_releases_the_old_one)
{
    struct resil_sock *a = resil_sock_new(9000, AF_INET, 1);
    struct resil_sock *b = resil_sock_new(9000, AF_INET, 1);
    resil_table_set(9000, a);
    resil_table_set(9000, b);
    cr_expect_eq(atomic_load(&a->refs), 1);
    struct resil_sock *g = resil_table_get(9000);
    cr_expect_eq(g, b);
    resil_sock_unref(g);
    resil_sock_unref(resil_table_take(9000));
    resil_sock_unref(a);
    resil_sock_unref(b);
}

Test(table, options_latest_value_wins_in_order)
{
    struct resil_sock *s = resil_sock_new(3, AF_INET, 1);
    int one = 1, two = 2, big = 65536;
    cr_expect_eq(resil_sock_add_opt(s, 6, 1, &one, sizeof(one)), RESIL_OK);
    cr_expect_eq(resil_sock_add_opt(s, 1, 8, &big, sizeof(big)), RESIL_OK);
    cr_expect_eq(resil_sock_add_opt(s, 6, 1, &two, sizeof(two)), RESIL_OK);
    /* the option set again moves to the end: replaying the list gives
     * what the program's own order of calls gave */
    cr_assert_not_null(s->opts);
    cr_expect_eq(s->opts->name, 8);
    cr_expect_eq(s->opts->seq, 2);
    cr_assert_not_null(s->opts->next);
    cr_expect_eq(s->opts->next->level, 6);
    cr_expect_eq(*(int *)s->opts->next->val, 2);
    cr_expect_eq(s->opts->next->seq, 3);
    cr_expect_null(s->opts->next->next);
    cr_expect_eq(s->opt_seq, 3);
    char huge[300] = {0};
    cr_expect_eq(resil_sock_add_opt(s, 1, 2, huge, sizeof(huge)),
                 RESIL_EUNSUPP);
    resil_sock_unref(s);
}

/* The first small options live inside the socket, the rest on the heap;
 * a value that changes size moves; every value reads back as set (the ASan
 * run checks that nothing leaks and no box is freed). */
Test(table, options_boxed_and_heaped)
{
    struct resil_sock *s = resil_sock_new(3, AF_INET, 1);
    int v[4] = {11, 22, 33, 44};
    struct linger lg = {1, 5};
    char big[40];
    const struct resil_sockopt *o;
    int n = 0;

    memset(big, 7, sizeof(big));
    cr_assert_eq(resil_sock_add_opt(s, 6, 1, &v[0], sizeof(int)), RESIL_OK);
    cr_assert_eq(resil_sock_add_opt(s, 1, 13, &lg, sizeof(lg)), RESIL_OK);
    cr_expect_eq(s->opt_box_used, 3, "both boxes taken");
    cr_assert_eq(resil_sock_add_opt(s, 6, 2, &v[1], sizeof(int)), RESIL_OK);
    cr_assert_eq(resil_sock_add_opt(s, 1, 99, big, sizeof(big)), RESIL_OK);
    /* 6/1 changes size: its box is freed, and taken again */
    cr_assert_eq(resil_sock_add_opt(s, 6, 1, &lg, sizeof(lg)), RESIL_OK);
    cr_expect_eq(s->opt_box_used, 3);
    /* the same size: the record is reused in place */
    cr_assert_eq(resil_sock_add_opt(s, 6, 2, &v[2], sizeof(int)), RESIL_OK);
    for (o = s->opts; o; o = o->next, n++) {
        switch (n) {
        case 0:
            cr_expect(o->level == 1 && o->name == 13 &&
                      memcmp(o->val, &lg, sizeof(lg)) == 0);
            break;
        case 1:
            cr_expect(o->name == 99 && o->len == sizeof(big) &&
                      memcmp(o->val, big, sizeof(big)) == 0);
            break;
        case 2:
            cr_expect(o->name == 1 && o->len == sizeof(lg) &&
                      memcmp(o->val, &lg, sizeof(lg)) == 0);
            break;
        case 3:
            cr_expect(o->name == 2 && *(const int *)o->val == 33);
            break;
        }
    }
    cr_expect_eq(n, 4);
    resil_sock_unref(s);
}

Test(table, take_if)
{
    struct resil_sock *a = resil_sock_new(9001, AF_INET, 1);
    struct resil_sock *b = resil_sock_new(9001, AF_INET, 1);
    cr_assert_eq(resil_table_set(9001, a), RESIL_OK);
    cr_expect_not(resil_table_take_if(9001, b));
    cr_expect(resil_table_take_if(9001, a));
    cr_expect_null(resil_table_get(9001));
    cr_expect_not(resil_table_take_if(9001, a));
    resil_sock_unref(a);
    resil_sock_unref(b);
}

static void *hammer(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int round = 0; round < 2000; round++) {
        int fd = base + round % 50;
        struct resil_sock *s = resil_sock_new(fd, AF_INET, 1);
        resil_table_set(fd, s);
        resil_sock_unref(s);
        struct resil_sock *g = resil_table_get(fd);
        if (g)
            resil_sock_unref(g);
        resil_sock_unref(resil_table_take(fd));
    }
    return NULL;
}

Test(table, concurrent_use)
{
    pthread_t t[4];
    /* two threads share each fd range, so slots really race */
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)(100 + 25 * i));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int fd = 100; fd < 300; fd++)
        cr_expect_not(resil_table_has(fd), "fd %d left behind", fd);
}

static void count(struct resil_sock *s, void *arg)
{
    (void)s;
    (*(int *)arg)++;
}

Test(table, foreach_visits_every_entry)
{
    int fds[] = {5, 4095, 4096, 70000}, n = 0;
    for (int i = 0; i < 4; i++) {
        struct resil_sock *s = resil_sock_new(fds[i], AF_INET, 1);
        resil_table_set(fds[i], s);
        resil_sock_unref(s);
    }
    resil_table_foreach(count, &n);
    cr_expect_eq(n, 4);
    for (int i = 0; i < 4; i++)
        resil_sock_unref(resil_table_take(fds[i]));
}

/* lock.h: mutual exclusion under contention (the waiters sleep in the
 * kernel and are woken), and errno untouched on the slow paths */
static resil_lock_t lk = RESIL_LOCK_INIT;
static long guarded;

static void *lock_worker(void *arg)
{
    (void)arg;
    errno = EDOM;
    for (int i = 0; i < 200000; i++) {
        resil_lock(&lk);
        long v = guarded;
        if (i % 1000 == 0)
            sched_yield(); /* let the others pile up on the lock */
        guarded = v + 1;
        resil_unlock(&lk);
    }
    return (void *)(intptr_t)(errno != EDOM);
}

Test(table, lock_contended)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, lock_worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *errno_changed;
        pthread_join(t[i], &errno_changed);
        cr_expect_null(errno_changed, "errno changed in worker %d", i);
    }
    cr_expect_eq(guarded, 4 * 200000L);
    cr_expect_not(resil_lock_held(&lk));
    resil_lock(&lk);
    cr_expect(resil_lock_held(&lk));
    resil_unlock(&lk);
}
