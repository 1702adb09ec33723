#include <string.h>

#include "common.h"
#include "events.h"

Test(events, json_string_escaping)
{
    char buf[64];
    cr_expect_str_eq(resil_json_str("svc.example", buf, sizeof(buf)),
                     "svc.example");
    cr_expect_str_eq(resil_json_str("a\"b\\c", buf, sizeof(buf)),
                     "a\\\"b\\\\c");
    cr_expect_str_eq(resil_json_str("x\ny\x01", buf, sizeof(buf)),
                     "x\\u000ay\\u0001");
    /* bytes that may be invalid UTF-8 never reach the line raw */
    cr_expect_str_eq(resil_json_str("\xff\x80z\x7f", buf, sizeof(buf)),
                     "\\u00ff\\u0080z\\u007f");
}

Test(events, json_string_bounded)
{
    char small[10];
    const char *in = "\"\"\"\"\"\"\"\"\"\"";
    resil_json_str(in, small, sizeof(small));
    cr_expect_lt(strlen(small), sizeof(small));
    /* never ends inside an escape: an even number of backslashes */
    size_t n = strlen(small), bs = 0;
    for (size_t i = 0; i < n; i++)
        bs += small[i] == '\\';
    cr_expect_eq(bs % 2, 0, "%s", small);
}
