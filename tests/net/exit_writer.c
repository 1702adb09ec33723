/* A client that writes N bytes and exits without closing its socket
 * (tests/net/session.sh 'closing'): exit() closes it, as in many small C
 * tools. A session client's WELCOME, still to come, must not meet it
 * closed (lib/linger.h).
 *
 *   exit_writer HOST PORT N
 *
 * Exit status 0 when every byte was written, 2 when the connect failed, 3
 * when a write did.
 */
#define _GNU_SOURCE
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    size_t n, off = 0;
    char *buf;
    int fd;

    if (argc != 4 || getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
        return 2;
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        return 2;
    n = strtoul(argv[3], NULL, 10);
    buf = malloc(n ? n : 1);
    if (buf == NULL)
        return 3;
    memset(buf, 'x', n);
    while (off < n) {
        ssize_t k = write(fd, buf + off, n - off);
        if (k <= 0)
            return 3;
        off += (size_t)k;
    }
    exit(0); /* no close() */
}
