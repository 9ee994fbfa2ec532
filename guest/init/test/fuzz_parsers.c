/*
 * Fuzz-style test of the code in cella-init that parses bytes from the host
 * or from guest users: a crash there panics PID 1. Built for the build host
 * with AddressSanitizer and UBSan (`make -C guest fuzz`), it includes the
 * sources under test so their static functions are reachable, and runs each
 * parser on hand-written edge cases, then on random and mutated inputs from a
 * seeded PRNG. Every input is copied to an allocation of exactly its size, so
 * a read one byte past the end is a sanitizer report; every result is checked
 * against a model written here. Any report or mismatch exits non-zero.
 *
 * usage: fuzz-parsers [seed [iterations]]
 * Prints one JSON line of case counts per parser when everything passed.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../agent.c"
#include "../boot.c"
#include "../decode.c"
#include "../parse.c"
#include "../port.c"

/* ---------- stand-ins for what the included files use from the rest ---------- */

static int logged; /* logmsg calls: the guest would write them to its console */

void logmsg(const char *fmt, ...)
{
	logged++;
}
void loop_watch(int fd, short events, ready_fn *ready, unsigned idx, unsigned stream)
{
}
void loop_wake_within(long ms)
{
}

/* ---------- harness ---------- */

static uint64_t rng_state;
static const char *current = "setup"; /* the check running, for the failure message */

static uint64_t rnd(void)
{
	/* splitmix64: good enough mixing, trivially reproducible from the seed */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t below(uint32_t n)
{
	return n ? (uint32_t)(rnd() % n) : 0;
}

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fuzz-parsers: %s: ", current);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

#define CHECK(cond, ...)                   \
	do {                               \
		if (!(cond))               \
			fail(__VA_ARGS__); \
	} while (0)

/* An exact-size copy: the sanitizer reports any read past its end. */
static uint8_t *exact(const uint8_t *d, size_t n)
{
	uint8_t *p = malloc(n);
	if (!p && n)
		fail("out of memory");
	if (n)
		memcpy(p, d, n);
	return p;
}

/* A growable byte buffer for building inputs. */
struct buf {
	uint8_t *p;
	size_t len, cap;
};

static uint8_t *buf_grow(struct buf *b, size_t n)
{
	if (!b->p || b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			fail("out of memory");
	}
	b->len += n;
	return b->p + b->len - n;
}

static void buf_put(struct buf *b, const void *d, size_t n)
{
	uint8_t *p = buf_grow(b, n);
	if (n)
		memcpy(p, d, n);
}

static void buf_u32(struct buf *b, uint32_t v)
{
	uint8_t le[4];
	put32(le, v);
	buf_put(b, le, 4);
}

static void buf_random(struct buf *b, size_t n)
{
	uint8_t *p = buf_grow(b, n);
	for (size_t i = 0; i < n; i++)
		p[i] = rnd();
}

/*
 * `parts` pieces: one of `words`, or one time in `rand_one_in` fewer than
 * `rand_max` random bytes; each followed by `sep` (if any) but one time in
 * `sep_skip_one_in`.
 */
static void put_words(struct buf *b, const char *const *words, size_t nwords, int parts, uint32_t rand_one_in, uint32_t rand_max,
		      const char *sep, uint32_t sep_skip_one_in)
{
	for (int i = 0; i < parts; i++) {
		if (below(rand_one_in) == 0)
			buf_random(b, below(rand_max));
		else {
			const char *w = words[below(nwords)];
			buf_put(b, w, strlen(w));
		}
		if (sep && below(sep_skip_one_in))
			buf_put(b, sep, strlen(sep));
	}
}

static uint64_t fnv(const uint8_t *d, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ d[i]) * 0x100000001b3ull;
	return h;
}

/* Random edits of a valid input: flipped bytes, lengths set to edge values, truncation, garbage appended. */
static void mutate(struct buf *b)
{
	static const uint32_t edges[] = {
		0, 1, 3, 4, 5, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, CELLA_MAX_BODY, CELLA_MAX_BODY + 1
	};
	for (int k = 1 + below(4); k > 0; k--) {
		switch (below(5)) {
		case 0:
			if (b->len)
				b->p[below(b->len)] ^= 1 << below(8);
			break;
		case 1:
			if (b->len >= 4) {
				uint32_t v = edges[below(sizeof edges / sizeof *edges)];
				put32(b->p + below(b->len - 3), below(2) ? v : v + (uint32_t)b->len);
			}
			break;
		case 2:
			b->len = below(b->len + 1);
			break;
		case 3:
			buf_random(b, 1 + below(8));
			break;
		case 4:
			if (b->len)
				b->p[below(b->len)] = rnd();
			break;
		}
	}
}

/* ---------- TLV records and specs (parse_spec, decode_*) ---------- */

static void tlv(struct buf *b, uint8_t tag, const void *v, uint32_t len)
{
	buf_put(b, &tag, 1);
	buf_u32(b, len);
	buf_put(b, v, len);
}

#define INFO_CAP_BIG 8192

/* The spec's rules, walked independently: 1 if parse_spec must accept. */
static int spec_model_ok(const uint8_t *d, uint32_t n, int empty_ok)
{
	uint32_t off = 0;
	int argc = 0, envc = 0;
	while (off < n) {
		if (n - off < 5)
			return 0;
		uint8_t tag = d[off];
		uint32_t l = get32(d + off + 1);
		if (l > n - off - 5)
			return 0;
		off += 5 + l;
		if (tag == TAG_ARG && ++argc > MAX_ARGS)
			return 0;
		if (tag == TAG_ENV && ++envc > MAX_ARGS)
			return 0;
		if ((tag == TAG_UID || tag == TAG_GID || tag == TAG_WINSIZE) && l != 4)
			return 0;
		if ((tag == TAG_STDIN_PIPE && l != 0) || (tag == TAG_GROUPS && (l % 4 || l / 4 > MAX_GROUPS)))
			return 0;
		if (tag < TAG_ARG || tag > TAG_LABEL)
			return 0;
	}
	return argc > 0 || empty_ok;
}

static int same(const char *got, const uint8_t *want, uint32_t l)
{
	return memcmp(got, want, l) == 0 && got[l] == 0;
}

/* spec_info: a prefix of the ARG, ENV, CWD and LABEL records, byte for byte, up to the first that does not fit. */
static void check_spec_info(const uint8_t *d, uint32_t n)
{
	uint32_t caps[] = { 0, 4, 5, 6, below(64), below(4096), INFO_CAP_BIG };
	for (size_t c = 0; c < sizeof caps / sizeof *caps; c++) {
		uint32_t cap = caps[c];
		uint8_t *out = malloc(cap ? cap : 1);
		int truncated = -1;
		uint32_t got = spec_info(d, n, out, cap, &truncated);
		uint32_t off = 0, w = 0;
		int cut = 0;
		while (off < n && !cut) {
			uint8_t tag = d[off];
			uint32_t l = get32(d + off + 1);
			if (tag == TAG_ARG || tag == TAG_ENV || tag == TAG_CWD || tag == TAG_LABEL) {
				if ((uint64_t)w + 5 + l > cap)
					cut = 1;
				else {
					CHECK(w + 5 + l <= got && memcmp(out + w, d + off, 5 + l) == 0, "spec_info record at %u differs",
					      w);
					w += 5 + l;
				}
			}
			off += 5 + l;
		}
		CHECK(got == w && truncated == cut, "spec_info wrote %u (truncated %d), want %u (%d) with cap %u", got, truncated, w, cut,
		      cap);
		free(out);
	}
}

