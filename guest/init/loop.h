/*
 * What the main loop (main.c) offers the other parts: a poll set rebuilt on
 * every turn. Each part adds its descriptors with the function to call when
 * one is ready, and the deadlines by which the loop must wake.
 */
#ifndef CELLA_LOOP_H
#define CELLA_LOOP_H

#include <poll.h>

/* `idx` and `stream` are the part's own, handed back as given. */
typedef void ready_fn(unsigned idx, unsigned stream, const struct pollfd *pf);

void loop_watch(int fd, short events, ready_fn *ready, unsigned idx, unsigned stream);
void loop_wake_within(long ms); /* ms >= 0; the earliest wins */

#endif
