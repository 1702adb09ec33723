/* libresil's own descriptors never meet the program's (issue 6: defects 1,
 * 2, 9, 15, 17, 20). run.sh runs every subtest preloaded (with an events
 * and a log file, so that those descriptors exist too) and plain: the
 * expectations are the kernel's own.
 *
 * "Ours" are found the way a user would: the descriptors of this process
 * at or above OURS_MIN after a raced connect (this program never opens that
 * many). Plain there are none, and the subtests also exercise a fixed
 * number (900, where libresil used to sit) with the same expectations.
 *
 * A raced connect goes to DRV_DEAD preloaded (the alternates group makes
 * it race to DRV_LIVE); plain it goes to DRV_LIVE directly, since plain
 * TCP to DRV_DEAD hangs (that is what the race fixes, bed/ proves it).
 */
#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "drv.h"

#define OURS_MIN 100
#define FIXED_FD 900

static int port;

static bool preloaded(void)
{
    const char *p = getenv("DRV_PRELOADED");
    return p && p[0] == '1';
}

/* Its open flags, from /proc (fcntl on one of ours says EBADF). */
static long fd_flags(int fd)
{
    char path[64], buf[256];
    long flags = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    f = fopen(path, "r");
    while (f && fgets(buf, sizeof(buf), f))
        if (strncmp(buf, "flags:", 6) == 0)
            flags = strtol(buf + 6, NULL, 8);
    if (f)
        fclose(f);
    return flags;
}

/* Descriptors >= OURS_MIN with close-on-exec (ascending); returns how
 * many. Close-on-exec tells them from what the test harness may have let
 * this process inherit (those are open across exec, so without it). */
static int ours(int *out, int max)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0, dfd = d ? dirfd(d) : -1;
    struct dirent *e;

    while (d && (e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dfd || fd < OURS_MIN || n == max ||
            !(fd_flags(fd) & O_CLOEXEC))
            continue;
        out[n++] = fd;
    }
    if (d)
        closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

/* The highest open descriptor. */
static int max_open(void)
{
    DIR *d = opendir("/proc/self/fd");
    int m = 0, dfd = d ? dirfd(d) : -1;
    struct dirent *e;

    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) != dfd &&
            atoi(e->d_name) > m)
            m = atoi(e->d_name);
    if (d)
        closedir(d);
    return m;
}

/* A raced connect and an echo round trip on it; returns the connected
 * fd (kept open when keep) or -1. */
static int raced(bool keep)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(preloaded() ? DRV_DEAD : DRV_LIVE, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), r;
    char peer[64];

    if (fd < 0) {
        fprintf(stderr, "  socket: %s\n", ename(errno));
        return -1;
    }
    if (connect(fd, (void *)&ss, l) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "  connect: %s\n", ename(errno));
        close(fd);
        return -1;
    }
    r = poll1(fd, POLLOUT, 3000);
    if (r <= 0 || sockerr(fd) != 0) {
        fprintf(stderr, "  connect: poll %d, SO_ERROR %s\n", r,
                ename(sockerr(fd)));
        close(fd);
        return -1;
    }
    name_of(fd, true, peer, sizeof(peer));
    if (strncmp(peer, DRV_LIVE ":", strlen(DRV_LIVE) + 1) != 0 ||
        !echo_roundtrip(fd, "raced\n", 3000)) {
        fprintf(stderr, "  connected to %s, echo failed\n", peer);
        close(fd);
        return -1;
    }
    if (!keep) {
        close(fd);
        return 0;
    }
    return fd;
}

/* A file of our own (unlinked) */
static int tmpfd(void)
{
    char path[] = "/tmp/resil-fds-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static off_t size_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}

/* An echo server in a process of its own (a process per connection), so
 * that its descriptors are not this process's: close_range() and the fd
 * budget then see only ours and the test's. It dies with this process. */
static void echo_process(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, 0, &ss);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    pid_t parent = getpid();

    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (void *)&ss, l) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (void *)&ss, &l) < 0)
        exit(2);
    sa_str(&ss, (char[64]){0}, 64, NULL, &port);
    if (fork() != 0) {
        close(lfd);
        return;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        char b[256];
        ssize_t n;
        if (c < 0)
            continue;
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            while ((n = read(c, b, sizeof(b))) > 0)
                if (write(c, b, (size_t)n) != n)
                    break;
            _exit(0);
        }
        close(c);
    }
}

