/*
 * Small helpers every part of cella-init uses: little-endian integers (the
 * wire format) and monotonic deadlines. Header-only, so the fuzz harness
 * gets them without linking anything.
 */
#ifndef CELLA_UTIL_H
#define CELLA_UTIL_H

#include <stdint.h>
#include <time.h>

#define RUN_DIR "/run/cella" /* tmpfs: the agent socket, the client binary, the build disk */

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static inline uint32_t get32(const uint8_t *p)
{
	return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void now(struct timespec *t)
{
	clock_gettime(CLOCK_MONOTONIC, t);
}

static inline void after_ms(struct timespec *t, long ms)
{
	now(t);
	t->tv_nsec += ms * 1000000;
	t->tv_sec += t->tv_nsec / 1000000000;
	t->tv_nsec %= 1000000000;
}

static inline long ms_until(const struct timespec *t)
{
	struct timespec n;
	now(&n);
	return (t->tv_sec - n.tv_sec) * 1000 + (t->tv_nsec - n.tv_nsec) / 1000000;
}

#endif