static void check_spec_once(const uint8_t *data, uint32_t n, int empty_ok)
{
	uint8_t *d = exact(data, n);
	struct spec s;
	int r = parse_spec(d, n, &s, empty_ok);
	int ok = spec_model_ok(d, n, empty_ok);
	CHECK((r == 0) == ok, "parse_spec returned %d for a %u-byte body the model %s (empty_ok %d)", r, n, ok ? "accepts" : "rejects",
	      empty_ok);
	if (r == 0) {
		/* The same walk again: each value must have come through whole, NUL-terminated. */
		uint32_t off = 0;
		int argc = 0, envc = 0;
		const uint8_t *cwd = NULL, *label = NULL, *groups = NULL;
		uint32_t cwd_len = 0, uid = 0, gid = 0, stdin_len = 0, rows = 0, cols = 0, label_len = 0, ngroups = 0;
		int gid_given = 0, pipe = 0, groups_given = 0;
		const uint8_t *stdin_want = NULL;
		while (off < n) {
			uint8_t tag = d[off];
			uint32_t l = get32(d + off + 1);
			const uint8_t *v = d + off + 5;
			off += 5 + l;
			switch (tag) {
			case TAG_ARG:
				CHECK(same(s.argv[argc], v, l), "argv[%d] differs", argc);
				argc++;
				break;
			case TAG_ENV:
				CHECK(same(s.envp[envc], v, l), "envp[%d] differs", envc);
				envc++;
				break;
			case TAG_CWD:
				cwd = v;
				cwd_len = l;
				break;
			case TAG_UID:
				uid = get32(v);
				break;
			case TAG_GID:
				gid = get32(v);
				gid_given = 1;
				break;
			case TAG_STDIN_PIPE:
				pipe = 1;
				break;
			case TAG_GROUPS:
				groups = v;
				ngroups = l / 4;
				groups_given = 1;
				break;
			case TAG_LABEL:
				label = v;
				label_len = l;
				break;
			case TAG_STDIN:
				stdin_want = v;
				stdin_len = l;
				break;
			case TAG_WINSIZE:
				rows = v[0] | v[1] << 8;
				cols = v[2] | v[3] << 8;
				break;
			}
		}
		CHECK(s.argc == argc && s.envc == envc, "counts %d/%d, want %d/%d", s.argc, s.envc, argc, envc);
		CHECK(s.argv[argc] == NULL && s.envp[envc] == NULL, "argv or envp not NULL-terminated");
		CHECK(s.uid == uid && s.gid == gid, "uid/gid %u/%u, want %u/%u", (unsigned)s.uid, (unsigned)s.gid, uid, gid);
		CHECK(s.rows == rows && s.cols == cols, "winsize %u/%u, want %u/%u", s.rows, s.cols, rows, cols);
		CHECK(s.stdin_len == stdin_len, "stdin length %u, want %u", s.stdin_len, stdin_len);
		CHECK(!stdin_want || (memcmp(s.stdin_data, stdin_want, stdin_len) == 0 && s.stdin_data[stdin_len] == 0), "stdin differs");
		CHECK(cwd ? same(s.cwd, cwd, cwd_len) : strcmp(s.cwd, "/") == 0, "cwd differs (the last CWD wins)");
		CHECK(s.gid_given == gid_given && s.stdin_pipe == pipe && s.groups_given == groups_given, "flags differ");
		CHECK(s.ngroups == (int)ngroups, "%d groups, want %u", s.ngroups, ngroups);
		for (uint32_t i = 0; i < ngroups; i++)
			CHECK(s.groups[i] == get32(groups + 4 * i), "group %u differs", i);
		CHECK(label ? s.label && same(s.label, label, label_len) : s.label == NULL, "label differs (the last LABEL wins)");
		check_spec_info(d, n);
	}
	free(d);
}

static void check_spec(const uint8_t *d, size_t n)
{
	check_spec_once(d, n, 0);
	check_spec_once(d, n, 1);
}

/* A valid spec from a structured generator: what the host would send, and then some. */
static void gen_spec(struct buf *b)
{
	int records = below(4) == 0 ? below(300) : below(12);
	for (int i = 0; i < records; i++) {
		uint8_t tag = TAG_ARG + below(TAG_LABEL);
		uint32_t l = below(8) == 0 ? below(4096) : below(40);
		if (tag == TAG_UID || tag == TAG_GID || tag == TAG_WINSIZE)
			l = below(16) == 0 ? below(8) : 4;
		if (tag == TAG_STDIN_PIPE)
			l = below(16) == 0 ? below(4) : 0;
		if (tag == TAG_GROUPS)
			l = below(16) == 0 ? below(4 * MAX_GROUPS + 8) : 4 * below(MAX_GROUPS + 1);
		uint8_t v[4096];
		for (uint32_t k = 0; k < l; k++)
			v[k] = below(4) == 0 ? 0 : 'a' + below(26);
		tlv(b, tag, v, l);
	}
}

static void spec_edges(int *cases)
{
	struct buf b = { 0 };
	uint8_t four[4] = { 1, 2, 3, 4 };
#define CASE(build)                     \
	do {                            \
		b.len = 0;              \
		build;                  \
		check_spec(b.p, b.len); \
		(*cases)++;             \
	} while (0)
	CASE((void)0);                                           /* empty body */
	CASE(buf_put(&b, "\x01", 1));                            /* 1..4 bytes: not even a header */
	CASE(buf_put(&b, "\x01\x00\x00\x00", 4));                /* header one byte short */
	CASE(tlv(&b, TAG_ARG, "", 0));                           /* zero-length value */
	CASE(tlv(&b, TAG_ARG, "sh", 2); buf_put(&b, "\x02", 1)); /* trailing byte after a record */
	CASE(tlv(&b, TAG_ARG, "sh", 2); buf_put(&b, "\x02\0\0\0", 4));
	CASE(buf_put(&b, "\x01\xff\xff\xff\xff", 5));              /* 0xFFFFFFFF length, no value */
	CASE(buf_put(&b, "\001\377\377\377\377abc", 8));           /* 0xFFFFFFFF length with bytes */
	CASE(buf_put(&b, "\001\004\000\000\000abc", 8));           /* length one past the end */
	CASE(buf_put(&b, "\001\003\000\000\000abc", 8));           /* length exactly to the end, no NUL */
	CASE(buf_put(&b, "\001\000\000\000\200abc", 8));           /* length with the top bit set */
	CASE(tlv(&b, TAG_CWD, "/tmp", 4));                         /* no argv */
	CASE(tlv(&b, TAG_ARG, "a\0b", 3));                         /* embedded NUL */
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_UID, four, 3)); /* fixed-size fields, wrong sizes */
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_GID, "12345", 5));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_WINSIZE, four, 0));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_UID, four, 4); tlv(&b, TAG_GID, four, 4); tlv(&b, TAG_WINSIZE, four, 4));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_STDIN_PIPE, NULL, 0)); /* v3 tags: a flag, groups, a label */
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_STDIN_PIPE, "x", 1));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_GROUPS, NULL, 0));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_GROUPS, four, 3));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_GROUPS, four, 4); tlv(&b, TAG_GROUPS, "12345678", 8));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_LABEL, "one", 3); tlv(&b, TAG_LABEL, "", 0));
	uint8_t *groups = calloc(4, MAX_GROUPS + 1);
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_GROUPS, groups, 4 * MAX_GROUPS));
	CASE(tlv(&b, TAG_ARG, "a", 1); tlv(&b, TAG_GROUPS, groups, 4 * MAX_GROUPS + 4));
	free(groups);
	CASE(tlv(&b, 0, "a", 1)); /* unknown tags */
	CASE(tlv(&b, TAG_LABEL + 1, "a", 1));
	CASE(tlv(&b, TAG_WINSIZE + 1, "a", 1));
	CASE(tlv(&b, 0xff, "a", 1));
	/* Counts at and over MAX_ARGS. */
	CASE(for (int i = 0; i < MAX_ARGS; i++) tlv(&b, TAG_ARG, "x", 1));
	CASE(for (int i = 0; i <= MAX_ARGS; i++) tlv(&b, TAG_ARG, "x", 1));
	CASE(tlv(&b, TAG_ARG, "x", 1); for (int i = 0; i < MAX_ARGS; i++) tlv(&b, TAG_ENV, "A=1", 3));
	CASE(tlv(&b, TAG_ARG, "x", 1); for (int i = 0; i <= MAX_ARGS; i++) tlv(&b, TAG_ENV, "", 0));
	/* The largest body the control port passes: one big value, or as many empty records as fit. */
	uint8_t *big = calloc(1, CELLA_MAX_BODY);
	CASE(tlv(&b, TAG_ARG, "x", 1); tlv(&b, TAG_STDIN, big, CELLA_MAX_BODY - 6 - 5));
	CASE(tlv(&b, TAG_STDIN, big, CELLA_MAX_BODY - 5));
	CASE(while (b.len + 5 <= CELLA_MAX_BODY) tlv(&b, TAG_CWD, "", 0));
	CASE(while (b.len + 5 <= CELLA_MAX_BODY) tlv(&b, TAG_ENV, "", 0));
	free(big);