/* ---- children: run with an environment of their own ---- */

struct child {
    int status;     /* exit status, 128+signal, or -1 (timed out) */
    double ms;
    char err[8192]; /* what it wrote to stderr */
};

/* Run argv with the current environment plus extra (NAME=value, or NAME
 * alone to remove it), stderr captured, killed after timeout_ms. The
 * environment is built before the fork: the child only execs (an ASan
 * allocator lock held by another thread at fork would hang it). */
static void spawn(char *const argv[], const char *const extra[],
                  int timeout_ms, struct child *c)
{
    extern char **environ;
    const char *envp[512];
    int p[2], ne = 0;
    size_t got = 0;
    double t0 = now_ms();
    pid_t pid;

    for (char **e = environ; *e && ne < 400; e++) {
        bool drop = false;
        for (int i = 0; extra && extra[i]; i++) {
            size_t n = strcspn(extra[i], "=");
            if (strncmp(*e, extra[i], n) == 0 && (*e)[n] == '=')
                drop = true;
        }
        if (!drop)
            envp[ne++] = *e;
    }
    for (int i = 0; extra && extra[i] && ne < 510; i++)
        if (strchr(extra[i], '='))
            envp[ne++] = extra[i];
    envp[ne] = NULL;
    memset(c, 0, sizeof(*c));
    c->status = -1;
    if (pipe2(p, O_CLOEXEC) < 0)
        return;
    pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        execve(argv[0], argv, (char **)envp);
        _exit(127);
    }
    close(p[1]);
    for (;;) {
        int left = timeout_ms - (int)(now_ms() - t0);
        if (left <= 0 || poll1(p[0], POLLIN, left) <= 0)
            break;
        ssize_t r = read(p[0], c->err + got, sizeof(c->err) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    c->err[got] = '\0';
    close(p[0]);
    for (;;) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (now_ms() - t0 > timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        struct timespec d = {.tv_nsec = 10000000};
        nanosleep(&d, NULL);
    }
    c->ms = now_ms() - t0;
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* ---- defect 2: descriptors that collide ---- */

/* bash, for real: `exec N>f; echo DATA >&N` on the fixed number libresil
 * used to take and on every number it holds now, in a shell that has just
 * made a raced connect (/dev/tcp); then another raced connect. */
static void bash_exec(void)
{
    char dir[] = "/tmp/resil-fds-bash-XXXXXX", ev[128], portstr[16];
    static const char script[] =
        "set -u\n"
        "exec 3<>/dev/tcp/$ADDR/$PORT || exit 10\n"
        "echo one >&3; read -r l <&3; [ \"$l\" = one ] || exit 11\n"
        "list=$FIXED\n"
        "for n in $(ls /proc/$$/fd); do\n"
        "  [ \"$n\" -ge $MIN ] && [ \"$n\" != $FIXED ] || continue\n"
        "  fl=$(sed -n 's/^flags:[[:space:]]*//p' /proc/$$/fdinfo/$n)\n"
        "  [ $(( 0$fl & 02000000 )) != 0 ] && list=\"$list $n\"\n"
        "done\n"
        "if [ \"$DRV_PRELOADED\" = 1 ] && [ \"$list\" = $FIXED ]; then\n"
        "  echo 'no libresil descriptor found' >&2; exit 12\n"
        "fi\n"
        "echo \"numbers: $list\" >&2\n"
        "for n in $list; do\n"
        "  eval \"exec $n>\\\"$DIR/f.$n\\\"\" || exit 13\n"
        "  eval \"echo DATA >&$n\" || exit 14\n"
        "  eval \"exec $n>&-\"\n"
        "  [ \"$(cat \"$DIR/f.$n\")\" = DATA ] || { echo \"f.$n\" >&2; "
        "exit 15; }\n"
        "done\n"
        "exec 4<>/dev/tcp/$ADDR/$PORT || exit 16\n"
        "echo two >&4; read -r l <&4; [ \"$l\" = two ] || exit 17\n";
    char *argv[] = {"/bin/bash", "-c", (char *)script, NULL};
    char min[16], fixed[16], dirv[160], evv[160], addr[64], portv[32];
    struct child c;

    port = echo_start(DRV_LIVE);
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(ev, sizeof(ev), "%s/events", dir);
    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(min, sizeof(min), "MIN=%d", OURS_MIN);
    snprintf(fixed, sizeof(fixed), "FIXED=%d", FIXED_FD);
    snprintf(dirv, sizeof(dirv), "DIR=%s", dir);
    snprintf(evv, sizeof(evv), "RESIL_EVENTS=%s", ev);
    snprintf(addr, sizeof(addr), "ADDR=%s",
             preloaded() ? DRV_DEAD : DRV_LIVE);
    snprintf(portv, sizeof(portv), "PORT=%s", portstr);
    const char *extra[] = {min, fixed, dirv, evv, addr, portv,
                           "RESIL_LOG_FILE", NULL};
    spawn(argv, extra, 10000, &c);
    CHECK(c.status == 0, "bash exited %d after %.0f ms: %s", c.status, c.ms,
          c.err);
    printf("note: bash %s", strstr(c.err, "numbers:") ?: "\n");
    /* the events file holds events only */
    FILE *f = fopen(ev, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof(line), f)) {
        n++;
        CHECK(strncmp(line, "{\"ts\":", 6) == 0, "events line: %s", line);
    }
    if (f)
        fclose(f);
    CHECK(!preloaded() || n >= 2, "%d events for two raced connects", n);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
}

/* dup2/dup3 of the program's file onto each of our numbers: the call
 * returns that number, the file is never written by libresil, and the
 * next raced connects work. */
static void dup_onto_ours(void)
{
    int fds[64], n, files[64 + 1], nf = 0, k;

    port = echo_start(DRV_LIVE);
    REQUIRE(raced(false) == 0, "first raced connect");
    n = ours(fds, 64);
    CHECK(!preloaded() || n >= 4, "%d descriptors of libresil found", n);
    fds[n++] = FIXED_FD;
    for (k = 0; k < n; k++) {
        int f = tmpfd(), rc;
        REQUIRE(f >= 0, "tmpfile");
        errno = 0;
        rc = k % 2 ? dup3(f, fds[k], O_CLOEXEC) : dup2(f, fds[k]);
        CHECK(rc == fds[k], "dup%s(%d, %d) = %d", k % 2 ? "3" : "2", f,
              fds[k], rc);
        CHECK((fcntl(fds[k], F_GETFD) & FD_CLOEXEC) == (k % 2 ? FD_CLOEXEC : 0),
              "FD_CLOEXEC of %d", fds[k]);
        close(f);
        files[nf++] = fds[k];
    }
    for (int i = 0; i < 3; i++)
        CHECK(raced(false) == 0, "raced connect %d after the dups", i);
    for (k = 0; k < nf; k++) {
        CHECK(size_of(files[k]) == 0, "fd %d: %lld bytes written into the "
              "program's file", files[k], (long long)size_of(files[k]));
        CHECK(close(files[k]) == 0, "close(%d) of the program's own",
              files[k]);
    }
}

/* A blocking raced connect in flight in another thread while the program
 * dup2()s onto every one of our numbers, again and again. */
struct blk {
    int rc;
};
static void *blocking_connect(void *arg)
{
    struct blk *b = arg;
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(preloaded() ? DRV_DEAD : DRV_LIVE, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    b->rc = connect(fd, (void *)&ss, l) == 0 &&
                    echo_roundtrip(fd, "blocking\n", 3000)
                ? 0
                : -1;
    close(fd);
    return NULL;
}

/* In a child without the health cache, so that every round really races
 * (dead address first, for attempt_delay_ms): the attempt sockets and the
 * race's done eventfd, a waiter blocked on it, exist while we dup2. */
static int child_dup_during_race(void)
{
    int fds[64], n, f = tmpfd(), fails = 0, most = 0;

    port = echo_start(DRV_LIVE);
    if (f < 0 || raced(false) != 0)
        return 10;
    for (int round = 0; round < 5; round++) {
        struct blk b = {-1};
        pthread_t t;
        if (pthread_create(&t, NULL, blocking_connect, &b) != 0)
            return 11;
        struct timespec d = {.tv_nsec = 100000000};
        nanosleep(&d, NULL); /* the race is under way */
        n = ours(fds, 64);
        most = n > most ? n : most;
        for (int k = 0; k < n; k++) {
            if (dup2(f, fds[k]) != fds[k]) {
                fprintf(stderr, "round %d: dup2 onto %d: %s\n", round,
                        fds[k], ename(errno));
                fails++;
            }
            close(fds[k]);
        }
        pthread_join(t, NULL);
        if (b.rc != 0) {
            fprintf(stderr, "round %d: the blocking connect failed\n", round);
            fails++;
        }
    }
    if (size_of(f) != 0) {
        fprintf(stderr, "%lld bytes written into the program's file\n",
                (long long)size_of(f));
        fails++;
    }
    if (raced(false) != 0)
        fails++;
    fprintf(stderr, "most descriptors of libresil during a race: %d\n", most);
    return fails ? 1 : 0;
}

static void dup_during_race(void)
{
    char *argv[] = {"/proc/self/exe", "child-dup-during-race", NULL};
    const char *extra[] = {"RESIL_HEALTH_TTL_MS=0", NULL};
    struct child c;

    spawn(argv, extra, 20000, &c);
    CHECK(c.status == 0, "child status %d after %.0f ms: %s", c.status, c.ms,
          c.err);
    printf("note: %s", strstr(c.err, "most") ?: "\n");
}

/* close() of one of our numbers: EBADF, as for any number the program
 * never opened, and ours survive. */
static void close_ours(void)
{
    int fds[64], n;

    port = echo_start(DRV_LIVE);
    REQUIRE(raced(false) == 0, "first raced connect");
    n = ours(fds, 64);
    fds[n++] = FIXED_FD;
    for (int k = 0; k < n; k++) {
        errno = 0;
        CHECK(close(fds[k]) == -1 && errno == EBADF, "close(%d)", fds[k]);
    }
    CHECK(raced(false) == 0, "raced connect afterwards");
}

/* read/write/send/recv, dup and fcntl on one of our numbers: EBADF. */
static void data_on_ours(void)
{
    int fds[64], n;
    char b[8];

    port = echo_start(DRV_LIVE);
    REQUIRE(raced(false) == 0, "first raced connect");
    n = ours(fds, 64);
    fds[n++] = FIXED_FD;
    for (int k = 0; k < n; k++) {
        errno = 0;
        CHECK(write(fds[k], "x", 1) == -1 && errno == EBADF, "write(%d)",
              fds[k]);
        errno = 0;
        CHECK(read(fds[k], b, 8) == -1 && errno == EBADF, "read(%d)",
              fds[k]);
        errno = 0;
        CHECK(send(fds[k], "x", 1, MSG_DONTWAIT) == -1 && errno == EBADF,
              "send(%d)", fds[k]);
        errno = 0;
        CHECK(recv(fds[k], b, 8, MSG_DONTWAIT) == -1 && errno == EBADF,
              "recv(%d)", fds[k]);
        errno = 0;
        /* duplicates of it: the program has nothing there either */
        CHECK(dup2(fds[k], 200) == -1 && errno == EBADF, "dup2(%d, 200)",
              fds[k]);
        errno = 0;
        CHECK(dup(fds[k]) == -1 && errno == EBADF, "dup(%d)", fds[k]);
        errno = 0;
        CHECK(fcntl(fds[k], F_GETFD) == -1 && errno == EBADF,
              "fcntl(%d, F_GETFD)", fds[k]);
        errno = 0;
        CHECK(fcntl(fds[k], F_DUPFD, 10) == -1 && errno == EBADF,
              "fcntl(%d, F_DUPFD)", fds[k]);
    }
    CHECK(raced(false) == 0, "raced connect afterwards");
}

/* The program's own descriptors from 3 up, and that they are closed. */
static int open_some(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        fds[i] = open("/dev/null", O_RDONLY);
    return n;
}

static void all_closed(const int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        errno = 0;
        CHECK(fcntl(fds[i], F_GETFD) == -1 && errno == EBADF,
              "fd %d still open", fds[i]);
    }
}

/* close_range(3, ~0U): what every process spawner runs. The program's fds
 * close, ours stay, the next socket() is fd 3 as plain, and a raced
 * connect works. */
static void close_range_all(void)
{
    int fds[8], conn;

    echo_process();
    conn = raced(true);
    REQUIRE(conn >= 0, "first raced connect");
    open_some(fds, 8);
    int hi = fcntl(0, F_DUPFD, 3000); /* one of the program's, high */
    REQUIRE(hi >= 0, "F_DUPFD 3000");
    int before[64], after[64], nb = ours(before, 64), na;
    CHECK(close_range(3, ~0U, 0) == 0, "close_range");
    all_closed(fds, 8);
    all_closed(&conn, 1);
    all_closed(&hi, 1);
    /* ours were left open: libresil goes on with them */
    na = ours(after, 64);
    CHECK(na == nb && memcmp(before, after, sizeof(int) * (size_t)na) == 0,
          "%d descriptors of libresil before close_range, %d after", nb, na);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s == 3, "socket() after close_range is %d, want 3", s);
    close(s);
    CHECK(raced(false) == 0, "raced connect after close_range");
    /* CLOSE_RANGE_CLOEXEC marks, closes nothing */
    open_some(fds, 4);
    CHECK(close_range(fds[0], fds[3], CLOSE_RANGE_CLOEXEC) == 0,
          "close_range CLOEXEC");
    for (int i = 0; i < 4; i++)
        CHECK(fcntl(fds[i], F_GETFD) == FD_CLOEXEC, "fd %d cloexec", fds[i]);
    CHECK(raced(false) == 0, "raced connect after close_range CLOEXEC");
    /* bad arguments: EINVAL, nothing closed */
    errno = 0;
    CHECK(close_range(10, 5, 0) == -1 && errno == EINVAL, "first > last");
    errno = 0;
    CHECK(close_range(3, ~0U, 0x40) == -1 && errno == EINVAL, "bad flags");
    CHECK(fcntl(fds[0], F_GETFD) == FD_CLOEXEC, "still open");
}

