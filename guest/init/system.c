/* Guest-wide requests; each replies OK or ERROR. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "decode.h"
#include "parse.h"
#include "port.h"
#include "protocol.h"
#include "system.h"
#include "util.h"

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

void sys_ping(uint32_t id, const uint8_t *body, uint32_t len)
{
	uint8_t v[4];
	put32(v, CELLA_PROTOCOL_VERSION);
	ctl_send(MSG_PONG, 0, id, v, 4);
}

void sys_set_clock(uint32_t id, const uint8_t *body, uint32_t len)
{
	struct timespec t;
	if (decode_clock(body, len, &t) < 0) {
		ctl_error(id, "bad clock");
		return;
	}
	if (clock_settime(CLOCK_REALTIME, &t) < 0)
		ctl_error(id, "settime: %s", strerror(errno));
	else
		ctl_ok(id);
}

void sys_reseed(uint32_t id, const uint8_t *body, uint32_t len)
{
	/* Clones share the snapshot's CRNG state: mix in host entropy and force a reseed. */
	struct {
		struct rand_pool_info info;
		uint8_t data[256];
	} e;
	if (len == 0 || len > sizeof e.data) {
		ctl_error(id, "bad entropy");
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
		ctl_ok(id);
	else
		ctl_error(id, "reseed: %s", strerror(errno));
}

void sys_sync(uint32_t id, const uint8_t *body, uint32_t len)
{
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
	ctl_ok(id);
}

void sys_identify(uint32_t id, const uint8_t *body, uint32_t len)
{
	if (sethostname((const char *)body, len > 64 ? 64 : len) < 0)
		ctl_error(id, "sethostname: %s", strerror(errno));
	else
		ctl_ok(id);
}

/* A small file of the kernel's (/proc), NUL-terminated; its length, or -1. */
static long read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	ssize_t n;
	while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += n;
	close(fd);
	buf[len] = 0;
	return (long)len;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

void sys_stats(uint32_t id, const uint8_t *body, uint32_t len)
{
	/* CPU use is measured from the previous STATS (from boot, the first time). */
	static uint64_t last_total, last_idle;
	static char buf[16384];
	uint64_t total = 0, idle = 0, use = 0;
	long n = read_small("/proc/stat", buf, sizeof buf);
	if (n >= 0 && cpustat_parse(buf, n, &total, &idle) == 0 && total > last_total) {
		uint64_t dt = total - last_total, di = idle >= last_idle ? idle - last_idle : 0;
		use = di >= dt ? 0 : (dt - di) * 10000 / dt;
		last_total = total;
		last_idle = idle;
	}
	struct meminfo m = { 0 };
	n = read_small("/proc/meminfo", buf, sizeof buf);
	if (n < 0 || meminfo_parse(buf, n, &m) < 0) {
		ctl_errno(id, EIO, "cannot read /proc/meminfo");
		return;
	}
	uint64_t cache = m.cached + m.sreclaimable, gone = m.free + m.buffers + cache;
	struct statfs fs;
	uint64_t disk_total = 0, disk_used = 0;
	if (statfs("/", &fs) == 0) {
		disk_total = (uint64_t)fs.f_blocks * fs.f_frsize;
		disk_used = (uint64_t)(fs.f_blocks - fs.f_bfree) * fs.f_frsize;
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint8_t out[48];
	put32(out, cpus > 0 ? (uint32_t)cpus : 1);
	put32(out + 4, (uint32_t)use);
	put64(out + 8, m.total);
	put64(out + 16, m.total > gone ? m.total - gone : 0);
	put64(out + 24, cache);
	put64(out + 32, disk_total);
	put64(out + 40, disk_used);
	ctl_reply(id, out, sizeof out);
}

static char *env_data;
static char *env_vec[MAX_ARGS + 1];
static int env_n;

char *const *env_global(int *n)
{
	*n = env_n;
	return env_vec;
}

void sys_set_env(uint32_t id, const uint8_t *body, uint32_t len)
{
	static struct tlv vals[MAX_ARGS];
	int n = parse_env(body, len, vals, MAX_ARGS);
	if (n < 0) {
		ctl_errno(id, EINVAL, "malformed environment (KEY=VALUE records, at most %d)", MAX_ARGS);
		return;
	}
	size_t size = 0;
	for (int i = 0; i < n; i++)
		size += vals[i].len + 1;
	if (size > ENV_MAX_BYTES) {
		ctl_errno(id, E2BIG, "environment over %d bytes", ENV_MAX_BYTES);
		return;
	}
	char *data = size ? malloc(size) : NULL;
	if (size && !data) {
		ctl_errno(id, ENOMEM, "out of memory");
		return;
	}
	free(env_data);
	env_data = data;
	char *w = data;
	for (int i = 0; i < n; i++) {
		memcpy(w, vals[i].val, vals[i].len);
		w[vals[i].len] = 0;
		env_vec[i] = w;
		w += vals[i].len + 1;
	}
	env_vec[n] = NULL;
	env_n = n;
	ctl_ok(id);
}
