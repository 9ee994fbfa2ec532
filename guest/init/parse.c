/* Text and records from inside the guest into typed values; every access is checked against the buffer's length. */
#include <string.h>

#include "parse.h"

/* Splits the line at *off (up to a newline or the end) into at most `max` fields at `sep`; returns how many. */
static int split_line(const char *buf, size_t len, size_t *off, char sep, struct span *f, int max)
{
	const char *p = buf + *off, *end = memchr(p, '\n', len - *off);
	if (!end)
		end = buf + len;
	*off = end - buf + (end < buf + len);
	int n = 0;
	for (;;) {
		const char *s = memchr(p, sep, end - p);
		if (n == max)
			return max + 1; /* too many fields */
		f[n].p = p;
		f[n++].len = (s ? s : end) - p;
		if (!s)
			return n;
		p = s + 1;
	}
}

/* A decimal u32: 1 to 10 digits, nothing else. */
static int num32(struct span s, uint32_t *v)
{
	uint64_t n = 0;
	if (s.len == 0 || s.len > 10)
		return -1;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		n = n * 10 + (s.p[i] - '0');
	}
	if (n > 0xffffffffu)
		return -1;
	*v = (uint32_t)n;
	return 0;
}

int pw_next(const char *buf, size_t len, size_t *off, struct pwent *e)
{
	struct span f[7];
	while (*off < len) {
		if (split_line(buf, len, off, ':', f, 7) != 7 || f[0].len == 0 || num32(f[2], &e->uid) || num32(f[3], &e->gid))
			continue;
		e->name = f[0];
		e->home = f[5];
		e->shell = f[6];
		return 1;
	}
	return 0;
}

int gr_next(const char *buf, size_t len, size_t *off, struct grent *e)
{
	struct span f[4];
	while (*off < len) {
		if (split_line(buf, len, off, ':', f, 4) != 4 || f[0].len == 0 || num32(f[2], &e->gid))
			continue;
		e->name = f[0];
		e->members = f[3];
		return 1;
	}
	return 0;
}

int gr_has(struct span members, const char *name, size_t name_len)
{
	const char *p = members.p, *end = members.p + members.len;
	while (p <= end) {
		const char *c = memchr(p, ',', end - p);
		size_t n = (c ? c : end) - p;
		if (n == name_len && name_len && memcmp(p, name, n) == 0)
			return 1;
		if (!c)
			break;
		p = c + 1;
	}
	return 0;
}

/* Decimal digits at p (after blanks), saturating; *used is how far it read. */
static uint64_t decimal(const char *p, const char *end, const char **used)
{
	uint64_t n = 0;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	for (; p < end && *p >= '0' && *p <= '9'; p++)
		n = n > (UINT64_MAX - 9) / 10 ? UINT64_MAX : n * 10 + (*p - '0');
	*used = p;
	return n;
}

int meminfo_parse(const char *buf, size_t len, struct meminfo *m)
{
	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
		{ "MemTotal:", offsetof(struct meminfo, total) },
		{ "MemFree:", offsetof(struct meminfo, free) },
		{ "Buffers:", offsetof(struct meminfo, buffers) },
		{ "Cached:", offsetof(struct meminfo, cached) },
		{ "SReclaimable:", offsetof(struct meminfo, sreclaimable) },
	};
	int total = 0;
	memset(m, 0, sizeof *m);
	for (size_t off = 0; off < len;) {
		const char *p = buf + off, *end = memchr(p, '\n', len - off);
		if (!end)
			end = buf + len;
		off = end - buf + 1;
		for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
			size_t kl = strlen(keys[k].key);
			if ((size_t)(end - p) < kl || memcmp(p, keys[k].key, kl) != 0)
				continue;
			const char *q;
			uint64_t v = decimal(p + kl, end, &q);
			v = v > UINT64_MAX / 1024 ? UINT64_MAX : v * 1024; /* the kernel writes kB */
			memcpy((char *)m + keys[k].off, &v, sizeof v);
			total |= k == 0;
		}
	}
	return total ? 0 : -1;
}

