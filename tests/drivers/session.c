/* Driver: a session's handshake is never the program's (doc/session.md).
 *
 * Both ends in this process, on 127.0.0.1:DRV_SESS_PORT, which run.sh
 * names in RESIL_SESSION for the runs with libresil: the client sends its
 * HELLO right after the connect, the server answers the WELCOME at its
 * first data call. The program must see neither:
 *   - a readiness call (poll, ppoll, select, pselect, epoll) on a blocking
 *     socket that only received the WELCOME does not report it readable
 *     (socat at both ends deadlocked: each read the other's handshake
 *     message after POLLIN and blocked in read());
 *   - stdio (fdopen) reads and writes with calls no hook sees: fgets on
 *     the client does not return the WELCOME, fgets on the server does
 *     not return the HELLO.
 * The same checks hold without libresil (run.sh runs them plain too: the
 * kernel's answer is the expectation). With libresil, the events file
 * (RESIL_EVENTS) must show the sessions, or the test proved nothing.
 */
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include "drv.h"

#define DRV_SESS_PORT 7470
#define REQ "request\n"
#define ANS "answer\n"

static int lfd = -1;
/* the client's connect() returned: its HELLO is out (the race's winner
 * sends it before the swap). A stdio server waits for that much before
 * fdopen(): a HELLO sent later than its classification wait, by a client
 * whose engine thread the scheduler leaves out (a loaded machine, a
 * ThreadSanitizer run), reaches fgets as data, which no hook can undo
 * (doc/session.md, stdio) */
static atomic_bool connected;

/* The server's side of one connection: how it reads the request. */
enum srv_how { SRV_READ, SRV_STDIO };

static void *serve_one(void *arg)
{
    enum srv_how how = (enum srv_how)(intptr_t)arg;
    char buf[256] = "";
    bool ok = true;
    int fd = accept(lfd, NULL, NULL);

    if (fd < 0)
        return NULL;
    if (how == SRV_STDIO) {
        FILE *f;
        for (int i = 0; i < 5000 && !atomic_load(&connected); i++)
            usleep(1000);
        f = fdopen(fd, "r+");
        /* the request exactly, not a HELLO in front of it */
        if (f == NULL || fgets(buf, sizeof(buf), f) == NULL ||
            strcmp(buf, REQ) != 0) {
            fprintf(stderr, "FAIL server: fgets gave %zu bytes, first %02x "
                            "(want \"request\\n\")\n",
                    strlen(buf), (unsigned char)buf[0]);
            ok = false;
        }
        if (f) {
            fputs(ANS, f);
            fflush(f);
            fgets(buf, sizeof(buf), f); /* EOF */
            fclose(f);
        }
        return ok ? NULL : (void *)1;
    }
    /* blocking reads: the first one is where a session server answers */
    size_t got = 0;
    while (got < strlen(REQ)) {
        ssize_t n = read(fd, buf + got, strlen(REQ) - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == strlen(REQ) && memcmp(buf, REQ, got) == 0)
        (void)!write(fd, ANS, strlen(ANS));
    else {
        fprintf(stderr, "FAIL server: request of %zu bytes\n", got);
        ok = false;
    }
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
    return ok ? NULL : (void *)1;
}

/* The server thread's verdict, checked in the main thread. */
static void join(pthread_t t)
{
    void *r = NULL;
    pthread_join(t, &r);
    CHECK(r == NULL, "the server's checks failed (above)");
}

static pthread_t server(enum srv_how how)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, DRV_SESS_PORT, &ss);
    int one = 1;
    pthread_t t;

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (void *)&ss, l) < 0 || listen(lfd, 8) < 0) {
        fprintf(stderr, "server: %s\n", strerror(errno));
        exit(2);
    }
    if (pthread_create(&t, NULL, serve_one, (void *)(intptr_t)how) != 0)
        exit(2);
    return t;
}

static int client(void)
{
    struct sockaddr_storage ss;
    socklen_t l = mk_sa(DRV_LIVE, DRV_SESS_PORT, &ss);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || connect(fd, (void *)&ss, l) < 0) {
        fprintf(stderr, "connect: %s\n", strerror(errno));
        exit(2);
    }
    atomic_store(&connected, true);
    return fd;
}

/* With libresil: n "session" events of this process in RESIL_EVENTS. */
static void sessions_were(int n)
{
    const char *path = getenv("RESIL_EVENTS");
    char line[1024], pid[32];
    int k = 0;
    FILE *f;

    if (!getenv("DRV_PRELOADED") || getenv("DRV_PRELOADED")[0] != '1')
        return;
    usleep(100000); /* the server's end writes its own after its read */
    snprintf(pid, sizeof(pid), "\"pid\":%d,", (int)getpid());
    f = path ? fopen(path, "r") : NULL;
    while (f && fgets(line, sizeof(line), f))
        k += strstr(line, pid) && strstr(line, "\"event\":\"session\"");
    if (f)
        fclose(f);
    CHECK(k == n, "%d session events of this process, want %d (no session: "
                  "the test checked nothing)", k, n);
}

