/*
 * cella-init: PID 1 of every Cella guest.
 *
 * Runs from the initramfs: loads the virtio modules, mounts the root disk and
 * moves into it, configures the fixed guest address (boot.c), then serves the
 * control port (port.c) and forwards the app's output to the log port. It
 * never exits: PID 1 exiting panics the guest.
 *
 * This file is the loop and the request dispatcher. Requests start processes
 * (proc.c) and terminals (pty.c), work on files (fs.c) and watch them
 * (watch.c), look up users (users.c), act on the guest (system.c) or start the
 * envs listener (http.c); the app talks to the host through the agent socket
 * (agent.c). Run as anything but PID 1, the binary is that socket's client.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "boot.h"
#include "fs.h"
#include "http.h"
#include "loop.h"
#include "port.h"
#include "proc.h"
#include "protocol.h"
#include "pty.h"
#include "system.h"
#include "users.h"
#include "watch.h"

/* PID 1's own file limit: every exec's three pipes, terminals, streams and watches fit. */
#define INIT_NOFILE 4096

typedef void request_fn(uint32_t id, const uint8_t *body, uint32_t len);

static void session(uint32_t id, const uint8_t *body, uint32_t len);

/* Host requests by message type; a type without an entry is answered with ERROR. */
static request_fn *const requests[] = {
	/* the guest as a whole: system.c */
	[MSG_PING] = sys_ping,
	[MSG_SET_CLOCK] = sys_set_clock,
	[MSG_RESEED] = sys_reseed,
	[MSG_SYNC] = sys_sync,
	[MSG_IDENTIFY] = sys_identify,
	[MSG_STATS] = sys_stats,
	[MSG_SET_ENV] = sys_set_env,
	[MSG_SESSION] = session,
	/* processes: proc.c */
	[MSG_START] = proc_start,
	[MSG_EXEC] = proc_exec,
	[MSG_SIGNAL] = proc_signal,
	[MSG_EXEC_IN] = proc_in,
	[MSG_EXEC_CLOSE_IN] = proc_close_in,
	[MSG_EXEC_LIST] = proc_list,
	[MSG_ATTACH] = proc_attach,
	/* terminals: pty.c */
	[MSG_PTY_OPEN] = pty_open,
	[MSG_PTY_IN] = pty_in,
	[MSG_PTY_RESIZE] = pty_resize,
	[MSG_PTY_CLOSE] = pty_close,
	/* users: users.c */
	[MSG_USER_LOOKUP] = users_lookup,
	/* files: fs.c, watch.c */
	[MSG_FS_STAT] = fs_stat,
	[MSG_FS_LIST] = fs_list,
	[MSG_FS_MKDIR] = fs_mkdir,
	[MSG_FS_RENAME] = fs_rename,
	[MSG_FS_REMOVE] = fs_remove,
	[MSG_FS_READ] = fs_read,
	[MSG_FS_CREDIT] = fs_credit,
	[MSG_FS_WRITE_OPEN] = fs_write_open,
	[MSG_FS_WRITE_DATA] = fs_write_data,
	[MSG_FS_WRITE_CLOSE] = fs_write_close,
	[MSG_FS_CLOSE] = fs_close,
	[MSG_FS_WATCH] = watch_add,
	[MSG_FS_UNWATCH] = watch_remove,
	/* the envs listener: http.c */
	[MSG_ENVD_LISTEN] = http_listen,
};

static void dispatch(const struct frame *f)
{
	request_fn *fn = f->type < sizeof requests / sizeof *requests ? requests[f->type] : NULL;
	if (fn)
		fn(f->id, f->body, f->len);
	else
		ctl_error(f->id, "unknown message %u", f->type);
}

/* The host went away or was replaced: what it started is detached (processes, terminals), what it was streaming dropped. */
static void detach_all(void)
{
	proc_detach_all();
	pty_detach_all();
	fs_drop_all();
	watch_drop_all();
}

static void session(uint32_t id, const uint8_t *body, uint32_t len)
{
	detach_all();
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		proc_reaped(pid, status);
		pty_reaped(pid, status);
		fs_reaped(pid, status);
	}
}

/* The signalfd, the control port, the agent socket and its clients, every exec's three pipes, every terminal, watches, the envs listener.
 */
#define MAX_POLL (3 + MAX_CLIENTS + 3 * (MAX_EXECS + 1) + MAX_PTYS + MAX_WATCHES + 2 + HTTP_CLIENTS)

static struct pollfd pf[MAX_POLL];
static struct {
	ready_fn *ready;
	uint16_t idx;
	uint8_t stream;
} what[MAX_POLL];
static int npf;
static long timeout;

void loop_watch(int fd, short events, ready_fn *ready, unsigned idx, unsigned stream)
{
	what[npf].ready = ready;
	what[npf].idx = idx;
	what[npf].stream = stream;
	pf[npf++] = (struct pollfd){ .fd = fd, .events = events };
}

void loop_wake_within(long ms)
{
	if (timeout < 0 || ms < timeout)
		timeout = ms;
}

int main(int argc, char **argv)
{
	if (getpid() != 1)
		return client_main(argc, argv);
	char cmdline[4096];
	boot(cmdline, sizeof cmdline);
	agent_setup();
	boot_build_disk(cmdline);
	setrlimit(RLIMIT_NOFILE, &(struct rlimit){ INIT_NOFILE, INIT_NOFILE });

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGPIPE);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigdelset(&mask, SIGPIPE);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	port_retry();
	for (unsigned turn = 0;; turn++) {
		if (port_lost())
			detach_all();
		port_flush();
		pty_drain_all();
		proc_pump();
		fs_pump();
		/* Output for the control port is read only while the host keeps up: backpressure, not loss. */
		int produce = ctl_keeps_up();
		pf[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		ctl_poll(&pf[1]);
		npf = 2;
		timeout = -1;
		agent_poll();
		proc_poll(produce);
		pty_poll(produce);
		watch_poll(produce);
		http_poll();
		long retry = port_retry_ms();
		if (retry >= 0)
			loop_wake_within(retry);
		int r = poll(pf, npf, (int)timeout);
		if (r < 0 && errno != EINTR)
			continue;
		port_retry();
		if (r <= 0)
			continue;
		if (pf[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si)
				;
			reap();
		}
		ctl_ready(&pf[1], dispatch);
		/* The rest take turns, so that a busy one cannot starve the others. */
		for (int k = 2; k < npf; k++) {
			int i = 2 + (k - 2 + turn) % (npf - 2);
			if (pf[i].revents)
				what[i].ready(what[i].idx, what[i].stream, &pf[i]);
		}
	}
}