int cpustat_parse(const char *buf, size_t len, uint64_t *total, uint64_t *idle)
{
	if (len < 4 || memcmp(buf, "cpu ", 4) != 0)
		return -1;
	const char *p = buf + 4, *end = memchr(buf, '\n', len);
	if (!end)
		end = buf + len;
	*total = *idle = 0;
	/* user nice system idle iowait irq softirq steal (guest time is inside user and nice) */
	for (int i = 0; i < 8 && p < end; i++) {
		uint64_t v = decimal(p, end, &p);
		*total = *total > UINT64_MAX - v ? UINT64_MAX : *total + v;
		if (i == 3 || i == 4)
			*idle = *idle > UINT64_MAX - v ? UINT64_MAX : *idle + v;
	}
	return 0;
}

int http_parse(const char *buf, size_t len)
{
	/* The head ends at an empty line (CRLF or bare LF). */
	size_t head = 0;
	for (size_t i = 0; i + 1 < len && !head; i++)
		if (buf[i] == '\n' && (buf[i + 1] == '\n' || (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')))
			head = i + 1;
	if (!head)
		return 0;
	/* Request line: METHOD SP target SP HTTP/1.x */
	const char *p = buf, *end = memchr(buf, '\n', head);
	if (end > buf && end[-1] == '\r')
		end--;
	const char *sp1 = memchr(p, ' ', end - p);
	if (!sp1 || sp1 == p)
		return -1;
	for (const char *c = p; c < sp1; c++)
		if (*c < 'A' || *c > 'Z')
			return -1;
	const char *target = sp1 + 1, *sp2 = memchr(target, ' ', end - target);
	if (!sp2 || sp2 == target || *target != '/')
		return -1;
	for (const char *c = target; c < sp2; c++)
		if ((unsigned char)*c <= ' ' || *c == 0x7f)
			return -1;
	if (end - (sp2 + 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1'))
		return -1;
	if (sp1 - p != 3 || memcmp(p, "GET", 3) != 0)
		return HTTP_BAD_METHOD;
	const char *q = memchr(target, '?', sp2 - target);
	size_t plen = (q ? q : sp2) - target;
	if (plen == 5 && memcmp(target, "/envs", 5) == 0)
		return HTTP_ENVS;
	if (plen == 7 && memcmp(target, "/health", 7) == 0)
		return HTTP_HEALTH;
	return HTTP_NOT_FOUND;
}

/* The length of the valid UTF-8 sequence at p (1..4), or 0 when it is not one. */
static int utf8_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0];
	int k;
	uint8_t lo = 0x80, hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		k = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		k = 3;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c >= 0xf0 && c <= 0xf4) {
		k = 4;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else
		return 0;
	if (n < (size_t)k || p[1] < lo || p[1] > hi)
		return 0;
	for (int i = 2; i < k; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return k;
}

long json_string(char *out, size_t cap, const uint8_t *in, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t w = 0;
#define PUT(s, n)                          \
	do {                               \
		if (cap - w < (size_t)(n)) \
			return -1;         \
		memcpy(out + w, s, n);     \
		w += n;                    \
	} while (0)
	if (cap < 2)
		return -1;
	out[w++] = '"';
	for (size_t i = 0; i < len;) {
		uint8_t c = in[i];
		int k = utf8_len(in + i, len - i);
		if (k == 0) {
			PUT("\\ufffd", 6);
			i++;
		} else if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			PUT(e, 2);
			i++;
		} else if (c < 0x20) {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			PUT(e, 6);
			i++;
		} else {
			PUT(in + i, k);
			i += k;
		}
	}
	PUT("\"", 1);
#undef PUT
	return (long)w;
}

int inotify_next(const uint8_t *buf, size_t len, size_t *off, struct inev *e)
{
	/* struct inotify_event: int wd; uint32_t mask, cookie, len; char name[len]. */
	uint32_t h[4];
	if (*off == len)
		return 0;
	if (len - *off < sizeof h)
		return -1;
	memcpy(h, buf + *off, sizeof h);
	if (h[3] > len - *off - sizeof h)
		return -1;
	e->wd = (int32_t)h[0];
	e->mask = h[1];
	e->cookie = h[2];
	e->name = (const char *)buf + *off + sizeof h;
	e->name_len = strnlen(e->name, h[3]);
	*off += sizeof h + h[3];
	return 1;
}
