/* A client of tests/net/stream.py that moves its bytes through stdio
 * (tests/net/session.sh): glibc's FILE functions write and read with its
 * internal __write/__read, which no LD_PRELOAD hook sees.
 *
 *   stdio_client HOST PORT send N   fprintf the request, then N MiB of
 *                                   the stream with fwrite (a fflush per
 *                                   MiB, PACE_MS between), then shutdown
 *                                   and wait for the server's close
 *   stdio_client HOST PORT recv N   fprintf the request, fread N MiB and
 *                                   verify them
 *
 * Prints "peer ADDR", then "ok ..." or "error ERRNAME after K bytes" (exit
 * 1) or "FAIL byte K differs" (exit 2). SIGPIPE is ignored, as servers and
 * clients that write to sockets do, so that a failed write is an errno.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)

static void block(uint64_t i, uint64_t *out)
{
    for (uint64_t k = 0; k < MIB / 8; k++)
        out[k] = i * (MIB / 8) + k; /* little-endian on x86-64 */
}

static int fail(const char *what, unsigned long long k)
{
    printf("error %s after %llu bytes (%s)\n",
           strerrorname_np(errno) ? strerrorname_np(errno) : "?", k, what);
    return 1;
}

int main(int argc, char **argv)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    static uint64_t buf[MIB / 8], got[MIB / 8];
    char peer[INET6_ADDRSTRLEN] = "?";
    unsigned long long done = 0;
    long pace_ms = getenv("PACE_MS") ? atol(getenv("PACE_MS")) : 20;
    struct timespec pace = {pace_ms / 1000, (pace_ms % 1000) * 1000000L};
    int fd, n;
    FILE *f;

    if (argc != 5) {
        fprintf(stderr, "usage: %s HOST PORT send|recv N\n", argv[0]);
        return 64;
    }
    n = atoi(argv[4]);
    signal(SIGPIPE, SIG_IGN);
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
        return 65;
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        return fail("connect", 0);
    if (ai->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr,
                  peer, sizeof(peer));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
                  peer, sizeof(peer));
    printf("peer %s\n", peer);
    fflush(stdout);
    f = fdopen(fd, "r+");
    if (f == NULL)
        return fail("fdopen", 0);
    if (fprintf(f, "%s %d\n", argv[3], n) < 0 || fflush(f) != 0)
        return fail("request", 0);
    if (strcmp(argv[3], "send") == 0) {
        for (int i = 0; i < n; i++) {
            block((uint64_t)i, buf);
            if (fwrite(buf, 1, MIB, f) != MIB || fflush(f) != 0)
                return fail("fwrite", done);
            done += MIB;
            nanosleep(&pace, NULL);
        }
        shutdown(fd, SHUT_WR);
        /* the server closes when it has everything */
        if (fread(got, 1, 1, f) != 0 || ferror(f))
            return fail("the server's close", done);
        printf("ok client send %d\n", n);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        size_t k = fread(got, 1, MIB, f);
        block((uint64_t)i, buf);
        if (k != MIB) {
            if (ferror(f))
                return fail("fread", done + k);
            printf("error EOF after %llu bytes\n", done + k);
            return 1;
        }
        if (memcmp(got, buf, MIB) != 0) {
            size_t j = 0;
            while (((uint8_t *)got)[j] == ((uint8_t *)buf)[j])
                j++;
            printf("FAIL byte %llu differs\n", done + j);
            return 2;
        }
        done += MIB;
    }
    printf("ok client recv %d\n", n);
    return 0;
}