#undef CASE
	free(b.p);
}

/* Fixed-size bodies: exactly their size, whatever the bytes. */
static void check_fixed(const uint8_t *data, size_t n)
{
	uint8_t *d = exact(data, n);
	uint32_t v;
	unsigned short rows, cols;
	struct timespec t;
	CHECK((decode_u32(d, n, &v) == 0) == (n == 4), "decode_u32 on %zu bytes", n);
	CHECK((decode_winsize(d, n, &rows, &cols) == 0) == (n == 4), "decode_winsize on %zu bytes", n);
	CHECK((decode_clock(d, n, &t) == 0) == (n == 12), "decode_clock on %zu bytes", n);
	if (n == 4)
		CHECK(v == get32(d) && rows == (d[0] | d[1] << 8) && cols == (d[2] | d[3] << 8), "u32/winsize values");
	if (n == 12)
		CHECK((uint64_t)t.tv_sec == ((uint64_t)get32(d + 4) << 32 | get32(d)) && t.tv_nsec == (long)get32(d + 8), "clock values");
	free(d);
}

/* ---------- frames (frame_next) ---------- */

/* The framing rules: 1 and the body length when a whole frame starts at p, 0 when bytes are missing, -1 when oversized. */
static int model_frame(const uint8_t *p, size_t n, uint32_t *len)
{
	if (n < CELLA_HEADER_LEN)
		return 0;
	*len = get32(p);
	if (*len > CELLA_MAX_BODY)
		return -1;
	return n - CELLA_HEADER_LEN >= *len;
}

static void check_frame_next(const uint8_t *data, size_t n)
{
	uint8_t *d = exact(data, n);
	struct frame f;
	uint32_t len;
	int r = frame_next(d, n, &f);
	int want = model_frame(d, n, &len);
	CHECK(r == want, "frame_next returned %d for %zu bytes, want %d", r, n, want);
	if (r == 1)
		CHECK(f.len == get32(d) && f.type == d[4] && f.stream == d[5] && f.id == get32(d + 8) && f.body == d + CELLA_HEADER_LEN,
		      "frame fields");
	free(d);
}

static void frame(struct buf *b, uint8_t type, uint8_t stream, uint32_t id, const uint8_t *body, uint32_t len)
{
	uint8_t h[CELLA_HEADER_LEN] = { 0 };
	put32(h, len);
	h[4] = type;
	h[5] = stream;
	put32(h + 8, id);
	buf_put(b, h, sizeof h);
	buf_put(b, body, len);
}

static void frame_edges(int *cases)
{
	struct buf b = { 0 };
	uint32_t lens[] = { 0, 1, 4, CELLA_MAX_BODY - 1, CELLA_MAX_BODY, CELLA_MAX_BODY + 1, 0x7fffffff, 0xffffffff };
	for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
		/* Every prefix of header, body and one byte more: short, exact and over. */
		b.len = 0;
		frame(&b, MSG_EXEC, 0, 7, NULL, 0);
		put32(b.p, lens[i]);
		buf_random(&b, (lens[i] <= 16 ? lens[i] : 0) + 1);
		for (size_t cut = 0; cut <= b.len; cut++, (*cases)++)
			check_frame_next(b.p, cut);
	}
	free(b.p);
}

/* ---------- the control-port reader and the out queue, over a real socket ---------- */

/*
 * What the test dispatcher saw, and what it answered: each frame is echoed
 * (EXEC_OUT with up to CELLA_MAX_OUT bytes of its body, then OK), so the
 * replies also run through send_frame and the out queue.
 */
struct seen {
	uint8_t type, stream;
	uint32_t id, len;
	uint64_t hash;
};

static int seen_eq(const struct seen *a, const struct seen *b)
{
	return a->type == b->type && a->stream == b->stream && a->id == b->id && a->len == b->len && a->hash == b->hash;
}

static struct seen *got, *sent;
static size_t ngot, nsent, cap_got, cap_sent;

static void push(struct seen **v, size_t *n, size_t *cap, struct seen s)
{
	if (*n == *cap) {
		*cap = *cap * 2 + 64;
		*v = realloc(*v, *cap * sizeof **v);
		if (!*v)
			fail("out of memory");
	}
	(*v)[(*n)++] = s;
}

static void test_dispatch(const struct frame *f)
{
	push(&got, &ngot, &cap_got, (struct seen){ f->type, f->stream, f->id, f->len, fnv(f->body, f->len) });
	uint32_t echo = f->len < CELLA_MAX_OUT ? f->len : CELLA_MAX_OUT;
	ctl_send(MSG_EXEC_OUT, f->stream, f->id, f->body, echo);
	push(&sent, &nsent, &cap_sent, (struct seen){ MSG_EXEC_OUT, f->stream, f->id, echo, fnv(f->body, echo) });
	ctl_ok(f->id);
	push(&sent, &nsent, &cap_sent, (struct seen){ MSG_OK, 0, f->id, 0, fnv(NULL, 0) });
}

/* A host that stops reading replies: the out queue fills, then drops output. -1: chosen at random per stream. */
static int lazy_host = -1;

static void ctl_service(void)
{
	struct pollfd pf = { .fd = ctl.fd, .events = POLLIN | POLLOUT, .revents = POLLIN | POLLOUT };
	ctl_ready(&pf, test_dispatch);
}

/* Reads what the guest sent back; checks it is whole frames, each one that was sent, in order (some may be dropped). */
static void replies_drain(int host, struct buf *rx, size_t *cursor, int at_end)
{
	uint8_t tmp[65536];
	ssize_t n;
	while ((n = recv(host, tmp, sizeof tmp, MSG_DONTWAIT)) > 0)
		buf_put(rx, tmp, n);
	if (!rx->len)
		return;
	size_t off = 0;
	uint32_t len;
	int r;
	while ((r = model_frame(rx->p + off, rx->len - off, &len)) > 0) {
		const uint8_t *h = rx->p + off;
		struct seen f = { h[4], h[5], get32(h + 8), len, fnv(h + CELLA_HEADER_LEN, len) };
		size_t j = *cursor;
		while (j < nsent && !seen_eq(&sent[j], &f))
			j++;
		CHECK(j < nsent, "reply type %u id %u len %u was never sent (or out of order)", f.type, f.id, f.len);
		*cursor = j + 1;
		off += CELLA_HEADER_LEN + len;
	}
	CHECK(r == 0, "reply stream has an oversized frame header");
	if (off)
		memmove(rx->p, rx->p + off, rx->len - off);
	rx->len -= off;
	if (at_end)
		rx->len = 0; /* a frame cut by the port closing is allowed; the next connection starts clean */
}

/*
 * One connection: `stream` is written in random pieces to the host end, the
 * guest end is serviced between pieces, then the host closes. The frames the
 * dispatcher sees must be exactly the whole frames of the stream, up to an
 * oversized header (which resets the port) or the end.
 */
