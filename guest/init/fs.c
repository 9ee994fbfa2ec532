/* File-system requests: entries, listings, directories, renames, removals, read and write streams. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "decode.h"
#include "fs.h"
#include "port.h"
#include "protocol.h"
#include "users.h"
#include "util.h"

#define XATTR_PREFIX "user.e2b."

/* ---------- entries ---------- */

static void rec_xattrs(const char *path, struct rec *out)
{
	static char names[65536];
	static uint8_t item[CELLA_MAX_OUT];
	ssize_t n = llistxattr(path, names, sizeof names - 1);
	if (n > 0)
		names[n] = 0; /* the kernel ends each name with a NUL; this ends the list for strlen even if not */
	for (ssize_t off = 0; off < n; off += strlen(names + off) + 1) {
		const char *name = names + off;
		size_t nl = strlen(name);
		if (strncmp(name, XATTR_PREFIX, sizeof XATTR_PREFIX - 1) != 0 || nl + 1 >= sizeof item)
			continue;
		memcpy(item, name, nl + 1);
		ssize_t v = lgetxattr(path, name, item + nl + 1, sizeof item - nl - 1);
		if (v >= 0 && rec_put(out, TAG_XATTR, item, nl + 1 + v) < 0)
			out->over = 0; /* one that does not fit is left out; the others may */
	}
}

int fs_entry(const char *path, struct rec *out)
{
	struct stat st, target;
	if (lstat(path, &st) < 0)
		return errno;
	uint8_t mtime[12];
	put32(mtime, (uint32_t)st.st_mtim.tv_sec);
	put32(mtime + 4, (uint32_t)((uint64_t)st.st_mtim.tv_sec >> 32));
	put32(mtime + 8, (uint32_t)st.st_mtim.tv_nsec);
	char name[256], real[PATH_MAX];
	rec_u32(out, TAG_MODE, st.st_mode);
	rec_u64(out, TAG_SIZE, st.st_size);
	rec_put(out, TAG_MTIME, mtime, sizeof mtime);
	rec_u32(out, TAG_UID, st.st_uid);
	rec_u32(out, TAG_GID, st.st_gid);
	if (user_name(st.st_uid, name, sizeof name))
		rec_str(out, TAG_OWNER, name);
	if (group_name(st.st_gid, name, sizeof name))
		rec_str(out, TAG_GROUP, name);
	if (S_ISLNK(st.st_mode)) {
		if (realpath(path, real))
			rec_str(out, TAG_TARGET, real);
		if (stat(path, &target) == 0)
			rec_u32(out, TAG_TARGET_MODE, target.st_mode);
	}
	rec_xattrs(path, out);
	return out->over ? ENAMETOOLONG : 0;
}

/* A request with a path, or an EINVAL error sent. */
static int path_req(uint32_t id, const uint8_t *body, uint32_t len, struct req *q)
{
	if (parse_req(body, len, q) < 0 || !q->path || !q->path[0]) {
		ctl_errno(id, EINVAL, "malformed request (a path is needed)");
		return -1;
	}
	return 0;
}

static void reply_entry(uint32_t id, const char *path)
{
	static uint8_t buf[CELLA_MAX_OUT];
	struct rec out = { .p = buf, .cap = sizeof buf };
	int e = fs_entry(path, &out);
	if (e)
		ctl_errno(id, e, "%s: %s", path, strerror(e));
	else
		ctl_reply(id, buf, out.len);
}

void fs_stat(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	if (path_req(id, body, len, &q) == 0)
		reply_entry(id, q.path);
}

/* ---------- directories, renames, removals ---------- */

static int made(const char *path, const struct req *q)
{
	if ((q->has_uid || q->has_gid) && chown(path, q->has_uid ? q->uid : (uid_t)-1, q->has_gid ? q->gid : (gid_t)-1) < 0)
		return errno;
	return 0;
}

/* mkdir -p of the directories above `path` (not path itself); the ones made are given the request's owner. 0 or an errno. */
static int make_parents(const char *path, const struct req *q)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof buf)
		return ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		int e = mkdir(buf, 0755) == 0 ? made(buf, q) : errno == EEXIST ? 0 : errno;
		*p = '/';
		if (e)
			return e;
		while (p[1] == '/')
			p++;
	}
	return 0;
}

