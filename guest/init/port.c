/* Port discovery, reconnection, framing in both directions, and the control port's out queue. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "port.h"
#include "protocol.h"
#include "util.h"

#define CTL_NAME "cella.ctl"
#define LOG_NAME "cella.log"
#define RETRY_MAX_MS 50
/* Control-port output waiting for the host: producers pause above LOW, data frames are dropped above DATA_MAX. */
#define OUTQ_LOW (32 * 1024)
#define OUTQ_DATA_MAX (256 * 1024)
#define OUTQ_MAX (512 * 1024)
/* Control-port input read ahead of the dispatcher: reading pauses once this much is buffered and a whole frame is there. */
#define IN_BATCH (256 * 1024)
#define IN_READ (64 * 1024)

struct port {
	const char *name;
	char path[300];
	int fd;
	int retry_ms; /* backoff while the host side is not connected */
	struct timespec retry_at;
	uint8_t *in; /* partial frame being read */
	size_t in_len, in_cap;
};

static struct port ctl = { .name = CTL_NAME, .fd = -1 };
static struct port logp = { .name = LOG_NAME, .fd = -1 };
static struct port *const ports[2] = { &ctl, &logp };

/* Control-port bytes the port has not taken yet (whole frames, in order). */
static uint8_t outq[OUTQ_MAX + CELLA_HEADER_LEN + CELLA_MAX_OUT];
static size_t outq_len;
static int ctl_lost;  /* the host side went away: what it opened is detached from the main loop */
static int ctl_fresh; /* no frame read since the port was opened */

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
		ctl_fresh = 1;
		uint8_t v[4];
		put32(v, CELLA_PROTOCOL_VERSION);
		send_frame(p, MSG_HELLO, 0, 0, v, 4);
	}
}

void port_retry(void)
{
	for (int i = 0; i < 2; i++)
		if (ports[i]->fd < 0 && ms_until(&ports[i]->retry_at) <= 0)
			port_open(ports[i]);
}

long port_retry_ms(void)
{
	long next = -1;
	for (int i = 0; i < 2; i++)
		if (ports[i]->fd < 0) {
			long ms = ms_until(&ports[i]->retry_at);
			if (ms < 0)
				ms = 0;
			if (next < 0 || ms < next)
				next = ms;
		}
	return next;
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

void port_flush(void)
{
	if (outq_len)
		outq_flush();
}

int port_lost(void)
{
	int lost = ctl_lost;
	ctl_lost = 0;
	return lost;
}

int port_host_present(void)
{
	return ctl.fd >= 0 && !ctl_fresh;
}

int frame_next(const uint8_t *buf, size_t len, struct frame *f)
{
	if (len < CELLA_HEADER_LEN)
		return 0;
	f->len = get32(buf);
	if (f->len > CELLA_MAX_BODY)
		return -1;
	if (len - CELLA_HEADER_LEN < f->len)
		return 0;
	f->type = buf[4];
	f->stream = buf[5];
	f->id = get32(buf + 8);
	f->body = buf + CELLA_HEADER_LEN;
	return 1;
}

/*
 * Reads what the host sent, then hands each whole frame to `dispatch`. Reading
 * stops once IN_BATCH bytes holding a whole frame are buffered (the rest waits
 * in the port, and the host's writes block): a host streaming file data can
 * never make PID 1 buffer more than about a frame and a batch.
 */
static void read_ctl(frame_fn *dispatch)
{
	struct frame f;
	int eof = 0;
	for (;;) {
		if (ctl.in_len >= IN_BATCH && frame_next(ctl.in, ctl.in_len, &f) != 0)
			break;
		if (ctl.in_cap - ctl.in_len < IN_READ) {
			size_t cap = ctl.in_cap ? ctl.in_cap * 2 : 131072;
			uint8_t *n = realloc(ctl.in, cap);
			if (!n) {
				port_close(&ctl);
				return;
			}
			ctl.in = n;
			ctl.in_cap = cap;
		}
		ssize_t n = read(ctl.fd, ctl.in + ctl.in_len, IN_READ);
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* EOF: the host side is not connected (or just restored). What it sent first is still handled. */
			eof = 1;
			break;
		}
		ctl.retry_ms = 0;
		ctl.in_len += n;
	}
	size_t off = 0;
	int r;
	while ((r = frame_next(ctl.in + off, ctl.in_len - off, &f)) > 0) {
		ctl_fresh = 0;
		dispatch(&f);
		if (ctl.fd < 0)
			return;
		off += CELLA_HEADER_LEN + f.len;
	}
	if (r < 0)
		logmsg("oversized frame, resetting control port");
	if (r < 0 || eof) {
		port_close(&ctl); /* retried later */
		return;
	}
	memmove(ctl.in, ctl.in + off, ctl.in_len - off);
	ctl.in_len -= off;
}

void ctl_poll(struct pollfd *pf)
{
	*pf = (struct pollfd){ .fd = ctl.fd, .events = POLLIN | (outq_len ? POLLOUT : 0) };
}

void ctl_ready(const struct pollfd *pf, frame_fn *dispatch)
{
	if (ctl.fd >= 0 && pf->fd == ctl.fd && (pf->revents & POLLOUT))
		outq_flush();
	if (ctl.fd >= 0 && pf->fd == ctl.fd && (pf->revents & (POLLIN | POLLHUP | POLLERR)))
		read_ctl(dispatch);
}

int ctl_keeps_up(void)
{
	return outq_len < OUTQ_LOW;
}

void ctl_send(uint8_t type, uint8_t stream, uint32_t id, const void *body, uint32_t len)
{
	send_frame(&ctl, type, stream, id, body, len);
}

void ctl_ok(uint32_t id)
{
	send_frame(&ctl, MSG_OK, 0, id, NULL, 0);
}

void ctl_reply(uint32_t id, const void *body, uint32_t len)
{
	send_frame(&ctl, MSG_OK, 0, id, body, len);
}

static void send_error(uint32_t id, int err, const char *fmt, va_list ap)
{
	char buf[512];
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	if (n < 0)
		n = 0;
	if (n >= (int)sizeof buf)
		n = sizeof buf - 1;
	send_frame(&ctl, MSG_ERROR, err > 0 && err < 256 ? err : 0, id, buf, n);
}

void ctl_error(uint32_t id, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	send_error(id, 0, fmt, ap);
	va_end(ap);
}

void ctl_errno(uint32_t id, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	send_error(id, err, fmt, ap);
	va_end(ap);
}

void ctl_status(uint8_t type, uint32_t id, int status)
{
	uint8_t st[4];
	put32(st, (uint32_t)status);
	send_frame(&ctl, type, 0, id, st, 4);
}

void log_send(uint8_t stream, const void *body, uint32_t len)
{
	send_frame(&logp, MSG_LOG, stream, 0, body, len);
}
