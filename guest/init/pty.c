/* The terminal table: open, input, resize, output batching, hangup with a grace period, exit, re-attaching. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "loop.h"
#include "port.h"
#include "proc.h"
#include "protocol.h"
#include "pty.h"
#include "util.h"

#define PTY_INPUT_MAX (256 * 1024) /* typed input a terminal has not taken yet; beyond it, input is dropped */
#define PTY_GRACE_S 2              /* from hangup (SIGHUP) to SIGKILL */
#define PTY_BATCH_MS 5             /* after a short read, output gathers this long before the next frame */

struct pty {
	int used;
	struct proc_rec r;
	int fd;                      /* master; -1 once closed */
	int hanging;                 /* hung up: SIGKILL at kill_at if still alive */
	int reads_left;              /* after the process exited: reads before the terminal is closed anyway */
	struct timespec quiet_until; /* not read before, so that a program writing line by line is sent in batches */
	pid_t fg;                    /* foreground job when hung up */
	struct timespec kill_at;
	uint8_t *in; /* typed input the terminal has not taken yet */
	size_t in_len;
};

static struct pty ptys[MAX_PTYS];

static const char *const pty_defaults[] = { "TERM=xterm-256color", "PATH=" DEFAULT_PATH, NULL };

/* The live session with this id (not ended). */
static struct pty *pty_find(uint32_t id)
{
	for (int i = 0; i < MAX_PTYS; i++)
		if (ptys[i].used && !ptys[i].r.done && ptys[i].r.id == id)
			return &ptys[i];
	return NULL;
}

static void pty_free(struct pty *t)
{
	rec_free(&t->r);
	free(t->in);
	memset(t, 0, sizeof *t);
	t->fd = -1;
}

/* Reports the end once the process is gone and the terminal closed; the slot is kept for EXEC_LIST and ATTACH. */
static void pty_finish(struct pty *t)
{
	if (!t->used || t->r.done || !t->r.exited || t->fd >= 0)
		return;
	t->r.done = 1;
	now(&t->r.done_at);
	free(t->in);
	t->in = NULL;
	t->in_len = 0;
	if (t->r.attached)
		ctl_status(MSG_PTY_EXIT, t->r.id, t->r.status);
}

/*
 * Forwards what the terminal holds, up to one frame (a terminal read returns
 * at most a few KiB, often a line); at EOF (EIO: nothing holds the other side
 * any more) closes the terminal.
 */
static int pty_read(struct pty *t)
{
	uint8_t buf[CELLA_MAX_OUT];
	size_t got = 0;
	ssize_t n = 0;
	while (got < sizeof buf && (n = read(t->fd, buf + got, sizeof buf - got)) > 0)
		got += n;
	if (got) {
		if (t->r.attached)
			ctl_send(MSG_PTY_OUT, 1, t->r.id, buf, got);
		if (got < sizeof buf)
			after_ms(&t->quiet_until, PTY_BATCH_MS);
		return 1; /* an error after data is seen again on the next read */
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	close(t->fd);
	t->fd = -1;
	pty_finish(t);
	return -1;
}

static void pty_flush_input(struct pty *t)
{
	size_t off = 0;
	while (off < t->in_len) {
		ssize_t n = write(t->fd, t->in + off, t->in_len - off);
		if (n > 0)
			off += n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && errno == EAGAIN)
			break;
		else
			off = t->in_len; /* the terminal is gone */
	}
	memmove(t->in, t->in + off, t->in_len - off);
	t->in_len -= off;
}

static void pty_input(struct pty *t, const uint8_t *data, size_t len)
{
	if (t->fd < 0)
		return;
	if (len > PTY_INPUT_MAX - t->in_len)
		len = PTY_INPUT_MAX - t->in_len; /* like typing into a full terminal: the rest is lost */
	if (!len || (!t->in && !(t->in = malloc(PTY_INPUT_MAX))))
		return;
	memcpy(t->in + t->in_len, data, len);
	t->in_len += len;
	pty_flush_input(t);
}