void fs_mkdir(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct stat st;
	if (path_req(id, body, len, &q) < 0)
		return;
	int e = make_parents(q.path, &q);
	if (!e && mkdir(q.path, q.has_mode ? q.mode & 07777 : 0755) < 0)
		e = errno == EEXIST && stat(q.path, &st) == 0 && !S_ISDIR(st.st_mode) ? ENOTDIR : errno;
	else if (!e) {
		e = made(q.path, &q);
		if (!e && q.has_mode && chmod(q.path, q.mode & 07777) < 0)
			e = errno;
	}
	if (e == EEXIST)
		ctl_errno(id, e, "%s: a directory is already there", q.path);
	else if (e == ENOTDIR)
		ctl_errno(id, e, "%s: something that is not a directory is there", q.path);
	else if (e)
		ctl_errno(id, e, "%s: %s", q.path, strerror(e));
	else
		ctl_ok(id);
}

void fs_rename(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	if (path_req(id, body, len, &q) < 0)
		return;
	if (!q.dest || !q.dest[0]) {
		ctl_errno(id, EINVAL, "malformed request (a destination is needed)");
		return;
	}
	int e = make_parents(q.dest, &q);
	if (!e && rename(q.path, q.dest) < 0)
		e = errno;
	if (e)
		ctl_errno(id, e, "%s -> %s: %s", q.path, q.dest, strerror(e));
	else
		reply_entry(id, q.dest);
}

static struct {
	pid_t pid; /* 0 when free */
	uint32_t id;
} removals[MAX_REMOVALS];

static int remove_err; /* the first failure of the child's walk */

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (remove(path) < 0 && errno != ENOENT && !remove_err)
		remove_err = errno;
	return 0;
}

