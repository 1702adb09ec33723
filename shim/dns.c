/* Hooks: name resolution. The answers are remembered (lib/names.c) so that
 * a later connect() to one address can race all addresses of the name. */
#include <errno.h>
#include <string.h>

#include "engine.h"
#include "names.h"
#include "shim.h"

/* Both recorders leave errno as the resolver set it, and run init first
 * (the names table is state a fork must find consistent). */
static void record_ai(const char *node, const struct addrinfo *res)
{
    struct resil_ip ips[RESIL_NAME_ADDRS];
    int n = 0, saved = errno;

    RESIL_INIT();
    for (const struct addrinfo *ai = res; ai && n < RESIL_NAME_ADDRS;
         ai = ai->ai_next) {
        if (resil_ip_from_sa(ai->ai_addr, ai->ai_addrlen, &ips[n], NULL)) {
            bool dup = false;
            for (int i = 0; i < n && !dup; i++)
                dup = resil_ip_equal(&ips[i], &ips[n]);
            n += !dup;
        }
    }
    resil_names_record(node, ips, n, resil_now_ns());
    errno = saved;
}

static void record_he(const char *name, const struct hostent *h)
{
    struct resil_ip ips[RESIL_NAME_ADDRS];
    int n = 0, saved = errno;

    if (resil_in_shim || name == NULL || h == NULL ||
        (h->h_addrtype != AF_INET && h->h_addrtype != AF_INET6))
        return;
    RESIL_INIT();
    for (char **p = h->h_addr_list; p && *p && n < RESIL_NAME_ADDRS; p++) {
        memset(&ips[n], 0, sizeof(ips[n]));
        ips[n].family = (sa_family_t)h->h_addrtype;
        memcpy(&ips[n].u, *p, h->h_addrtype == AF_INET ? 4 : 16);
        n++;
    }
    resil_names_record(name, ips, n, resil_now_ns());
    errno = saved;
}

RESIL_EXPORT int getaddrinfo(const char *node, const char *service,
                             const struct addrinfo *hints,
                             struct addrinfo **res)
{
    int rc;

    rc = real.getaddrinfo(node, service, hints, res);
    if (rc == 0 && !resil_in_shim && node && res)
        record_ai(node, *res);
    return rc;
}

RESIL_EXPORT struct hostent *gethostbyname(const char *name)
{
    struct hostent *h;

    h = real.gethostbyname(name);
    record_he(name, h);
    return h;
}

RESIL_EXPORT struct hostent *gethostbyname2(const char *name, int af)
{
    struct hostent *h;

    h = real.gethostbyname2(name, af);
    record_he(name, h);
    return h;
}

RESIL_EXPORT int gethostbyname_r(const char *name, struct hostent *ret,
                                 char *buf, size_t len,
                                 struct hostent **result, int *h_errnop)
{
    int rc;

    rc = real.gethostbyname_r(name, ret, buf, len, result, h_errnop);
    if (rc == 0 && result)
        record_he(name, *result);
    return rc;
}

RESIL_EXPORT int gethostbyname2_r(const char *name, int af,
                                  struct hostent *ret, char *buf, size_t len,
                                  struct hostent **result, int *h_errnop)
{
    int rc;

    rc = real.gethostbyname2_r(name, af, ret, buf, len, result, h_errnop);
    if (rc == 0 && result)
        record_he(name, *result);
    return rc;
}
