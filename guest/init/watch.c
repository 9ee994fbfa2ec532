/* Watches: one inotify instance each, a table of watched directories by their path relative to the root. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "decode.h"
#include "loop.h"
#include "parse.h"
#include "port.h"
#include "protocol.h"
#include "util.h"
#include "watch.h"

#define MASK (IN_CREATE | IN_MOVED_TO | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct wdir {
	int wd;
	char *rel; /* "" for the root */
};

struct watch {
	int used;
	uint32_t id;
	int fd;
	int recursive;
	char *root;
	struct wdir *dirs;
	int ndirs, cap;
	int scanned; /* CREATE events made up during the current scan */
};

static struct watch watches[MAX_WATCHES];

static void event(struct watch *w, int op, const char *name)
{
	ctl_send(MSG_FS_EVENT, op, w->id, name, strlen(name));
}

static void watch_free(struct watch *w)
{
	if (w->fd >= 0)
		close(w->fd);
	for (int i = 0; i < w->ndirs; i++)
		free(w->dirs[i].rel);
	free(w->dirs);
	free(w->root);
	memset(w, 0, sizeof *w);
	w->fd = -1;
}

static struct wdir *dir_of(struct watch *w, int wd)
{
	for (int i = 0; i < w->ndirs; i++)
		if (w->dirs[i].wd == wd)
			return &w->dirs[i];
	return NULL;
}

/* Path of `rel` under the root into buf; -1 when too long. */
static int full_path(const struct watch *w, const char *rel, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "%s%s%s", w->root, *rel ? "/" : "", rel);
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Watches the directory `rel`; 0, or an errno (ENOSPC when the watch follows too many). */
static int add_dir(struct watch *w, const char *rel, int follow)
{
	char path[PATH_MAX];
	if (full_path(w, rel, path, sizeof path) < 0)
		return ENAMETOOLONG;
	int wd = inotify_add_watch(w->fd, path, MASK | (follow ? 0 : IN_DONT_FOLLOW));
	if (wd < 0)
		return errno;
	struct wdir *d = dir_of(w, wd); /* already watched: moved within the tree */
	if (!d) {
		if (w->ndirs == WATCH_DIRS_MAX)
			return ENOSPC;
		if (w->ndirs == w->cap) {
			int cap = w->cap ? w->cap * 2 : 16;
			struct wdir *n = realloc(w->dirs, cap * sizeof *n);
			if (!n)
				return ENOMEM;
			w->dirs = n;
			w->cap = cap;
		}
		d = &w->dirs[w->ndirs++];
		d->wd = wd;
		d->rel = NULL;
	}
	char *copy = strdup(rel);
	if (!copy)
		return ENOMEM;
	free(d->rel);
	d->rel = copy;
	return 0;
}

/*
 * Watches the directories under `rel` (not following symlinks), depth first.
 * With `report`, what is found is reported as created: it may have appeared
 * before the watch did. Returns an errno when the watch cannot follow.
 */
