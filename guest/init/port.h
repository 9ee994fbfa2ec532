/*
 * The virtio-serial ports: the control port (cella.ctl) carries requests and
 * replies as frames (protocol.h), the log port (cella.log) the app's output.
 * Either may be closed at any time (the host side went away, a snapshot was
 * restored); it is reopened with backoff and the control port says HELLO.
 */
#ifndef CELLA_PORT_H
#define CELLA_PORT_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* A whole frame from the host; `body` points into the port's buffer until the handler returns. */
struct frame {
	uint8_t type, stream;
	uint32_t id;
	const uint8_t *body;
	uint32_t len;
};

typedef void frame_fn(const struct frame *f);

/* The frame at the front of buf: 1 when it is whole, 0 when more bytes are needed, -1 when its body is over CELLA_MAX_BODY. */
int frame_next(const uint8_t *buf, size_t len, struct frame *f);

/* Opens the ports that are closed and due for a retry (at boot: both). */
void port_retry(void);
/* Milliseconds until a closed port is due (0 if now), or -1 when both are open. */
long port_retry_ms(void);
/* Writes what the control port queued and can take now. */
void port_flush(void);
/* 1 once after the control port was lost: whatever its host opened is orphaned. */
int port_lost(void);
/* 1 while a host is known to be there: a frame arrived since the control port was (re)opened. */
int port_host_present(void);

/* The control port's poll entry, and its service: flushes the queue, hands each whole frame to `dispatch`. */
void ctl_poll(struct pollfd *pf);
void ctl_ready(const struct pollfd *pf, frame_fn *dispatch);
/* 1 while the host keeps up: producers (execs, terminals) may be read. */
int ctl_keeps_up(void);

/* Frames to the host; a body over CELLA_MAX_OUT is not sent. */
void ctl_send(uint8_t type, uint8_t stream, uint32_t id, const void *body, uint32_t len);
void ctl_ok(uint32_t id);
void ctl_reply(uint32_t id, const void *body, uint32_t len); /* OK with a body */
void ctl_error(uint32_t id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ERROR carrying an errno in its stream byte (v3), so the host can tell ENOENT from EACCES without reading words. */
void ctl_errno(uint32_t id, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ctl_status(uint8_t type, uint32_t id, int status); /* body: i32 wait status */
void log_send(uint8_t stream, const void *body, uint32_t len);

#endif
