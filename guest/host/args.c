#include "spawn.h"

#include <stddef.h>
#include <string.h>

/* A path option's value: present, not empty, and absolute (cellad passes only absolute paths). */
static const char *path_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc)
		return NULL;
	const char *v = argv[++*i];
	return v && v[0] == '/' ? v : NULL;
}

const char *spawn_parse(int argc, char **argv, struct spawn_opts *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!a)
			return "missing argument";
		if (!strcmp(a, "--")) {
			if (i + 1 >= argc || !argv[i + 1] || argv[i + 1][0] != '/')
				return "-- must be followed by an absolute PROGRAM path";
			o->argv = argv + i + 1;
			return NULL;
		}
		if (!strcmp(a, "--pdeathsig")) {
			o->pdeathsig = true;
		} else if (!strcmp(a, "--watch")) {
			o->watch = true;
		} else if (!strcmp(a, "--join")) {
			if (o->njoin == SPAWN_MAX_JOIN)
				return "too many --join files";
			const char *v = path_value(argc, argv, &i);
			if (!v)
				return "--join needs an absolute FILE";
			o->join[o->njoin++] = v;
		} else if (!strcmp(a, "--netns")) {
			if (o->netns)
				return "--netns given twice";
			const char *v = path_value(argc, argv, &i);
			if (!v)
				return "--netns needs an absolute PATH";
			o->netns = v;
		} else {
			return "unknown option";
		}
	}
	return "missing -- PROGRAM";
}
