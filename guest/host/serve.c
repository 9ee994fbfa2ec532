/*
 * cella-spawn --serve: the spawn server (ADR 0012). cellad starts it once, while
 * its own memory is small, and asks it for each QEMU: a fork of this small
 * static process costs far less than a fork of cellad (page tables of hundreds
 * of MiB), and cellad's event loop no longer waits for an exec.
 *
 * Descriptors from cellad: 0 requests, 1 replies, 2 its own messages, 3 the
 * lifeline (a pipe that cellad never writes: EOF comes when cellad dies).
 * Frames both ways: a 4-byte little-endian length, then NUL-separated fields.
 *   request  spawn ID ARG...           cella-spawn's arguments (spawn.h), plus
 *                                      --setsid and --stderr FILE
 *   reply    ok ID PID STARTTIME       forked; STARTTIME is field 22 of its stat
 *            err ID MESSAGE            nothing forked
 *            exit PID CODE SIGNAL TAIL reaped: CODE or SIGNAL (a number) is
 *                                      empty; TAIL is the rest of the frame, the
 *                                      last 4 KiB of its stderr (none with --stderr)
 * Each child runs the prelude (spawn.c) with stdin the lifeline, so a watcher
 * kills its QEMU exactly when cellad dies; stdout /dev/null; stderr a pipe whose
 * tail the server keeps, or FILE (appended) with --stderr. It holds nothing
 * else of the server's. The server dies with cellad: its own death signal, and
 * EOF on requests. Its children's death signal (--pdeathsig) points at it.
 */
#define _GNU_SOURCE
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define LIFELINE 3
#define TAIL 4096

struct child {
	pid_t pid;
	/* Read end of its stderr pipe; -1 when its stderr is a file (or the pipe is drained). */
	int fd;
	size_t len;
	char tail[TAIL];
};

static struct child *kids;
static int nkids, capkids;
static sigset_t unblocked;