/* A modem hangup: SIGHUP to the session and its foreground job, the terminal closes; SIGKILL follows if they linger. */
static void pty_hangup(struct pty *t)
{
	if (t->fd >= 0) {
		pid_t fg = tcgetpgrp(t->fd);
		if (fg > 0 && fg != t->r.pid) {
			t->fg = fg;
			kill(-fg, SIGHUP);
			kill(-fg, SIGCONT);
		}
		close(t->fd);
		t->fd = -1;
	}
	t->in_len = 0;
	if (!t->r.exited) {
		kill(-t->r.pid, SIGHUP);
		kill(-t->r.pid, SIGCONT);
		if (!t->hanging) {
			t->hanging = 1;
			now(&t->kill_at);
			t->kill_at.tv_sec += PTY_GRACE_S;
		}
	}
	pty_finish(t);
}

/* Sends the SIGKILLs that are due and runs the detached and ended sessions' timers. */
static void pty_timers(void)
{
	for (int i = 0; i < MAX_PTYS; i++) {
		struct pty *t = &ptys[i];
		if (!t->used)
			continue;
		if (rec_retention_due(&t->r)) {
			pty_free(t);
			continue;
		}
		if (rec_orphan_due(&t->r))
			pty_hangup(t);
		if (!t->hanging || t->r.exited)
			continue;
		long ms = ms_until(&t->kill_at);
		if (ms <= 0) {
			kill(-t->r.pid, SIGKILL);
			kill(t->r.pid, SIGKILL);
			if (t->fg > 0)
				kill(-t->fg, SIGKILL);
			t->hanging = 0;
		} else
			loop_wake_within(ms);
	}
}

/* A free slot, else the one that ended longest ago. */
static struct pty *pty_slot(void)
{
	struct pty *old = NULL;
	for (int i = 0; i < MAX_PTYS; i++) {
		struct pty *t = &ptys[i];
		if (!t->used)
			return t;
		if (rec_ended_before(&t->r, old ? &old->r : NULL))
			old = t;
	}
	if (old)
		pty_free(old);
	return old;
}

void pty_open(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct spec s;
	if (id == 0 || parse_spec(body, len, &s, 1) < 0) {
		ctl_errno(id, EINVAL, "malformed terminal request");
		return;
	}
	if (proc_claim_id(id) < 0)
		return;
	struct pty *t = pty_slot();
	if (!t) {
		ctl_errno(id, EAGAIN, "too many terminals (%d)", MAX_PTYS);
		return;
	}
	if (s.argc == 0) {
		s.argv[s.argc++] = "/bin/sh";
		s.argv[1] = NULL;
	}
	proc_groups(&s);
	char **envp = proc_env(&s, pty_defaults);
	struct winsize ws = { .ws_row = s.rows ? s.rows : 24, .ws_col = s.cols ? s.cols : 80 };
	int unlock = 0, slave = -1;
	int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (m < 0 || ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCSWINSZ, &ws) < 0 ||
	    (slave = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		ctl_errno(id, errno, "openpty: %s", strerror(errno));
		if (m >= 0)
			close(m);
		return;
	}
	char pathbuf[4096];
	const char *exe = lookup_path(envp, s.argv[0], pathbuf, sizeof pathbuf);
	pid_t pid = fork();
	if (pid == 0) {
		/* Its own session with the terminal as controlling tty: job control works. */
		child_signals();
		setsid();
		ioctl(slave, TIOCSCTTY, 0);
		dup2(slave, 0);
		dup2(slave, 1);
		dup2(slave, 2);
		if (s.uid)
			(void)!fchown(0, s.uid, -1);
		child_exec(&s, exe, envp);
	}
	int e = errno;
	close(slave);
	if (pid < 0) {
		close(m);
		ctl_errno(id, e, "fork: %s", strerror(e));
		return;
	}
	memset(t, 0, sizeof *t);
	t->used = 1;
	t->r.id = id;
	t->r.pid = pid;
	t->r.attached = 1;
	t->fd = m;
	rec_keep(&t->r, body, len);
	uint8_t p[4];
	put32(p, pid);
	ctl_reply(id, p, 4);
	if (s.stdin_len)
		pty_input(t, s.stdin_data, s.stdin_len);
}

void pty_in(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct pty *t = pty_find(id);
	if (t)
		pty_input(t, body, len);
}

