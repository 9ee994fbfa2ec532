/*
 * File-system requests (FS_*), with paths taken as given (the host resolves
 * ~ and relative paths). Entries are lstat()s with owner and group names, a
 * symlink's resolved target and user.e2b.* attributes. Listings and reads go
 * out as the host keeps up (reads within the credit it grants), writes are
 * written as they arrive: nothing is buffered beyond a frame. A recursive
 * removal runs in a child, so a large tree never stalls PID 1.
 * Streams and listings belong to the host connection: dropped when it goes.
 */
#ifndef CELLA_FS_H
#define CELLA_FS_H

#include <stdint.h>
#include <sys/types.h>

#include "record.h"

#define MAX_STREAMS 32 /* reads and writes open at once */
#define MAX_WALKS 4    /* FS_LIST under way at once */
#define MAX_REMOVALS 8 /* FS_REMOVE children at once */
#define WALK_DEPTH_MAX 64

/* Request handlers (the dispatcher's table). */
void fs_stat(uint32_t id, const uint8_t *body, uint32_t len);
void fs_list(uint32_t id, const uint8_t *body, uint32_t len);
void fs_mkdir(uint32_t id, const uint8_t *body, uint32_t len);
void fs_rename(uint32_t id, const uint8_t *body, uint32_t len);
void fs_remove(uint32_t id, const uint8_t *body, uint32_t len);
void fs_read(uint32_t id, const uint8_t *body, uint32_t len);
void fs_credit(uint32_t id, const uint8_t *body, uint32_t len);
void fs_write_open(uint32_t id, const uint8_t *body, uint32_t len);
void fs_write_data(uint32_t id, const uint8_t *body, uint32_t len);
void fs_write_close(uint32_t id, const uint8_t *body, uint32_t len);
void fs_close(uint32_t id, const uint8_t *body, uint32_t len);

/* The entry of `path` (lstat) as records; 0, or an errno. Shared with watches. */
int fs_entry(const char *path, struct rec *out);
/* Sends listing entries and read data while the host keeps up. */
void fs_pump(void);
/* The host is gone or replaced: its streams and listings are dropped. */
void fs_drop_all(void);
/* A child was reaped: a removal's answer. */
void fs_reaped(pid_t pid, int status);

#endif
