/* libearly.so: a normal dependency of early_main whose constructor makes TCP
 * connections before libresil's constructor has run (pitfalls 1.11: the
 * dynamic loader runs a dependency's initializer before the preloaded
 * library's). libresil's hooks must initialise themselves lazily.
 *
 * Connection 1 goes to 127.0.0.1 (a listener made here). With EARLY_DEAD=1
 * (run.sh sets it together with RESIL_ALTERNATES) connection 2 goes to the
 * dead 127.0.0.66, which only a working race turns into a connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char result[512] = "constructor did not run";

const char *early_result(void);
const char *early_result(void)
{
    return result;
}

static int roundtrip(int lfd, const char *dst, int port, char *why,
                     size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    char buf[16] = "";
    int c, a;

    inet_pton(AF_INET, dst, &sa.sin_addr);
    c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(why, len, "connect to %s: %s", dst, strerror(errno));
        return -1;
    }
    a = accept(lfd, NULL, NULL);
    if (a < 0 || write(c, "early", 5) != 5 || read(a, buf, 16) != 5 ||
        memcmp(buf, "early", 5) != 0 || write(a, "back", 4) != 4 ||
        read(c, buf, 16) != 4 || memcmp(buf, "back", 4) != 0) {
        snprintf(why, len, "data via %s: %s", dst, strerror(errno));
        return -1;
    }
    close(a);
    close(c);
    return 0;
}

__attribute__((constructor)) static void early_ctor(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t l = sizeof(sa);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    const char *dead = getenv("EARLY_DEAD");

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, l) < 0 ||
        listen(lfd, 8) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &l)) {
        snprintf(result, sizeof(result), "listener: %s", strerror(errno));
        return;
    }
    if (roundtrip(lfd, "127.0.0.1", ntohs(sa.sin_port), result,
                  sizeof(result)) < 0)
        return;
    if (dead && dead[0] == '1' &&
        roundtrip(lfd, "127.0.0.66", ntohs(sa.sin_port), result,
                  sizeof(result)) < 0)
        return;
    close(lfd);
    snprintf(result, sizeof(result), "ok");
}