static void check_ctl(const uint8_t *stream, size_t n)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		fail("socketpair: %m");
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	ctl.fd = sv[0];
	ctl.in_len = 0;
	outq_len = 0;
	int host = sv[1], logged_before = logged;
	ngot = nsent = 0;

	/* The model: whole frames up to the end or the first oversized header. */
	struct seen *want = NULL;
	size_t nwant = 0, cap_want = 0, off = 0;
	uint32_t len;
	int r;
	while ((r = model_frame(stream + off, n - off, &len)) > 0) {
		const uint8_t *h = stream + off;
		push(&want, &nwant, &cap_want, (struct seen){ h[4], h[5], get32(h + 8), len, fnv(h + CELLA_HEADER_LEN, len) });
		off += CELLA_HEADER_LEN + len;
	}
	int reset = r < 0;

	struct buf rx = { 0 };
	size_t cursor = 0, w = 0;
	int lazy = lazy_host >= 0 ? lazy_host : below(3) == 0;
	while (w < n && ctl.fd >= 0) {
		size_t piece = below(4) == 0 ? 1 + below(16) : 1 + below(200000);
		if (piece > n - w)
			piece = n - w;
		ssize_t k = send(host, stream + w, piece, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k > 0)
			w += k;
		ctl_service();
		if (!lazy)
			replies_drain(host, &rx, &cursor, 0);
	}
	if (ctl.fd >= 0) {
		shutdown(host, SHUT_WR);
		for (int i = 0; i < 1000 && ctl.fd >= 0; i++) {
			ctl_service();
			if (!lazy)
				replies_drain(host, &rx, &cursor, 0);
		}
	}
	CHECK(ctl.fd < 0, "control port still open after the host closed");
	replies_drain(host, &rx, &cursor, 1);
	CHECK(ngot == nwant, "dispatched %zu frames, want %zu (stream of %zu bytes)", ngot, nwant, n);
	for (size_t i = 0; i < nwant; i++)
		CHECK(seen_eq(&got[i], &want[i]), "frame %zu differs", i);
	CHECK(logged - logged_before == reset, "oversized header: %d console lines, want %d", logged - logged_before, reset);
	CHECK(port_lost() == 1, "losing the port was not reported");
	close(host);
	free(want);
	free(rx.p);
}

/* A stream of frames: mostly requests with specs, sometimes big bodies, a cut tail or an oversized header. */
static void gen_stream(struct buf *b)
{
	int frames = below(40);
	for (int i = 0; i < frames; i++) {
		struct buf body = { 0 };
		uint8_t type = 1 + below(MSG_PTY_CLOSE + 2);
		if (type == MSG_START || type == MSG_EXEC || type == MSG_PTY_OPEN)
			gen_spec(&body);
		else
			buf_random(&body, below(8) == 0 ? below(CELLA_MAX_BODY / 4) : below(64));
		if (below(50) == 0)
			mutate(&body);
		frame(b, type, below(3), rnd(), body.p, body.len);
		free(body.p);
	}
	if (below(20) == 0) {
		frame(b, MSG_EXEC, 0, 1, NULL, 0);
		put32(b->p + b->len - CELLA_HEADER_LEN, CELLA_MAX_BODY + 1 + below(9)); /* oversized: resets the port */
	}
	if (below(4) == 0)
		buf_random(b, below(40)); /* a partial frame the host never finishes */
}

static void ctl_edges(int *cases)
{
	struct buf b = { 0 };
	uint8_t *big = calloc(1, CELLA_MAX_BODY);
	/* The largest body, which grows the read buffer several times. */
	frame(&b, MSG_EXEC, 0, 1, big, CELLA_MAX_BODY);
	frame(&b, MSG_PING, 0, 2, NULL, 0);
	check_ctl(b.p, b.len);
	/* One over: the port resets and nothing after it is handled. */
	b.len = 0;
	frame(&b, MSG_PING, 0, 3, NULL, 0);
	frame(&b, MSG_EXEC, 0, 4, big, 8);
	put32(b.p + b.len - 8 - CELLA_HEADER_LEN, CELLA_MAX_BODY + 1);
	frame(&b, MSG_PING, 0, 5, NULL, 0);
	check_ctl(b.p, b.len);
	/* 0xFFFFFFFF length. */
	b.len = 0;
	frame(&b, MSG_PING, 0, 6, NULL, 0);
	put32(b.p, 0xffffffff);
	check_ctl(b.p, b.len);
	/* Zero-length frames only, and a header cut short at the end. */
	b.len = 0;
	for (int i = 0; i < 1000; i++)
		frame(&b, MSG_PING, 0, i, NULL, 0);
	b.len -= 5;
	check_ctl(b.p, b.len);
	/* More output than the out queue holds, to a host that reads nothing until the end. */
	b.len = 0;
	for (int i = 0; i < 100; i++)
		frame(&b, MSG_EXEC, 1, i, big, CELLA_MAX_OUT);
	lazy_host = 1;
	check_ctl(b.p, b.len);
	lazy_host = -1;
	*cases += 5;
	free(big);
	free(b.p);
}

/* ---------- agent socket lines (client_read, client_line) ---------- */

static const char *agent_reply(const char *line, size_t len)
{
	if (len && line[len - 1] == '\r')
		len--;
	if ((len == 8 && memcmp(line, "activity", 8) == 0) || (len == 7 && memcmp(line, "suspend", 7) == 0))
		return "ok\n";
	return len ? "error: unknown request (activity, suspend)\n" : "";
}

/*
 * A guest user writes `data` in random pieces, then closes. The replies must
 * be those of the model: one per non-empty line; a line of LINE_MAX_LEN bytes
 * or more ends the connection with "line too long".
 */
static void check_agent(const uint8_t *data, size_t n)
{
	/* The model. */
	struct buf want = { 0 };
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i - start >= LINE_MAX_LEN) {
			const char *e = "error: line too long\n";
			buf_put(&want, e, strlen(e));
			break;
		}
		if (i == n || data[i] == '\n') {
			const char *r = agent_reply((const char *)data + start, i - start);
			buf_put(&want, r, strlen(r));
			start = i + 1;
		}
	}

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		fail("socketpair: %m");
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	struct client *c = &clients[below(MAX_CLIENTS)];
	*c = (struct client){ .conn.fd = sv[0] };
	int user = sv[1];
	ctl.fd = -1;
	struct buf rx = { 0 };
	uint8_t tmp[4096];
	ssize_t k;
	size_t w = 0;
	int done = 0;
	while (c->conn.fd >= 0) {
		if (w < n) {
			size_t piece = 1 + below(below(2) ? 8 : 300);
			if (piece > n - w)
				piece = n - w;
			if ((k = send(user, data + w, piece, MSG_NOSIGNAL | MSG_DONTWAIT)) > 0)
				w += k;
		} else if (!done) {
			shutdown(user, SHUT_WR);
			done = 1;
		}
		int avail = 0;
		if (ioctl(c->conn.fd, FIONREAD, &avail) < 0 || avail > 0 || done)
			client_read(c); /* one read, as for one POLLIN */
		while ((k = recv(user, tmp, sizeof tmp, MSG_DONTWAIT)) > 0)
			buf_put(&rx, tmp, k);
	}
	while ((k = recv(user, tmp, sizeof tmp, MSG_DONTWAIT)) > 0)
		buf_put(&rx, tmp, k);
	CHECK(rx.len == want.len && (!want.len || memcmp(rx.p, want.p, want.len) == 0), "replies differ: got %zu bytes, want %zu", rx.len,
	      want.len);
	close(user);
	free(want.p);
	free(rx.p);
}

static void gen_lines(struct buf *b)
{
	static const char *words[] = { "activity", "suspend", "\n", "\r", "\r\n", "", "activit", "suspendx", " ", "\0" };
	int parts = below(30);
	for (int i = 0; i < parts; i++) {
		int pick = below(14);
		if (pick < 10)
			buf_put(b, words[pick], pick == 9 ? 1 : strlen(words[pick]));
		else if (pick < 12)
			buf_random(b, below(10));
		else
			for (int k = below(100); k > 0; k--)
				buf_put(b, "x", 1);
		if (below(2))
			buf_put(b, "\n", 1);
	}
}