/* With CLOSE_RANGE_UNSHARE, as a spawner's child runs it (in a threaded
 * process it would give the calling thread a table of its own, which the
 * engine thread does not share; the same plain): ours survive in the
 * child, which races again. */
static void close_range_unshare(void)
{
    int fds[8], st = -1;

    echo_process();
    REQUIRE(raced(false) == 0, "first raced connect");
    pid_t pid = fork();
    if (pid == 0) {
        int before[64], after[64], nb = ours(before, 64);
        open_some(fds, 8);
        if (close_range(3, ~0U, CLOSE_RANGE_UNSHARE) != 0)
            _exit(1);
        for (int i = 0; i < 8; i++)
            if (fcntl(fds[i], F_GETFD) != -1)
                _exit(2);
        if (ours(after, 64) != nb ||
            memcmp(before, after, sizeof(int) * (size_t)nb) != 0)
            _exit(3);
        _exit(raced(false) == 0 ? 0 : 4);
    }
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "child with close_range UNSHARE: status 0x%x", st);
    CHECK(raced(false) == 0, "raced connect in the parent");
}

/* closefrom(3): glibc calls the close_range system call itself. */
static void closefrom_all(void)
{
    int fds[8];

    echo_process();
    REQUIRE(raced(false) == 0, "first raced connect");
    open_some(fds, 8);
    closefrom(3);
    all_closed(fds, 8);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s == 3, "socket() after closefrom is %d, want 3", s);
    close(s);
    CHECK(raced(false) == 0, "raced connect after closefrom");
}

