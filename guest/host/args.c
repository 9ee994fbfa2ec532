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

/* A path option given at most once: sets *slot from its value, or says what is wrong. */
static const char *once(int argc, char **argv, int *i, const char **slot, const char *twice, const char *bad)
{
	if (*slot)
		return twice;
	*slot = path_value(argc, argv, i);
	return *slot ? NULL : bad;
}

const char *spawn_parse(int argc, char **argv, struct spawn_opts *o)
{
	const char *err = NULL;
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
		} else if (!strcmp(a, "--setsid")) {
			o->setsid = true;
		} else if (!strcmp(a, "--stderr")) {
			err = once(argc, argv, &i, &o->stderr_file, "--stderr given twice", "--stderr needs an absolute FILE");
		} else if (!strcmp(a, "--join")) {
			if (o->njoin == SPAWN_MAX_JOIN)
				return "too many --join files";
			const char *v = path_value(argc, argv, &i);
			if (!v)
				return "--join needs an absolute FILE";
			o->join[o->njoin++] = v;
		} else if (!strcmp(a, "--netns")) {
			err = once(argc, argv, &i, &o->netns, "--netns given twice", "--netns needs an absolute PATH");
		} else {
			err = "unknown option";
		}
		if (err)
			return err;
	}
	return "missing -- PROGRAM";
}

long serve_frame(unsigned char *buf, size_t len, char **payload, size_t *plen)
{
	if (len < SERVE_HEADER)
		return 0;
	size_t n = (size_t)buf[0] | (size_t)buf[1] << 8 | (size_t)buf[2] << 16 | (size_t)buf[3] << 24;
	if (n > SERVE_MAX_FRAME)
		return -1;
	if (len - SERVE_HEADER < n)
		return 0;
	*payload = (char *)buf + SERVE_HEADER;
	*plen = n;
	return (long)(SERVE_HEADER + n);
}

const char *serve_parse(char *payload, size_t len, char **slots, int nslots, const char **id, struct spawn_opts *o)
{
	*id = NULL;
	if (len == 0 || payload[len - 1] != '\0')
		return "a request must end with a NUL";
	char *end = payload + len;
	char *f = payload + strlen(payload) + 1;
	if (strcmp(payload, "spawn"))
		return "unknown request";
	if (f == end || !*f || strspn(f, "0123456789") != strlen(f) || strlen(f) > 15)
		return "a request needs a decimal ID";
	*id = f;
	f += strlen(f) + 1;
	int n = 0;
	slots[n++] = "cella-spawn";
	for (; f < end; f += strlen(f) + 1) {
		if (n >= nslots - 1)
			return "too many arguments";
		slots[n++] = f;
	}
	slots[n] = NULL;
	return spawn_parse(n, slots, o);
}