static void agent_edges(int *cases)
{
	char line[200];
	const char *fixed[] = { "", "\n", "activity", "activity\n", "suspend\r\n", "\r\n\r\n", "nope\n", "activity\nsuspend" };
	for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++, (*cases)++)
		check_agent((const uint8_t *)fixed[i], strlen(fixed[i]));
	/* Lines around the limit, with and without the newline inside it. */
	for (size_t len = LINE_MAX_LEN - 2; len <= LINE_MAX_LEN + 1; len++, (*cases) += 2) {
		memset(line, 'y', len);
		check_agent((const uint8_t *)line, len);
		line[len] = '\n';
		check_agent((const uint8_t *)line, len + 1);
	}
}

/* ---------- the kernel command line (cmdline_get) and the address (parse_cidr) ---------- */

static const char *cmd_keys[] = { "cella.ip", "cella.gw", "cella.root", "cella.build", "cella.probe", "a" };

static void check_cmdline(const uint8_t *data, size_t n)
{
	char *cmd = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		cmd[i] = data[i] ? data[i] : ' '; /* /proc/cmdline is text: a NUL would just end it */
	cmd[n] = 0;
	for (size_t k = 0; k < sizeof cmd_keys / sizeof *cmd_keys; k++) {
		size_t cap = 1 + below(70);
		char *out = malloc(cap), *want = malloc(cap);
		const char *key = cmd_keys[k];
		size_t kl = strlen(key);
		/* The model: the first word that is `key=`, its value up to a space or newline. */
		const char *v = "default";
		size_t vl = strlen(v);
		for (size_t i = 0; i + kl < n; i++)
			if ((i == 0 || cmd[i - 1] == ' ') && memcmp(cmd + i, key, kl) == 0 && cmd[i + kl] == '=') {
				v = cmd + i + kl + 1;
				vl = strcspn(v, " \n");
				break;
			}
		if (vl >= cap)
			vl = cap - 1;
		memcpy(want, v, vl);
		want[vl] = 0;
		const char *r = cmdline_get(cmd, key, out, cap, "default");
		CHECK(r == out && strcmp(out, want) == 0, "cmdline_get(%s, cap %zu): \"%s\", want \"%s\"", key, cap, out, want);
		free(out);
		free(want);
	}
	free(cmd);
}

static void gen_cmdline(struct buf *b)
{
	static const char *const words[] = {
		"console=ttyS0", "cella.ip=172.29.0.9/24", "cella.ip=",          "xcella.ip=1",          "cella.ipx=2",   "cella.ip", "=",
		"a=b",           "cella.root=/dev/vdb",    "cella.gw=1.2.3.4\n", "cella.build=/dev/vdc", "cella.probe=1", "  ",       "\n"
	};
	put_words(b, words, sizeof words / sizeof *words, below(12), 6, 20, " ", 4);
}

static void check_cidr(const uint8_t *data, size_t n)
{
	char *s = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		s[i] = data[i] ? data[i] : '.';
	s[n] = 0;
	struct in_addr a;
	int prefix = -99;
	if (parse_cidr(s, &a, &prefix) == 0)
		CHECK(prefix >= 0 && prefix <= 32, "parse_cidr(\"%s\") accepted prefix %d", s, prefix);
	free(s);
}

static void cidr_edges(int *cases)
{
	static const struct {
		const char *in;
		int ok, prefix;
	} cases_[] = { { "172.29.0.2/24", 1, 24 },
		       { "10.0.0.1", 1, 32 },
		       { "10.0.0.1/0", 1, 0 },
		       { "10.0.0.1/32", 1, 32 },
		       { "10.0.0.1/33", 0, 0 },
		       { "10.0.0.1/-1", 0, 0 },
		       { "/24", 0, 0 },
		       { "", 0, 0 },
		       { "1.2.3.4/24/8", 1, 24 },
		       { "255.255.255.255.255.255.255.255.255/8", 0, 0 } };
	for (size_t i = 0; i < sizeof cases_ / sizeof *cases_; i++, (*cases)++) {
		struct in_addr a;
		int prefix = -99;
		current = cases_[i].in;
		int ok = parse_cidr(cases_[i].in, &a, &prefix) == 0;
		CHECK(ok == cases_[i].ok && (!ok || prefix == cases_[i].prefix), "parse_cidr: %d prefix %d", ok, prefix);
		check_cidr((const uint8_t *)cases_[i].in, strlen(cases_[i].in));
	}
}

/* ---------- file and user requests (parse_req) and the sandbox's environment (parse_env) ---------- */

static int is_str_tag(uint8_t t)
{
	return t == TAG_PATH || t == TAG_DEST || t == TAG_NAME;
}

static int is_u32_tag(uint8_t t)
{
	return t == TAG_UID || t == TAG_GID || t == TAG_MODE || t == TAG_DEPTH || t == TAG_CREDIT;
}

/* The request rules: 1 if parse_req must accept. */
static int req_model_ok(const uint8_t *d, uint32_t n)
{
	uint32_t off = 0;
	int xattrs = 0;
	while (off < n) {
		if (n - off < 5)
			return 0;
		uint8_t tag = d[off];
		uint32_t l = get32(d + off + 1);
		if (l > n - off - 5)
			return 0;
		const uint8_t *v = d + off + 5;
		off += 5 + l;
		int nul = -1;
		for (uint32_t i = 0; i < l && nul < 0; i++)
			if (v[i] == 0)
				nul = i;
		if (is_str_tag(tag)        ? nul >= 0
		    : is_u32_tag(tag)      ? l != 4
		    : tag == TAG_RECURSIVE ? l != 0
		    : tag == TAG_XATTR     ? nul < 1 || ++xattrs > MAX_XATTRS
					   : 1)
			return 0;
	}
	return 1;
}

static void check_req(const uint8_t *data, size_t n)
{
	uint8_t *d = exact(data, n);
	struct req q;
	int r = parse_req(d, n, &q);
	int ok = req_model_ok(d, n);
	CHECK((r == 0) == ok, "parse_req returned %d for a %zu-byte body the model %s", r, n, ok ? "accepts" : "rejects");
	if (r == 0) {
		const uint8_t *str[3] = { 0 };
		uint32_t slen[3] = { 0 }, num[5] = { 0 }, off = 0;
		int has[5] = { 0 }, rec = 0, nx = 0;
		static const uint8_t strs[3] = { TAG_PATH, TAG_DEST, TAG_NAME },
				     nums[5] = { TAG_UID, TAG_GID, TAG_MODE, TAG_DEPTH, TAG_CREDIT };
		while (off < n) {
			uint8_t tag = d[off];
			uint32_t l = get32(d + off + 1);
			const uint8_t *v = d + off + 5;
			off += 5 + l;
			for (int i = 0; i < 3; i++)
				if (tag == strs[i])
					str[i] = v, slen[i] = l;
			for (int i = 0; i < 5; i++)
				if (tag == nums[i])
					num[i] = get32(v), has[i] = 1;
			rec |= tag == TAG_RECURSIVE;
			if (tag == TAG_XATTR) {
				CHECK(q.xattr[nx] == v && q.xattr_len[nx] == l, "xattr %d differs", nx);
				nx++;
			}
		}
		const char *got[3] = { q.path, q.dest, q.name };
		for (int i = 0; i < 3; i++)
			CHECK(str[i] ? got[i] && same(got[i], str[i], slen[i]) : got[i] == NULL, "string %d differs (the last wins)", i);
		uint32_t gnum[5] = { q.uid, q.gid, q.mode, q.depth, q.credit };
		int ghas[5] = { q.has_uid, q.has_gid, q.has_mode, q.has_depth, q.has_credit };
		for (int i = 0; i < 5; i++)
			CHECK(ghas[i] == has[i] && (!has[i] || gnum[i] == num[i]), "number %d differs", i);
		CHECK(q.recursive == rec && q.nxattr == nx, "recursive %d/%d, xattrs %d/%d", q.recursive, rec, q.nxattr, nx);
	}
	free(d);
}