/* defect 17: close_range over a wide range costs what is open, not the
 * width (it walked 2^20 table slots per call). Plain: a few ms. */
static void close_range_cost(void)
{
    int fds[4], conn;
    double t0;

    echo_process();
    conn = raced(true); /* a managed socket and ours exist */
    REQUIRE(conn >= 0, "raced connect");
    open_some(fds, 4);
    int first = fds[3] + 1;
    t0 = now_ms();
    for (int i = 0; i < 2000; i++)
        if (close_range((unsigned)first, ~0U, 0) != 0) {
            CHECK(0, "close_range(%d, ~0U)", first);
            break;
        }
    double ms = now_ms() - t0;
    printf("note: 2000 x close_range(%d, ~0U): %.1f ms\n", first, ms);
    CHECK(ms < 400, "2000 close_range calls took %.0f ms", ms);
    CHECK(echo_roundtrip(conn, "still here\n", 3000), "managed socket");
    CHECK(raced(false) == 0, "raced connect afterwards");
}

/* ---- defect 1: FIFOs as configuration, log and events files ---- */

/* hold: -1, or the flags of our own open of the FIFO while the child runs
 * (O_RDWR: a reader and a writer) */
static void fifo_run(const char *var, int hold, const char *want)
{
    char dir[] = "/tmp/resil-fds-fifo-XXXXXX", fifo[128], env[192];
    char *argv[] = {"/bin/true", NULL};
    struct child c;
    int hfd = -1;

    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    REQUIRE(mkfifo(fifo, 0600) == 0, "mkfifo");
    if (hold >= 0)
        hfd = open(fifo, hold);
    snprintf(env, sizeof(env), "%s=%s", var, fifo);
    const char *extra[] = {"RESIL_LOG_FILE", "RESIL_EVENTS",
                           "RESIL_LOG_LEVEL=warn", env, NULL};
    spawn(argv, extra, 3000, &c);
    CHECK(c.status == 0 && c.ms < 2000, "/bin/true with %s: status %d "
          "after %.0f ms", env, c.status, c.ms);
    if (preloaded())
        CHECK(strstr(c.err, want) != NULL, "message '%s' missing: '%s'",
              want, c.err);
    else
        CHECK(c.err[0] == '\0', "stderr: %s", c.err);
    if (hfd >= 0)
        close(hfd);
    unlink(fifo);
    rmdir(dir);
}