void fs_remove(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct stat st;
	if (path_req(id, body, len, &q) < 0)
		return;
	/* Like Go's RemoveAll: a missing path is no error; a file goes at once; a directory's tree in a child. */
	if (lstat(q.path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		int e = errno == ENOENT || unlink(q.path) == 0 || errno == ENOENT ? 0 : errno;
		if (e)
			ctl_errno(id, e, "%s: %s", q.path, strerror(e));
		else
			ctl_ok(id);
		return;
	}
	int k = 0;
	while (k < MAX_REMOVALS && removals[k].pid)
		k++;
	if (k == MAX_REMOVALS) {
		ctl_errno(id, EAGAIN, "too many removals under way (%d)", MAX_REMOVALS);
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		remove_err = 0;
		nftw(q.path, remove_one, 32, FTW_DEPTH | FTW_PHYS);
		_exit(remove_err > 0 && remove_err < 256 ? remove_err : remove_err ? EIO : 0);
	}
	if (pid < 0) {
		ctl_errno(id, errno, "fork: %s", strerror(errno));
		return;
	}
	removals[k].pid = pid;
	removals[k].id = id;
}

void fs_reaped(pid_t pid, int status)
{
	for (int k = 0; k < MAX_REMOVALS; k++) {
		if (removals[k].pid != pid)
			continue;
		removals[k].pid = 0;
		int e = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
		if (e)
			ctl_errno(removals[k].id, e, "remove: %s", strerror(e));
		else
			ctl_ok(removals[k].id);
	}
}

/* ---------- listings ---------- */

/* A pre-order walk, `depth` levels deep, of the directory at path (following its own symlink, none below). */
struct walk {
	int active;
	uint32_t id, depth;
	int top; /* open directories: dirs[0 .. top - 1] */
	DIR *dirs[WALK_DEPTH_MAX];
	size_t at[WALK_DEPTH_MAX]; /* path's length when dirs[i] was opened */
	char path[PATH_MAX];       /* the path given, then the current entry's */
};

static struct walk walks[MAX_WALKS];

static void walk_end(struct walk *w)
{
	while (w->top > 0)
		closedir(w->dirs[--w->top]);
	w->active = 0;
}

void fs_list(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct stat st;
	if (path_req(id, body, len, &q) < 0)
		return;
	struct walk *w = NULL;
	for (int i = 0; i < MAX_WALKS && !w; i++)
		if (!walks[i].active)
			w = &walks[i];
	size_t n = strlen(q.path);
	while (n > 1 && q.path[n - 1] == '/')
		n--;
	int e = !w ? EAGAIN : n >= sizeof w->path ? ENAMETOOLONG : stat(q.path, &st) < 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
	DIR *d = e ? NULL : opendir(q.path);
	if (!e && !d)
		e = errno;
	if (e) {
		ctl_errno(id, e, "%s: %s", q.path, e == EAGAIN ? "too many listings under way" : strerror(e));
		return;
	}
	memset(w, 0, sizeof *w);
	w->active = 1;
	w->id = id;
	w->depth = !q.has_depth || q.depth == 0 ? 1 : q.depth > WALK_DEPTH_MAX ? WALK_DEPTH_MAX : q.depth;
	memcpy(w->path, q.path, n);
	w->path[n] = 0;
	w->dirs[0] = d;
	w->at[0] = n;
	w->top = 1;
}

/* The next entry of the walk, sent; 0 when the walk has ended (and OK was sent). */
static int walk_step(struct walk *w)
{
	static uint8_t buf[CELLA_MAX_OUT];
	while (w->top > 0) {
		int level = w->top;
		size_t at = w->at[level - 1];
		struct dirent *e = readdir(w->dirs[level - 1]);
		if (!e) {
			closedir(w->dirs[--w->top]);
			continue;
		}
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		int n = snprintf(w->path + at, sizeof w->path - at, "%s%s", at == 1 && w->path[0] == '/' ? "" : "/", e->d_name);
		if (n < 0 || (size_t)n >= sizeof w->path - at)
			continue; /* too long to name */
		struct rec out = { .p = buf, .cap = sizeof buf };
		rec_str(&out, TAG_PATH, w->path);
		if (fs_entry(w->path, &out) != 0)
			continue; /* gone meanwhile */
		ctl_send(MSG_FS_ENTRY, 0, w->id, buf, out.len);
		struct stat st;
		if ((unsigned)level < w->depth && level < WALK_DEPTH_MAX && lstat(w->path, &st) == 0 && S_ISDIR(st.st_mode)) {
			DIR *d = opendir(w->path); /* one it may not read is skipped, as envd does */
			if (d) {
				w->dirs[w->top] = d;
				w->at[w->top++] = at + n;
			}
		}
		return 1;
	}
	ctl_ok(w->id);
	walk_end(w);
	return 0;
}

/* ---------- read and write streams ---------- */

struct stream {
	int used;
	uint32_t id;
	int fd;
	int writing;
	int err;         /* a write failed: FS_END was sent, the close answers with it */
	uint64_t credit; /* bytes the host takes (reads) */
	char *path;      /* writes: for the entry at the close */
};

static struct stream streams[MAX_STREAMS];

static struct stream *stream_find(uint32_t id, int writing)
{
	for (int i = 0; i < MAX_STREAMS; i++)
		if (streams[i].used && streams[i].id == id && (writing < 0 || streams[i].writing == writing))
			return &streams[i];
	return NULL;
}

static void stream_free(struct stream *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	memset(s, 0, sizeof *s);
	s->fd = -1;
}

/* A free stream slot for `id`, or an errno sent. */
static struct stream *stream_new(uint32_t id)
{
	if (stream_find(id, -1)) {
		ctl_errno(id, EEXIST, "stream %u is open", id);
		return NULL;
	}
	for (int i = 0; i < MAX_STREAMS; i++)
		if (!streams[i].used)
			return &streams[i];
	ctl_errno(id, EMFILE, "too many open streams (%d)", MAX_STREAMS);
	return NULL;
}

static void send_end(uint32_t id, int err)
{
	uint8_t b[4];
	put32(b, err);
	ctl_send(MSG_FS_END, 0, id, b, 4);
}

void fs_read(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct stat st;
	if (path_req(id, body, len, &q) < 0)
		return;
	struct stream *s = stream_new(id);
	if (!s)
		return;
	/* O_NONBLOCK: a FIFO never blocks the open; only regular files are read. */
	int fd = open(q.path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	int e = fd < 0 ? errno : fstat(fd, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : !S_ISREG(st.st_mode) ? EINVAL : 0;
	if (e) {
		if (fd >= 0)
			close(fd);
		ctl_errno(id, e, "%s: %s", q.path, e == EINVAL ? "not a regular file" : strerror(e));
		return;
	}
	*s = (struct stream){ .used = 1, .id = id, .fd = fd, .credit = q.credit };
	uint8_t buf[16];
	struct rec out = { .p = buf, .cap = sizeof buf };
	rec_u64(&out, TAG_SIZE, st.st_size);
	ctl_reply(id, buf, out.len);
}

void fs_credit(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct stream *s = stream_find(id, 0);
	uint32_t more;
	if (s && decode_u32(body, len, &more) == 0)
		s->credit += more;
}

/* One frame of a read within its credit; 0 when it cannot send now. */
static int read_step(struct stream *s)
{
	static uint8_t buf[CELLA_MAX_OUT];
	if (s->credit == 0)
		return 0;
	ssize_t n = read(s->fd, buf, s->credit < sizeof buf ? s->credit : sizeof buf);
	if (n < 0 && errno == EINTR)
		return 1;
	if (n > 0) {
		ctl_send(MSG_FS_DATA, 0, s->id, buf, n);
		s->credit -= n;
		return 1;
	}
	send_end(s->id, n < 0 ? errno : 0);
	stream_free(s);
	return 0;
}

void fs_write_open(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct req q;
	struct stat st;
	if (path_req(id, body, len, &q) < 0)
		return;
	struct stream *s = stream_new(id);
	if (!s)
		return;
	char *path = strdup(q.path);
	int fd = -1, e = !path ? ENOMEM : make_parents(q.path, &q);
	if (!e && (fd = open(q.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644)) < 0)
		e = errno;
	if (!e)
		e = fstat(fd, &st) < 0 ? errno : !S_ISREG(st.st_mode) ? EINVAL : 0;
	if (!e && (q.has_uid || q.has_gid) && fchown(fd, q.has_uid ? q.uid : (uid_t)-1, q.has_gid ? q.gid : (gid_t)-1) < 0)
		e = errno;
	if (!e && q.has_mode && fchmod(fd, q.mode & 07777) < 0)
		e = errno;
	for (int i = 0; !e && i < q.nxattr; i++) {
		const char *name = (const char *)q.xattr[i];
		size_t nl = strlen(name);
		if (fsetxattr(fd, name, q.xattr[i] + nl + 1, q.xattr_len[i] - nl - 1, 0) < 0)
			e = errno;
	}
	if (e) {
		if (fd >= 0)
			close(fd);
		free(path);
		ctl_errno(id, e, "%s: %s", q.path, e == EINVAL ? "not a regular file" : strerror(e));
		return;
	}
	fcntl(fd, F_SETFL, 0);
	*s = (struct stream){ .used = 1, .id = id, .fd = fd, .writing = 1, .path = path };
	ctl_ok(id);
}

void fs_write_data(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct stream *s = stream_find(id, 1);
	if (!s || s->err)
		return;
	for (uint32_t off = 0; off < len;) {
		ssize_t n = write(s->fd, body + off, len - off);
		if (n > 0)
			off += n;
		else if (n < 0 && errno == EINTR)
			continue;
		else {
			s->err = n < 0 ? errno : EIO;
			send_end(id, s->err);
			return;
		}
	}
}

void fs_write_close(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct stream *s = stream_find(id, 1);
	if (!s) {
		ctl_errno(id, EBADF, "no write stream %u", id);
		return;
	}
	int e = s->err;
	if (close(s->fd) < 0 && !e)
		e = errno;
	s->fd = -1;
	if (e)
		ctl_errno(id, e, "%s: %s", s->path, strerror(e));
	else
		reply_entry(id, s->path);
	stream_free(s);
}

void fs_close(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct stream *s = stream_find(id, -1);
	if (s)
		stream_free(s);
	for (int i = 0; i < MAX_WALKS; i++)
		if (walks[i].active && walks[i].id == id)
			walk_end(&walks[i]); /* no OK follows */
}

/* ---------- the loop's share ---------- */

void fs_pump(void)
{
	/* Round robin over walks and reads, one frame each, while the host keeps up. */
	for (int sent = 1; sent && ctl_keeps_up();) {
		sent = 0;
		for (int i = 0; i < MAX_WALKS && ctl_keeps_up(); i++)
			if (walks[i].active)
				sent |= walk_step(&walks[i]);
		for (int i = 0; i < MAX_STREAMS && ctl_keeps_up(); i++)
			if (streams[i].used && !streams[i].writing)
				sent |= read_step(&streams[i]);
	}
}

void fs_drop_all(void)
{
	for (int i = 0; i < MAX_WALKS; i++)
		if (walks[i].active)
			walk_end(&walks[i]);
	for (int i = 0; i < MAX_STREAMS; i++)
		if (streams[i].used)
			stream_free(&streams[i]);
}