static int add_tree(struct watch *w, const char *rel, int report, int depth)
{
	char path[PATH_MAX], child[PATH_MAX];
	if (depth > 64 || full_path(w, rel, path, sizeof path) < 0)
		return 0;
	DIR *d = opendir(path);
	if (!d)
		return 0;
	struct dirent *e;
	int err = 0;
	while (!err && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		int n = snprintf(child, sizeof child, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (n < 0 || (size_t)n >= sizeof child)
			continue;
		if (report && w->scanned++ < WATCH_SCAN_MAX)
			event(w, FS_OP_CREATE, child);
		else if (report && w->scanned == WATCH_SCAN_MAX + 1)
			event(w, FS_OP_OVERFLOW, "");
		struct stat st;
		if (full_path(w, child, path, sizeof path) < 0 || lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		err = add_dir(w, child, 0);
		if (!err)
			err = add_tree(w, child, report, depth + 1);
	}
	closedir(d);
	return err;
}

void watch_add(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct stat st;
	if (parse_req(body, len, &q) < 0 || !q.path || !q.path[0]) {
		ctl_errno(id, EINVAL, "malformed request (a path is needed)");
		return;
	}
	struct watch *w = NULL;
	int e = 0;
	for (int i = 0; i < MAX_WATCHES; i++)
		if (watches[i].used && watches[i].id == id)
			e = EEXIST;
		else if (!watches[i].used && !w)
			w = &watches[i];
	if (!e)
		e = !w ? EMFILE : stat(q.path, &st) < 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
	if (e) {
		ctl_errno(id, e, "%s: %s", q.path, e == EMFILE ? "too many watches" : e == EEXIST ? "watch id in use" : strerror(e));
		return;
	}
	*w = (struct watch){ .used = 1, .id = id, .recursive = q.recursive, .root = strdup(q.path) };
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	e = !w->root ? ENOMEM : w->fd < 0 ? errno : add_dir(w, "", 1);
	if (!e && w->recursive)
		e = add_tree(w, "", 0, 0);
	if (e) {
		ctl_errno(id, e, "%s: %s", q.path, e == ENOSPC ? "too many directories to watch" : strerror(e));
		watch_free(w);
		return;
	}
	ctl_ok(id);
}

void watch_remove(uint32_t id, const uint8_t *body, uint32_t len)
{
	for (int i = 0; i < MAX_WATCHES; i++)
		if (watches[i].used && watches[i].id == id) {
			watch_free(&watches[i]);
			ctl_ok(id);
			return;
		}
	ctl_errno(id, ENOENT, "no watch %u", id);
}

/* One inotify record as fsnotify's events; 0, or -1 when the watch ended. */
static int handle(struct watch *w, const struct inev *ev)
{
	char name[PATH_MAX];
	if (ev->mask & IN_Q_OVERFLOW) {
		event(w, FS_OP_OVERFLOW, "");
		return 0;
	}
	struct wdir *d = dir_of(w, ev->wd);
	if (!d)
		return 0;
	int root = d->rel[0] == 0;
	if (ev->mask & IN_IGNORED) {
		if (root) {
			uint8_t b[4];
			put32(b, ENOENT);
			ctl_send(MSG_FS_END, 0, w->id, b, 4);
			return -1;
		}
		free(d->rel);
		*d = w->dirs[--w->ndirs];
		return 0;
	}
	if (!ev->name_len) {
		/* About a watched directory itself: its parent reports it, unless it is the root. */
		if (root && (ev->mask & IN_DELETE_SELF))
			event(w, FS_OP_REMOVE, "");
		else if (root && (ev->mask & IN_MOVE_SELF))
			event(w, FS_OP_RENAME, "");
		return 0;
	}
	int n = snprintf(name, sizeof name, "%s%s%.*s", d->rel, root ? "" : "/", (int)ev->name_len, ev->name);
	if (n < 0 || (size_t)n >= sizeof name)
		return 0;
	if (ev->mask & (IN_CREATE | IN_MOVED_TO))
		event(w, FS_OP_CREATE, name);
	if (ev->mask & IN_MOVED_FROM)
		event(w, FS_OP_RENAME, name);
	if (ev->mask & IN_ATTRIB)
		event(w, FS_OP_CHMOD, name);
	if (ev->mask & IN_MODIFY)
		event(w, FS_OP_WRITE, name);
	if (ev->mask & IN_DELETE)
		event(w, FS_OP_REMOVE, name);
	if (w->recursive && (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
		w->scanned = 0;
		int e = add_dir(w, name, 0);
		if (!e)
			e = add_tree(w, name, 1, 0);
		if (e)
			event(w, FS_OP_OVERFLOW, "");
	}
	return 0;
}

static void watch_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	/* Small reads: what one read brings never overfills the control port's queue. */
	static uint8_t buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct watch *w = &watches[idx];
	if (!w->used || w->fd != pf->fd || !ctl_keeps_up())
		return;
	ssize_t n = read(w->fd, buf, sizeof buf);
	if (n <= 0)
		return;
	size_t off = 0;
	struct inev ev;
	while (inotify_next(buf, n, &off, &ev) > 0)
		if (handle(w, &ev) < 0) {
			watch_free(w);
			return;
		}
}

void watch_poll(int produce)
{
	for (int i = 0; i < MAX_WATCHES; i++)
		if (watches[i].used && produce)
			loop_watch(watches[i].fd, POLLIN, watch_ready, i, 0);
}

void watch_drop_all(void)
{
	for (int i = 0; i < MAX_WATCHES; i++)
		if (watches[i].used)
			watch_free(&watches[i]);
}
