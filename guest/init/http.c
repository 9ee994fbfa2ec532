/* The envs listener: accept, read a request head, answer from the sandbox's environment, close. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "http.h"
#include "loop.h"
#include "parse.h"
#include "port.h"
#include "system.h"

struct client {
	struct conn conn; /* first: the table is conn_accept()'s */
	size_t in_len;
	char in[HTTP_HEAD_MAX];
	char *out; /* the whole response once the request is read */
	size_t out_len, out_off;
};

static int lfd[2] = { -1, -1 };             /* 127.0.0.1, ::1 */
static struct client clients[HTTP_CLIENTS]; /* fd -1 once listening (zero-filled until then: not in .data) */

static void client_close(struct client *c)
{
	close(c->conn.fd);
	free(c->out);
	*c = (struct client){ .conn.fd = -1 };
}

/* The environment as a JSON object; NULL when out of memory. */
static char *envs_json(size_t *len)
{
	int n;
	char *const *env = env_global(&n);
	size_t cap = 3;
	for (int i = 0; i < n; i++)
		cap += 6 * strlen(env[i]) + 6; /* every byte escaped at worst, quotes, colon, comma: json_string never fails below */
	char *out = malloc(cap);
	if (!out)
		return NULL;
	size_t w = 0;
	out[w++] = '{';
	for (int i = 0; i < n; i++) {
		const char *kv = env[i], *eq = strchr(kv, '=');
		if (i)
			out[w++] = ',';
		long k = json_string(out + w, cap - w, (const uint8_t *)kv, eq - kv);
		out[w + k] = ':';
		w += k + 1;
		w += json_string(out + w, cap - w, (const uint8_t *)eq + 1, strlen(eq + 1));
	}
	out[w++] = '}';
	*len = w;
	return out;
}

static void respond(struct client *c, const char *status, const char *body, size_t body_len)
{
	char head[256];
	int h = body_len ? snprintf(head, sizeof head,
				    "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
				    status, body_len)
			 : snprintf(head, sizeof head, "HTTP/1.1 %s\r\nConnection: close\r\n\r\n", status);
	c->out = malloc(h + body_len);
	if (!c->out) {
		client_close(c);
		return;
	}
	memcpy(c->out, head, h);
	if (body_len)
		memcpy(c->out + h, body, body_len);
	c->out_len = h + body_len;
	c->out_off = 0;
}

static void answer(struct client *c, int route)
{
	static const char bad[] = "{\"message\":\"bad request\"}", big[] = "{\"message\":\"request head too large\"}",
			  missing[] = "{\"message\":\"not found\"}", method[] = "{\"message\":\"method not allowed\"}",
			  nomem[] = "{\"message\":\"out of memory\"}";
	size_t len;
	char *json;
	switch (route) {
	case HTTP_ENVS:
		json = envs_json(&len);
		if (json)
			respond(c, "200 OK", json, len);
		else
			respond(c, "503 Service Unavailable", nomem, sizeof nomem - 1);
		free(json);
		break;
	case HTTP_HEALTH:
		respond(c, "204 No Content", NULL, 0);
		break;
	case HTTP_NOT_FOUND:
		respond(c, "404 Not Found", missing, sizeof missing - 1);
		break;
	case HTTP_BAD_METHOD:
		respond(c, "405 Method Not Allowed", method, sizeof method - 1);
		break;
	case 0:
		respond(c, "431 Request Header Fields Too Large", big, sizeof big - 1);
		break;
	default:
		respond(c, "400 Bad Request", bad, sizeof bad - 1);
	}
}

static void client_read(struct client *c)
{
	ssize_t n = read(c->conn.fd, c->in + c->in_len, sizeof c->in - c->in_len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	c->in_len += n;
	int route = http_parse(c->in, c->in_len);
	if (route != 0 || c->in_len == sizeof c->in)
		answer(c, route);
}

static void client_write(struct client *c)
{
	ssize_t n = send(c->conn.fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		c->out_off += n;
	if (n <= 0 || c->out_off == c->out_len)
		client_close(c);
}

static void client_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	struct client *c = &clients[idx];
	if (c->conn.fd != pf->fd)
		return;
	if (c->out)
		client_write(c);
	else
		client_read(c);
}

static void client_drop(struct conn *c)
{
	client_close((struct client *)c);
}

static void listen_ready(unsigned idx, unsigned stream, const struct pollfd *pf)
{
	conn_accept(lfd[idx], clients, sizeof *clients, HTTP_CLIENTS, client_drop);
}

void http_poll(void)
{
	if (lfd[0] < 0)
		return;
	for (int i = 0; i < 2; i++)
		if (lfd[i] >= 0)
			loop_watch(lfd[i], POLLIN, listen_ready, i, 0);
	for (int i = 0; i < HTTP_CLIENTS; i++)
		if (clients[i].conn.fd >= 0)
			loop_watch(clients[i].conn.fd, clients[i].out ? POLLOUT : POLLIN, client_ready, i, 0);
}

static int listen_on(int family, uint16_t port)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int one = 1, fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	int r = family == AF_INET ? bind(fd, (struct sockaddr *)&a4, sizeof a4) : bind(fd, (struct sockaddr *)&a6, sizeof a6);
	if (r < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

void http_listen(uint32_t id, const uint8_t *body, uint32_t len)
{
	uint16_t port = HTTP_PORT;
	if (len == 2)
		port = body[0] | body[1] << 8;
	if ((len != 0 && len != 2) || port == 0) {
		ctl_errno(id, EINVAL, "bad port");
		return;
	}
	if (lfd[0] >= 0) {
		ctl_ok(id); /* already listening (on the port of the first request) */
		return;
	}
	int fd = listen_on(AF_INET, port);
	if (fd < 0) {
		ctl_errno(id, -fd, "listen on 127.0.0.1:%u: %s", port, strerror(-fd));
		return;
	}
	for (int i = 0; i < HTTP_CLIENTS; i++)
		clients[i].conn.fd = -1;
	lfd[0] = fd;
	fd = listen_on(AF_INET6, port); /* best effort: "localhost" may resolve to ::1 first */
	lfd[1] = fd >= 0 ? fd : -1;
	ctl_ok(id);
}