static void die(const char *what)
{
	dprintf(2, "cella-spawn --serve: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void send_frame(const char *const *fields, int n, const char *tail, size_t tlen)
{
	size_t len = tlen;
	for (int i = 0; i < n; i++)
		len += strlen(fields[i]) + 1;
	char *buf = malloc(SERVE_HEADER + len);
	if (!buf)
		die("malloc");
	for (int i = 0; i < SERVE_HEADER; i++)
		buf[i] = (char)(len >> (8 * i));
	char *p = buf + SERVE_HEADER;
	for (int i = 0; i < n; i++)
		p = stpcpy(p, fields[i]) + 1;
	memcpy(p, tail, tlen);
	for (size_t off = 0; off < SERVE_HEADER + len;) {
		ssize_t w = write(1, buf + off, SERVE_HEADER + len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("write reply");
		off += (size_t)w;
	}
	free(buf);
}

static void reply_err(const char *id, const char *msg)
{
	const char *f[] = { "err", id ? id : "", msg };
	send_frame(f, 3, "", 0);
}

/* Field 22 of /proc/PID/stat, the start time that tells this process from a later one with its pid. */
static void start_time(pid_t pid, char *out, size_t n)
{
	char path[40], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	out[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return;
	buf[r] = '\0';
	/* The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'. */
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (p)
		snprintf(out, n, "%.*s", (int)strcspn(p + 1, " "), p + 1);
}

/* In the child: its descriptors, then the prelude. Never returns. */
static void child_run(const struct spawn_opts *o, int err, int argc, char **argv)
{
	sigprocmask(SIG_SETMASK, &unblocked, NULL);
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(LIFELINE, 0) < 0 || dup2(null, 1) < 0 || dup2(err, 2) < 0)
		_exit(SPAWN_FAILED);
	/* Nothing of the server's stays open: the watcher, a fork without exec, would hold it. */
	if (syscall(SYS_close_range, 3u, ~0u, 0u) < 0)
		for (int fd = 3; fd < 65536; fd++)
			close(fd);
	if (o->setsid && setsid() < 0) {
		dprintf(2, "cella-spawn: setsid: %s\n", strerror(errno));
		_exit(SPAWN_FAILED);
	}
	_exit(spawn_prelude(o, argc, argv));
}

static void start(char *payload, size_t len, int argc, char **argv)
{
	static char *slots[SERVE_MAX_ARGS];
	const char *id;
	struct spawn_opts o;
	const char *bad = serve_parse(payload, len, slots, SERVE_MAX_ARGS, &id, &o);
	if (bad) {
		reply_err(id, bad);
		return;
	}
	if (nkids == capkids) {
		int cap = capkids ? 2 * capkids : 64;
		struct child *k = realloc(kids, sizeof(*kids) * (size_t)cap);
		if (!k)
			die("realloc");
		kids = k;
		capkids = cap;
	}
	int err, tail = -1;
	if (o.stderr_file) {
		err = open(o.stderr_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
	} else {
		int p[2];
		err = pipe2(p, O_CLOEXEC) < 0 ? -1 : p[1];
		if (err >= 0) {
			tail = p[0];
			fcntl(tail, F_SETFL, O_NONBLOCK);
		}
	}
	char msg[160];
	if (err < 0) {
		snprintf(msg, sizeof(msg), "%s: %s", o.stderr_file ? o.stderr_file : "stderr pipe", strerror(errno));
		reply_err(id, msg);
		return;
	}
	pid_t pid = fork();
	if (pid == 0)
		child_run(&o, err, argc, argv);
	close(err);
	if (pid < 0) {
		snprintf(msg, sizeof(msg), "fork: %s", strerror(errno));
		if (tail >= 0)
			close(tail);
		reply_err(id, msg);
		return;
	}
	kids[nkids++] = (struct child){ .pid = pid, .fd = tail, .len = 0 };
	char spid[24], st[32];
	snprintf(spid, sizeof(spid), "%d", (int)pid);
	start_time(pid, st, sizeof(st));
	const char *f[] = { "ok", id, spid, st };
	send_frame(f, 4, "", 0);
}

/* Reads what the child's stderr pipe holds, keeping the last TAIL bytes; closes it at EOF. */
static void drain(struct child *k)
{
	char buf[TAIL];
	while (k->fd >= 0) {
		ssize_t n = read(k->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(k->fd);
			k->fd = -1;
			return;
		}
		size_t keep = k->len + (size_t)n > TAIL ? TAIL - (size_t)n : k->len;
		memmove(k->tail, k->tail + k->len - keep, keep);
		memcpy(k->tail + keep, buf, (size_t)n);
		k->len = keep + (size_t)n;
	}
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int i = 0;
		while (i < nkids && kids[i].pid != pid)
			i++;
		if (i == nkids)
			continue;
		struct child *k = &kids[i];
		/* It is gone: what it wrote is all in the pipe, unless a process it left holds the pipe too. */
		drain(k);
		if (k->fd >= 0)
			close(k->fd);
		char spid[24], code[16] = "", sig[16] = "";
		snprintf(spid, sizeof(spid), "%d", (int)pid);
		if (WIFEXITED(status))
			snprintf(code, sizeof(code), "%d", WEXITSTATUS(status));
		else
			snprintf(sig, sizeof(sig), "%d", WTERMSIG(status));
		const char *f[] = { "exit", spid, code, sig };
		send_frame(f, 4, k->tail, k->len);
		kids[i] = kids[--nkids];
	}
}

/* Reads requests; returns false at EOF (cellad closed them, or died). */
static bool requests(int argc, char **argv)
{
	static unsigned char *buf;
	static size_t len, cap;
	if (cap - len < 65536) {
		cap = cap ? 2 * cap : 131072;
		if (cap > 4 * SERVE_MAX_FRAME)
			die("request buffer");
		if (!(buf = realloc(buf, cap)))
			die("realloc");
	}
	ssize_t n = read(0, buf + len, cap - len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0)
		return false;
	len += (size_t)n;
	size_t off = 0;
	for (;;) {
		char *payload;
		size_t plen;
		long used = serve_frame(buf + off, len - off, &payload, &plen);
		if (used < 0) {
			errno = EMSGSIZE;
			die("request frame");
		}
		if (used == 0)
			break;
		start(payload, plen, argc, argv);
		off += (size_t)used;
	}
	memmove(buf, buf + off, len - off);
	len -= off;
	return true;
}

int spawn_serve(int argc, char **argv)
{
	pid_t parent = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		return 1;
	if (fcntl(LIFELINE, F_GETFD) < 0)
		die("descriptor 3 (the lifeline from cellad)");
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &unblocked);
	int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");
	static struct pollfd *fds;
	static int *owner;
	for (;;) {
		int cap = nkids + 2;
		if (!(fds = realloc(fds, sizeof(*fds) * (size_t)cap)) || !(owner = realloc(owner, sizeof(*owner) * (size_t)cap)))
			die("realloc");
		int n = 0;
		fds[n++] = (struct pollfd){ .fd = 0, .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		for (int i = 0; i < nkids; i++)
			if (kids[i].fd >= 0) {
				owner[n] = i;
				fds[n++] = (struct pollfd){ .fd = kids[i].fd, .events = POLLIN };
			}
		if (poll(fds, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		/* Tails first: reaping reorders the children. */
		for (int i = 2; i < n; i++)
			if (fds[i].revents)
				drain(&kids[owner[i]]);
		if (fds[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) > 0)
				;
			reap();
		}
		if (fds[0].revents && !requests(argc, argv))
			return 0;
	}
}