static void gen_req(struct buf *b)
{
	static const uint8_t tags[] = { TAG_PATH,   TAG_DEST,      TAG_NAME,  TAG_UID, TAG_GID, TAG_MODE, TAG_DEPTH,
					TAG_CREDIT, TAG_RECURSIVE, TAG_XATTR, TAG_ARG, 0,       0xff };
	int records = below(4) == 0 ? below(60) : below(8);
	for (int i = 0; i < records; i++) {
		uint8_t tag = tags[below(sizeof tags)], v[300];
		uint32_t l = below(8) == 0 ? below(300) : below(24);
		for (uint32_t k = 0; k < l; k++)
			v[k] = below(6) == 0 ? 0 : 'a' + below(26);
		if (is_u32_tag(tag) && below(8))
			l = 4;
		if (tag == TAG_RECURSIVE && below(8))
			l = 0;
		if (tag == TAG_XATTR && l > 2 && below(4))
			v[1 + below(l - 1)] = 0;
		if (is_str_tag(tag) && below(2))
			for (uint32_t k = 0; k < l; k++)
				v[k] = v[k] ? v[k] : '/';
		tlv(b, tag, v, l);
	}
}

static void check_env(const uint8_t *data, size_t n)
{
	uint8_t *d = exact(data, n);
	static struct tlv vals[MAX_ARGS];
	int max = below(4) == 0 ? below(8) : MAX_ARGS;
	int r = parse_env(d, n, vals, max);
	/* The model: ENV records only, each with '=' after a non-empty key and no NUL, at most max. */
	uint32_t off = 0;
	int want = 0;
	while (want >= 0 && off < n) {
		if (n - off < 5 || get32(d + off + 1) > n - off - 5) {
			want = -1;
			break;
		}
		uint32_t l = get32(d + off + 1);
		const uint8_t *v = d + off + 5;
		int eq = -1, nul = 0;
		for (uint32_t i = 0; i < l; i++) {
			if (v[i] == '=' && eq < 0)
				eq = i;
			nul |= v[i] == 0;
		}
		if (d[off] != TAG_ENV || eq < 1 || nul || want == max)
			want = -1;
		else {
			if (r > want)
				CHECK(vals[want].val == v && vals[want].len == l, "env %d differs", want);
			want++;
		}
		off += 5 + l;
	}
	CHECK(r == want, "parse_env returned %d, want %d", r, want);
	free(d);
}

static void gen_env(struct buf *b)
{
	static const char *kvs[] = { "A=1", "PATH=/bin", "=x", "K=", "noeq", "X=a=b", "E2B_SANDBOX=true" };
	int records = below(12);
	for (int i = 0; i < records; i++) {
		const char *kv = kvs[below(sizeof kvs / sizeof *kvs)];
		tlv(b, below(20) ? TAG_ENV : TAG_ARG, kv, strlen(kv));
		if (below(30) == 0)
			tlv(b, TAG_ENV, "K=a\0b", 5);
	}
}

/* ---------- /etc/passwd and /etc/group (pw_next, gr_next, gr_has) ---------- */

/* A field that is a u32 in decimal, read one digit at a time: -1 when it is not. */
static int64_t model_num(const char *p, size_t n)
{
	if (n == 0 || n > 10)
		return -1;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)p[i]))
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v > 0xffffffffll ? -1 : v;
}

/* Fields of each line, by index; the model of both files. */
static void check_files(const uint8_t *data, size_t n)
{
	char *d = (char *)exact(data, n);
	size_t pw_off = 0, gr_off = 0;
	struct pwent pe;
	struct grent ge;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && d[i] != '\n')
			continue;
		/* The line [start, i): split at every ':'. */
		size_t at[16], nf = 1;
		at[0] = start;
		for (size_t k = start; k < i && nf < 16; k++)
			if (d[k] == ':')
				at[nf++] = k + 1;
		size_t fl[16];
		for (size_t f = 0; f < nf; f++)
			fl[f] = (f + 1 < nf ? at[f + 1] - 1 : i) - at[f];
		int many = 0;
		for (size_t k = start; k < i; k++)
			many += d[k] == ':';
		if (start < n || i < n) {
			int64_t uid = many == 6 ? model_num(d + at[2], fl[2]) : -1, gid = many == 6 ? model_num(d + at[3], fl[3]) : -1;
			if (many == 6 && fl[0] && uid >= 0 && gid >= 0) {
				CHECK(pw_next(d, n, &pw_off, &pe) == 1, "pw_next missed the line at %zu", start);
				CHECK(pe.name.p == d + at[0] && pe.name.len == fl[0] && pe.uid == uid && pe.gid == gid &&
					      pe.home.p == d + at[5] && pe.home.len == fl[5] && pe.shell.p == d + at[6] &&
					      pe.shell.len == fl[6],
				      "passwd entry at %zu differs", start);
			}
			int64_t ggid = many == 3 ? model_num(d + at[2], fl[2]) : -1;
			if (many == 3 && fl[0] && ggid >= 0) {
				CHECK(gr_next(d, n, &gr_off, &ge) == 1, "gr_next missed the line at %zu", start);
				CHECK(ge.name.p == d + at[0] && ge.name.len == fl[0] && ge.gid == ggid && ge.members.p == d + at[3] &&
					      ge.members.len == fl[3],
				      "group entry at %zu differs", start);
				/* gr_has against a walk of the members, comma by comma. */
				static const char *names[] = { "user", "root", "a", "" };
				for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
					size_t nl = strlen(names[k]);
					int want = 0;
					for (size_t s0 = 0, c = 0; c <= fl[3]; c++)
						if (c == fl[3] || d[at[3] + c] == ',') {
							want |= nl && c - s0 == nl && memcmp(d + at[3] + s0, names[k], nl) == 0;
							s0 = c + 1;
						}
					CHECK(gr_has(ge.members, names[k], nl) == want, "gr_has(%s) differs", names[k]);
				}
			}
		}
		start = i + 1;
	}
	CHECK(pw_next(d, n, &pw_off, &pe) == 0 && gr_next(d, n, &gr_off, &ge) == 0, "entries after the last line");
	free(d);
}

static void gen_files(struct buf *b)
{
	static const char *const lines[] = { "root:x:0:0:root:/root:/bin/bash",
					     "user:x:1000:1000::/home/user:/bin/bash",
					     "sudo:x:27:user",
					     "users:x:100:user,root,a",
					     "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
					     "big:x:4294967295:4294967296:::",
					     "neg:x:-1:0:::",
					     ":x:1:1:::",
					     "a:b:c",
					     "g::7:",
					     "x:x:01234567890:1::/:/",
					     "#comment",
					     "",
					     "w:x:1:2:3:4:5:6" };
	put_words(b, lines, sizeof lines / sizeof *lines, below(12), 8, 30, "\n", 6);
}

/* ---------- /proc/meminfo and /proc/stat (meminfo_parse, cpustat_parse) ---------- */

struct proc_sample {
	uint64_t v[8];
};

/* A well-formed file from known numbers: the parsers must read back exactly those. */
static void check_proc_exact(void)
{
	char text[1024];
	struct meminfo m;
	uint64_t kb[5];
	for (int i = 0; i < 5; i++)
		kb[i] = below(4) == 0 ? rnd() >> below(64) : below(1 << 24);
	int n = snprintf(
		text, sizeof text,
		"MemTotal:       %llu kB\nMemFree:  %llu kB\nMemAvailable: 1 kB\nBuffers: %llu kB\nSwapCached: 99 kB\nCached:\t%llu kB\n"
		"SReclaimable:   %llu kB\n",
		(unsigned long long)kb[0], (unsigned long long)kb[1], (unsigned long long)kb[2], (unsigned long long)kb[3],
		(unsigned long long)kb[4]);
	char *d = (char *)exact((const uint8_t *)text, n);
	CHECK(meminfo_parse(d, n, &m) == 0, "meminfo_parse refused a well-formed file");
	uint64_t got[5] = { m.total, m.free, m.buffers, m.cached, m.sreclaimable };
	for (int i = 0; i < 5; i++)
		CHECK(got[i] == (kb[i] > UINT64_MAX / 1024 ? UINT64_MAX : kb[i] * 1024), "meminfo field %d", i);
	free(d);
	struct proc_sample s;
	uint64_t total = 0, idle = 0;
	for (int i = 0; i < 8; i++) {
		s.v[i] = rnd() >> (8 + below(56));
		total += s.v[i];
	}
	idle = s.v[3] + s.v[4];
	n = snprintf(text, sizeof text, "cpu  %llu %llu %llu %llu %llu %llu %llu %llu 5 6\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n",
		     (unsigned long long)s.v[0], (unsigned long long)s.v[1], (unsigned long long)s.v[2], (unsigned long long)s.v[3],
		     (unsigned long long)s.v[4], (unsigned long long)s.v[5], (unsigned long long)s.v[6], (unsigned long long)s.v[7]);
	d = (char *)exact((const uint8_t *)text, n);
	uint64_t t, i;
	CHECK(cpustat_parse(d, n, &t, &i) == 0 && t == total && i == idle, "cpustat_parse: %llu/%llu, want %llu/%llu",
	      (unsigned long long)t, (unsigned long long)i, (unsigned long long)total, (unsigned long long)idle);
	free(d);
}

