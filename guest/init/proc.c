/* The process table: spawning from a spec, stdin, forwarding output, exits, signals, listing and re-attaching. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "loop.h"
#include "port.h"
#include "proc.h"
#include "protocol.h"
#include "pty.h"
#include "system.h"
#include "users.h"
#include "util.h"

#define STDIN_WINDOW (256 * 1024)  /* EXEC_IN bytes held per process: the host keeps no more than this in flight */
#define STDIN_HELD_MAX (16u << 20) /* stdin bytes held for all processes together (TAG_STDIN and EXEC_IN) */
#define CHILD_NOFILE 1024          /* the soft file limit children get back (PID 1 raises its own) */

struct proc {
	int used;
	struct proc_rec r;
	int out[3]; /* [1] stdout, [2] stderr read ends, -1 when closed */
	int in;     /* stdin's write end, -1 once closed */
	uint8_t *inbuf;
	uint32_t in_len, in_cap;
	int in_pipe;  /* EXEC_IN may add to stdin (and is acknowledged) */
	int in_close; /* close stdin once inbuf is written */
	int discard;  /* orphaned: output is read and dropped */
};

static struct proc procs[MAX_EXECS + 1]; /* procs[0] is the app */
static uint32_t stdin_held;              /* bytes in every inbuf */

/* The EXEC_LIST under way: entries go out as the host keeps up. */
static struct {
	int active;
	uint32_t id;
	int next; /* procs[1..MAX_EXECS], then the terminals */
} listing;

/* ---------- what processes and terminals share ---------- */

static int env_key_eq(const char *a, const char *b)
{
	size_t ka = strcspn(a, "="), kb = strcspn(b, "=");
	return ka == kb && memcmp(a, b, ka) == 0;
}

static int env_has(char *const *env, int n, const char *kv)
{
	for (int i = 0; i < n; i++)
		if (env_key_eq(env[i], kv))
			return 1;
	return 0;
}

char **proc_env(const struct spec *s, const char *const *defaults)
{
	static char *env[MAX_ENV + 1];
	int n = 0, ng;
	char *const *g = env_global(&ng);
	for (int i = 0; i < ng && n < MAX_ENV; i++)
		if (!env_has(s->envp, s->envc, g[i]))
			env[n++] = g[i];
	for (int i = 0; i < s->envc && n < MAX_ENV; i++)
		env[n++] = s->envp[i];
	for (int i = 0; defaults && defaults[i] && n < MAX_ENV; i++)
		if (!env_has(env, n, defaults[i]))
			env[n++] = (char *)defaults[i];
	env[n] = NULL;
	return env;
}

void proc_groups(struct spec *s)
{
	if (s->uid == 0 || (s->groups_given && s->gid_given))
		return;
	gid_t gid = s->gid, groups[MAX_GROUPS];
	int n = user_groups(s->uid, s->gid_given, &gid, groups, MAX_GROUPS);
	if (n < 0)
		return; /* not in /etc/passwd: the spec's ids alone, no supplementary groups */
	s->gid = gid;
	s->gid_given = 1;
	if (!s->groups_given) {
		memcpy(s->groups, groups, n * sizeof *groups);
		s->ngroups = n;
		s->groups_given = 1;
	}
}

const char *lookup_path(char *const *envp, const char *file, char *buf, size_t cap)
{
	if (strchr(file, '/'))
		return file;
	const char *path = DEFAULT_PATH;
	for (int i = 0; envp[i]; i++)
		if (strncmp(envp[i], "PATH=", 5) == 0)
			path = envp[i] + 5;
	while (*path) {
		const char *end = strchrnul(path, ':');
		snprintf(buf, cap, "%.*s/%s", (int)(end - path), path, file);
		if (access(buf, X_OK) == 0)
			return buf;
		path = *end ? end + 1 : end;
	}
	return file;
}

