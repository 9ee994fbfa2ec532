/* cella-netd's request parser (protocol in netd.h): framing first, then every field is checked. */
#include "netd.h"

#include <string.h>

/* Reads a decimal without sign or leading zeros (but "0"), at most `max`; advances *p past it. */
static int decimal(const char **p, const char *end, unsigned long long max, unsigned long long *out)
{
	const char *s = *p;
	unsigned long long v = 0;
	if (s == end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9'))
		return -1;
	for (; s < end && *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (unsigned long long)(*s - '0');
		if (v > max)
			return -1;
	}
	*p = s;
	*out = v;
	return 0;
}

static int word(const char **p, const char *end, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(end - *p) < n || memcmp(*p, w, n))
		return -1;
	*p += n;
	return 0;
}

static int space(const char **p, const char *end)
{
	if (*p == end || **p != ' ')
		return -1;
	(*p)++;
	return 0;
}

/* The tag is text others read back from /sys: printable ASCII only. */
static int tag_ok(const char *t, size_t n)
{
	if (n > NETD_MAX_TAG)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (t[i] < 0x20 || t[i] > 0x7e)
			return 0;
	return 1;
}

long netd_parse(const char *buf, size_t len, struct netd_req *req, const char **invalid)
{
	memset(req, 0, sizeof(*req));
	*invalid = NULL;
	const char *nl = memchr(buf, '\n', len < NETD_MAX_HEADER ? len : NETD_MAX_HEADER);
	if (!nl) {
		if (len < NETD_MAX_HEADER)
			return 0;
		*invalid = "header line too long";
		return -1;
	}
	const char *p = buf, *end = nl;
	unsigned long long id, slot, size;
	if (decimal(&p, end, NETD_MAX_ID, &id) || id == 0 || space(&p, end)) {
		*invalid = "bad request id";
		return -1;
	}
	enum netd_op op;
	if (!word(&p, end, "add"))
		op = NETD_ADD;
	else if (!word(&p, end, "setup"))
		op = NETD_SETUP;
	else if (!word(&p, end, "nft"))
		op = NETD_NFT;
	else if (!word(&p, end, "destroy"))
		op = NETD_DESTROY;
	else {
		*invalid = "unknown operation";
		return -1;
	}
	/* The slot is checked after framing, so a slot out of range is answered, not fatal. */
	if (space(&p, end) || decimal(&p, end, ~0ULL, &slot) || space(&p, end) || decimal(&p, end, NETD_MAX_PAYLOAD, &size) || p != end) {
		*invalid = "bad header (want: ID OP SLOT LEN)";
		return -1;
	}
	size_t header = (size_t)(nl - buf) + 1;
	if (len - header < size)
		return 0;
	req->id = id;
	req->op = op;
	req->slot = (unsigned)(slot < NETD_MAX_SLOTS ? slot : NETD_MAX_SLOTS);
	long total = (long)(header + size);
	const char *body = nl + 1;
	if (slot >= NETD_MAX_SLOTS) {
		*invalid = "slot out of range";
		return total;
	}
	if (op == NETD_ADD || op == NETD_DESTROY) {
		if (size)
			*invalid = "add and destroy take no payload";
		return total;
	}
	if (op == NETD_SETUP) {
		const char *sep = memchr(body, '\n', size);
		if (!sep) {
			*invalid = "setup wants TAG\\nRULES";
			return total;
		}
		req->tag = body;
		req->tag_len = (size_t)(sep - body);
		if (!tag_ok(req->tag, req->tag_len)) {
			*invalid = "tag must be at most 255 printable ASCII characters";
			return total;
		}
		body = sep + 1;
		size -= req->tag_len + 1;
	}
	req->rules = body;
	req->rules_len = size;
	if (!size || memchr(body, '\0', size))
		*invalid = "rules must be non-empty text without NUL";
	return total;
}
