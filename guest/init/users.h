/*
 * The guest's own users and groups, from its /etc/passwd and /etc/group
 * (kept in memory, reread when either file changes): USER_LOOKUP, the
 * default supplementary groups of a process, the owner names of entries.
 */
#ifndef CELLA_USERS_H
#define CELLA_USERS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "decode.h"

/* Request handler (the dispatcher's table). */
void users_lookup(uint32_t id, const uint8_t *body, uint32_t len);

/*
 * The groups of the user with this uid, as initgroups() makes them: *gid
 * (the user's own group unless `have_gid`) first, then each group that names
 * the user in /etc/group. Their number, or -1 when /etc/passwd has no such user.
 */
int user_groups(uint32_t uid, int have_gid, gid_t *gid, gid_t *groups, int max);
/* The name of a uid or gid into buf, or NULL when the files do not have it. */
const char *user_name(uint32_t uid, char *buf, size_t cap);
const char *group_name(uint32_t gid, char *buf, size_t cap);

#endif
