#include "sys.h"

struct resil_real real;
__thread int resil_in_shim __attribute__((tls_model("initial-exec")));
