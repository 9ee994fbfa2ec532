/*
 * The envs listener (ENVD_LISTEN): a small HTTP/1.1 server on 127.0.0.1 (and
 * ::1) inside the guest, for programs there that ask envd's port for the
 * sandbox's environment, as E2B's code interpreter does:
 *   GET /envs    200, the SET_ENV environment as a JSON object
 *   GET /health  204
 * One request per connection; at most HTTP_CLIENTS at a time (a new one
 * drops the oldest); a request head over HTTP_HEAD_MAX bytes gets 431.
 */
#ifndef CELLA_HTTP_H
#define CELLA_HTTP_H

#include <stdint.h>

#define HTTP_PORT 49983
#define HTTP_CLIENTS 8
#define HTTP_HEAD_MAX 4096

/* Request handler (the dispatcher's table). */
void http_listen(uint32_t id, const uint8_t *body, uint32_t len);
/* Adds the listening sockets and the clients to the poll set. */
void http_poll(void);

#endif