void child_exec(const struct spec *s, const char *exe, char *const *envp)
{
	if (chdir(s->cwd) < 0) {
		dprintf(2, "cella-init: chdir %s: %s\n", s->cwd, strerror(errno));
		_exit(126);
	}
	int drop = s->uid || s->gid || s->groups_given;
	if ((drop && setgroups(s->ngroups, s->groups) < 0) || (s->gid && setgid(s->gid) < 0) || (s->uid && setuid(s->uid) < 0)) {
		dprintf(2, "cella-init: setuid/setgid: %s\n", strerror(errno));
		_exit(126);
	}
	execve(exe, s->argv, envp);
	dprintf(2, "cella-init: exec %s: %s\n", s->argv[0], strerror(errno));
	_exit(127);
}

void child_signals(void)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > CHILD_NOFILE) {
		rl.rlim_cur = CHILD_NOFILE;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

void rec_keep(struct proc_rec *r, const uint8_t *body, uint32_t len)
{
	static uint8_t info[INFO_MAX];
	r->info_len = spec_info(body, len, info, sizeof info, &r->info_truncated);
	r->info = r->info_len ? malloc(r->info_len) : NULL;
	if (r->info)
		memcpy(r->info, info, r->info_len);
	else if (r->info_len) {
		r->info_len = 0;
		r->info_truncated = 1;
	}
}

void rec_free(struct proc_rec *r)
{
	free(r->info);
	r->info = NULL;
	r->info_len = 0;
}

void rec_info(const struct proc_rec *p, int kind, struct rec *out)
{
	uint8_t k = kind;
	rec_u32(out, TAG_ID, p->id);
	rec_u32(out, TAG_PID, p->pid);
	rec_put(out, TAG_KIND, &k, 1);
	if (p->exited)
		rec_u32(out, TAG_STATUS, p->status);
	if (p->info_truncated)
		rec_put(out, TAG_TRUNCATED, NULL, 0);
	rec_raw(out, p->info, p->info_len);
}

int rec_orphan_due(struct proc_rec *r)
{
	if (r->attached || r->done || r->orphan_armed < 0)
		return 0;
	if (!port_host_present()) {
		r->orphan_armed = 0; /* nobody to claim it yet: the grace starts when a host is there */
		return 0;
	}
	if (!r->orphan_armed) {
		after_ms(&r->orphan_at, ORPHAN_GRACE_S * 1000L);
		r->orphan_armed = 1;
	}
	long ms = ms_until(&r->orphan_at);
	if (ms > 0) {
		loop_wake_within(ms);
		return 0;
	}
	r->orphan_armed = -1; /* given up on, once */
	return 1;
}

int rec_ended_before(const struct proc_rec *a, const struct proc_rec *b)
{
	return a->done && (!b || a->done_at.tv_sec < b->done_at.tv_sec ||
			   (a->done_at.tv_sec == b->done_at.tv_sec && a->done_at.tv_nsec < b->done_at.tv_nsec));
}

int rec_retention_due(const struct proc_rec *r)
{
	if (!r->done)
		return 0;
	long ms = RETAIN_S * 1000L + ms_until(&r->done_at);
	if (ms > 0) {
		loop_wake_within(ms);
		return 0;
	}
	return 1;
}

/* ---------- the table ---------- */

static void free_slot(struct proc *p)
{
	rec_free(&p->r);
	free(p->inbuf);
	memset(p, 0, sizeof *p);
	p->out[1] = p->out[2] = p->in = -1;
}

static struct proc *find(uint32_t id)
{
	for (int i = 1; i <= MAX_EXECS; i++)
		if (procs[i].used && procs[i].r.id == id)
			return &procs[i];
	return NULL;
}

static struct proc *find_live(uint32_t id)
{
	struct proc *p = find(id);
	return p && !p->r.done ? p : NULL;
}

int proc_id_live(uint32_t id)
{
	return find_live(id) != NULL;
}

void proc_forget(uint32_t id)
{
	struct proc *p = find(id);
	if (p && p->r.done)
		free_slot(p);
}

int proc_claim_id(uint32_t id)
{
	/* Processes outlive connections: an id in use is refused, never taken over. */
	if (proc_id_live(id) || pty_id_live(id)) {
		ctl_errno(id, EEXIST, "id %u is in use", id);
		return -1;
	}
	proc_forget(id);
	pty_forget(id);
	return 0;
}

/* A free slot, else the one that ended longest ago (its exit is forgotten). */
static struct proc *slot(void)
{
	struct proc *old = NULL;
	for (int i = 1; i <= MAX_EXECS; i++) {
		struct proc *p = &procs[i];
		if (!p->used)
			return p;
		if (rec_ended_before(&p->r, old ? &old->r : NULL))
			old = p;
	}
	if (old)
		free_slot(old);
	return old;
}

static void send_ack(uint32_t id, uint32_t n, int err)
{
	uint8_t b[8];
	put32(b, n);
	put32(b + 4, err);
	ctl_send(MSG_EXEC_IN_ACK, 0, id, b, 8);
}

static void close_in(struct proc *p)
{
	if (p->in >= 0)
		close(p->in);
	p->in = -1;
	stdin_held -= p->in_len;
	p->in_len = 0;
	free(p->inbuf);
	p->inbuf = NULL;
	p->in_cap = 0;
}

/* Writes pending stdin as far as the pipe takes it; acknowledges what was written, or dropped with the errno. */
static void flush_in(struct proc *p)
{
	uint32_t off = 0;
	int err = 0;
	while (p->in >= 0 && off < p->in_len) {
		ssize_t n = write(p->in, p->inbuf + off, p->in_len - off);
		if (n > 0)
			off += n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && errno == EAGAIN)
			break;
		else {
			err = n < 0 ? errno : EPIPE;
			break;
		}
	}
	if (err) {
		off = p->in_len;
		close_in(p);
	} else if (off) {
		memmove(p->inbuf, p->inbuf + off, p->in_len - off);
		p->in_len -= off;
		stdin_held -= off;
	}
	if (off && p->in_pipe)
		send_ack(p->r.id, off, err);
	if (p->in >= 0 && p->in_len == 0 && p->in_close)
		close_in(p);
}

