/* /etc/passwd and /etc/group of the guest: read when they change, at most FILE_MAX bytes each. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parse.h"
#include "port.h"
#include "protocol.h"
#include "record.h"
#include "users.h"

#define FILE_MAX (4u << 20)

struct file {
	const char *path;
	char *data;
	size_t len;
	struct stat st; /* of what data holds: reread when the file's identity, size or time differ */
};

static struct file passwd = { .path = "/etc/passwd" }, group = { .path = "/etc/group" };

static void load(struct file *f)
{
	struct stat st;
	if (stat(f->path, &st) < 0) {
		f->len = 0;
		memset(&f->st, 0, sizeof f->st);
		return;
	}
	if (f->data && st.st_ino == f->st.st_ino && st.st_dev == f->st.st_dev && st.st_size == f->st.st_size &&
	    st.st_mtim.tv_sec == f->st.st_mtim.tv_sec && st.st_mtim.tv_nsec == f->st.st_mtim.tv_nsec)
		return;
	f->len = 0;
	f->st = st;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	size_t cap = st.st_size > 0 && (size_t)st.st_size < FILE_MAX ? (size_t)st.st_size + 1 : FILE_MAX;
	char *d = realloc(f->data, cap);
	if (d) {
		f->data = d;
		ssize_t n;
		while (f->len < cap && (n = read(fd, d + f->len, cap - f->len)) > 0)
			f->len += n;
	}
	close(fd);
}

static int pw_find(const char *name, uint32_t uid, struct pwent *e)
{
	load(&passwd);
	size_t off = 0, nl = name ? strlen(name) : 0;
	while (pw_next(passwd.data, passwd.len, &off, e))
		if (name ? e->name.len == nl && memcmp(e->name.p, name, nl) == 0 : e->uid == uid)
			return 0;
	return -1;
}

static int groups_of(const struct pwent *e, gid_t first, gid_t *groups, int max)
{
	int n = 0;
	if (max > 0)
		groups[n++] = first;
	load(&group);
	size_t off = 0;
	struct grent g;
	while (n < max && gr_next(group.data, group.len, &off, &g)) {
		if (!gr_has(g.members, e->name.p, e->name.len))
			continue;
		int seen = 0;
		for (int i = 0; i < n && !seen; i++)
			seen = groups[i] == g.gid;
		if (!seen)
			groups[n++] = g.gid;
	}
	return n;
}

int user_groups(uint32_t uid, int have_gid, gid_t *gid, gid_t *groups, int max)
{
	struct pwent e;
	if (pw_find(NULL, uid, &e) < 0)
		return -1;
	if (!have_gid)
		*gid = e.gid;
	return groups_of(&e, *gid, groups, max);
}

static const char *copy_span(struct span s, char *buf, size_t cap)
{
	if (s.len >= cap)
		return NULL;
	memcpy(buf, s.p, s.len);
	buf[s.len] = 0;
	return buf;
}

const char *user_name(uint32_t uid, char *buf, size_t cap)
{
	struct pwent e;
	return pw_find(NULL, uid, &e) == 0 ? copy_span(e.name, buf, cap) : NULL;
}

const char *group_name(uint32_t gid, char *buf, size_t cap)
{
	load(&group);
	size_t off = 0;
	struct grent g;
	while (gr_next(group.data, group.len, &off, &g))
		if (g.gid == gid)
			return copy_span(g.name, buf, cap);
	return NULL;
}

void users_lookup(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct pwent e;
	if (parse_req(body, len, &q) < 0 || (!q.name && !q.has_uid)) {
		ctl_errno(id, EINVAL, "malformed user lookup");
		return;
	}
	if (pw_find(q.name, q.uid, &e) < 0) {
		ctl_errno(id, ENOENT, "no such user in /etc/passwd");
		return;
	}
	static uint8_t out[CELLA_MAX_OUT];
	gid_t groups[MAX_GROUPS];
	int n = groups_of(&e, e.gid, groups, MAX_GROUPS);
	uint8_t gb[4 * MAX_GROUPS];
	for (int i = 0; i < n; i++)
		put32(gb + 4 * i, groups[i]);
	struct rec r = { .p = out, .cap = sizeof out };
	rec_put(&r, TAG_NAME, e.name.p, e.name.len);
	rec_u32(&r, TAG_UID, e.uid);
	rec_u32(&r, TAG_GID, e.gid);
	rec_put(&r, TAG_HOME, e.home.p, e.home.len);
	rec_put(&r, TAG_SHELL, e.shell.p, e.shell.len);
	rec_put(&r, TAG_GROUPS, gb, 4 * n);
	if (r.over)
		ctl_errno(id, ENAMETOOLONG, "user entry too long");
	else
		ctl_reply(id, out, r.len);
}
