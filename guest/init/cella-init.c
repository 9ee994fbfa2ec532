/*
 * cella-init: PID 1 of every Cella guest.
 *
 * Runs from the initramfs: loads the virtio modules, mounts the root disk and
 * moves into it, configures the fixed guest address, then serves the control
 * port (cella.ctl) and forwards the app's output to the log port (cella.log).
 * It never exits: PID 1 exiting panics the guest.
 *
 * It also serves terminals (PTY_*) to the host, and listens on SIGNAL_SOCK for
 * the app's requests to the host (activity, suspend). Run as anything but
 * PID 1 (it copies itself to RUN_DIR/cella at boot) it is the client of that
 * socket: `cella activity`, `cella suspend`, `cella -` (lines from stdin).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/route.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

/* <linux/fs.h> clashes with the libc headers; these are its values. */
#ifndef FIFREEZE
#define FIFREEZE _IOWR('X', 119, int)
#define FITHAW _IOWR('X', 120, int)
#endif

/* From <linux/random.h>, which musl does not ship. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)
struct rand_pool_info {
	int entropy_count;
	int buf_size;
};

#define MAX_EXECS 32
#define MAX_ARGS 256
#define MAX_PTYS 8
#define MAX_CLIENTS 8
#define MODULE_DIR "/cella/modules"
#define CTL_NAME "cella.ctl"
#define LOG_NAME "cella.log"
#define RETRY_MAX_MS 50
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* Control-port output waiting for the host: producers pause above LOW, data frames are dropped above DATA_MAX. */
#define OUTQ_LOW (32 * 1024)
#define OUTQ_DATA_MAX (256 * 1024)
#define OUTQ_MAX (512 * 1024)
#define PTY_INPUT_MAX (256 * 1024) /* typed input a terminal has not taken yet; beyond it, input is dropped */
#define PTY_GRACE_S 2              /* from hangup (SIGHUP) to SIGKILL */
#define PTY_BATCH_MS 5             /* after a short read, output gathers this long before the next frame */
#define RUN_DIR "/run/cella"       /* tmpfs: the signal socket and the client binary */
#define SIGNAL_SOCK RUN_DIR "/agent.sock"
#define BUILD_DIR RUN_DIR "/build" /* image builds: context disk, read-only */
#define SIGNAL_LINE_MAX 64
#define MAX_POLL (3 + MAX_CLIENTS + 2 * (MAX_EXECS + 1) + MAX_PTYS)

static void logmsg(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* The serial console is the only place early failures can be seen. */
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0) {
		(void)!write(fd, "cella-init: ", 12);
		(void)!write(fd, buf, n);
		close(fd);
	}
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---------- virtio-serial ports ---------- */

struct port {
	const char *name;
	char path[300];
	int fd;
	int retry_ms;          /* backoff while the host side is not connected */
	struct timespec retry_at;
	uint8_t *in;           /* partial frame being read */
	size_t in_len, in_cap;
};

static struct port ctl = { .name = CTL_NAME, .fd = -1 };
static struct port logp = { .name = LOG_NAME, .fd = -1 };

/* Control-port bytes the port has not taken yet (whole frames, in order). */
static uint8_t outq[OUTQ_MAX + CELLA_HEADER_LEN + CELLA_MAX_OUT];
static size_t outq_len;
static int ctl_lost; /* the host side went away: its terminals are hung up from the main loop */

static int find_port(struct port *p)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d)
		return -1;
	struct dirent *e;
	int found = -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], name[64] = { 0 };
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, name, sizeof name - 1);
		close(fd);
		if (n > 0 && name[n - 1] == '\n')
			name[n - 1] = 0;
		if (strcmp(name, p->name) == 0) {
			snprintf(p->path, sizeof p->path, "/dev/%s", e->d_name);
			found = 0;
			break;
		}
	}
	closedir(d);
	return found;
}

static void now(struct timespec *t) { clock_gettime(CLOCK_MONOTONIC, t); }

static void after_ms(struct timespec *t, long ms)
{
	now(t);
	t->tv_nsec += ms * 1000000;
	t->tv_sec += t->tv_nsec / 1000000000;
	t->tv_nsec %= 1000000000;
}

static long ms_until(const struct timespec *t)
{
	struct timespec n;
	now(&n);
	return (t->tv_sec - n.tv_sec) * 1000 + (t->tv_nsec - n.tv_nsec) / 1000000;
}

static void port_close(struct port *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->in_len = 0;
	if (p == &ctl) {
		outq_len = 0; /* the next connection starts a new byte stream with HELLO */
		ctl_lost = 1;
	}
	p->retry_ms = p->retry_ms ? p->retry_ms * 2 : 1;
	if (p->retry_ms > RETRY_MAX_MS)
		p->retry_ms = RETRY_MAX_MS;
	after_ms(&p->retry_at, p->retry_ms);
}

static void send_frame(struct port *p, uint8_t type, uint8_t stream, uint32_t id, const void *body, uint32_t len);

