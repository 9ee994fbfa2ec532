/* The process table: spawning from a spec, forwarding output, reporting exits, signals. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "port.h"
#include "proc.h"
#include "protocol.h"

struct proc {
	int used;
	uint32_t id; /* 0 = the app */
	pid_t pid;
	int out[3]; /* [1] stdout, [2] stderr read ends, -1 when closed */
	int exited;
	int status;
};

static struct proc procs[MAX_EXECS + 1]; /* procs[0] is the app */

const char *lookup_path(const struct spec *s, const char *file, char *buf, size_t cap)
{
	if (strchr(file, '/'))
		return file;
	const char *path = DEFAULT_PATH;
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

void child_exec(const struct spec *s, const char *exe)
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

void child_signals(void)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
}

static int spawn(const struct spec *s, struct proc *p)
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

static void start(struct proc *p, uint32_t id, const uint8_t *body, uint32_t len)
{
	struct spec s;
	if (parse_spec(body, len, &s, 0) < 0) {
		ctl_error(id, "malformed spec");
		return;
	}
	p->id = id;
	int r = spawn(&s, p);
	if (r < 0)
		ctl_error(id, "spawn: %s", strerror(-r));
	else
		ctl_ok(id);
}

void proc_start(uint32_t id, const uint8_t *body, uint32_t len)
{
	if (procs[0].used) {
		ctl_error(id, "app already started");
		return;
	}
	start(&procs[0], id, body, len);
}

void proc_exec(uint32_t id, const uint8_t *body, uint32_t len)
{
	for (int i = 1; i <= MAX_EXECS; i++)
		if (!procs[i].used) {
			start(&procs[i], id, body, len);
			return;
		}
	ctl_error(id, "too many processes");
}

void proc_signal(uint32_t id, const uint8_t *body, uint32_t len)
{
	uint32_t sig;
	if (decode_u32(body, len, &sig) < 0) {
		ctl_error(id, "bad signal");
		return;
	}
	for (int i = 0; i <= MAX_EXECS; i++) {
		struct proc *p = &procs[i];
		if (p->used && !p->exited && (i == 0 ? id == 0 : p->id == id)) {
			kill(-p->pid, (int)sig);
			ctl_ok(id);
			return;
		}
	}
	ctl_error(id, "no such process");
}

static void finish_if_done(struct proc *p)
{
	if (!p->used || !p->exited || p->out[1] >= 0 || p->out[2] >= 0)
		return;
	if (p == &procs[0])
		ctl_status(MSG_APP_EXIT, 0, p->status);
	else
		ctl_status(MSG_EXEC_EXIT, p->id, p->status);
	p->used = 0;
}

/* Forwards one chunk of output: a busy producer takes turns with the others. */
static void drain_output(struct proc *p, int stream)
{
	uint8_t buf[CELLA_MAX_OUT];
	ssize_t n = read(p->out[stream], buf, sizeof buf);
	if (n > 0) {
		if (p == &procs[0])
			log_send(stream, buf, n);
		else
			ctl_send(MSG_EXEC_OUT, stream, p->id, buf, n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	close(p->out[stream]);
	p->out[stream] = -1;
	finish_if_done(p);
}

static void proc_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	struct proc *p = &procs[idx];
	if (p->used && p->out[stream] == pf->fd && (p == &procs[0] || ctl_keeps_up()))
		drain_output(p, stream);
}

void proc_poll(int produce)
{
	for (int i = 0; i <= MAX_EXECS; i++)
		for (int s = 1; s <= 2; s++)
			if (procs[i].used && procs[i].out[s] >= 0 && (i == 0 || produce))
				loop_watch(procs[i].out[s], POLLIN, proc_ready, i, s);
}

void proc_reaped(pid_t pid, int status)
{
	for (int i = 0; i <= MAX_EXECS; i++) {
		struct proc *p = &procs[i];
		if (p->used && !p->exited && p->pid == pid) {
			p->exited = 1;
			p->status = status;
			finish_if_done(p);
		}
	}
}
