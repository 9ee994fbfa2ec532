/*
 * Client tables of PID 1's listening sockets (the agent socket, the envs
 * listener). Each entry starts with struct conn; a new connection takes a free
 * entry, else the oldest one's, so a flood of connections never holds more
 * than the table and never locks a new client out.
 */
#ifndef CELLA_CONN_H
#define CELLA_CONN_H

#include <stddef.h>
#include <sys/socket.h>

struct conn {
	int fd;              /* -1 when free */
	unsigned long since; /* accept order */
};

typedef void conn_drop_fn(struct conn *c);

/* Accepts what `lsock` has pending into `table` (n entries of `stride` bytes, each starting with a struct conn). */
static inline void conn_accept(int lsock, void *table, size_t stride, int n, conn_drop_fn *drop)
{
	static unsigned long accepted;
	for (int k = 0; k < n; k++) {
		int fd = accept4(lsock, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct conn *c = table;
		for (int i = 0; i < n; i++) {
			struct conn *e = (struct conn *)((char *)table + i * stride);
			if (e->fd < 0 || (c->fd >= 0 && e->since < c->since))
				c = e;
		}
		if (c->fd >= 0)
			drop(c);
		c->fd = fd;
		c->since = ++accepted;
	}
}

#endif
