/*
 * Terminals the host opens (PTY_*): a process in its own session on a pseudo
 * terminal, typed input in, output out in batches, hangup on close.
 * Like execs (proc.h) they outlive the host connection that opened them:
 * detached, their output is held until a host ATTACHes them; one that no host
 * claims within ORPHAN_GRACE_S of arriving is hung up.
 */
#ifndef CELLA_PTY_H
#define CELLA_PTY_H

#include <stdint.h>
#include <sys/types.h>

#include "proc.h"

#define MAX_PTYS 64

/* Request handlers (the dispatcher's table). */
void pty_open(uint32_t id, const uint8_t *body, uint32_t len);
void pty_in(uint32_t id, const uint8_t *body, uint32_t len);
void pty_resize(uint32_t id, const uint8_t *body, uint32_t len);
void pty_close(uint32_t id, const uint8_t *body, uint32_t len);

/* The host is gone or replaced: every terminal is detached. */
void pty_detach_all(void);
/* ATTACH of a terminal: 0 when there is one with this id (OK sent, and its exit if it ended), else -1. */
int pty_attach(uint32_t id);
/* SIGNAL of a terminal's session: 0 when a live one has this id. */
int pty_signal(uint32_t id, int sig);
/* 1 when a terminal that has not ended has this id. */
int pty_id_live(uint32_t id);
/* Forgets an ended terminal of this id. */
void pty_forget(uint32_t id);
/* The record of terminal slot `idx` (0 .. MAX_PTYS - 1) for EXEC_LIST, or NULL when the slot is free. */
const struct proc_rec *pty_rec(int idx);
/* Forwards what exited sessions still hold, as fast as the host takes it. */
void pty_drain_all(void);
/* Sends the SIGKILLs that are due, runs the timers, adds the terminals to the poll set (reads only while `produce`). */
void pty_poll(int produce);
/* A child was reaped: if it led a session, the session ends once its output is drained. */
void pty_reaped(pid_t pid, int status);

#endif