/* Anything else: no read out of bounds, and what comes back is consistent. */
static void check_proc(const uint8_t *data, size_t n)
{
	char *d = (char *)exact(data, n);
	struct meminfo m;
	int found = 0;
	for (size_t i = 0; i + 9 <= n && !found; i++)
		found = (i == 0 || d[i - 1] == '\n') && memcmp(d + i, "MemTotal:", 9) == 0;
	CHECK((meminfo_parse(d, n, &m) == 0) == found, "meminfo_parse: MemTotal %s", found ? "missed" : "invented");
	uint64_t t = 0, i = 0;
	int cpu = n >= 4 && memcmp(d, "cpu ", 4) == 0;
	CHECK((cpustat_parse(d, n, &t, &i) == 0) == cpu, "cpustat_parse on a %s line", cpu ? "cpu" : "non-cpu");
	CHECK(!cpu || i <= t, "idle %llu over total %llu", (unsigned long long)i, (unsigned long long)t);
	free(d);
}

static void gen_proc(struct buf *b)
{
	static const char *const words[] = { "cpu ", "cpu  1 2 3 4 5 6 7 8",    "MemTotal:",     "Cached:", " 123 kB", "\t",
					     "\n",   "99999999999999999999999", "SReclaimable:", "x",       " " };
	put_words(b, words, sizeof words / sizeof *words, below(16), 8, 12, NULL, 0);
}

/* ---------- HTTP request heads (http_parse) ---------- */

/* The model: the route of a head, found by scanning for its end and then reading the request line token by token. */
static int model_http(const char *d, size_t n)
{
	size_t end = 0;
	for (size_t i = 0; i < n && !end; i++)
		if (d[i] == '\n' && ((i + 1 < n && d[i + 1] == '\n') || (i + 2 < n && d[i + 1] == '\r' && d[i + 2] == '\n')))
			end = i + 1;
	if (!end)
		return 0;
	size_t line = 0;
	while (d[line] != '\n')
		line++;
	if (line > 0 && d[line - 1] == '\r')
		line--;
	/* Exactly three space-separated tokens. */
	size_t tok[3], tl[3], k = 0, i = 0;
	while (k < 3) {
		tok[k] = i;
		while (i < line && d[i] != ' ')
			i++;
		tl[k] = i - tok[k];
		k++;
		if (i == line)
			break;
		i++;
	}
	if (k < 3 || tok[2] + tl[2] != line || tl[0] == 0 || tl[1] == 0)
		return -1;
	for (size_t c = 0; c < tl[0]; c++)
		if (!isupper((unsigned char)d[tok[0] + c]))
			return -1;
	if (d[tok[1]] != '/')
		return -1;
	for (size_t c = 0; c < tl[1]; c++)
		if ((unsigned char)d[tok[1] + c] <= 32 || d[tok[1] + c] == 127)
			return -1;
	if (!(tl[2] == 8 && (memcmp(d + tok[2], "HTTP/1.0", 8) == 0 || memcmp(d + tok[2], "HTTP/1.1", 8) == 0)))
		return -1;
	if (!(tl[0] == 3 && memcmp(d + tok[0], "GET", 3) == 0))
		return HTTP_BAD_METHOD;
	size_t p = 0;
	while (p < tl[1] && d[tok[1] + p] != '?')
		p++;
	if (p == 5 && memcmp(d + tok[1], "/envs", 5) == 0)
		return HTTP_ENVS;
	if (p == 7 && memcmp(d + tok[1], "/health", 7) == 0)
		return HTTP_HEALTH;
	return HTTP_NOT_FOUND;
}

static void check_http(const uint8_t *data, size_t n)
{
	char *d = (char *)exact(data, n);
	int r = http_parse(d, n), want = model_http(d, n);
	CHECK(r == want, "http_parse returned %d, want %d (%zu bytes)", r, want, n);
	free(d);
}

static void gen_http(struct buf *b)
{
	static const char *methods[] = { "GET", "POST", "HEAD", "get", "", "G ET" };
	static const char *targets[] = { "/envs", "/health", "/envs?x=1", "/", "/healthz", "envs", "/a b", "", "/envs\t", "/e\x7f" };
	static const char *versions[] = { "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 ", "http/1.1", "" };
	static const char *ends[] = { "\r\n\r\n", "\n\n", "\r\nHost: x\r\n\r\n", "\r\n", "\n\r\n", "", "\r\n\r" };
	if (below(6) == 0) {
		buf_random(b, below(64));
		return;
	}
	int good = below(2); /* half of them well-formed, so every route is reached often */
	const char *parts[] = { methods[good ? below(2) : below(6)],  " ",
				targets[good ? below(5) : below(10)], " ",
				versions[good ? below(2) : below(6)], ends[good ? below(3) : below(7)] };
	for (size_t i = 0; i < 6; i++)
		if (below(40))
			buf_put(b, parts[i], strlen(parts[i]));
	if (below(5) == 0)
		buf_random(b, below(16));
}

/* ---------- JSON strings (json_string) ---------- */

/* An independent UTF-8 check: code points decoded, then overlongs, surrogates and the range refused. */
static int valid_utf8(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp, min;
		int k;
		if (p[i] < 0x80) {
			i++;
			continue;
		} else if ((p[i] & 0xe0) == 0xc0)
			k = 2, cp = p[i] & 0x1f, min = 0x80;
		else if ((p[i] & 0xf0) == 0xe0)
			k = 3, cp = p[i] & 0x0f, min = 0x800;
		else if ((p[i] & 0xf8) == 0xf0)
			k = 4, cp = p[i] & 0x07, min = 0x10000;
		else
			return 0;
		if (n - i < (size_t)k)
			return 0;
		for (int j = 1; j < k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += k;
	}
	return 1;
}

/* Decodes a JSON string (quotes included) as a strict reader would; its bytes in out, or -1 when it is not one. */
static long json_decode(const char *s, size_t n, uint8_t *out)
{
	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		return -1;
	size_t w = 0;
	for (size_t i = 1; i < n - 1; i++) {
		unsigned char c = s[i];
		if (c < 0x20 || c == '"')
			return -1;
		if (c != '\\') {
			out[w++] = c;
			continue;
		}
		if (++i >= n - 1)
			return -1;
		if (s[i] == '"' || s[i] == '\\' || s[i] == '/')
			out[w++] = s[i];
		else if (s[i] == 'u' && i + 4 < n - 1) {
			unsigned v = 0;
			for (int k = 1; k <= 4; k++) {
				char h = s[i + k];
				v = v << 4 | (unsigned)(isdigit((unsigned char)h) ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : 99);
			}
			if (v > 0xffff || (v >= 0xd800 && v <= 0xdfff))
				return -1;
			if (v < 0x80)
				out[w++] = v;
			else if (v < 0x800)
				out[w++] = 0xc0 | v >> 6, out[w++] = 0x80 | (v & 0x3f);
			else
				out[w++] = 0xe0 | v >> 12, out[w++] = 0x80 | ((v >> 6) & 0x3f), out[w++] = 0x80 | (v & 0x3f);
			i += 4;
		} else
			return -1;
	}
	return (long)w;
}

