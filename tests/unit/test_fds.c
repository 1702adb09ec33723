/* The registry of libresil's own descriptors (fds.h) and the table's
 * occupancy bitmaps (issue 6, defects 2 and 17). Real descriptors of this
 * test process, well above criterion's own. */
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "fds.h"
#include "table.h"

TestSuite(fds, .init = unit_setup);

/* the number the registry starts searching from, as fds.c computes it */
static int floor_now(void)
{
    struct rlimit rl;
    long top = RESIL_FDS_TOP_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)top)
        top = (long)rl.rlim_cur;
    return (int)(top - top / 16);
}

Test(fds, table_next_visits_only_slots_in_use)
{
    struct resil_sock *a = resil_sock_new(5, AF_INET, 1);
    struct resil_sock *b = resil_sock_new(4100, AF_INET, 1);
    struct resil_sock *c = resil_sock_new(70000, AF_INET, 1);
    static int entry; /* any address stands for a registry entry */

    cr_assert_eq(resil_table_set(5, a), RESIL_OK);
    cr_assert_eq(resil_table_set(4100, b), RESIL_OK);
    cr_assert_eq(resil_table_set(70000, c), RESIL_OK);
    cr_assert_eq(resil_table_mark(9000, &entry), RESIL_OK);
    cr_expect_eq(resil_table_next(0), 5);
    cr_expect_eq(resil_table_next(6), 4100);
    cr_expect_eq(resil_table_next(4101), 9000);
    cr_expect_eq(resil_table_next(9001), 70000);
    cr_expect_eq(resil_table_next(70001), -1);
    cr_expect_eq(resil_table_next(RESIL_TABLE_MAX - 1), -1);

    /* a mark is ours: seen by has/internal, never by get/take/set */
    cr_expect(resil_table_has(9000));
    cr_expect(resil_table_internal(9000));
    cr_expect_not(resil_table_internal(4100));
    cr_expect_null(resil_table_get(9000));
    cr_expect_null(resil_table_take(9000));
    cr_expect_eq(resil_table_marked(9000), &entry);
    cr_expect_eq(resil_table_set(9000, a), RESIL_EUNSUPP);
    cr_expect_eq(resil_table_marked(9000), &entry);

    resil_table_unmark(9000);
    cr_expect_not(resil_table_has(9000));
    cr_expect_eq(resil_table_next(4101), 70000);
    resil_sock_unref(resil_table_take(5));
    resil_sock_unref(resil_table_take(4100));
    resil_sock_unref(resil_table_take(70000));
    cr_expect_eq(resil_table_next(0), -1);
    resil_sock_unref(a);
    resil_sock_unref(b);
    resil_sock_unref(c);
}

Test(fds, own_places_near_the_top_and_marks)
{
    int owner = -1, fd = eventfd(0, EFD_CLOEXEC);

    cr_assert_geq(fd, 0);
    cr_assert_eq(resil_fds_own(&owner, fd, RESIL_FD_WAKE, NULL), RESIL_OK);
    cr_expect_geq(owner, floor_now());
    cr_expect_eq(fcntl(fd, F_GETFD), -1, "the original is closed");
    cr_expect_eq(fcntl(owner, F_GETFD), FD_CLOEXEC);
    cr_expect(resil_table_internal(owner));
    cr_expect_eq(resil_fds_count(), 1);
    int n = owner;
    resil_fds_close(&owner);
    cr_expect_eq(owner, -1);
    cr_expect_not(resil_table_has(n));
    cr_expect_eq(fcntl(n, F_GETFD), -1, "closed");
    cr_expect_eq(resil_fds_count(), 0);
}

Test(fds, move_rewrites_the_owner_and_leaves_the_old_number)
{
    int owner = -1, old, fd = eventfd(0, EFD_CLOEXEC);
    struct resil_fds_moved m;
    atomic_int pins = 0;

    cr_assert_eq(resil_fds_own(&owner, fd, RESIL_FD_WAKE, &pins), RESIL_OK);
    old = owner;
    cr_assert_eq(resil_fds_move(old, &m), RESIL_OK);
    cr_expect_eq(m.oldfd, old);
    cr_expect_eq(m.newfd, owner);
    cr_expect_neq(owner, old);
    cr_expect_eq(m.pins, &pins);
    cr_expect(resil_table_internal(owner));
    cr_expect_not(resil_table_has(old));
    /* the old number still names our eventfd until the program's dup2 */
    uint64_t one = 1, v = 0;
    cr_expect_eq(write(old, &one, 8), 8);
    cr_expect_eq(read(owner, &v, 8), 8);
    cr_expect_eq(v, 1);
    close(old);
    cr_expect_eq(resil_fds_move(old, &m), RESIL_ENOENT);
    resil_fds_close(&owner);
    cr_expect_eq(resil_fds_count(), 0);
}

Test(fds, dns_sockets_never_move)
{
    int num = -1, fd = eventfd(0, EFD_CLOEXEC);
    struct resil_fds_moved m;

    cr_assert_eq(resil_fds_own(&num, fd, RESIL_FD_DNS, NULL), RESIL_OK);
    cr_expect_eq(resil_fds_move(num, &m), RESIL_EUNSUPP);
    cr_expect(resil_table_internal(num));
    resil_fds_close_fd(num);
    cr_expect_not(resil_table_has(num));
}

