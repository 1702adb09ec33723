#include "status.h"

static const char *const names[RESIL_STATUS_MAX] = {
    [RESIL_OK] = "success",
    [RESIL_ENOMEM] = "out of memory",
    [RESIL_EINVAL] = "invalid argument",
    [RESIL_ERANGE] = "value out of range",
    [RESIL_ENOENT] = "no such entry",
    [RESIL_EFULL] = "table or buffer full",
    [RESIL_ESYS] = "system call failed",
    [RESIL_EUNSUPP] = "not supported by libresil",
    [RESIL_EAGAIN] = "incomplete input, more bytes needed",
    [RESIL_ENOMSG] = "not a libresil message",
    [RESIL_EPROTO] = "malformed protocol message",
    [RESIL_EVERSION] = "unsupported protocol version",
    [RESIL_EAUTH] = "authentication failed",
    [RESIL_EPERM] = "key file open to other users",
    [RESIL_EREFUSED] = "refused or failed for good",
    [RESIL_ECANCELED] = "taken over by another operation",
};

const char *resil_strerror(resil_status_t st)
{
    if ((unsigned)st >= RESIL_STATUS_MAX)
        return "unknown status";
    return names[st];
}