static void check_json(const uint8_t *data, size_t n)
{
	uint8_t *d = exact(data, n);
	size_t cap = 6 * n + 2;
	char *out = malloc(cap);
	uint8_t *back = malloc(3 * n + 1);
	long r = json_string(out, cap, d, n);
	CHECK(r >= 2, "json_string failed with room for the worst case");
	long m = json_decode(out, r, back);
	CHECK(m >= 0, "json_string wrote something that is not a JSON string");
	CHECK(valid_utf8(back, m), "the string holds invalid UTF-8");
	if (valid_utf8(d, n))
		CHECK((size_t)m == n && memcmp(back, d, n) == 0, "valid UTF-8 did not come through unchanged");
	/* One byte short of what it needs: refused, nothing written past the end. */
	char *tight = malloc(r - 1);
	CHECK(json_string(tight, r - 1, d, n) == -1, "json_string wrote into too small a buffer");
	CHECK(json_string(tight, 1, d, n) == -1 && json_string(tight, 0, d, n) == -1, "json_string on a tiny buffer");
	free(tight);
	free(out);
	free(back);
	free(d);
}

static void gen_json(struct buf *b)
{
	static const char *const pieces[] = { "plain",        "\"",       "\\",           "\n\t\r\b\f",
					      "\x01\x1f\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
					      "\xed\xa0\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xf4\x90\x80\x80",
					      "\xff",         "\xc3",     "\xe2\x82",     "\xf0\x9f\x98" };
	put_words(b, pieces, sizeof pieces / sizeof *pieces, below(10), 6, 8, NULL, 0);
}

/* ---------- inotify records (inotify_next) ---------- */

static void check_inotify(const uint8_t *data, size_t n)
{
	uint8_t *d = exact(data, n);
	size_t off = 0, moff = 0;
	struct inev e;
	for (;;) {
		int r = inotify_next(d, n, &off, &e);
		/* The model: a 16-byte header, then its length field's worth of name. */
		int want;
		uint32_t h[4];
		if (moff == n)
			want = 0;
		else if (n - moff < 16)
			want = -1;
		else {
			memcpy(h, d + moff, 16);
			want = h[3] > n - moff - 16 ? -1 : 1;
		}
		CHECK(r == want, "inotify_next returned %d at %zu, want %d", r, moff, want);
		if (r != 1)
			break;
		size_t nl = 0;
		while (nl < h[3] && d[moff + 16 + nl])
			nl++;
		CHECK(e.wd == (int32_t)h[0] && e.mask == h[1] && e.cookie == h[2] && e.name == (const char *)d + moff + 16 &&
			      e.name_len == nl,
		      "record at %zu differs", moff);
		moff += 16 + h[3];
		CHECK(off == moff, "offset %zu, want %zu", off, moff);
	}
	free(d);
}

static void gen_inotify(struct buf *b)
{
	int records = below(10);
	for (int i = 0; i < records; i++) {
		uint32_t h[4] = { (uint32_t)rnd(), (uint32_t)rnd(), (uint32_t)rnd(), 0 };
		char name[64] = { 0 };
		size_t nl = below(20);
		for (size_t k = 0; k < nl; k++)
			name[k] = 'a' + below(26);
		h[3] = below(10) == 0 ? (uint32_t)rnd() : (uint32_t)((nl + (below(2) ? 1 : 0) + 15) & ~15u);
		if (h[3] > sizeof name && below(2))
			h[3] = nl;
		buf_put(b, h, 16);
		buf_put(b, name, h[3] < sizeof name ? h[3] : sizeof name);
	}
	if (below(6) == 0)
		b->len -= below(b->len + 1);
}

/* ---------- driver ---------- */

typedef void check_fn(const uint8_t *d, size_t n);
typedef void gen_fn(struct buf *b);

/* `iters` generated inputs, each also mutated: returns the number of cases run. */
static int run_random(const char *name, check_fn *check, gen_fn *gen, int iters)
{
	struct buf b = { 0 };
	int cases = 0;
	current = name;
	buf_grow(&b, 0); /* never a NULL input, even an empty one */
	for (int i = 0; i < iters; i++) {
		b.len = 0;
		gen(&b);
		check(b.p, b.len);
		mutate(&b);
		check(b.p, b.len);
		cases += 2;
	}
	free(b.p);
	return cases;
}

static void gen_bytes(struct buf *b)
{
	buf_random(b, below(4) == 0 ? below(20) : below(300));
}

#ifdef CELLA_LIBFUZZER
/* Coverage-guided (make -C guest fuzz-libfuzzer, clang): the first byte picks the parser, the rest is its input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static check_fn *const checks[] = {
		check_spec, check_fixed, check_frame_next, check_ctl,  check_agent, check_cmdline, check_cidr,
		check_req,  check_env,   check_files,      check_proc, check_http,  check_json,    check_inotify
	};
	if (size == 0)
		return 0;
	signal(SIGPIPE, SIG_IGN);
	rng_state = fnv(data, size); /* the pieces the socket checks write follow the input, so a finding reproduces */
	current = "libFuzzer input";
	checks[data[0] % (sizeof checks / sizeof *checks)](data + 1, size - 1);
	return 0;
}
#else
int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 1;
	int iters = argc > 2 ? atoi(argv[2]) : 2000;
	rng_state = seed;
	signal(SIGPIPE, SIG_IGN);
	int spec = 0, fixed = 0, frames = 0, ctl_cases = 0, agent = 0, cmdline = 0, cidr = 0, req = 0, env = 0, files = 0, proc = 0,
	    http = 0, json = 0, inotify = 0;

	current = "spec edges";
	spec_edges(&spec);
	current = "frame edges";
	frame_edges(&frames);
	current = "control port edges";
	ctl_edges(&ctl_cases);
	current = "agent edges";
	agent_edges(&agent);
	cidr_edges(&cidr);
	current = "fixed-size edges";
	for (uint8_t b[16]; fixed < 17 * 8; fixed++) {
		for (size_t i = 0; i < sizeof b; i++)
			b[i] = rnd();
		check_fixed(b, fixed % 17);
	}

	spec += run_random("spec, generated", check_spec, gen_spec, iters);
	spec += run_random("spec, random bytes", check_spec, gen_bytes, iters);
	fixed += run_random("fixed-size bodies", check_fixed, gen_bytes, iters);
	frames += run_random("frame headers", check_frame_next, gen_bytes, iters);
	ctl_cases += run_random("control port streams", check_ctl, gen_stream, iters / 20);
	agent += run_random("agent lines", check_agent, gen_lines, iters / 2);
	cmdline += run_random("kernel command line", check_cmdline, gen_cmdline, iters);
	cidr += run_random("addresses", check_cidr, gen_bytes, iters);
	req += run_random("requests, generated", check_req, gen_req, iters);
	req += run_random("requests, random bytes", check_req, gen_bytes, iters);
	env += run_random("environments", check_env, gen_env, iters);
	files += run_random("passwd and group", check_files, gen_files, iters);
	files += run_random("passwd and group, random bytes", check_files, gen_bytes, iters);
	current = "proc files, well-formed";
	for (int i = 0; i < iters; i++, proc++)
		check_proc_exact();
	proc += run_random("proc files", check_proc, gen_proc, iters);
	http += run_random("http heads", check_http, gen_http, iters);
	json += run_random("json strings", check_json, gen_json, iters);
	json += run_random("json strings, random bytes", check_json, gen_bytes, iters);
	inotify += run_random("inotify records", check_inotify, gen_inotify, iters);

	printf("{\"seed\":%llu,\"spec\":%d,\"fixed\":%d,\"frames\":%d,\"ctl\":%d,\"agent\":%d,\"cmdline\":%d,\"cidr\":%d,\"req\":%d,"
	       "\"env\":%d,\"files\":%d,\"proc\":%d,\"http\":%d,\"json\":%d,\"inotify\":%d}\n",
	       (unsigned long long)seed, spec, fixed, frames, ctl_cases, agent, cmdline, cidr, req, env, files, proc, http, json, inotify);
	return 0;
}
#endif
