/* Shared set-up for the unit tests: lib/ talks to libc directly here. */
#ifndef RESIL_TEST_COMMON_H
#define RESIL_TEST_COMMON_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"
#include "health.h"
#include "names.h"
#include "path.h"
#include "sys.h"

static inline void unit_setup(void)
{
    resil_sys_use_libc();
    resil_health_clear();
    resil_names_clear();
    /* no routing table of the machine's: a test installs its own */
    resil_path_set_backend(NULL);
}

static inline struct resil_ip ip_of(const char *s)
{
    struct resil_ip ip;
    cr_assert(resil_ip_parse(s, &ip), "bad literal %s", s);
    return ip;
}

#define MS_NS 1000000ull

#endif
