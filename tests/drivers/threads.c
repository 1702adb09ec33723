/* Many threads connecting at once, dead-first and live-first, blocking and
 * non-blocking: every connect succeeds on the live address and carries its
 * own data. */
#include "drv.h"

#define THREADS 16
#define CONNECTS 10

static int port;

struct result {
    int ok, fail;
    double max_ms;
};

struct job {
    int id;
    struct result r;
};

static bool one(int id, int k)
{
    const char *dst = (id + k) % 2 ? DRV_DEAD : DRV_LIVE;
    bool nb = id % 4 >= 2;
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(dst, port, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
    char msg[64], peer[64];
    bool ok = true;

    int rc = connect(fd, (void *)&ss, l);
    if (nb && rc == -1 && errno == EINPROGRESS) {
        int r = poll1(fd, POLLOUT, 3000);
        rc = r > 0 && sockerr(fd) == 0 ? 0 : -1;
    }
    if (rc != 0) {
        fprintf(stderr, "  thread %d connect %d to %s (%s): %s\n", id, k,
                dst, nb ? "nb" : "blocking", ename(errno));
        close(fd);
        return false;
    }
    name_of(fd, true, peer, sizeof(peer));
    if (strncmp(peer, DRV_LIVE ":", strlen(DRV_LIVE) + 1) != 0) {
        fprintf(stderr, "  thread %d connect %d: peer %s\n", id, k, peer);
        ok = false;
    }
    snprintf(msg, sizeof(msg), "thread %d connect %d fd %d\n", id, k, fd);
    if (!echo_roundtrip(fd, msg, 3000)) {
        fprintf(stderr, "  thread %d connect %d: echo failed\n", id, k);
        ok = false;
    }
    close(fd);
    return ok;
}

static void *run(void *arg)
{
    struct job *j = arg;
    for (int k = 0; k < CONNECTS; k++) {
        double t0 = now_ms();
        if (one(j->id, k))
            j->r.ok++;
        else
            j->r.fail++;
        if (now_ms() - t0 > j->r.max_ms)
            j->r.max_ms = now_ms() - t0;
    }
    return NULL;
}

static void many(void)
{
    pthread_t t[THREADS];
    struct job j[THREADS];
    int ok = 0, fail = 0;
    double max = 0, t0 = now_ms();

    port = echo_start(DRV_LIVE);
    for (int i = 0; i < THREADS; i++) {
        j[i] = (struct job){.id = i};
        pthread_create(&t[i], NULL, run, &j[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += j[i].r.ok;
        fail += j[i].r.fail;
        if (j[i].r.max_ms > max)
            max = j[i].r.max_ms;
    }
    printf("%d ok, %d failed, slowest %.0f ms, all in %.0f ms\n", ok, fail,
           max, now_ms() - t0);
    CHECK(fail == 0 && ok == THREADS * CONNECTS, "%d of %d failed", fail,
          THREADS * CONNECTS);
    CHECK(max < 1500, "slowest connect+echo %.0f ms", max);
}

DRV_MAIN({"many", many})
