/*
 * Parsing what cella-init reads inside the guest: the guest's /etc/passwd and
 * /etc/group (written by whoever is root in it: untrusted), /proc/meminfo and
 * /proc/stat, inotify records, the head of an HTTP request from a guest user;
 * and JSON strings out. Pure (no system calls), so the fuzz harness runs it
 * on the build host.
 */
#ifndef CELLA_PARSE_H
#define CELLA_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes inside a buffer; not NUL-terminated. */
struct span {
	const char *p;
	size_t len;
};

/* A line of /etc/passwd: name:password:uid:gid:gecos:home:shell. */
struct pwent {
	struct span name, home, shell;
	uint32_t uid, gid;
};

/* A line of /etc/group: name:password:gid:member,member. */
struct grent {
	struct span name, members;
	uint32_t gid;
};

/* The next line at *off that parses (others are skipped), advancing *off: 1, or 0 at the end. */
int pw_next(const char *buf, size_t len, size_t *off, struct pwent *e);
int gr_next(const char *buf, size_t len, size_t *off, struct grent *e);
/* 1 when `name` is one of the comma-separated members. */
int gr_has(struct span members, const char *name, size_t name_len);

/* From /proc/meminfo, in bytes. 0 when MemTotal was found, else -1. */
struct meminfo {
	uint64_t total, free, buffers, cached, sreclaimable;
};
int meminfo_parse(const char *buf, size_t len, struct meminfo *m);

/* The first line of /proc/stat ("cpu ..."): the jiffies of user..steal, and of idle + iowait. 0, or -1 when absent. */
int cpustat_parse(const char *buf, size_t len, uint64_t *total, uint64_t *idle);

/* What an HTTP request head asks of the envs listener. */
enum http_route {
	HTTP_ENVS = 1,       /* GET /envs */
	HTTP_HEALTH = 2,     /* GET /health */
	HTTP_NOT_FOUND = 3,  /* GET of anything else */
	HTTP_BAD_METHOD = 4, /* another method */
};
/* The request head at the start of buf: its route when whole (up to the empty line), 0 when more is needed, -1 when malformed. */
int http_parse(const char *buf, size_t len);

/* `in` as a JSON string, quotes included, into out: the length, or -1 when cap is too small. Invalid UTF-8 becomes U+FFFD. */
long json_string(char *out, size_t cap, const uint8_t *in, size_t len);

/* One inotify record (struct inotify_event); name is NULL-less: name_len bytes, NUL padding dropped. */
struct inev {
	int32_t wd;
	uint32_t mask, cookie;
	const char *name;
	size_t name_len;
};
/* The record at *off of what read() returned, advancing *off: 1, 0 at the end, -1 when a record is cut short. */
int inotify_next(const uint8_t *buf, size_t len, size_t *off, struct inev *e);

#endif