/* Appends to the process's pending stdin; 0, or an errno when it cannot be held. */
static int hold_in(struct proc *p, const uint8_t *data, uint32_t len, uint32_t window)
{
	if (len > window - p->in_len || len > STDIN_HELD_MAX - stdin_held)
		return ENOBUFS;
	if (p->in_len + len > p->in_cap) {
		uint32_t cap = p->in_cap ? p->in_cap : 16384;
		while (cap < p->in_len + len)
			cap *= 2;
		if (cap > window)
			cap = window;
		uint8_t *b = realloc(p->inbuf, cap);
		if (!b)
			return ENOMEM;
		p->inbuf = b;
		p->in_cap = cap;
	}
	memcpy(p->inbuf + p->in_len, data, len);
	p->in_len += len;
	stdin_held += len;
	return 0;
}

static int spawn(struct spec *s, struct proc *p)
{
	int fds[6] = { -1, -1, -1, -1, -1, -1 }; /* out, err, in: read and write ends */
	for (int i = 0; i < 6; i += 2)
		if (pipe2(fds + i, O_CLOEXEC) < 0) {
			int e = errno;
			for (int k = 0; k < i; k++)
				close(fds[k]);
			return -e;
		}
	proc_groups(s);
	char **envp = proc_env(s, NULL);
	char pathbuf[4096];
	const char *exe = lookup_path(envp, s->argv[0], pathbuf, sizeof pathbuf);
	pid_t pid = fork();
	if (pid == 0) {
		child_signals();
		setsid();
		dup2(fds[4], 0);
		dup2(fds[1], 1);
		dup2(fds[3], 2);
		child_exec(s, exe, envp);
	}
	int e = errno;
	close(fds[1]);
	close(fds[3]);
	close(fds[4]);
	if (pid < 0) {
		close(fds[0]);
		close(fds[2]);
		close(fds[5]);
		return -e;
	}
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	fcntl(fds[2], F_SETFL, O_NONBLOCK);
	fcntl(fds[5], F_SETFL, O_NONBLOCK);
	free_slot(p);
	p->used = 1;
	p->r.pid = pid;
	p->r.attached = 1;
	p->out[1] = fds[0];
	p->out[2] = fds[2];
	p->in = fds[5];
	p->in_pipe = s->stdin_pipe;
	p->in_close = !s->stdin_pipe;
	/* Checked against the bounds before the fork: it fits. */
	if (s->stdin_len)
		hold_in(p, s->stdin_data, s->stdin_len, s->stdin_len + STDIN_WINDOW);
	return 0;
}