static void port_open(struct port *p)
{
	if (!p->path[0] && find_port(p) < 0) {
		port_close(p);
		return;
	}
	p->fd = open(p->path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (p->fd < 0) {
		port_close(p);
		return;
	}
	if (p == &ctl) {
		uint8_t v[4];
		put32(v, CELLA_PROTOCOL_VERSION);
		send_frame(p, MSG_HELLO, 0, 0, v, 4);
	}
}

/*
 * Sends a whole frame or none of it. The ports are non-blocking so that a host
 * that stopped reading can never stall PID 1 or the app whose output we carry:
 * the log port drops what it cannot take now; the control port queues it (up
 * to OUTQ_DATA_MAX for output, OUTQ_MAX for the rest) and its producers, execs
 * and terminals, are not read while the queue is above OUTQ_LOW. virtio-serial
 * takes a write of up to 32 KiB whole or not at all, so a frame (at most
 * CELLA_MAX_OUT of body) is never split unless the queue holds it.
 */
static void send_frame(struct port *p, uint8_t type, uint8_t stream, uint32_t id, const void *body, uint32_t len)
{
	uint8_t f[CELLA_HEADER_LEN + CELLA_MAX_OUT];
	if (p->fd < 0 || len > CELLA_MAX_OUT)
		return;
	memset(f, 0, CELLA_HEADER_LEN);
	put32(f, len);
	f[4] = type;
	f[5] = stream;
	put32(f + 8, id);
	if (len)
		memcpy(f + CELLA_HEADER_LEN, body, len);
	size_t n = CELLA_HEADER_LEN + len, off = 0;
	while (off < n && !(p == &ctl && outq_len)) {
		ssize_t w = write(p->fd, f + off, n - off);
		if (w > 0)
			off += w;
		else if (w < 0 && errno == EINTR)
			continue;
		else if (w < 0 && errno != EAGAIN) {
			port_close(p);
			return;
		} else
			break;
	}
	if (off == n)
		return;
	if (off == 0) {
		size_t max = type == MSG_EXEC_OUT || type == MSG_PTY_OUT ? OUTQ_DATA_MAX : OUTQ_MAX;
		if (p != &ctl || outq_len + n > max)
			return; /* dropped whole: the stream stays intact */
	} else if (p != &ctl) {
		port_close(p); /* half a frame went out: the stream is corrupt */
		return;
	}
	memcpy(outq + outq_len, f + off, n - off);
	outq_len += n - off;
}

static void outq_flush(void)
{
	size_t off = 0;
	while (ctl.fd >= 0 && off < outq_len) {
		size_t n = outq_len - off;
		ssize_t w = write(ctl.fd, outq + off, n > 32768 ? 32768 : n);
		if (w > 0)
			off += w;
		else if (w < 0 && errno == EINTR)
			continue;
		else if (w < 0 && errno != EAGAIN)
			port_close(&ctl);
		else
			break;
	}
	if (ctl.fd < 0)
		return;
	memmove(outq, outq + off, outq_len - off);
	outq_len -= off;
}

static void send_text(uint8_t type, uint32_t id, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n >= (int)sizeof buf)
		n = sizeof buf - 1;
	send_frame(&ctl, type, 0, id, buf, n);
}

/* ---------- processes ---------- */

struct spec {
	char *argv[MAX_ARGS + 1];
	char *envp[MAX_ARGS + 3]; /* room for the terminal defaults */
	int argc, envc;
	const char *cwd;
	uid_t uid;
	gid_t gid;
	const uint8_t *stdin_data;
	uint32_t stdin_len;
	unsigned rows, cols;
};

struct proc {
	int used;
	uint32_t id;          /* 0 = the app */
	pid_t pid;
	int out[3];           /* [1] stdout, [2] stderr read ends, -1 when closed */
	int exited;
	int status;
};

static struct proc procs[MAX_EXECS + 1]; /* procs[0] is the app */

/* Parses a spec into a static copy, valid until the next call; argv may be empty only if `empty_ok`. */
static int parse_spec(uint8_t *body, uint32_t len, struct spec *s, int empty_ok)
{
	memset(s, 0, sizeof *s);
	s->cwd = "/";
	/* Copy so terminating NULs never clobber the following record. */
	static uint8_t copy[CELLA_MAX_BODY + MAX_ARGS * 2];
	uint32_t off = 0, w = 0;
	while (off + 5 <= len) {
		uint8_t tag = body[off];
		uint32_t l = get32(body + off + 1);
		off += 5;
		if (l > len - off)
			return -1;
		uint8_t *v = copy + w;
		if (w + l + 1 > sizeof copy)
			return -1;
		memcpy(v, body + off, l);
		v[l] = 0;
		w += l + 1;
		off += l;
		switch (tag) {
		case TAG_ARG:
			if (s->argc >= MAX_ARGS)
				return -1;
			s->argv[s->argc++] = (char *)v;
			break;
		case TAG_ENV:
			if (s->envc >= MAX_ARGS)
				return -1;
			s->envp[s->envc++] = (char *)v;
			break;
		case TAG_CWD:
			s->cwd = (char *)v;
			break;
		case TAG_UID:
			if (l != 4)
				return -1;
			s->uid = get32(v);
			break;
		case TAG_GID:
			if (l != 4)
				return -1;
			s->gid = get32(v);
			break;
		case TAG_STDIN:
			s->stdin_data = v;
			s->stdin_len = l;
			break;
		case TAG_WINSIZE:
			if (l != 4)
				return -1;
			s->rows = v[0] | v[1] << 8;
			s->cols = v[2] | v[3] << 8;
			break;
		default:
			return -1;
		}
	}
	if (off != len || (s->argc == 0 && !empty_ok))
		return -1;
	s->argv[s->argc] = NULL;
	s->envp[s->envc] = NULL;
	return 0;
}

