/*
 * cella-spawn's command line and its server's protocol (spawn.c runs the
 * prelude, serve.c the server; args.c parses both, test/args_test.c checks the
 * parsers).
 */
#ifndef CELLA_SPAWN_H
#define CELLA_SPAWN_H

#include <stdbool.h>
#include <stddef.h>

#define SPAWN_FAILED 125
#define SPAWN_EXEC_FAILED 127
/* One cgroup.procs per controller hierarchy: three under cgroup v1, one under v2. */
#define SPAWN_MAX_JOIN 8
#define SPAWN_USAGE                                                                                 \
	"cella-spawn [--pdeathsig] [--watch] [--join FILE]... [--netns PATH] -- PROGRAM [ARG]...\n" \
	"       cella-spawn --serve   (requests add [--setsid] [--stderr FILE]; see serve.c)"

struct spawn_opts {
	bool pdeathsig;
	bool watch;
	/* Requests to the server only: its own session, and stderr appended to a file rather than kept by the server. */
	bool setsid;
	const char *stderr_file;
	int njoin;
	const char *join[SPAWN_MAX_JOIN];
	const char *netns;
	/* PROGRAM and its arguments, NULL-terminated (points into argv). */
	char **argv;
};

/* Fills `o` from argv; NULL when it is well formed, else what is wrong (a static string). */
const char *spawn_parse(int argc, char **argv, struct spawn_opts *o);

/*
 * Runs the prelude's steps, then execs o->argv; returns only on failure, with
 * the status to exit with. `argc`/`argv` are the process's own command line,
 * which a watcher blanks.
 */
int spawn_prelude(const struct spawn_opts *o, int argc, char **argv);

/* The server's loop (serve.c); returns the status to exit with. */
int spawn_serve(int argc, char **argv);

/* A frame: a 4-byte little-endian payload length, then the payload. */
#define SERVE_HEADER 4
#define SERVE_MAX_FRAME (1u << 20)
/* Fields of one request, argv[0] and the closing NULL included. */
#define SERVE_MAX_ARGS 4096

/*
 * The first frame in `buf[0..len)`: sets *payload and *plen and returns the
 * bytes it spans; 0 if it is not all there yet; -1 if it announces more than
 * SERVE_MAX_FRAME.
 */
long serve_frame(unsigned char *buf, size_t len, char **payload, size_t *plen);

/*
 * A request's payload: NUL-terminated fields "spawn", ID (decimal digits),
 * then cella-spawn's arguments (as on its command line, without argv[0]).
 * Points `slots` (nslots long) at argv[0] and the arguments, sets *id once it
 * is read (else NULL), and parses them into `o`, whose argv points into the
 * payload. NULL when it is well formed, else what is wrong.
 */
const char *serve_parse(char *payload, size_t len, char **slots, int nslots, const char **id, struct spawn_opts *o);

#endif
