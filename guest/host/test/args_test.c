/*
 * spawn_parse on edge cases and on seeded random argument vectors, under ASan
 * and UBSan (src/vmm/spawner.test.ts builds and runs it): it must never read
 * past argv, accept a relative path, or hand back more --join files than fit.
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

static const char *const WORDS[] = { "--pdeathsig", "--watch", "--join", "--netns", "--", "/p", "rel", "", "-", "--joi", "/run/netns/a" };

int main(int argc, char **argv)
{
	unsigned seed = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1;
	long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
	srand(seed);
	edge_cases();
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
		}
		free(args);
		cases++;
	}
	printf("{\"cases\":%ld,\"failures\":%d}\n", cases, failures);
	return failures ? 1 : 0;
}