static void fifo_conf(void)
{
    /* no writer: the open would wait for one */
    fifo_run("RESIL_CONF_FILE", -1, "is not a regular file");
    /* a writer that never writes: the open goes through, the read never
     * ends; refused all the same */
    fifo_run("RESIL_CONF_FILE", O_RDWR, "is not a regular file");
}

static void fifo_log(void)
{
    fifo_run("RESIL_LOG_FILE", -1, "is a FIFO with no reader");
}

static void fifo_events(void)
{
    fifo_run("RESIL_EVENTS", -1, "is a FIFO with no reader");
}

/* A log FIFO whose reader never reads: lines are lost once it is full,
 * the program never blocks (our file description is non-blocking). */
static void fifo_log_full(void)
{
    char dir[] = "/tmp/resil-fds-fifo-XXXXXX", fifo[128], env[192];
    char *argv[] = {"/proc/self/exe", "child-races", NULL};
    char portv[32];
    struct child c;

    port = echo_start(DRV_LIVE);
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    REQUIRE(mkfifo(fifo, 0600) == 0, "mkfifo");
    int rfd = open(fifo, O_RDONLY | O_NONBLOCK);
    REQUIRE(rfd >= 0, "reader");
    /* one page: a few races' worth of lines fill it */
    int cap = fcntl(rfd, F_SETPIPE_SZ, 4096);
    REQUIRE(cap > 0, "F_SETPIPE_SZ");
    snprintf(env, sizeof(env), "RESIL_LOG_FILE=%s", fifo);
    snprintf(portv, sizeof(portv), "DRV_PORT=%d", port);
    const char *extra[] = {"RESIL_EVENTS", portv, "RESIL_LOG_LEVEL=trace",
                           env, NULL};
    spawn(argv, extra, 15000, &c);
    CHECK(c.status == 0, "child status %d after %.0f ms: %s", c.status, c.ms,
          c.err);
    /* how much it tried to say: more than the pipe holds */
    int avail = 0;
    char buf[4096];
    ssize_t r;
    while ((r = read(rfd, buf, sizeof(buf))) > 0)
        avail += (int)r;
    printf("note: %d bytes reached the FIFO (%.0f ms)\n", avail, c.ms);
    /* full, to within one line (a line is written whole or not at all) */
    if (preloaded())
        CHECK(avail > cap - 1024, "%d bytes logged: the FIFO (%d) never "
              "filled", avail, cap);
    close(rfd);
    unlink(fifo);
    rmdir(dir);
}

