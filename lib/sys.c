#include "sys.h"

/* Zero here, for the unit tests and the fuzzer (resil_sys_use_libc fills
 * it); libresil.so links shim/init.c's definition instead, whose entries
 * start at their resolvers. */
__attribute__((weak)) struct resil_real real;
__thread int resil_in_shim __attribute__((tls_model("initial-exec")));
