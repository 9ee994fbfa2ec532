/* Guest-wide requests; each replies OK or ERROR. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "decode.h"
#include "port.h"
#include "protocol.h"
#include "system.h"

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
	ctl_send(MSG_PONG, 0, id, NULL, 0);
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