/* ---- defect 9: the fd budget after a fallback ---- */

/* Fill every number below the soft limit but the `free` highest ones;
 * returns the descriptors (*n of them, -1 ended). */
static int *fill(int limit, int free, int *n)
{
    int *fds = calloc((size_t)limit + 1, sizeof(int)), fd;

    *n = 0;
    while (fds && (fd = dup(0)) >= 0) {
        if (fd >= limit - free) {
            close(fd);
            break;
        }
        fds[(*n)++] = fd;
    }
    return fds;
}

static void unfill(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
}

/* With only a few descriptors left, racing cannot start and the connect
 * falls back to plain TCP; the program can then still open exactly as many
 * descriptors as without libresil (free - 1: the socket it connected). */
static void fd_budget(void)
{
    struct rlimit rl;
    const int limit = max_open() + 33;

    echo_process();
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = limit;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit");
    /* up to 6 free numbers racing cannot start (it needs the engine's
     * epoll set and eventfd, two parking sockets and a done eventfd, each
     * moved to a high number); with more it may, and keeps the engine */
    for (int free = 1; free <= 9; free++) {
        int n, *fds = fill(limit, free, &n), s, more = 0, extra[16];
        struct sockaddr_storage ss;
        socklen_t l = mk_sa(DRV_LIVE, port, &ss);

        REQUIRE(fds != NULL, "fill");
        s = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(s >= 0, "free %d: socket", free);
        /* DRV_LIVE is in an alternates group: libresil tries to race */
        errno = 0;
        CHECK(s < 0 || connect(s, (void *)&ss, l) == 0,
              "free %d: connect", free);
        while (more < 16 && (extra[more] = dup(0)) >= 0)
            more++;
        if (free <= 6)
            CHECK(more == free - 1, "free %d: %d descriptors left after the "
                  "connect, want %d", free, more, free - 1);
        for (int i = 0; i < more; i++)
            close(extra[i]);
        if (s >= 0) {
            CHECK(echo_roundtrip(s, "budget\n", 3000), "free %d: echo", free);
            close(s);
        }
        unfill(fds, n);
    }
}