static void start(struct proc *p, uint32_t id, struct spec *s, const uint8_t *body, uint32_t len)
{
	if (s->stdin_len > STDIN_HELD_MAX - stdin_held) {
		ctl_errno(id, ENOBUFS, "too much stdin held for processes");
		return;
	}
	int r = spawn(s, p);
	if (r < 0) {
		ctl_errno(id, -r, "spawn: %s", strerror(-r));
		return;
	}
	p->r.id = id;
	if (p != &procs[0])
		rec_keep(&p->r, body, len);
	uint8_t pid[4];
	put32(pid, p->r.pid);
	ctl_reply(id, pid, 4);
	flush_in(p);
}

void proc_start(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct spec s;
	if (procs[0].used) {
		ctl_errno(id, EBUSY, "app already started");
		return;
	}
	if (parse_spec(body, len, &s, 0) < 0) {
		ctl_errno(id, EINVAL, "malformed spec");
		return;
	}
	start(&procs[0], id, &s, body, len);
}

void proc_exec(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct spec s;
	if (id == 0 || parse_spec(body, len, &s, 0) < 0) {
		ctl_errno(id, EINVAL, "malformed spec");
		return;
	}
	if (proc_claim_id(id) < 0)
		return;
	struct proc *p = slot();
	if (!p) {
		ctl_errno(id, EAGAIN, "too many processes (%d)", MAX_EXECS);
		return;
	}
	start(p, id, &s, body, len);
}

void proc_signal(uint32_t id, const uint8_t *body, uint32_t len)
{
	uint32_t sig;
	if (decode_u32(body, len, &sig) < 0 || sig > 64) {
		ctl_errno(id, EINVAL, "bad signal");
		return;
	}
	for (int i = 0; i <= MAX_EXECS; i++) {
		struct proc *p = &procs[i];
		if (p->used && !p->r.exited && (i == 0 ? id == 0 : p->r.id == id)) {
			kill(-p->r.pid, (int)sig);
			ctl_ok(id);
			return;
		}
	}
	if (id && pty_signal(id, (int)sig) == 0)
		ctl_ok(id);
	else
		ctl_errno(id, ESRCH, "no such process");
}

void proc_in(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct proc *p = find_live(id);
	int err = !p ? ESRCH : p->in < 0 || p->in_close ? EPIPE : len ? hold_in(p, body, len, STDIN_WINDOW) : 0;
	if (err)
		send_ack(id, len, err);
	else if (len)
		flush_in(p);
}

void proc_close_in(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct proc *p = find_live(id);
	if (!p) {
		ctl_errno(id, ESRCH, "no such process");
		return;
	}
	p->in_close = 1;
	if (p->in >= 0 && p->in_len == 0)
		close_in(p);
	ctl_ok(id);
}

void proc_attach(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct proc *p = find(id);
	if (!p) {
		if (pty_attach(id) < 0)
			ctl_errno(id, ENOENT, "no such process");
		return;
	}
	p->r.attached = 1;
	p->r.orphan_armed = 0;
	p->discard = 0;
	ctl_ok(id);
	if (p->r.done)
		ctl_status(MSG_EXEC_EXIT, id, p->r.status);
}

