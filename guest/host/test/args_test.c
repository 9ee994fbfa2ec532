/*
 * spawn_parse on edge cases and on seeded random argument vectors, and the spawn
 * server's frame and request parsers on seeded random bytes, under ASan and
 * UBSan (src/vmm/spawner.test.ts builds and runs it): they must never read past
 * their input, accept a relative path, or hand back more --join files or
 * arguments than fit.
 * Usage: args_test SEED ITERATIONS; prints the count of cases run as JSON.
 */
#include "../spawn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void expect(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "FAIL: %s\n", what);
		failures++;
	}
}

/* Parses the NULL-terminated list `args` (argv[0] included). */
static const char *parse(const char **args, struct spawn_opts *o)
{
	int argc = 0;
	while (args[argc])
		argc++;
	return spawn_parse(argc, (char **)args, o);
}

static void edge_cases(void)
{
	struct spawn_opts o;
	const char *full[] = { "cella-spawn", "--pdeathsig",  "--watch", "--join",        "/a", "--join", "/b",
			       "--netns",     "/run/netns/x", "--",      "/usr/bin/qemu", "-x", "--join", NULL };
	expect(parse(full, &o) == NULL, "full command line accepted");
	expect(o.pdeathsig && o.watch && o.njoin == 2 && !strcmp(o.join[1], "/b") && !strcmp(o.netns, "/run/netns/x"), "full options read");
	expect(!strcmp(o.argv[0], "/usr/bin/qemu") && !strcmp(o.argv[2], "--join") && o.argv[3] == NULL, "PROGRAM's own args untouched");

	const char *bare[] = { "cella-spawn", "--", "/bin/true", NULL };
	expect(parse(bare, &o) == NULL && !o.pdeathsig && !o.watch && !o.njoin && !o.netns, "no options");

	const char *bad[][6] = {
		{ "cella-spawn", NULL },
		{ "cella-spawn", "--", NULL },
		{ "cella-spawn", "--", "true", NULL },
		{ "cella-spawn", "--join", NULL },
		{ "cella-spawn", "--join", "relative", "--", "/bin/true", NULL },
		{ "cella-spawn", "--join", "", "--", "/bin/true", NULL },
		{ "cella-spawn", "--netns", "/a", "--netns", "/b", NULL },
		{ "cella-spawn", "--netns", NULL },
		{ "cella-spawn", "--bogus", "--", "/bin/true", NULL },
		{ "cella-spawn", "--watch", "/bin/true", NULL },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(parse(bad[i], &o) != NULL, "malformed command line refused");

	const char *many[2 * SPAWN_MAX_JOIN + 6] = { "cella-spawn" };
	int n = 1;
	for (int i = 0; i <= SPAWN_MAX_JOIN; i++) {
		many[n++] = "--join";
		many[n++] = "/f";
	}
	many[n++] = "--";
	many[n++] = "/bin/true";
	many[n] = NULL;
	expect(parse(many, &o) != NULL, "one --join too many refused");
}

/* Copies `len` bytes to a heap block of exactly that size, so ASan catches a read past them. */
static char *exact(const char *bytes, size_t len)
{
	char *p = malloc(len ? len : 1);
	memcpy(p, bytes, len);
	return p;
}

static const char *request(const char *bytes, size_t len, struct spawn_opts *o, const char **id)
{
	char *slots[8];
	char *p = exact(bytes, len);
	const char *err = serve_parse(p, len, slots, 8, id, o);
	if (!err)
		expect(o->argv[0][0] == '/' && *id && strspn(*id, "0123456789") == strlen(*id), "request PROGRAM absolute, ID digits");
	free(p);
	return err;
}

static void serve_cases(void)
{
	struct spawn_opts o;
	const char *id;
	static const char ok[] = "spawn\0"
				 "12\0"
				 "--setsid\0"
				 "--stderr\0"
				 "/log\0"
				 "--\0"
				 "/q\0"
				 "-x\0";
	char *p = exact(ok, sizeof(ok) - 1);
	char *slots[8];
	expect(serve_parse(p, sizeof(ok) - 1, slots, 8, &id, &o) == NULL, "request accepted");
	expect(!strcmp(id, "12") && o.setsid && !strcmp(o.stderr_file, "/log") && !strcmp(o.argv[0], "/q") && !strcmp(o.argv[1], "-x") &&
		       o.argv[2] == NULL,
	       "request read");
	free(p);
	expect(request(ok, sizeof(ok) - 2, &o, &id) != NULL, "request without its last NUL refused");
	static const char no_id[] = "spawn\0"
				    "x1\0"
				    "--\0"
				    "/q\0";
	expect(request(no_id, sizeof(no_id) - 1, &o, &id) != NULL && id == NULL, "request without an ID refused");
	static const char other[] = "kill\0"
				    "1\0";
	expect(request(other, sizeof(other) - 1, &o, &id) != NULL, "unknown request refused");
	static const char many[] = "spawn\0"
				   "1\0"
				   "--\0"
				   "/q\0"
				   "a\0"
				   "b\0"
				   "c\0"
				   "d\0"
				   "e\0"
				   "f\0";
	expect(request(many, sizeof(many) - 1, &o, &id) != NULL, "more arguments than slots refused");
	expect(request("", 0, &o, &id) != NULL, "empty request refused");

	unsigned char frame[] = { 3, 0, 0, 0, 'a', 'b', 'c', 9 };
	char *payload;
	size_t plen;
	expect(serve_frame(frame, sizeof(frame), &payload, &plen) == 7 && plen == 3 && payload[0] == 'a', "frame read");
	expect(serve_frame(frame, 6, &payload, &plen) == 0 && serve_frame(frame, 3, &payload, &plen) == 0, "partial frame waits");
	unsigned char huge[] = { 0, 0, 0x20, 0 };
	expect(serve_frame(huge, sizeof(huge), &payload, &plen) < 0, "oversized frame refused");
}

/* Random requests from these fields and random bytes. */
static const char *const FIELDS[] = { "spawn", "1", "--", "/p", "--stderr", "--setsid", "--join", "rel", "", "--netns", "x" };

static void serve_random(void)
{
	char bytes[96];
	size_t len = 0;
	int n = rand() % 12;
	for (int i = 0; i < n && len < sizeof(bytes) - 16; i++) {
		if (rand() % 8 == 0) {
			bytes[len++] = (char)rand();
			continue;
		}
		const char *f = FIELDS[rand() % (sizeof(FIELDS) / sizeof(FIELDS[0]))];
		memcpy(bytes + len, f, strlen(f) + 1);
		len += strlen(f) + 1;
	}
	struct spawn_opts o;
	const char *id;
	request(bytes, len, &o, &id);
	/* The same bytes as a frame stream: a header whose length may overrun them. */
	unsigned char *stream = (unsigned char *)exact(bytes, len);
	char *payload;
	size_t plen;
	long used = serve_frame(stream, len, &payload, &plen);
	expect(used <= (long)len && (used <= 0 || (payload == (char *)stream + SERVE_HEADER && SERVE_HEADER + plen == (size_t)used)),
	       "frame inside input");
	free(stream);
}

static const char *const WORDS[] = { "--pdeathsig", "--watch", "--join",       "--netns",  "--",      "/p", "rel", "",
				     "-",           "--joi",   "/run/netns/a", "--stderr", "--setsid" };

int main(int argc, char **argv)
{
	unsigned seed = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1;
	long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
	srand(seed);
	edge_cases();
	serve_cases();
	long cases = 0;
	for (long it = 0; it < iters; it++) {
		/* A fresh heap array of exactly argc entries (no NULL end): ASan catches any read past it. */
		int len = 1 + rand() % 24;
		const char **args = malloc(sizeof(char *) * (size_t)len);
		args[0] = "cella-spawn";
		for (int i = 1; i < len; i++)
			args[i] = WORDS[rand() % (sizeof(WORDS) / sizeof(WORDS[0]))];
		struct spawn_opts o;
		if (spawn_parse(len, (char **)args, &o) == NULL) {
			expect(o.argv > (char **)args && o.argv < (char **)args + len && o.argv[0][0] == '/',
			       "PROGRAM inside argv, absolute");
			expect(o.njoin <= SPAWN_MAX_JOIN, "joins fit");
			for (int j = 0; j < o.njoin; j++)
				expect(o.join[j][0] == '/', "join paths absolute");
			expect(!o.netns || o.netns[0] == '/', "netns path absolute");
			expect(!o.stderr_file || o.stderr_file[0] == '/', "stderr path absolute");
		}
		free(args);
		serve_random();
		cases++;
	}
	printf("{\"cases\":%ld,\"failures\":%d}\n", cases, failures);
	return failures ? 1 : 0;
}
