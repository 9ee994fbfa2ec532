/*
 * cella-init: PID 1 of every Cella guest.
 *
 * Runs from the initramfs: loads the virtio modules, mounts the root disk and
 * moves into it, configures the fixed guest address, then serves the control
 * port (cella.ctl) and forwards the app's output to the log port (cella.log).
 * It never exits: PID 1 exiting panics the guest.
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
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

/* From <linux/random.h>, which musl does not ship. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)
struct rand_pool_info {
	int entropy_count;
	int buf_size;
};

#define MAX_EXECS 32
#define MAX_ARGS 256
#define MODULE_DIR "/cella/modules"
#define CTL_NAME "cella.ctl"
#define LOG_NAME "cella.log"
#define RETRY_MAX_MS 50

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
	p->retry_ms = p->retry_ms ? p->retry_ms * 2 : 1;
	if (p->retry_ms > RETRY_MAX_MS)
		p->retry_ms = RETRY_MAX_MS;
	now(&p->retry_at);
	p->retry_at.tv_nsec += (long)p->retry_ms * 1000000;
	p->retry_at.tv_sec += p->retry_at.tv_nsec / 1000000000;
	p->retry_at.tv_nsec %= 1000000000;
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
 * Writes a whole frame or drops it. The port is non-blocking so that a host
 * that stopped reading can never stall PID 1 or the app whose output we carry.
 */
static void send_frame(struct port *p, uint8_t type, uint8_t stream, uint32_t id, const void *body, uint32_t len)
{
	if (p->fd < 0)
		return;
	uint8_t hdr[CELLA_HEADER_LEN] = { 0 };
	put32(hdr, len);
	hdr[4] = type;
	hdr[5] = stream;
	put32(hdr + 8, id);
	const uint8_t *parts[2] = { hdr, body };
	uint32_t lens[2] = { CELLA_HEADER_LEN, len };
	for (int i = 0; i < 2; i++) {
		uint32_t off = 0;
		int spins = 0;
		while (off < lens[i]) {
			ssize_t n = write(p->fd, parts[i] + off, lens[i] - off);
			if (n > 0) {
				off += n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN && off > 0 && spins++ < 1000) {
				/* A frame half written must be finished or the stream is corrupt. */
				struct pollfd pf = { .fd = p->fd, .events = POLLOUT };
				poll(&pf, 1, 10);
				continue;
			}
			if (n < 0 && errno == EAGAIN && off == 0 && i == 0)
				return; /* nothing written: dropping is safe */
			port_close(p);
			return;
		}
	}
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
	char *envp[MAX_ARGS + 1];
	int argc, envc;
	const char *cwd;
	uid_t uid;
	gid_t gid;
	const uint8_t *stdin_data;
	uint32_t stdin_len;
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

/* Parses a spec in place: strings are NUL-terminated by overwriting the next tag byte. */
static int parse_spec(uint8_t *body, uint32_t len, struct spec *s)
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
		default:
			return -1;
		}
	}
	if (off != len || s->argc == 0)
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
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		setsid();
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
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

static void drain_output(struct proc *p, int stream)
{
	uint8_t buf[16384];
	for (;;) {
		ssize_t n = read(p->out[stream], buf, sizeof buf);
		if (n > 0) {
			if (p == &procs[0])
				send_frame(&logp, MSG_LOG, stream, 0, buf, n);
			else
				send_frame(&ctl, MSG_EXEC_OUT, stream, p->id, buf, n);
			if (n < (ssize_t)sizeof buf)
				return;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		close(p->out[stream]);
		p->out[stream] = -1;
		finish_if_done(p);
		return;
	}
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
		if (parse_spec(body, len, &s) < 0) {
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
	case MSG_SYNC:
		sync();
		send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
		return;
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

int main(void)
{
	if (getpid() != 1) {
		fprintf(stderr, "cella-init must run as PID 1 inside a Cella guest\n");
		return 1;
	}
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

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGPIPE);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sigdelset(&mask, SIGPIPE);
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	for (int i = 0; i <= MAX_EXECS; i++)
		procs[i].out[1] = procs[i].out[2] = -1;
	port_open(&ctl);
	port_open(&logp);

	for (;;) {
		struct pollfd pf[2 + 2 * (MAX_EXECS + 1)];
		struct proc *owner[2 + 2 * (MAX_EXECS + 1)];
		int stream[2 + 2 * (MAX_EXECS + 1)];
		int n = 0;
		pf[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pf[n++] = (struct pollfd){ .fd = ctl.fd, .events = POLLIN };
		for (int i = 0; i <= MAX_EXECS; i++)
			for (int s = 1; s <= 2; s++)
				if (procs[i].used && procs[i].out[s] >= 0) {
					owner[n] = &procs[i];
					stream[n] = s;
					pf[n++] = (struct pollfd){ .fd = procs[i].out[s], .events = POLLIN };
				}
		int timeout = -1;
		struct port *ports[2] = { &ctl, &logp };
		for (int i = 0; i < 2; i++)
			if (ports[i]->fd < 0) {
				long ms = ms_until(&ports[i]->retry_at);
				if (ms < 0)
					ms = 0;
				if (timeout < 0 || ms < timeout)
					timeout = ms;
			}
		int r = poll(pf, n, timeout);
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
		if (ctl.fd >= 0 && pf[1].fd == ctl.fd && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
			read_ctl();
		for (int i = 2; i < n; i++)
			if (pf[i].revents && owner[i]->out[stream[i]] == pf[i].fd)
				drain_output(owner[i], stream[i]);
	}
}
