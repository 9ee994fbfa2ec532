/*
 * Building TLV records (protocol.h) into a bounded buffer: the bodies of
 * structured replies. A record that does not fit is not written and marks
 * the buffer as over; what was written before stays whole.
 */
#ifndef CELLA_RECORD_H
#define CELLA_RECORD_H

#include <stdint.h>
#include <string.h>

#include "util.h"

struct rec {
	uint8_t *p;
	uint32_t len, cap;
	int over;
};

static inline int rec_put(struct rec *r, uint8_t tag, const void *v, uint32_t len)
{
	if (r->cap - r->len < 5 || len > r->cap - r->len - 5) {
		r->over = 1;
		return -1;
	}
	r->p[r->len] = tag;
	put32(r->p + r->len + 1, len);
	if (len)
		memcpy(r->p + r->len + 5, v, len);
	r->len += 5 + len;
	return 0;
}

/* Records already encoded, appended whole or not at all. */
static inline int rec_raw(struct rec *r, const void *v, uint32_t len)
{
	if (len > r->cap - r->len) {
		r->over = 1;
		return -1;
	}
	if (len)
		memcpy(r->p + r->len, v, len);
	r->len += len;
	return 0;
}

static inline int rec_u32(struct rec *r, uint8_t tag, uint32_t v)
{
	uint8_t b[4];
	put32(b, v);
	return rec_put(r, tag, b, 4);
}

static inline int rec_u64(struct rec *r, uint8_t tag, uint64_t v)
{
	uint8_t b[8];
	put32(b, (uint32_t)v);
	put32(b + 4, (uint32_t)(v >> 32));
	return rec_put(r, tag, b, 8);
}

static inline int rec_str(struct rec *r, uint8_t tag, const char *s)
{
	return rec_put(r, tag, s, strlen(s));
}

#endif
