/*
 * Terminals the host opens (PTY_*): a process in its own session on a pseudo
 * terminal, typed input in, output out in batches, hangup on close.
 */
#ifndef CELLA_PTY_H
#define CELLA_PTY_H

#include <stdint.h>
#include <sys/types.h>

#define MAX_PTYS 8

/* Request handlers (the dispatcher's table). */
void pty_open(uint32_t id, const uint8_t *body, uint32_t len);
void pty_in(uint32_t id, const uint8_t *body, uint32_t len);
void pty_resize(uint32_t id, const uint8_t *body, uint32_t len);
void pty_close(uint32_t id, const uint8_t *body, uint32_t len);

/* The host that opened the terminals is gone; nobody else knows their ids: hang them all up silently. */
void pty_orphan_all(void);
/* Forwards what exited sessions still hold, as fast as the host takes it. */
void pty_drain_all(void);
/* Sends the SIGKILLs that are due, adds the terminals to the poll set (reads only while `produce`). */
void pty_poll(int produce);
/* A child was reaped: if it led a session, the session ends once its output is drained. */
void pty_reaped(pid_t pid, int status);

#endif
