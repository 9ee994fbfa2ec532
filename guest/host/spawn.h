/* cella-spawn's command line (spawn.c runs it; args.c parses it, test/args_test.c checks the parser). */
#ifndef CELLA_SPAWN_H
#define CELLA_SPAWN_H

#include <stdbool.h>

#define SPAWN_FAILED 125
#define SPAWN_EXEC_FAILED 127
/* One cgroup.procs per controller hierarchy: three under cgroup v1, one under v2. */
#define SPAWN_MAX_JOIN 8
#define SPAWN_USAGE "cella-spawn [--pdeathsig] [--watch] [--join FILE]... [--netns PATH] -- PROGRAM [ARG]..."

struct spawn_opts {
	bool pdeathsig;
	bool watch;
	int njoin;
	const char *join[SPAWN_MAX_JOIN];
	const char *netns;
	/* PROGRAM and its arguments, NULL-terminated (points into argv). */
	char **argv;
};

/* Fills `o` from argv; NULL when it is well formed, else what is wrong (a static string). */
const char *spawn_parse(int argc, char **argv, struct spawn_opts *o);

#endif