static const char *lookup_path(const struct spec *s, const char *file, char *buf, size_t cap)
{
	if (strchr(file, '/'))
		return file;
	const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (int i = 0; i < s->envc; i++)
		if (strncmp(s->envp[i], "PATH=", 5) == 0)
			path = s->envp[i] + 5;
	while (*path) {
		const char *end = strchrnul(path, ':');
		snprintf(buf, cap, "%.*s/%s", (int)(end - path), path, file);
		if (access(buf, X_OK) == 0)
			return buf;
		path = *end ? end + 1 : end;
	}
	return file;
}

/* In a child with stdio in place: becomes the spec's process, or exits with a reason on stderr. */
static void child_exec(struct spec *s, const char *exe)
{
	if (chdir(s->cwd) < 0) {
		dprintf(2, "cella-init: chdir %s: %s\n", s->cwd, strerror(errno));
		_exit(126);
	}
	if ((s->gid && (setgroups(0, NULL) || setgid(s->gid))) || (s->uid && setuid(s->uid))) {
		dprintf(2, "cella-init: setuid/setgid: %s\n", strerror(errno));
		_exit(126);
	}
	execve(exe, s->argv, s->envp);
	dprintf(2, "cella-init: exec %s: %s\n", s->argv[0], strerror(errno));
	_exit(127);
}

static void child_signals(void)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
}

static int spawn(struct spec *s, struct proc *p)
{
	int out[2], err[2], in[2];
	if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(in, O_CLOEXEC))
		return -errno;
	char pathbuf[4096];
	const char *exe = lookup_path(s, s->argv[0], pathbuf, sizeof pathbuf);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		child_signals();
		setsid();
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		child_exec(s, exe);
	}
	close(out[1]);
	close(err[1]);
	close(in[0]);
	if (s->stdin_len) {
		/* Small inputs only (bounded by the frame size); a blocking write is fine. */
		uint32_t off = 0;
		while (off < s->stdin_len) {
			ssize_t n = write(in[1], s->stdin_data + off, s->stdin_len - off);
			if (n <= 0)
				break;
			off += n;
		}
	}
	close(in[1]);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	p->used = 1;
	p->pid = pid;
	p->out[0] = -1;
	p->out[1] = out[0];
	p->out[2] = err[0];
	p->exited = 0;
	return 0;
}

static void finish_if_done(struct proc *p)
{
	if (!p->used || !p->exited || p->out[1] >= 0 || p->out[2] >= 0)
		return;
	uint8_t st[4];
	put32(st, (uint32_t)p->status);
	if (p == &procs[0])
		send_frame(&ctl, MSG_APP_EXIT, 0, 0, st, 4);
	else
		send_frame(&ctl, MSG_EXEC_EXIT, 0, p->id, st, 4);
	p->used = 0;
}