/* dup2 onto our epoll set when not one number is free: the program's call
 * wins; libresil gives its engine up and starts a new one when
 * descriptors are free again. */
static void dup_when_full(void)
{
    int ep[64], n, k, epfd = -1, filled, *fds;
    struct rlimit rl;
    char link[64], path[64];

    echo_process();
    REQUIRE(raced(false) == 0, "first raced connect");
    n = ours(ep, 64);
    for (k = 0; k < n; k++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", ep[k]);
        ssize_t r = readlink(path, link, sizeof(link) - 1);
        link[r > 0 ? r : 0] = '\0';
        if (strstr(link, "eventpoll"))
            epfd = ep[k];
    }
    if (!preloaded())
        epfd = FIXED_FD;
    REQUIRE(epfd >= 0, "no epoll descriptor of libresil found");
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = (rlim_t)epfd + 1;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit");
    fds = fill(epfd + 1, 0, &filled);
    REQUIRE(fds != NULL, "fill");
    errno = 0;
    CHECK(dup(0) == -1 && errno == EMFILE, "not full");
    CHECK(dup2(0, epfd) == epfd, "dup2(0, %d) with no number free", epfd);
    CHECK(close(epfd) == 0, "close of the program's own %d", epfd);
    unfill(fds, filled);
    for (int i = 0; i < 3; i++)
        CHECK(raced(false) == 0, "raced connect %d afterwards", i);
}

/* ---- defect 15 (part): one warning per process ---- */

/* A process that cannot make threads (RLIMIT_NPROC as an unprivileged
 * user): every connect falls back, the warning comes once. */
static void thread_warn_once(void)
{
    char *argv[] = {"/proc/self/exe", "child-nothreads", NULL};
    char portv[32];
    struct child c;

    port = echo_start(DRV_LIVE);
    snprintf(portv, sizeof(portv), "DRV_PORT=%d", port);
    const char *extra[] = {portv, "RESIL_LOG_FILE", "RESIL_EVENTS",
                           "RESIL_LOG_LEVEL=warn", NULL};
    spawn(argv, extra, 10000, &c);
    CHECK(c.status == 0, "child status %d: %s", c.status, c.err);
    int n = count_lines(c.err, "cannot start the engine thread");
    CHECK(n == (preloaded() ? 1 : 0), "%d warnings: %s", n, c.err);
}

/* ---- defect 20: empty values are silent ---- */

static void empty_values(void)
{
    char *argv[] = {"/bin/true", NULL};
    const char *extra[] = {"RESIL_EVENTS=", "RESIL_LOG_FILE=",
                           "RESIL_ALTERNATES=", "RESIL_ATTEMPT_DELAY_MS=",
                           "RESIL_CONF_FILE=", "RESIL_LOG_LEVEL=warn", NULL};
    struct child c;

    spawn(argv, extra, 3000, &c);
    CHECK(c.status == 0 && c.err[0] == '\0', "status %d, stderr: %s",
          c.status, c.err);
}

/* ---- children ---- */

static int child_port(void)
{
    const char *p = getenv("DRV_PORT");
    return p ? atoi(p) : 0;
}

