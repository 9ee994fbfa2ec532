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

/* A value copied to `copy` at *w with a NUL after it (so it never clobbers the next record); NULL when it does not fit. */
static char *copy_value(char *copy, uint32_t cap, uint32_t *w, const struct tlv *r)
{
	if (r->len >= cap - *w)
		return NULL;
	char *v = copy + *w;
	memcpy(v, r->val, r->len);
	v[r->len] = 0;
	*w += r->len + 1;
	return v;
}

int parse_spec(const uint8_t *body, uint32_t len, struct spec *s, int empty_ok)
{
	/* Every record is at least 5 bytes and gains 1 (a NUL): the copies never outgrow the body. */
	static char copy[CELLA_MAX_BODY + MAX_ARGS * 2];
	uint32_t off = 0, w = 0, u;
	struct tlv r;
	int more;
	memset(s, 0, sizeof *s);
	s->cwd = "/";
	while ((more = tlv_next(body, len, &off, &r)) > 0) {
		char *v = copy_value(copy, sizeof copy, &w, &r);
		if (!v)
			return -1;
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
			s->gid_given = 1;
			break;
		case TAG_STDIN:
			s->stdin_data = (const uint8_t *)v;
			s->stdin_len = r.len;
			break;
		case TAG_WINSIZE:
			if (decode_winsize(r.val, r.len, &s->rows, &s->cols) < 0)
				return -1;
			break;
		case TAG_STDIN_PIPE:
			if (r.len != 0)
				return -1;
			s->stdin_pipe = 1;
			break;
		case TAG_GROUPS:
			if (r.len % 4 || r.len / 4 > MAX_GROUPS)
				return -1;
			s->ngroups = r.len / 4;
			for (int i = 0; i < s->ngroups; i++)
				s->groups[i] = get32(r.val + 4 * i);
			s->groups_given = 1;
			break;
		case TAG_LABEL:
			s->label = v;
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

uint32_t spec_info(const uint8_t *body, uint32_t len, uint8_t *out, uint32_t cap, int *truncated)
{
	uint32_t off = 0, w = 0;
	struct tlv r;
	*truncated = 0;
	while (tlv_next(body, len, &off, &r) > 0) {
		if (r.tag != TAG_ARG && r.tag != TAG_ENV && r.tag != TAG_CWD && r.tag != TAG_LABEL)
			continue;
		if (cap - w < TLV_HEADER || r.len > cap - w - TLV_HEADER) {
			*truncated = 1; /* a prefix of the records: never an argv with a hole */
			break;
		}
		memcpy(out + w, r.val - TLV_HEADER, TLV_HEADER + r.len);
		w += TLV_HEADER + r.len;
	}
	return w;
}

/* A path-like value: no NUL inside (it would silently cut the path short). */
static const char *path_value(char *copy, uint32_t cap, uint32_t *w, const struct tlv *r)
{
	if (memchr(r->val, 0, r->len))
		return NULL;
	return copy_value(copy, cap, w, r);
}

int parse_req(const uint8_t *body, uint32_t len, struct req *q)
{
	static char copy[CELLA_MAX_BODY];
	uint32_t off = 0, w = 0;
	struct tlv r;
	int more;
	memset(q, 0, sizeof *q);
	while ((more = tlv_next(body, len, &off, &r)) > 0) {
		uint32_t *num = NULL;
		int *has = NULL;
		switch (r.tag) {
		case TAG_PATH:
			if (!(q->path = path_value(copy, sizeof copy, &w, &r)))
				return -1;
			break;
		case TAG_DEST:
			if (!(q->dest = path_value(copy, sizeof copy, &w, &r)))
				return -1;
			break;
		case TAG_NAME:
			if (!(q->name = path_value(copy, sizeof copy, &w, &r)))
				return -1;
			break;
		case TAG_UID:
			num = &q->uid, has = &q->has_uid;
			break;
		case TAG_GID:
			num = &q->gid, has = &q->has_gid;
			break;
		case TAG_MODE:
			num = &q->mode, has = &q->has_mode;
			break;
		case TAG_DEPTH:
			num = &q->depth, has = &q->has_depth;
			break;
		case TAG_CREDIT:
			num = &q->credit, has = &q->has_credit;
			break;
		case TAG_RECURSIVE:
			if (r.len != 0)
				return -1;
			q->recursive = 1;
			break;
		case TAG_XATTR: {
			const uint8_t *nul = r.len ? memchr(r.val, 0, r.len) : NULL;
			if (!nul || nul == r.val || q->nxattr >= MAX_XATTRS)
				return -1;
			q->xattr[q->nxattr] = r.val;
			q->xattr_len[q->nxattr++] = r.len;
			break;
		}
		default:
			return -1;
		}
		if (num) {
			if (decode_u32(r.val, r.len, num) < 0)
				return -1;
			*has = 1;
		}
	}
	return more < 0 ? -1 : 0;
}

int parse_env(const uint8_t *body, uint32_t len, struct tlv *vals, int max)
{
	uint32_t off = 0;
	struct tlv r;
	int n = 0, more;
	while ((more = tlv_next(body, len, &off, &r)) > 0) {
		const uint8_t *eq = r.len ? memchr(r.val, '=', r.len) : NULL;
		if (r.tag != TAG_ENV || !eq || eq == r.val || memchr(r.val, 0, r.len) || n >= max)
			return -1;
		vals[n++] = r;
	}
	return more < 0 ? -1 : n;
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
