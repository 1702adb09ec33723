/* calls: the loop tests/bench/cost.sh counts instructions of.
 *
 *   calls N         N write+read pairs on a pipe: unmanaged calls while
 *                   the table is empty (no socket libresil manages)
 *   calls N tcp     the same with a TCP socket open first: libresil
 *                   manages it, so the table is in use and every call on
 *                   the pipe takes the whole lookup
 *
 * No thread, no network, no timing: under callgrind the count is the same
 * on every run. */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int p[2], s = -1;
    char c = 'x';
    long n;

    if (argc < 2 || (argc == 3 && strcmp(argv[2], "tcp") != 0) || argc > 3) {
        fprintf(stderr, "usage: calls N [tcp]\n");
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
