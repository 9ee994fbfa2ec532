/* The agent socket (a line protocol from guest users) and its client. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "conn.h"
#include "log.h"
#include "loop.h"
#include "port.h"
#include "protocol.h"
#include "util.h"

#define AGENT_SOCK RUN_DIR "/agent.sock"
#define LINE_MAX_LEN 64

struct client {
	struct conn conn; /* first: the table is conn_accept()'s */
	unsigned len;
	char line[LINE_MAX_LEN];
};

static int lsock = -1;
static struct client clients[MAX_CLIENTS];

void agent_setup(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		clients[i].conn.fd = -1;
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
	struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = AGENT_SOCK };
	lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lsock < 0 || bind(lsock, (struct sockaddr *)&a, sizeof a) < 0 || chmod(AGENT_SOCK, 0666) < 0 || listen(lsock, 16) < 0) {
		logmsg("%s: %s", AGENT_SOCK, strerror(errno));
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
	ctl_send(suspend ? MSG_SUSPEND_REQUEST : MSG_ACTIVITY, 0, 0, NULL, 0);
}

static void client_close(struct client *c)
{
	close(c->conn.fd);
	c->conn.fd = -1;
	c->len = 0;
}

static void client_reply(struct client *c, const char *text)
{
	(void)!send(c->conn.fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
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
	ssize_t n = read(c->conn.fd, c->line + c->len, sizeof c->line - c->len);
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

static void client_drop(struct conn *c)
{
	client_close((struct client *)c);
}

static void listen_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	conn_accept(lsock, clients, sizeof *clients, MAX_CLIENTS, client_drop);
}

static void client_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	if (clients[idx].conn.fd == pf->fd)
		client_read(&clients[idx]);
}

void agent_poll(void)
{
	if (lsock >= 0)
		loop_watch(lsock, POLLIN, listen_ready, 0, 0);
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (clients[i].conn.fd >= 0)
			loop_watch(clients[i].conn.fd, POLLIN, client_ready, i, 0);
}

int client_main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	const char *req = strcmp(base, "activity") == 0 || strcmp(base, "suspend") == 0 ? base : argc == 2 ? argv[1] : NULL;
	if (!req) {
		fprintf(stderr, "usage: cella activity|suspend|-   (- sends the lines of stdin)\n"
				"Tells the Cella host this VM is active, or asks it to suspend this VM.\n");
		return 2;
	}
	struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = AGENT_SOCK };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		fprintf(stderr, "cella: %s: %s\n", AGENT_SOCK, strerror(errno));
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