/* Forwards one chunk of output: a busy producer takes turns with the others. */
static void drain_output(struct proc *p, int stream)
{
	uint8_t buf[CELLA_MAX_OUT];
	ssize_t n = read(p->out[stream], buf, sizeof buf);
	if (n > 0) {
		if (p == &procs[0])
			send_frame(&logp, MSG_LOG, stream, 0, buf, n);
		else
			send_frame(&ctl, MSG_EXEC_OUT, stream, p->id, buf, n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	close(p->out[stream]);
	p->out[stream] = -1;
	finish_if_done(p);
}

/* ---------- terminals ---------- */

struct pty {
	int used;
	uint32_t id;
	pid_t pid;
	int fd;               /* master; -1 once closed */
	int exited;
	int status;
	int silent;           /* its host connection is gone: nothing more is sent */
	int hanging;          /* hung up: SIGKILL at kill_at if still alive */
	int reads_left;       /* after the process exited: reads before the terminal is closed anyway */
	struct timespec quiet_until; /* not read before, so that a program writing line by line is sent in batches */
	pid_t fg;             /* foreground job when hung up */
	struct timespec kill_at;
	uint8_t *in;          /* typed input the terminal has not taken yet */
	size_t in_len;
};

static struct pty ptys[MAX_PTYS];

static struct pty *pty_find(uint32_t id)
{
	for (int i = 0; i < MAX_PTYS; i++)
		if (ptys[i].used && !ptys[i].silent && ptys[i].id == id)
			return &ptys[i];
	return NULL;
}

/* Reports the end once the process is gone and the terminal closed, and frees the slot. */
static void pty_finish(struct pty *t)
{
	if (!t->used || !t->exited || t->fd >= 0)
		return;
	if (!t->silent) {
		uint8_t st[4];
		put32(st, (uint32_t)t->status);
		send_frame(&ctl, MSG_PTY_EXIT, 0, t->id, st, 4);
	}
	free(t->in);
	memset(t, 0, sizeof *t);
	t->fd = -1;
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
		if (!t->silent)
			send_frame(&ctl, MSG_PTY_OUT, 1, t->id, buf, got);
		if (got < sizeof buf)
			after_ms(&t->quiet_until, PTY_BATCH_MS);
		return 1; /* an error after data is seen again on the next read */
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	close(t->fd);
	t->fd = -1;
	pty_finish(t); /* may free t */
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
		if (fg > 0 && fg != t->pid) {
			t->fg = fg;
			kill(-fg, SIGHUP);
			kill(-fg, SIGCONT);
		}
		close(t->fd);
		t->fd = -1;
	}
	t->in_len = 0;
	if (!t->exited) {
		kill(-t->pid, SIGHUP);
		kill(-t->pid, SIGCONT);
		if (!t->hanging) {
			t->hanging = 1;
			now(&t->kill_at);
			t->kill_at.tv_sec += PTY_GRACE_S;
		}
	}
	pty_finish(t);
}

/* Sends the SIGKILLs that are due; returns the milliseconds to the next one, or -1. */
static long pty_timers(void)
{
	long next = -1;
	for (int i = 0; i < MAX_PTYS; i++) {
		struct pty *t = &ptys[i];
		if (!t->used || !t->hanging || t->exited)
			continue;
		long ms = ms_until(&t->kill_at);
		if (ms <= 0) {
			kill(-t->pid, SIGKILL);
			kill(t->pid, SIGKILL);
			if (t->fg > 0)
				kill(-t->fg, SIGKILL);
			t->hanging = 0;
		} else if (next < 0 || ms < next)
			next = ms;
	}
	return next;
}

static void env_default(struct spec *s, const char *kv)
{
	size_t k = strchr(kv, '=') - kv + 1;
	for (int i = 0; i < s->envc; i++)
		if (strncmp(s->envp[i], kv, k) == 0)
			return;
	s->envp[s->envc++] = (char *)kv;
	s->envp[s->envc] = NULL;
}

static void pty_open(uint32_t id, uint8_t *body, uint32_t len)
{
	struct spec s;
	if (id == 0 || parse_spec(body, len, &s, 1) < 0) {
		send_text(MSG_ERROR, id, "malformed terminal request");
		return;
	}
	/* A live session with this id belongs to an earlier host connection (the host never reuses a live id). */
	struct pty *t = pty_find(id);
	if (t) {
		t->silent = 1;
		pty_hangup(t);
	}
	t = NULL;
	for (int i = 0; i < MAX_PTYS && !t; i++)
		if (!ptys[i].used)
			t = &ptys[i];
	if (!t) {
		send_text(MSG_ERROR, id, "too many terminals (%d)", MAX_PTYS);
		return;
	}
	if (s.argc == 0) {
		s.argv[s.argc++] = "/bin/sh";
		s.argv[1] = NULL;
	}
	env_default(&s, "TERM=xterm-256color");
	env_default(&s, "PATH=" DEFAULT_PATH);
	struct winsize ws = { .ws_row = s.rows ? s.rows : 24, .ws_col = s.cols ? s.cols : 80 };
	int unlock = 0, slave = -1;
	int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (m < 0 || ioctl(m, TIOCSPTLCK, &unlock) < 0 || ioctl(m, TIOCSWINSZ, &ws) < 0 ||
	    (slave = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		send_text(MSG_ERROR, id, "openpty: %s", strerror(errno));
		if (m >= 0)
			close(m);
		return;
	}
	char pathbuf[4096];
	const char *exe = lookup_path(&s, s.argv[0], pathbuf, sizeof pathbuf);
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
		child_exec(&s, exe);
	}
	int e = errno;
	close(slave);
	if (pid < 0) {
		close(m);
		send_text(MSG_ERROR, id, "fork: %s", strerror(e));
		return;
	}
	memset(t, 0, sizeof *t);
	t->used = 1;
	t->id = id;
	t->pid = pid;
	t->fd = m;
	send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
	if (s.stdin_len)
		pty_input(t, s.stdin_data, s.stdin_len);
}

/*
 * The process is gone: forwards what it wrote that is still buffered (at the
 * pace the host takes it; the main loop calls again), then closes the
 * terminal, which hangs up whatever it left behind, and reports the exit.
 */
static void pty_drain(struct pty *t)
{
	while (t->used && t->exited && t->fd >= 0 && outq_len < OUTQ_LOW) {
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

static void pty_exited(struct pty *t, int status)
{
	t->exited = 1;
	t->status = status;
	t->hanging = 0;
	t->reads_left = 256;
	pty_drain(t);
	pty_finish(t); /* the terminal may have closed before the exit was seen */
}

/* ---------- guest -> host signals ---------- */

struct client {
	int fd;               /* -1 when free */
	unsigned len;
	unsigned long since;  /* accept order: when all are taken the oldest goes */
	char line[SIGNAL_LINE_MAX];
};

static int lsock = -1;
static struct client clients[MAX_CLIENTS];

/* A tmpfs at RUN_DIR with this binary as RUN_DIR/cella and the socket; after the switch to the root disk. */
static void signals_setup(void)
{
	mkdir("/run", 0755);
	mkdir(RUN_DIR, 0755);
	if (mount("cella", RUN_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
		logmsg("mount %s: %s", RUN_DIR, strerror(errno));
	int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	int out = open(RUN_DIR "/cella", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	while (in >= 0 && out >= 0 && sendfile(out, in, NULL, 1 << 20) > 0)
		;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = SIGNAL_SOCK };
	lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lsock < 0 || bind(lsock, (struct sockaddr *)&a, sizeof a) < 0 || chmod(SIGNAL_SOCK, 0666) < 0 || listen(lsock, 16) < 0) {
		logmsg("%s: %s", SIGNAL_SOCK, strerror(errno));
		if (lsock >= 0)
			close(lsock);
		lsock = -1;
	}
}

/* At most one frame of each kind a second, whatever the guest writes. */
static void signal_host(int suspend)
{
	static struct timespec next[2];
	if (ms_until(&next[suspend]) > 0)
		return;
	now(&next[suspend]);
	next[suspend].tv_sec += 1;
	send_frame(&ctl, suspend ? MSG_SUSPEND_REQUEST : MSG_ACTIVITY, 0, 0, NULL, 0);
}

static void client_close(struct client *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static void client_reply(struct client *c, const char *text)
{
	(void)!send(c->fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void client_line(struct client *c, const char *line, size_t len)
{
	if (len && line[len - 1] == '\r')
		len--;
	if (len == 8 && memcmp(line, "activity", 8) == 0)
		signal_host(0);
	else if (len == 7 && memcmp(line, "suspend", 7) == 0)
		signal_host(1);
	else {
		if (len)
			client_reply(c, "error: unknown request (activity, suspend)\n");
		return;
	}
	client_reply(c, "ok\n");
}

static void client_read(struct client *c)
{
	ssize_t n = read(c->fd, c->line + c->len, sizeof c->line - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (n == 0 && c->len)
			client_line(c, c->line, c->len); /* a last line without newline */
		client_close(c);
		return;
	}
	c->len += n;
	char *start = c->line, *nl;
	while ((nl = memchr(start, '\n', c->line + c->len - start))) {
		client_line(c, start, nl - start);
		start = nl + 1;
	}
	c->len -= start - c->line;
	memmove(c->line, start, c->len);
	if (c->len == sizeof c->line) {
		client_reply(c, "error: line too long\n");
		client_close(c);
	}
}

static void client_accept(void)
{
	static unsigned long accepted;
	for (int k = 0; k < MAX_CLIENTS; k++) {
		int fd = accept4(lsock, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct client *c = &clients[0];
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (clients[i].fd < 0 || (c->fd >= 0 && clients[i].since < c->since))
				c = &clients[i];
		if (c->fd >= 0)
			client_close(c);
		c->fd = fd;
		c->since = ++accepted;
	}
}

/* Not PID 1: the client of SIGNAL_SOCK. Exit status 0 when every request was taken. */
static int client_main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	const char *req = strcmp(base, "activity") == 0 || strcmp(base, "suspend") == 0 ? base : argc == 2 ? argv[1] : NULL;
	if (!req) {
		fprintf(stderr, "usage: cella activity|suspend|-   (- sends the lines of stdin)\n"
				"Tells the Cella host this VM is active, or asks it to suspend this VM.\n");
		return 2;
	}
	struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = SIGNAL_SOCK };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		fprintf(stderr, "cella: %s: %s\n", SIGNAL_SOCK, strerror(errno));
		return 1;
	}
	int stream = strcmp(req, "-") == 0;
	char buf[4096];
	ssize_t n;
	if (stream) {
		while ((n = read(0, buf, sizeof buf)) > 0 && send(fd, buf, n, MSG_NOSIGNAL) == n)
			;
	} else {
		(void)!send(fd, req, strlen(req), MSG_NOSIGNAL);
		(void)!send(fd, "\n", 1, MSG_NOSIGNAL);
	}
	shutdown(fd, SHUT_WR);
	int ok = 1;
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	while (poll(&pf, 1, 5000) > 0 && (n = read(fd, buf, sizeof buf)) > 0) {
		if (memmem(buf, n, "error", 5))
			ok = 0;
		if (stream || !ok)
			(void)!write(stream ? 1 : 2, buf, n);
	}
	return ok ? 0 : 1;
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i <= MAX_EXECS; i++) {
			struct proc *p = &procs[i];
			if (p->used && !p->exited && p->pid == pid) {
				p->exited = 1;
				p->status = status;
				finish_if_done(p);
			}
		}
		for (int i = 0; i < MAX_PTYS; i++)
			if (ptys[i].used && !ptys[i].exited && ptys[i].pid == pid)
				pty_exited(&ptys[i], status);
	}
}

/* ---------- requests ---------- */

static void handle(uint8_t type, uint32_t id, uint8_t *body, uint32_t len)
{
	struct spec s;
	switch (type) {
	case MSG_PING:
		send_frame(&ctl, MSG_PONG, 0, id, NULL, 0);
		return;
	case MSG_START:
	case MSG_EXEC: {
		struct proc *p = NULL;
		if (type == MSG_START) {
			if (procs[0].used) {
				send_text(MSG_ERROR, id, "app already started");
				return;
			}
			p = &procs[0];
		} else {
			for (int i = 1; i <= MAX_EXECS; i++)
				if (!procs[i].used) {
					p = &procs[i];
					break;
				}
			if (!p) {
				send_text(MSG_ERROR, id, "too many processes");
				return;
			}
		}
		if (parse_spec(body, len, &s, 0) < 0) {
			send_text(MSG_ERROR, id, "malformed spec");
			return;
		}
		p->id = id;
		int r = spawn(&s, p);
		if (r < 0)
			send_text(MSG_ERROR, id, "spawn: %s", strerror(-r));
		else
			send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
		return;
	}
	case MSG_SET_CLOCK: {
		if (len != 12) {
			send_text(MSG_ERROR, id, "bad clock");
			return;
		}
		struct timespec t = { .tv_sec = (time_t)((uint64_t)get32(body) | ((uint64_t)get32(body + 4) << 32)),
				      .tv_nsec = get32(body + 8) };
		if (clock_settime(CLOCK_REALTIME, &t) < 0)
			send_text(MSG_ERROR, id, "settime: %s", strerror(errno));
		else
			send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
		return;
	}
	case MSG_RESEED: {
		/* Clones share the snapshot's CRNG state: mix in host entropy and force a reseed. */
		struct {
			struct rand_pool_info info;
			uint8_t data[256];
		} e;
		if (len == 0 || len > sizeof e.data) {
			send_text(MSG_ERROR, id, "bad entropy");
			return;
		}
		e.info.entropy_count = len * 8;
		e.info.buf_size = len;
		memcpy(e.data, body, len);
		int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
		int ok = fd >= 0 && ioctl(fd, RNDADDENTROPY, &e) == 0 && ioctl(fd, RNDRESEEDCRNG) == 0;
		if (fd >= 0)
			close(fd);
		if (ok)
			send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
		else
			send_text(MSG_ERROR, id, "reseed: %s", strerror(errno));
		return;
	}
	case MSG_SYNC: {
		sync();
		/*
		 * A freeze makes ext4 write its journal back into the file system, so
		 * a disk captured now (a build layer, a snapshot) is clean without a
		 * journal replay: the host can read it (debugfs) as the guest left it.
		 */
		int rfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (rfd >= 0) {
			if (ioctl(rfd, FIFREEZE, 0) == 0)
				ioctl(rfd, FITHAW, 0);
			close(rfd);
		}
		send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
		return;
	}
	case MSG_IDENTIFY:
		if (sethostname((char *)body, len > 64 ? 64 : len) < 0)
			send_text(MSG_ERROR, id, "sethostname: %s", strerror(errno));
		else
			send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
		return;
	case MSG_SIGNAL: {
		if (len != 4) {
			send_text(MSG_ERROR, id, "bad signal");
			return;
		}
		int sig = (int)get32(body);
		for (int i = 0; i <= MAX_EXECS; i++) {
			struct proc *p = &procs[i];
			if (p->used && !p->exited && (i == 0 ? id == 0 : p->id == id)) {
				kill(-p->pid, sig);
				send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
				return;
			}
		}
		send_text(MSG_ERROR, id, "no such process");
		return;
	}
	case MSG_PTY_OPEN:
		pty_open(id, body, len);
		return;
	case MSG_PTY_IN: {
		struct pty *t = pty_find(id);
		if (t)
			pty_input(t, body, len);
		return;
	}
	case MSG_PTY_RESIZE: {
		/* The kernel sends SIGWINCH to the terminal's foreground job when the size changes. */
		struct pty *t = pty_find(id);
		if (t && t->fd >= 0 && len == 4) {
			struct winsize ws = { .ws_row = body[0] | body[1] << 8, .ws_col = body[2] | body[3] << 8 };
			ioctl(t->fd, TIOCSWINSZ, &ws);
		}
		return;
	}
	case MSG_PTY_CLOSE:
		for (int i = 0; i < MAX_PTYS; i++)
			if (ptys[i].used && !ptys[i].silent && (id == 0 || ptys[i].id == id))
				pty_hangup(&ptys[i]);
		return;
	default:
		send_text(MSG_ERROR, id, "unknown message %u", type);
	}
}

static void read_ctl(void)
{
	for (;;) {
		if (ctl.in_cap - ctl.in_len < 65536) {
			size_t cap = ctl.in_cap ? ctl.in_cap * 2 : 131072;
			uint8_t *n = realloc(ctl.in, cap);
			if (!n) {
				port_close(&ctl);
				return;
			}
			ctl.in = n;
			ctl.in_cap = cap;
		}
		ssize_t n = read(ctl.fd, ctl.in + ctl.in_len, ctl.in_cap - ctl.in_len);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* EOF: the host side is not connected (or just restored). Retry later. */
			port_close(&ctl);
			return;
		}
		ctl.retry_ms = 0;
		ctl.in_len += n;
	}
	size_t off = 0;
	while (ctl.in_len - off >= CELLA_HEADER_LEN) {
		uint32_t len = get32(ctl.in + off);
		if (len > CELLA_MAX_BODY) {
			logmsg("oversized frame, resetting control port");
			port_close(&ctl);
			return;
		}
		if (ctl.in_len - off < CELLA_HEADER_LEN + len)
			break;
		uint8_t type = ctl.in[off + 4];
		uint32_t id = get32(ctl.in + off + 8);
		handle(type, id, ctl.in + off + CELLA_HEADER_LEN, len);
		if (ctl.fd < 0)
			return;
		off += CELLA_HEADER_LEN + len;
	}
	memmove(ctl.in, ctl.in + off, ctl.in_len - off);
	ctl.in_len -= off;
}

/* ---------- boot ---------- */

static const char *cmdline_get(const char *cmdline, const char *key, char *out, size_t cap, const char *def)
{
	size_t kl = strlen(key);
	const char *p = cmdline;
	while ((p = strstr(p, key))) {
		if ((p == cmdline || p[-1] == ' ') && p[kl] == '=') {
			p += kl + 1;
			size_t n = strcspn(p, " \n");
			if (n >= cap)
				n = cap - 1;
			memcpy(out, p, n);
			out[n] = 0;
			return out;
		}
		p += kl;
	}
	snprintf(out, cap, "%s", def);
	return out;
}

static void load_modules(void)
{
	/* Dependencies are resolved by retrying until a pass makes no progress. */
	char names[32][300];
	int n = 0, loaded[32] = { 0 };
	DIR *d = opendir(MODULE_DIR);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && n < 32)
		if (strstr(e->d_name, ".ko"))
			snprintf(names[n++], sizeof names[0], "%s/%s", MODULE_DIR, e->d_name);
	closedir(d);
	for (int progress = 1; progress;) {
		progress = 0;
		for (int i = 0; i < n; i++) {
			if (loaded[i])
				continue;
			int fd = open(names[i], O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			long r = syscall(SYS_finit_module, fd, "", 0);
			close(fd);
			if (r == 0 || errno == EEXIST) {
				loaded[i] = progress = 1;
				unlink(names[i]);
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (!loaded[i])
			logmsg("module %s failed to load", names[i]);
}

static int wait_for(const char *path, int ms)
{
	struct stat st;
	for (int i = 0; i < ms; i++) {
		if (stat(path, &st) == 0)
			return 0;
		usleep(1000);
	}
	return -1;
}

static int mount_root(const char *dev)
{
	mkdir("/newroot", 0755);
	if (wait_for(dev, 5000) < 0) {
		logmsg("root device %s did not appear", dev);
		return -1;
	}
	if (mount(dev, "/newroot", "ext4", MS_NOATIME, "") < 0) {
		logmsg("mount %s: %s", dev, strerror(errno));
		return -1;
	}
	const char *moves[] = { "/dev", "/proc", "/sys" };
	for (int i = 0; i < 3; i++) {
		char target[64];
		snprintf(target, sizeof target, "/newroot%s", moves[i]);
		mkdir(target, 0755);
		if (mount(moves[i], target, NULL, MS_MOVE, NULL) < 0)
			logmsg("move %s: %s", moves[i], strerror(errno));
	}
	if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		logmsg("switch root: %s", strerror(errno));
		return -1;
	}
	mkdir("/dev/pts", 0755);
	mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
	mkdir("/dev/shm", 01777);
	mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	return 0;
}

/*
 * Image builds attach a second, read-only disk: the build context and the
 * host's static busybox, so COPY and user lookups never depend on the tools
 * of the image being built.
 */
static void mount_build(const char *dev)
{
	mkdir(BUILD_DIR, 0755);
	if (wait_for(dev, 5000) < 0 || mount(dev, BUILD_DIR, "ext4", MS_RDONLY | MS_NOATIME | MS_NODEV | MS_NOSUID, "") < 0)
		logmsg("build disk %s: %s", dev, strerror(errno));
}

static int parse_cidr(const char *s, struct in_addr *a, int *prefix)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%s", s);
	char *slash = strchr(buf, '/');
	*prefix = 32;
	if (slash) {
		*slash = 0;
		*prefix = atoi(slash + 1);
	}
	return inet_pton(AF_INET, buf, a) == 1 && *prefix >= 0 && *prefix <= 32 ? 0 : -1;
}

static void set_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_addr = a;
}

static void if_up(int sock, const char *name)
{
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
			logmsg("up %s: %s", name, strerror(errno));
	}
}

static void setup_network(const char *cmdline)
{
	char ip[32], gw[32];
	cmdline_get(cmdline, "cella.ip", ip, sizeof ip, "172.29.0.2/24");
	cmdline_get(cmdline, "cella.gw", gw, sizeof gw, "172.29.0.1");
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return;
	if_up(sock, "lo");
	struct in_addr addr, mask, gwa;
	int prefix;
	if (parse_cidr(ip, &addr, &prefix) < 0 || inet_pton(AF_INET, gw, &gwa) != 1) {
		logmsg("bad network parameters %s via %s", ip, gw);
		close(sock);
		return;
	}
	mask.s_addr = prefix ? htonl(~0u << (32 - prefix)) : 0;
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, IFNAMSIZ, "eth0");
	set_sin(&ifr.ifr_addr, addr);
	if (ioctl(sock, SIOCSIFADDR, &ifr) < 0)
		logmsg("eth0 address: %s", strerror(errno));
	set_sin(&ifr.ifr_netmask, mask);
	if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0)
		logmsg("eth0 netmask: %s", strerror(errno));
	if_up(sock, "eth0");
	struct rtentry rt = { 0 };
	set_sin(&rt.rt_dst, (struct in_addr){ 0 });
	set_sin(&rt.rt_genmask, (struct in_addr){ 0 });
	set_sin(&rt.rt_gateway, gwa);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	if (ioctl(sock, SIOCADDRT, &rt) < 0)
		logmsg("default route: %s", strerror(errno));
	close(sock);
}

