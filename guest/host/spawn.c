/*
 * cella-spawn: the one prelude before each QEMU, on the host (not in a guest;
 * built here with the guest's tools because it is as small and static). It
 * replaces a chain of setpriv, sh, nsenter and a shell watcher (ADR 0012): one
 * static exec instead of five dynamic ones per VM. cellad runs it once as a
 * server (`--serve`, serve.c), whose forked children run these steps.
 *
 *   cella-spawn [--pdeathsig] [--watch] [--join FILE]... [--netns PATH] -- PROGRAM [ARG]...
 *
 * In this order, then exec PROGRAM with stdin from /dev/null (same pid):
 *   --pdeathsig  SIGKILL when the parent (cellad, or the server) dies, until PROGRAM changes
 *                its credentials (QEMU's -runas), when the kernel clears it;
 *   --watch      so a watcher stands in: a child that holds our stdin (a pipe
 *                from cellad, through the server) and kills PROGRAM when it reads EOF (cellad
 *                died). It dies with PROGRAM (its own death signal), so it
 *                never outlives the pid it watches. Forked before --join, so
 *                the cgroup holds PROGRAM alone;
 *   --join FILE  writes our pid to FILE (a cgroup.procs): PROGRAM runs in the
 *                cgroup from its first instruction;
 *   --netns PATH enters the network namespace at PATH (/run/netns/NAME).
 * A step that fails ends it with status 125 before PROGRAM runs; an exec that
 * fails, with 127. Messages go to stderr, which cellad keeps as QEMU's.
 */
#define _GNU_SOURCE
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int fail(const char *what, const char *arg)
{
	dprintf(2, "cella-spawn: %s %s: %s\n", what, arg, strerror(errno));
	return SPAWN_FAILED;
}

/*
 * Blanks our command line (/proc/PID/cmdline reads it from our memory) to
 * "cella-spawn watch": the watcher must not carry QEMU's arguments, or it would
 * pass for a QEMU of the VM to whatever finds QEMUs by their -qmp path
 * (a restarted cellad's reclaim, the chaos drills' host check).
 */
static void rename_watcher(int argc, char **argv)
{
	static const char name[] = "cella-spawn\0watch";
	char *start = argv[0];
	char *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
	memset(start, 0, (size_t)(end - start));
	if ((size_t)(end - start) > sizeof(name))
		memcpy(start, name, sizeof(name));
}

/* The watcher's loop: wait for EOF on stdin, then kill `target`. Never returns. */
static void watch(pid_t target, int argc, char **argv)
{
	char buf[64];
	rename_watcher(argc, argv);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Our parent (the future QEMU) may have ended before the line above. */
	if (getppid() != target)
		_exit(0);
	close(1);
	close(2);
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf));
		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		break;
	}
	kill(target, SIGKILL);
	_exit(0);
}

static int join(const char *file)
{
	char pid[24];
	int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	int fd = open(file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, pid, (size_t)len);
	int saved = errno;
	close(fd);
	errno = saved;
	return n == len ? 0 : -1;
}

int spawn_prelude(const struct spawn_opts *o, int argc, char **argv)
{
	if (o->pdeathsig) {
		pid_t parent = getppid();
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			return fail("prctl", "PR_SET_PDEATHSIG");
		/* The parent died before the line above: nobody would kill us. */
		if (getppid() != parent)
			return SPAWN_FAILED;
	}
	if (o->watch) {
		pid_t self = getpid();
		pid_t child = fork();
		if (child < 0)
			return fail("fork", "watcher");
		if (child == 0)
			watch(self, argc, argv);
	}
	int null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0)
		return fail("open", "/dev/null");
	if (null != 0)
		close(null);
	for (int i = 0; i < o->njoin; i++)
		if (join(o->join[i]) < 0)
			return fail("join", o->join[i]);
	if (o->netns) {
		int fd = open(o->netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			return fail("setns", o->netns);
		close(fd);
	}
	execv(o->argv[0], o->argv);
	fail("exec", o->argv[0]);
	return SPAWN_EXEC_FAILED;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--serve"))
		return spawn_serve(argc, argv);
	struct spawn_opts o;
	const char *err = spawn_parse(argc, argv, &o);
	if (!err && (o.setsid || o.stderr_file))
		err = "--setsid and --stderr are for requests to --serve";
	if (err) {
		dprintf(2, "cella-spawn: %s\nusage: %s\n", err, SPAWN_USAGE);
		return SPAWN_FAILED;
	}
	return spawn_prelude(&o, argc, argv);
}
