/* calls: the loop tests/bench/cost.sh counts instructions of.
 *
 *   calls N         N write+read pairs on a pipe: unmanaged calls while
 *                   the table is empty (no socket libresil manages)
 *   calls N tcp     the same with a TCP socket open first: libresil
 *                   manages it, so the table is in use and every call on
 *                   the pipe takes the whole lookup
 *   calls N connect [nb]
 *                   N connect+close to a listener of its own on 127.0.0.1
 *                   (never accepted: N stays below the backlog), with
 *                   SO_LINGER 0 as a load generator does; nb: a
 *                   non-blocking connect, poll for POLLOUT, SO_ERROR
 *
 * No network, no timing: under callgrind the count is the same on every
 * run (of the program's thread: a connect may start libresil's engine). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int connects(long n, int nb)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);
    struct linger lg = {1, 0};
    int l = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(l, SOMAXCONN) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0) {
        perror("listener");
        return 1;
    }
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
        int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&a, sizeof(a));

        if (rc < 0 && nb && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int err = -1;
            socklen_t el = sizeof(err);
            rc = poll(&p, 1, 5000) == 1 &&
                         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
                         err == 0
                     ? 0
                     : -1;
        }
        if (rc < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    close(l);
    return 0;
}

int main(int argc, char **argv)
{
    int p[2], s = -1;
    char c = 'x';
    long n;

    if (argc >= 3 && strcmp(argv[2], "connect") == 0 &&
        (argc == 3 || (argc == 4 && strcmp(argv[3], "nb") == 0)))
        return connects(atol(argv[1]), argc == 4);
    if (argc < 2 || (argc == 3 && strcmp(argv[2], "tcp") != 0) || argc > 3) {
        fprintf(stderr, "usage: calls N [tcp | connect [nb]]\n");
        return 2;
    }
    n = atol(argv[1]);
    if (argc == 3 && (s = socket(AF_INET, SOCK_STREAM, 0)) < 0) {
        perror("socket");
        return 1;
    }
    if (pipe(p) < 0) {
        perror("pipe");
        return 1;
    }
    for (long i = 0; i < n; i++)
        if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1) {
            perror("pipe write/read");
            return 1;
        }
    if (s >= 0)
        close(s);
    return 0;
}
