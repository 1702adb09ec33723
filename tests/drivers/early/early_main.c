/* Runs libearly.so's constructor (see early.c) and reports its outcome. */
#include <stdio.h>
#include <string.h>

const char *early_result(void);

int main(void)
{
    const char *r = early_result();
    if (strcmp(r, "ok") != 0) {
        fprintf(stderr, "FAIL: libearly constructor: %s\n", r);
        return 1;
    }
    printf("libearly constructor connected: ok\n");
    return 0;
}