/* close_range over a range holding ours closes the rest around them */
Test(fds, close_range_keeps_ours)
{
    int a = -1, b = -1, prog[6], first = floor_now() - 300;

    cr_assert_eq(resil_fds_own(&a, eventfd(0, EFD_CLOEXEC), RESIL_FD_WAKE,
                               NULL),
                 RESIL_OK);
    cr_assert_eq(resil_fds_own(&b, eventfd(0, EFD_CLOEXEC), RESIL_FD_WAKE,
                               NULL),
                 RESIL_OK);
    /* the program's, below, between and above ours */
    prog[0] = fcntl(0, F_DUPFD, first);
    prog[1] = fcntl(0, F_DUPFD, first + 200);
    prog[2] = fcntl(0, F_DUPFD, a);
    prog[3] = fcntl(0, F_DUPFD, b);
    prog[4] = fcntl(0, F_DUPFD, b + 50);
    prog[5] = fcntl(0, F_DUPFD, b + 51);
    for (int i = 0; i < 6; i++)
        cr_assert_geq(prog[i], first);
    cr_expect_eq(resil_fds_close_range((unsigned)first, (unsigned)b + 60, 0),
                 RESIL_OK);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(fcntl(prog[i], F_GETFD), -1, "fd %d open", prog[i]);
    cr_expect_geq(fcntl(a, F_GETFD), 0);
    cr_expect_geq(fcntl(b, F_GETFD), 0);
    resil_fds_close(&a);
    resil_fds_close(&b);
}

Test(fds, take_then_close_by_number)
{
    int owner = -1, fd;
    cr_assert_eq(resil_fds_own(&owner, eventfd(0, EFD_CLOEXEC), RESIL_FD_SOCK,
                               NULL),
                 RESIL_OK);
    fd = resil_fds_take(&owner);
    cr_expect_eq(owner, -1);
    cr_expect(resil_table_internal(fd), "still ours until closed");
    resil_fds_close_fd(fd);
    cr_expect_not(resil_table_has(fd));
    cr_expect_eq(fcntl(fd, F_GETFD), -1);
}

/* One of ours made at the lowest free number while the program made its
 * own socket: the program's gets the number plain TCP would have given
 * it, once ours has gone (resil_fds_settle); FD_CLOEXEC as asked. */
Test(fds, settle_gives_the_program_the_lower_number)
{
    uint64_t mark = resil_fds_mark();
    int ours, prog, got, type = 0;
    socklen_t l = sizeof(type);

    resil_fds_making();
    ours = dup(0); /* the lowest free number, as a socket() of ours */
    cr_assert_geq(ours, 0);
    prog = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(prog, ours + 1);
    close(ours); /* moved high */
    resil_fds_made();
    got = resil_fds_settle(prog, mark, true);
    cr_expect_eq(got, ours);
    cr_expect_eq(getsockopt(got, SOL_SOCKET, SO_TYPE, &type, &l), 0);
    cr_expect_eq(type, SOCK_STREAM);
    cr_expect(fcntl(got, F_GETFD) & FD_CLOEXEC);
    cr_expect_eq(fcntl(prog, F_GETFD), -1, "the higher number is closed");
    close(got);
}

static void *slow_maker(void *arg)
{
    struct timespec d = {.tv_nsec = 20000000}; /* descheduled for 20 ms */
    nanosleep(&d, NULL);
    close(*(int *)arg); /* then moved high */
    resil_fds_made();
    return NULL;
}

/* The thread of ours stalls between making its descriptor and moving it
 * (descheduled on a loaded machine; CI met it): the program's socket still
 * gets the number plain TCP gives it. The 5 ms bound of the build before
 * left it at the next one. */
Test(fds, settle_waits_for_a_maker_that_stalls)
{
    uint64_t mark = resil_fds_mark();
    int ours, prog, got;
    pthread_t t;

    resil_fds_making();
    ours = dup(0);
    cr_assert_geq(ours, 0);
    prog = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(prog, ours + 1);
    cr_assert_eq(pthread_create(&t, NULL, slow_maker, &ours), 0);
    got = resil_fds_settle(prog, mark, false);
    pthread_join(t, NULL);
    cr_expect_eq(got, ours, "got %d, plain TCP gives %d", got, ours);
    close(got);
}

/* Nothing of ours made meanwhile: the number stays, with no system call. */
Test(fds, settle_leaves_a_number_alone_when_nothing_was_made)
{
    uint64_t mark = resil_fds_mark();
    int low = dup(0), prog;

    cr_assert_geq(low, 0);
    prog = socket(AF_INET, SOCK_STREAM, 0);
    close(low); /* a lower number free: the program's own doing */
    cr_expect_eq(resil_fds_settle(prog, mark, false), prog);
    cr_expect_eq(resil_fds_settle(-1, mark, false), -1);
    cr_expect_eq(fcntl(prog, F_GETFD), 0, "no FD_CLOEXEC added");
    close(prog);
}

/* A fork while a thread of ours makes a descriptor: the child has no such
 * thread, and its count starts at none (else every socket() of the child
 * would wait in resil_fds_settle). */
Test(fds, fork_child_counts_nothing_being_made)
{
    int status = -1;
    pid_t pid;

    resil_fds_making();
    resil_fds_atfork_prepare();
    pid = fork();
    if (pid == 0) {
        resil_fds_atfork_child();
        _exit((uint32_t)resil_fds_mark() == 0 ? 0 : 1);
    }
    resil_fds_atfork_parent();
    resil_fds_made();
    cr_assert_gt(pid, 0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child still counted one being made");
    cr_expect_eq((uint32_t)resil_fds_mark(), 0);
}
