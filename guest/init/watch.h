/*
 * Directory watches (FS_WATCH) on inotify, reported as fsnotify reports them
 * (so as E2B's envd does): CREATE for IN_CREATE and IN_MOVED_TO, WRITE for
 * IN_MODIFY, REMOVE for IN_DELETE, RENAME for IN_MOVED_FROM, CHMOD for
 * IN_ATTRIB, each with the name relative to the watched directory; the
 * directory itself going is REMOVE or RENAME of "" and ends the watch
 * (FS_END, ENOENT). A recursive watch follows directories made later, and
 * reports CREATE for what they already hold when it gets there.
 * Events are read only while the host keeps up (the kernel queues the rest;
 * when its queue overflows, an OVERFLOW event says so). Watches belong to the
 * host connection: dropped when it goes.
 */
#ifndef CELLA_WATCH_H
#define CELLA_WATCH_H

#include <stdint.h>

#define MAX_WATCHES 16
#define WATCH_DIRS_MAX 8192 /* directories one recursive watch follows; beyond, OVERFLOW */
#define WATCH_SCAN_MAX 1024 /* CREATE events made up for a new directory's contents; beyond, OVERFLOW */

/* Request handlers (the dispatcher's table). */
void watch_add(uint32_t id, const uint8_t *body, uint32_t len);
void watch_remove(uint32_t id, const uint8_t *body, uint32_t len);

/* Adds the watches to the poll set (read only while `produce`). */
void watch_poll(int produce);
/* The host is gone or replaced: its watches are dropped. */
void watch_drop_all(void);

#endif
