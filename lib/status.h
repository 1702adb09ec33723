/* libresil: status codes returned by lib/ functions (c-ares style). */
#ifndef RESIL_STATUS_H
#define RESIL_STATUS_H

typedef enum {
    RESIL_OK = 0,
    RESIL_ENOMEM,     /* allocation failed */
    RESIL_EINVAL,     /* bad argument or unparseable input */
    RESIL_ERANGE,     /* value outside its allowed range */
    RESIL_ENOENT,     /* no such entry */
    RESIL_EFULL,      /* a fixed-size table is full */
    RESIL_ESYS,       /* a system call failed; errno tells which */
    RESIL_EUNSUPP,    /* libresil does not handle this case: pass through */
    RESIL_EAGAIN,     /* input incomplete: more bytes are needed */
    RESIL_ENOMSG,     /* not a libresil message (the magic differs) */
    RESIL_EPROTO,     /* a malformed protocol message */
    RESIL_EVERSION,   /* a protocol version this side does not speak */
    RESIL_EAUTH,      /* a MAC or a key check failed */
    RESIL_EPERM,      /* a key file others may read or change */
    RESIL_EREFUSED,   /* the peer refused, or the operation failed for good */
    RESIL_ECANCELED,  /* another operation took over */
    RESIL_STATUS_MAX
} resil_status_t;

/* Returns a static, human-readable string; never NULL. */
const char *resil_strerror(resil_status_t st);

#endif
