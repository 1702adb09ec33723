/* tests/tools: a minimal TCP client, built dynamic (for the chroot image) and
 * static (for resil-run's warning). Usage: client IP PORT [EXIT]
 * Sends an HTTP/1.0 request, prints the status line, exits with EXIT. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char buf[256];
    const char req[] = "GET / HTTP/1.0\r\n\r\n";
    ssize_t n;
    int fd;

    if (argc < 3 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "usage: client IP PORT [EXIT]\n");
        return 2;
    }
    sa.sin_port = htons((unsigned short)atoi(argv[2]));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("connect");
        return 1;
    }
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1)
        return 1;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    printf("%s\n", buf);
    close(fd);
    return argc > 3 ? atoi(argv[3]) : 0;
}
