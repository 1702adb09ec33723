/* fork() and libresil (DESIGN 4, "Threads, fork and exec"): a raced
 * connection keeps working in both processes; a child races on its own
 * (the engine thread stays in the parent and is restarted in the child). */
#include <stdatomic.h>

#include "drv.h"

static int port;

static int race_connect(int flags)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    int rc = connect(fd, (void *)&ss, l);
    if (rc == -1 && errno == EINPROGRESS) {
        int r = poll1(fd, POLLOUT, 3000);
        rc = r > 0 && sockerr(fd) == 0 ? 0 : -1;
    }
    if (rc != 0) {
        fprintf(stderr, "  race_connect: %s\n", ename(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static bool peer_is_live(int fd)
{
    char buf[64];
    name_of(fd, true, buf, sizeof(buf));
    if (strncmp(buf, DRV_LIVE ":", strlen(DRV_LIVE) + 1) == 0)
        return true;
    fprintf(stderr, "  peer %s\n", buf);
    return false;
}

static int wait_child(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    if (WIFSIGNALED(st))
        fprintf(stderr, "  child killed by signal %d\n", WTERMSIG(st));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* connect (raced), fork: the child writes, the parent reads the echo;
 * then the parent uses the socket alone. */
static void after_connect(void)
{
    port = echo_start(DRV_LIVE);
    int fd = race_connect(0);
    REQUIRE(fd >= 0, "connect");
    CHECK(peer_is_live(fd), "peer");
    pid_t pid = fork();
    if (pid == 0) {
        const char *m = "from the child\n";
        _exit(write(fd, m, strlen(m)) == (ssize_t)strlen(m) ? 0 : 1);
    }
    CHECK(wait_child(pid) == 0, "child failed");
    char buf[64] = "";
    size_t got = 0;
    while (got < 15 && poll1(fd, POLLIN, 3000) > 0) {
        ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    CHECK(got == 15 && memcmp(buf, "from the child\n", 15) == 0,
          "parent read %zu bytes '%s'", got, buf);
    CHECK(echo_roundtrip(fd, "parent after fork\n", 3000), "parent echo");
    /* and the child may use it for a whole round trip too */
    pid = fork();
    if (pid == 0)
        _exit(echo_roundtrip(fd, "child round trip\n", 3000) ? 0 : 1);
    CHECK(wait_child(pid) == 0, "child round trip failed");
    CHECK(echo_roundtrip(fd, "parent again\n", 3000), "parent echo 2");
    close(fd);
}

static int child_race(void)
{
    int fails = 0;
    for (int i = 0; i < 3; i++) {
        int fd = race_connect(i == 1 ? SOCK_NONBLOCK : 0);
        if (fd < 0 || !peer_is_live(fd) ||
            !echo_roundtrip(fd, "child's own connection\n", 3000))
            fails++;
        if (fd >= 0)
            close(fd);
    }
    return fails;
}

/* a connect in the child races correctly; before it the parent raced (so
 * its engine thread exists in the parent only) */
static void connect_in_child(void)
{
    port = echo_start(DRV_LIVE);
    int fd = race_connect(0);
    REQUIRE(fd >= 0, "parent connect");
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_race());
    CHECK(wait_child(pid) == 0, "child's connects failed");
    CHECK(echo_roundtrip(fd, "parent still fine\n", 3000), "parent echo");
    close(fd);
    /* and the parent still races after its child did */
    fd = race_connect(SOCK_NONBLOCK);
    CHECK(fd >= 0 && peer_is_live(fd), "parent connect after fork");
    if (fd >= 0)
        close(fd);
}

/* the first race ever happens in the child */
static void first_race_in_child(void)
{
    port = echo_start(DRV_LIVE);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_race());
    CHECK(wait_child(pid) == 0, "child's connects failed");
}

/* fork while a race is in flight: the parent's race completes; the child
 * must get some answer (not hang) */
static void during_race(void)
{
    port = echo_start(DRV_LIVE);
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_DEAD, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, (void *)&ss, l);
    REQUIRE(rc == -1 && errno == EINPROGRESS, "connect");
    pid_t pid = fork();
    if (pid == 0) {
        int r = poll1(fd, POLLOUT, 3000), e = sockerr(fd);
        printf("child: revents 0x%x SO_ERROR %s\n", r, ename(e));
        _exit(r > 0 ? 0 : 1);
    }
    int r = poll1(fd, POLLOUT, 3000);
    CHECK(r > 0 && (r & POLLOUT), "parent revents 0x%x", r);
    CHECK(sockerr(fd) == 0, "parent SO_ERROR");
    CHECK(peer_is_live(fd), "parent peer");
    CHECK(echo_roundtrip(fd, "parent\n", 3000), "parent echo");
    CHECK(wait_child(pid) == 0, "child never got an answer");
    close(fd);
}

/* fork many times while other threads race: no child may deadlock on a
 * lock some engine or hook thread held at fork time */
static atomic_int stop; /* volatile orders nothing (ThreadSanitizer) */
static void *racer(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        int fd = race_connect(SOCK_NONBLOCK);
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

static void stress(void)
{
    pthread_t t[4];
    int bad = 0;
    port = echo_start(DRV_LIVE);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, racer, NULL);
    for (int i = 0; i < 30; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(5);
            int fd = race_connect(0);
            _exit(fd >= 0 && echo_roundtrip(fd, "c\n", 3000) ? 0 : 1);
        }
        int rc = wait_child(pid);
        if (rc != 0) {
            fprintf(stderr, "  fork %d: child status %d\n", i, rc);
            bad++;
        }
        usleep(20000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(bad == 0, "%d of 30 children failed", bad);
}

DRV_MAIN({"after_connect", after_connect},
         {"connect_in_child", connect_in_child},
         {"first_race_in_child", first_race_in_child},
         {"during_race", during_race}, {"stress", stress})