int main(int argc, char **argv)
{
	if (getpid() != 1)
		return client_main(argc, argv);
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
	mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
	mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");

	char cmdline[4096] = { 0 };
	int cfd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (cfd >= 0) {
		(void)!read(cfd, cmdline, sizeof cmdline - 1);
		close(cfd);
	}
	load_modules();
	char probe[8];
	if (strcmp(cmdline_get(cmdline, "cella.probe", probe, sizeof probe, "0"), "1") == 0) {
		/* Accelerator probe: reaching userspace is the proof; the host reads this line. */
		logmsg("probe ok");
		reboot(RB_POWER_OFF);
	}
	char root[64];
	cmdline_get(cmdline, "cella.root", root, sizeof root, "/dev/vda");
	if (mount_root(root) < 0) {
		logmsg("cannot mount the root disk; powering off");
		reboot(RB_POWER_OFF);
	}
	setup_network(cmdline);
	sethostname("cella", 5);
	signals_setup();
	char build[64];
	if (*cmdline_get(cmdline, "cella.build", build, sizeof build, ""))
		mount_build(build);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGPIPE);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigdelset(&mask, SIGPIPE);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	for (int i = 0; i <= MAX_EXECS; i++)
		procs[i].out[1] = procs[i].out[2] = -1;
	for (int i = 0; i < MAX_PTYS; i++)
		ptys[i].fd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		clients[i].fd = -1;
	port_open(&ctl);
	port_open(&logp);

	enum { K_PIPE, K_PTY, K_LISTEN, K_CLIENT };
	for (unsigned turn = 0;; turn++) {
		if (ctl_lost) {
			/* The host that opened the terminals is gone; nobody else knows their ids. */
			ctl_lost = 0;
			for (int i = 0; i < MAX_PTYS; i++)
				if (ptys[i].used) {
					ptys[i].silent = 1;
					pty_hangup(&ptys[i]);
				}
		}
		if (outq_len)
			outq_flush();
		for (int i = 0; i < MAX_PTYS; i++)
			pty_drain(&ptys[i]);
		/* Output for the control port is read only while the host keeps up: backpressure, not loss. */
		int produce = outq_len < OUTQ_LOW;
		struct pollfd pf[MAX_POLL];
		struct {
			uint8_t kind, idx, stream;
		} what[MAX_POLL];
		int n = 0;
		pf[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = ctl.fd, .events = POLLIN | (outq_len ? POLLOUT : 0) };
#define ADD(fd_, ev_, kind_, idx_, stream_)                                     \
	do {                                                                    \
		what[n].kind = kind_;                                           \
		what[n].idx = idx_;                                             \
		what[n].stream = stream_;                                       \
		pf[n++] = (struct pollfd){ .fd = fd_, .events = ev_ };          \
	} while (0)
		if (lsock >= 0)
			ADD(lsock, POLLIN, K_LISTEN, 0, 0);
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (clients[i].fd >= 0)
				ADD(clients[i].fd, POLLIN, K_CLIENT, i, 0);
		for (int i = 0; i <= MAX_EXECS; i++)
			for (int s = 1; s <= 2; s++)
				if (procs[i].used && procs[i].out[s] >= 0 && (i == 0 || produce))
					ADD(procs[i].out[s], POLLIN, K_PIPE, i, s);
		long timeout = pty_timers();
		for (int i = 0; i < MAX_PTYS; i++) {
			struct pty *t = &ptys[i];
			if (!t->used || t->exited || t->fd < 0)
				continue;
			long quiet = ms_until(&t->quiet_until);
			if (produce && quiet > 0 && (timeout < 0 || quiet < timeout))
				timeout = quiet;
			short ev = (produce && quiet <= 0 ? POLLIN : 0) | (t->in_len ? POLLOUT : 0);
			if (ev)
				ADD(t->fd, ev, K_PTY, i, 0);
		}
		struct port *ports[2] = { &ctl, &logp };
		for (int i = 0; i < 2; i++)
			if (ports[i]->fd < 0) {
				long ms = ms_until(&ports[i]->retry_at);
				if (ms < 0)
					ms = 0;
				if (timeout < 0 || ms < timeout)
					timeout = ms;
			}
		int r = poll(pf, n, (int)timeout);
		if (r < 0 && errno != EINTR)
			continue;
		for (int i = 0; i < 2; i++)
			if (ports[i]->fd < 0 && ms_until(&ports[i]->retry_at) <= 0)
				port_open(ports[i]);
		if (r <= 0)
			continue;
		if (pf[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si)
				;
			reap();
		}
		if (ctl.fd >= 0 && pf[1].fd == ctl.fd && (pf[1].revents & POLLOUT))
			outq_flush();
		if (ctl.fd >= 0 && pf[1].fd == ctl.fd && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
			read_ctl();
		/* The rest take turns, so that a busy one cannot starve the others. */
		for (int k = 2; k < n; k++) {
			int i = 2 + (k - 2 + turn) % (n - 2);
			if (!pf[i].revents)
				continue;
			switch (what[i].kind) {
			case K_LISTEN:
				client_accept();
				break;
			case K_CLIENT:
				if (clients[what[i].idx].fd == pf[i].fd)
					client_read(&clients[what[i].idx]);
				break;
			case K_PIPE: {
				struct proc *p = &procs[what[i].idx];
				if (p->used && p->out[what[i].stream] == pf[i].fd && (p == &procs[0] || outq_len < OUTQ_LOW))
					drain_output(p, what[i].stream);
				break;
			}
			case K_PTY: {
				struct pty *t = &ptys[what[i].idx];
				if (!t->used || t->fd != pf[i].fd)
					break;
				if (pf[i].revents & POLLOUT)
					pty_flush_input(t);
				if (!(pf[i].events & POLLIN) && (pf[i].revents & (POLLHUP | POLLERR)))
					t->in_len = 0; /* nothing reads the terminal any more */
				else if ((pf[i].revents & (POLLIN | POLLHUP | POLLERR)) && outq_len < OUTQ_LOW)
					pty_read(t);
				break;
			}
			}
		}
	}
}
