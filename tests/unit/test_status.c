#include <string.h>

#include "common.h"
#include "status.h"

Test(status, every_code_has_a_string)
{
    for (int i = 0; i < RESIL_STATUS_MAX; i++) {
        const char *s = resil_strerror((resil_status_t)i);
        cr_assert_not_null(s);
        cr_expect_neq(strcmp(s, "unknown status"), 0, "code %d", i);
    }
    cr_expect_str_eq(resil_strerror(RESIL_OK), "success");
    cr_expect_str_eq(resil_strerror((resil_status_t)999), "unknown status");
    cr_expect_str_eq(resil_strerror((resil_status_t)-1), "unknown status");
}