void pty_resize(uint32_t id, const uint8_t *body, uint32_t len)
{
	/* The kernel sends SIGWINCH to the terminal's foreground job when the size changes. */
	struct pty *t = pty_find(id);
	struct winsize ws = { 0 };
	if (t && t->fd >= 0 && decode_winsize(body, len, &ws.ws_row, &ws.ws_col) == 0)
		ioctl(t->fd, TIOCSWINSZ, &ws);
}

void pty_close(uint32_t id, const uint8_t *body, uint32_t len)
{
	for (int i = 0; i < MAX_PTYS; i++)
		if (ptys[i].used && !ptys[i].r.done && (id == 0 || ptys[i].r.id == id))
			pty_hangup(&ptys[i]);
}

void pty_detach_all(void)
{
	for (int i = 0; i < MAX_PTYS; i++) {
		ptys[i].r.attached = 0;
		ptys[i].r.orphan_armed = 0;
	}
}

int pty_attach(uint32_t id)
{
	for (int i = 0; i < MAX_PTYS; i++) {
		struct pty *t = &ptys[i];
		if (!t->used || t->r.id != id)
			continue;
		t->r.attached = 1;
		t->r.orphan_armed = 0;
		ctl_ok(id);
		if (t->r.done)
			ctl_status(MSG_PTY_EXIT, id, t->r.status);
		return 0;
	}
	return -1;
}

int pty_signal(uint32_t id, int sig)
{
	struct pty *t = pty_find(id);
	if (!t || t->r.exited)
		return -1;
	kill(-t->r.pid, sig);
	return 0;
}

int pty_id_live(uint32_t id)
{
	return pty_find(id) != NULL;
}

void pty_forget(uint32_t id)
{
	for (int i = 0; i < MAX_PTYS; i++)
		if (ptys[i].used && ptys[i].r.done && ptys[i].r.id == id)
			pty_free(&ptys[i]);
}

const struct proc_rec *pty_rec(int idx)
{
	return idx >= 0 && idx < MAX_PTYS && ptys[idx].used ? &ptys[idx].r : NULL;
}

/*
 * The process is gone: forwards what it wrote that is still buffered (at the
 * pace the host takes it; the main loop calls again), then closes the
 * terminal, which hangs up whatever it left behind, and reports the exit.
 * A detached session keeps it all until a host attaches or gives it up.
 */
static void pty_drain(struct pty *t)
{
	while (t->used && t->r.attached && t->r.exited && t->fd >= 0 && ctl_keeps_up()) {
		int r = pty_read(t);
		if (r < 0)
			return; /* closed and finished */
		if (r == 0 || --t->reads_left <= 0) {
			close(t->fd);
			t->fd = -1;
			pty_finish(t);
		}
	}
}

void pty_drain_all(void)
{
	for (int i = 0; i < MAX_PTYS; i++)
		pty_drain(&ptys[i]);
}

static void pty_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	struct pty *t = &ptys[idx];
	if (!t->used || t->fd != pf->fd)
		return;
	if (pf->revents & POLLOUT)
		pty_flush_input(t);
	if (!(pf->events & POLLIN) && (pf->revents & (POLLHUP | POLLERR)))
		t->in_len = 0; /* nothing reads the terminal any more */
	else if ((pf->revents & (POLLIN | POLLHUP | POLLERR)) && ctl_keeps_up())
		pty_read(t);
}

void pty_poll(int produce)
{
	pty_timers();
	for (int i = 0; i < MAX_PTYS; i++) {
		struct pty *t = &ptys[i];
		if (!t->used || t->r.exited || t->fd < 0)
			continue;
		int read = produce && t->r.attached;
		long quiet = ms_until(&t->quiet_until);
		if (read && quiet > 0)
			loop_wake_within(quiet);
		short ev = (read && quiet <= 0 ? POLLIN : 0) | (t->in_len ? POLLOUT : 0);
		if (ev)
			loop_watch(t->fd, ev, pty_ready, i, 0);
	}
}

void pty_reaped(pid_t pid, int status)
{
	for (int i = 0; i < MAX_PTYS; i++) {
		struct pty *t = &ptys[i];
		if (t->used && !t->r.exited && t->r.pid == pid) {
			t->r.exited = 1;
			t->r.status = status;
			t->hanging = 0;
			t->reads_left = 256;
			pty_drain(t);
			pty_finish(t); /* the terminal may have closed before the exit was seen */
		}
	}
}