enum wait_how { W_POLL, W_PPOLL, W_SELECT, W_PSELECT, W_EPOLL };

/* Wait for input on fd as how does: 1 readable, 0 not within ms. */
static int wait_in(enum wait_how how, int fd, int ep, int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    struct epoll_event ev;
    fd_set r;
    int rc;

    FD_ZERO(&r);
    FD_SET(fd, &r);
    switch (how) {
    case W_POLL:
        rc = poll(&p, 1, ms);
        break;
    case W_PPOLL:
        rc = ppoll(&p, 1, &ts, NULL);
        break;
    case W_SELECT:
        rc = select(fd + 1, &r, NULL, NULL, &tv);
        break;
    case W_PSELECT:
        rc = pselect(fd + 1, &r, NULL, NULL, &ts, NULL);
        break;
    default:
        rc = epoll_wait(ep, &ev, 1, ms);
    }
    return rc;
}

/* The server reads first; the client's socket, blocking, gets the
 * WELCOME alone: not readable for the program. Then the request, and the
 * answer is readable and read as it was written. */
static void readiness(enum wait_how how)
{
    pthread_t t = server(SRV_READ);
    int fd = client(), ep = -1, rc;
    char buf[64] = "";

    if (how == W_EPOLL) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 7};
        ep = epoll_create1(0);
        REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
    }
    rc = wait_in(how, fd, ep, 300);
    CHECK(rc == 0, "readable (%d) before the server sent a byte", rc);
    REQUIRE(write(fd, REQ, strlen(REQ)) == (ssize_t)strlen(REQ), "write");
    rc = wait_in(how, fd, ep, 3000);
    CHECK(rc == 1, "not readable (%d) once the answer was sent", rc);
    if (rc == 1) {
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        CHECK(n == (ssize_t)strlen(ANS) && memcmp(buf, ANS, (size_t)n) == 0,
              "read %zd bytes, want \"answer\\n\"", n);
    }
    shutdown(fd, SHUT_WR);
    join(t);
    close(fd);
    if (ep >= 0)
        close(ep);
    close(lfd);
    sessions_were(2);
}

static void poll_welcome(void)
{
    readiness(W_POLL);
}

static void ppoll_welcome(void)
{
    readiness(W_PPOLL);
}

static void select_welcome(void)
{
    readiness(W_SELECT);
}

static void pselect_welcome(void)
{
    readiness(W_PSELECT);
}

static void epoll_welcome(void)
{
    readiness(W_EPOLL);
}

/* The client moves its bytes through stdio: fgets returns the answer,
 * never the WELCOME in front of it. */
static void stdio_client(void)
{
    pthread_t t = server(SRV_READ);
    int fd = client();
    FILE *f = fdopen(fd, "r+");
    char buf[256] = "";

    REQUIRE(f != NULL, "fdopen");
    CHECK(fputs(REQ, f) >= 0 && fflush(f) == 0, "fputs");
    CHECK(fgets(buf, sizeof(buf), f) != NULL && strcmp(buf, ANS) == 0,
          "fgets gave %zu bytes, first %02x (want \"answer\\n\")",
          strlen(buf), (unsigned char)buf[0]);
    shutdown(fd, SHUT_WR);
    join(t);
    fclose(f);
    close(lfd);
    sessions_were(2);
}

/* The server moves its bytes through stdio: fgets returns the request,
 * never the HELLO in front of it. */
static void stdio_server(void)
{
    pthread_t t = server(SRV_STDIO);
    int fd = client();
    char buf[64] = "";
    ssize_t n = 0, k;

    REQUIRE(write(fd, REQ, strlen(REQ)) == (ssize_t)strlen(REQ), "write");
    while (n < (ssize_t)strlen(ANS) &&
           (k = read(fd, buf + n, strlen(ANS) - (size_t)n)) > 0)
        n += k;
    CHECK(n == (ssize_t)strlen(ANS) && memcmp(buf, ANS, (size_t)n) == 0,
          "read %zd bytes, want \"answer\\n\"", n);
    shutdown(fd, SHUT_WR);
    join(t);
    close(fd);
    close(lfd);
    sessions_were(2);
}

DRV_MAIN({"poll_welcome", poll_welcome}, {"ppoll_welcome", ppoll_welcome},
         {"select_welcome", select_welcome},
         {"pselect_welcome", pselect_welcome},
         {"epoll_welcome", epoll_welcome}, {"stdio_client", stdio_client},
         {"stdio_server", stdio_server})
