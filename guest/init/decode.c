/* Request bodies from the host into typed values; every length is checked against the body. */
#include <string.h>

#include "decode.h"
#include "protocol.h"
#include "util.h"

#define TLV_HEADER 5

int tlv_next(const uint8_t *body, uint32_t len, uint32_t *off, struct tlv *r)
{
	uint32_t left = len - *off;
	if (left == 0)
		return 0;
	if (left < TLV_HEADER)
		return -1;
	r->tag = body[*off];
	r->len = get32(body + *off + 1);
	if (r->len > left - TLV_HEADER)
		return -1;
	r->val = body + *off + TLV_HEADER;
	*off += TLV_HEADER + r->len;
	return 1;
}

int parse_spec(const uint8_t *body, uint32_t len, struct spec *s, int empty_ok)
{
	/* Copy so terminating NULs never clobber the following record. */
	static char copy[CELLA_MAX_BODY + MAX_ARGS * 2];
	uint32_t off = 0, w = 0, u;
	struct tlv r;
	int more;
	memset(s, 0, sizeof *s);
	s->cwd = "/";
	while ((more = tlv_next(body, len, &off, &r)) > 0) {
		if (r.len >= sizeof copy - w)
			return -1;
		char *v = copy + w;
		memcpy(v, r.val, r.len);
		v[r.len] = 0;
		w += r.len + 1;
		switch (r.tag) {
		case TAG_ARG:
			if (s->argc >= MAX_ARGS)
				return -1;
			s->argv[s->argc++] = v;
			break;
		case TAG_ENV:
			if (s->envc >= MAX_ARGS)
				return -1;
			s->envp[s->envc++] = v;
			break;
		case TAG_CWD:
			s->cwd = v;
			break;
		case TAG_UID:
			if (decode_u32(r.val, r.len, &u) < 0)
				return -1;
			s->uid = u;
			break;
		case TAG_GID:
			if (decode_u32(r.val, r.len, &u) < 0)
				return -1;
			s->gid = u;
			break;
		case TAG_STDIN:
			s->stdin_data = (const uint8_t *)v;
			s->stdin_len = r.len;
			break;
		case TAG_WINSIZE:
			if (decode_winsize(r.val, r.len, &s->rows, &s->cols) < 0)
				return -1;
			break;
		default:
			return -1;
		}
	}
	if (more < 0 || (s->argc == 0 && !empty_ok))
		return -1;
	s->argv[s->argc] = NULL;
	s->envp[s->envc] = NULL;
	return 0;
}

int decode_u32(const uint8_t *body, uint32_t len, uint32_t *v)
{
	if (len != 4)
		return -1;
	*v = get32(body);
	return 0;
}

int decode_winsize(const uint8_t *body, uint32_t len, unsigned short *rows, unsigned short *cols)
{
	if (len != 4)
		return -1;
	*rows = body[0] | body[1] << 8;
	*cols = body[2] | body[3] << 8;
	return 0;
}

int decode_clock(const uint8_t *body, uint32_t len, struct timespec *t)
{
	if (len != 12)
		return -1;
	t->tv_sec = (time_t)((uint64_t)get32(body) | ((uint64_t)get32(body + 4) << 32));
	t->tv_nsec = get32(body + 8);
	return 0;
}