/* 40 raced connects (a lot of trace logging) */
static int child_races(void)
{
    port = child_port();
    for (int i = 0; i < 40; i++)
        if (raced(false) != 0)
            return 1;
    return 0;
}

static int child_nothreads(void)
{
    struct rlimit one = {1, 1};
    struct sockaddr_storage ss;

    port = child_port();
    if (setrlimit(RLIMIT_NPROC, &one) < 0 || setgid(65534) < 0 ||
        setuid(65534) < 0) {
        perror("drop privileges");
        return 2;
    }
    /* DRV_LIVE is in an alternates group: each connect tries to race */
    for (int i = 0; i < 3; i++) {
        socklen_t l = mk_sa(DRV_LIVE, port, &ss);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (void *)&ss, l) != 0) {
            fprintf(stderr, "connect %d: %s\n", i, ename(errno));
            return 1;
        }
        close(fd);
    }
    return 0;
}

/* The threads of this process (/proc/self/status). */
/* Threads of libresil's own (named "resil-...": engine.h). */
static int resil_threads(void)
{
    char path[300], comm[32];
    struct dirent *e;
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    while (d && (e = readdir(d)) != NULL) {
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        if (fgets(comm, sizeof(comm), f) && strncmp(comm, "resil-", 6) == 0)
            n++;
        fclose(f);
    }
    if (d)
        closedir(d);
    return n;
}

static int threads(void)
{
    char line[256];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* After a raced connect the process is left with its own thread only,
 * as without libresil (a second thread makes the kernel take a file
 * reference in every descriptor call), and the next race still works. */
static void engine_leaves_idle(void)
{
    struct sockaddr_storage ss;
    socklen_t l;
    int fd, n = -1, k;
    double t0;
    bool tsan = getenv("DRV_TSAN") != NULL; /* run.sh, under TSan */

    echo_process();
    for (int round = 0; round < 2; round++) {
        l = mk_sa(DRV_DEAD, port, &ss);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (getenv("DRV_PRELOADED")[0] == '0')
            l = mk_sa(DRV_LIVE, port, &ss); /* plain: the dead one hangs */
        REQUIRE(connect(fd, (void *)&ss, l) == 0, "round %d: connect",
                round);
        CHECK(echo_roundtrip(fd, "idle\n", 3000), "round %d: echo", round);
        close(fd);
        if (round == 1)
            break;
        /* the monitor's grace after the last write (16 ticks of
         * stall_ms/4), then a second of nothing */
        t0 = now_ms();
        /* ThreadSanitizer runs a thread of its own: under it, libresil's
         * threads are counted by name only */
        while (now_ms() - t0 < 8000 &&
               ((n = threads()) != 1 || resil_threads() != 0) &&
               !(tsan && resil_threads() == 0))
            usleep(100 * 1000);
        k = resil_threads();
        CHECK(k == 0, "%d threads of libresil's 8 s after the last "
              "connection, want 0", k);
        CHECK(tsan || n == 1, "%d threads 8 s after the last connection, "
              "want 1", n);
        printf("note: one thread %.1f s after the last write\n",
               (now_ms() - t0) / 1000);
    }
}

int main(int argc, char **argv)
{
    static const struct drv_test t[] = {
        {"engine_leaves_idle", engine_leaves_idle},
        {"bash_exec", bash_exec},
        {"dup_onto_ours", dup_onto_ours},
        {"dup_during_race", dup_during_race},
        {"close_ours", close_ours},
        {"data_on_ours", data_on_ours},
        {"close_range_all", close_range_all},
        {"close_range_unshare", close_range_unshare},
        {"closefrom_all", closefrom_all},
        {"close_range_cost", close_range_cost},
        {"fifo_conf", fifo_conf},
        {"fifo_log", fifo_log},
        {"fifo_events", fifo_events},
        {"fifo_log_full", fifo_log_full},
        {"fd_budget", fd_budget},
        {"dup_when_full", dup_when_full},
        {"thread_warn_once", thread_warn_once},
        {"empty_values", empty_values},
    };

    if (argc == 2 && strcmp(argv[1], "child-races") == 0)
        return child_races();
    if (argc == 2 && strcmp(argv[1], "child-nothreads") == 0)
        return child_nothreads();
    if (argc == 2 && strcmp(argv[1], "child-dup-during-race") == 0)
        return child_dup_during_race();
    return drv_main(argc, argv, t, sizeof(t) / sizeof(t[0]));
}