void proc_list(uint32_t id, const uint8_t *body, uint32_t len)
{
	if (listing.active) {
		ctl_errno(id, EBUSY, "a listing is under way");
		return;
	}
	listing.active = 1;
	listing.id = id;
	listing.next = 1;
}

void proc_pump(void)
{
	static uint8_t buf[CELLA_MAX_OUT];
	while (listing.active && ctl_keeps_up()) {
		int i = listing.next++;
		struct rec out = { .p = buf, .cap = sizeof buf };
		const struct proc_rec *r = NULL;
		int kind = 1;
		if (i <= MAX_EXECS)
			r = procs[i].used ? &procs[i].r : NULL;
		else if (i - MAX_EXECS - 1 < MAX_PTYS) {
			r = pty_rec(i - MAX_EXECS - 1);
			kind = 2;
		} else {
			listing.active = 0;
			ctl_ok(listing.id);
			break;
		}
		if (!r)
			continue;
		rec_info(r, kind, &out);
		ctl_send(MSG_PROC_INFO, 0, listing.id, buf, out.len);
	}
}

void proc_detach_all(void)
{
	for (int i = 1; i <= MAX_EXECS; i++) {
		procs[i].r.attached = 0;
		procs[i].r.orphan_armed = 0;
		procs[i].discard = 0;
	}
	listing.active = 0;
}

/* Reports the end once the process is gone and its output drained; the app's slot is freed, an exec's kept. */
static void finish_if_done(struct proc *p)
{
	if (!p->used || p->r.done || !p->r.exited || p->out[1] >= 0 || p->out[2] >= 0)
		return;
	if (p->in_len && p->in_pipe)
		send_ack(p->r.id, p->in_len, EPIPE);
	close_in(p);
	if (p == &procs[0]) {
		ctl_status(MSG_APP_EXIT, 0, p->r.status);
		free_slot(p);
		return;
	}
	p->r.done = 1;
	now(&p->r.done_at);
	if (p->r.attached)
		ctl_status(MSG_EXEC_EXIT, p->r.id, p->r.status);
}

/* Forwards one chunk of output: a busy producer takes turns with the others. */
static void drain_output(struct proc *p, int stream)
{
	uint8_t buf[CELLA_MAX_OUT];
	ssize_t n = read(p->out[stream], buf, sizeof buf);
	if (n > 0) {
		if (p == &procs[0])
			log_send(stream, buf, n);
		else if (!p->discard)
			ctl_send(MSG_EXEC_OUT, stream, p->r.id, buf, n);
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
	if (!p->used)
		return;
	if (stream == 0) {
		if (p->in == pf->fd)
			flush_in(p);
	} else if (p->out[stream] == pf->fd && (p == &procs[0] || p->discard || ctl_keeps_up()))
		drain_output(p, stream);
}

void proc_poll(int produce)
{
	for (int i = 0; i <= MAX_EXECS; i++) {
		struct proc *p = &procs[i];
		if (!p->used)
			continue;
		if (i > 0 && rec_retention_due(&p->r)) {
			free_slot(p);
			continue;
		}
		if (i > 0 && !p->discard && rec_orphan_due(&p->r))
			p->discard = 1;
		for (int s = 1; s <= 2; s++)
			if (p->out[s] >= 0 && (i == 0 || p->discard || (p->r.attached && produce)))
				loop_watch(p->out[s], POLLIN, proc_ready, i, s);
		if (p->in >= 0 && p->in_len)
			loop_watch(p->in, POLLOUT, proc_ready, i, 0);
	}
}

void proc_reaped(pid_t pid, int status)
{
	for (int i = 0; i <= MAX_EXECS; i++) {
		struct proc *p = &procs[i];
		if (p->used && !p->r.exited && p->r.pid == pid) {
			p->r.exited = 1;
			p->r.status = status;
			finish_if_done(p);
		}
	}
}
