/* libresil: which name an address came from.
 *
 * The shim records every successful getaddrinfo/gethostbyname* answer here,
 * so that a later connect() to one of the addresses can race all addresses
 * of the same name. A small fixed table, least recently recorded entry
 * replaced first; its own leaf lock.
 */
#ifndef RESIL_NAMES_H
#define RESIL_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

#define RESIL_NAME_LEN 256
#define RESIL_NAME_ADDRS 16
#define RESIL_NAMES_SLOTS 128

/* Record that name resolved to ips (duplicates dropped, at most
 * RESIL_NAME_ADDRS kept). A numeric "name" is not recorded. */
void resil_names_record(const char *name, const struct resil_ip *ips, int n,
                        uint64_t now_ns);

/* Record what a c-ares lookup of name answered (kept apart from the
 * program's own answers, which resil_names_record replaces). */
void resil_names_dns(const char *name, const struct resil_ip *ips, int n,
                     uint64_t now_ns);

/* True when name's c-ares answers are older than interval_ns (or absent);
 * then the refresh is claimed (stamped now) so that concurrent races do not
 * query too. */
bool resil_names_dns_due(const char *name, uint64_t now_ns,
                         uint64_t interval_ns);

/* Find the most recent name that ip belongs to; copy the name and its
 * addresses: the program's, then those only DNS gave. Returns the number
 * of addresses (0 when unknown). */
int resil_names_lookup(const struct resil_ip *ip, char *name, size_t namelen,
                       struct resil_ip *out, int max);

/* Hold / release the lock across fork(). */
void resil_names_lock(void);
void resil_names_unlock(void);

/* Forget everything (tests, fork). */
void resil_names_clear(void);

#endif
