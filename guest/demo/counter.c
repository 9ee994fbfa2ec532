/*
 * cella-demo: a tiny HTTP app used by the tests and benchmarks.
 * It keeps a counter in memory, writes a file on its disk, touches memory on
 * request, reports what identifies the VM it runs in, and plays the app's side
 * of the AWS Lambda MicroVMs runtime hook contract. Port: argv[1], else 8080.
 * One request per connection (Connection: close); any method unless noted.
 *
 *   GET /                 "ok"
 *   GET /inc              increments the in-memory counter, returns it
 *   GET /get              returns the counter
 *   GET /write/TEXT       writes TEXT to /var/cella-demo.txt (fsync'd)
 *   GET /read             returns that file
 *   GET /touch/N          allocates and dirties N MiB (kept until exit)
 *   GET /random           16 random bytes from getrandom(), hex
 *   GET /hostname         the VM's hostname
 *   GET /echo-env/NAME    the value of environment variable NAME, 404 if unset
 *   GET /log/TEXT         prints TEXT and a newline to stdout, "logged"
 *   GET /err/TEXT         prints TEXT and a newline to stderr, "logged"
 *                         (NAME and TEXT are %XX-decoded)
 *   POST /aws/lambda-microvms/runtime/v1/HOOK
 *                         HOOK is ready, validate, run, resume, suspend or
 *                         terminate. The body (by Content-Length) is recorded,
 *                         "hook HOOK BODY" is printed to stdout, and the answer
 *                         follows the hook's mode: ok 200, fail 500, busy 503,
 *                         hang never (the connection is held open for 120 s,
 *                         at most 64 at once, the oldest dropped first).
 *                         Other methods: 405, not recorded.
 *   GET /hookmode/HOOK/MODE
 *                         sets HOOK's mode (ok, fail, busy, hang): "ok", or 400
 *   GET /hooks            the recorded hook calls in order, "HOOK BODY\n" each
 *   GET /headers          the request's headers in order, "name: value\n" each
 *                         (names lowercased, values as sent, repeats kept)
 *   GET /slow/MS          "slow", after MS milliseconds (at most 3600000; 400
 *                         otherwise); other connections are served meanwhile
 *   GET /sse/N            text/event-stream, Cache-Control: no-cache, no
 *                         Content-Length: "data: I\n\n" for I = 1..N, the first
 *                         at once, then one every 100 ms, then the connection
 *                         closes. Chunked for HTTP/1.1 requests (ended by the
 *                         zero chunk), close-delimited for HTTP/1.0. N is
 *                         capped at 10000; at most 64 streams at once (503).
 *   GET /stream/N         the same as text/plain lines "line I\n"
 *   GET /ws               WebSocket (RFC 6455) echo: needs Upgrade: websocket
 *                         (else 426), Sec-WebSocket-Version: 13 (else 426 with
 *                         Sec-WebSocket-Version: 13) and a Sec-WebSocket-Key
 *                         (else 400); GET only (405); at most 64 at once (503).
 *                         Of the offered Sec-WebSocket-Protocol values the
 *                         first that is not lambda-microvms nor starts with
 *                         "lambda-microvms." is selected, else none. Each
 *                         text, binary or continuation frame is echoed as a
 *                         frame with the same opcode and FIN (any length,
 *                         streamed as it arrives), ping gets pong, close gets
 *                         a close with the same status code and the connection
 *                         is closed; the text message "close-me" makes the
 *                         server close with 1000 "bye". Protocol errors get
 *                         close 1002. Dropped after 600 s without traffic.
 *
 * Environment, read at start:
 *   CELLA_DEMO_HOOKS        initial modes, e.g. "run:fail,suspend:busy,resume:hang"
 *   CELLA_DEMO_READY_AFTER  K: the first K ready calls answer 503, whatever the mode
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FILE_PATH "/var/cella-demo.txt"
#define MAX_CONNS 256  /* open connections, held ones included */
#define MAX_HELD 64    /* connections of hooks in mode hang */
#define HOLD_SECS 120  /* a held connection is closed after this */
#define IDLE_SECS 30   /* a request not complete by then is dropped */
#define HEAD_MAX 16384 /* request line and headers */
#define BODY_MAX 65536 /* request body */
#define REC_MAX 8192   /* bytes of a body kept in the hook record */
#define HOOK_PREFIX "/aws/lambda-microvms/runtime/v1/"
#define MAX_STREAMS 64       /* /sse and /stream connections */
#define STREAM_MAX 10000     /* events per stream */
#define STREAM_MS 100        /* between events */
#define SLOW_MAX 3600000     /* ms, /slow */
#define MAX_WS 64            /* WebSocket connections */
#define WS_IDLE_SECS 600     /* a WebSocket without traffic is dropped after this */
#define CLOSE_SECS 5         /* a WebSocket waiting for the peer's close frame */
#define WS_BUF 65536         /* WebSocket read buffer */
#define WS_OUT_MAX (2 << 20) /* unsent echo above which a WebSocket is not read */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static long counter;

enum mode { OK, FAIL, BUSY, HANG, NMODES };
static const char *const mode_names[NMODES] = { "ok", "fail", "busy", "hang" };
#define NHOOKS 6
static const char *const hook_names[NHOOKS] = { "ready", "validate", "run", "resume", "suspend", "terminate" };
static enum mode hook_mode[NHOOKS];
static long ready_after, ready_calls;

struct rec {
	int hook;
	char *body;
	size_t len;
};
static struct rec *recs;
static size_t nrecs, caprecs;

enum kind {
	REQ,    /* reading a request */
	HELD,   /* a hook in mode hang: never answered */
	STREAM, /* /sse, /stream: an event every STREAM_MS */
	SLOW,   /* /slow: answered at .next */
	WS,     /* /ws after the upgrade */
};

static struct conn {
	int fd; /* -1: free slot */
	enum kind kind;
	char *buf; /* REQ: the request so far, NUL-terminated; WS: unparsed input */
	size_t len, cap;
	size_t head;         /* 0 until the headers are complete, then where the body starts */
	size_t need;         /* Content-Length */
	long long since;     /* ms; REQ: accepted, HELD: held, STREAM and WS: last traffic */
	unsigned long order; /* when held: the oldest is dropped first */
	char *out;           /* STREAM, WS: queued output, sent from .out + .ooff */
	size_t olen, ooff, ocap;
	int closing;                /* drop once the output is sent */
	int rdeof;                  /* STREAM: the client shut its side, not read any more */
	long long next;             /* ms; STREAM: next event, SLOW: when to answer */
	long sent, total;           /* STREAM: events */
	int sse, chunked;           /* STREAM */
	unsigned long long ws_left; /* WS: payload bytes of the frame being echoed still to come */
	unsigned char ws_mask[4];
	unsigned ws_mpos; /* WS: offset in that payload, for the mask */
	int ws_frag;      /* WS: inside a fragmented message */
	int ws_closed;    /* WS: a close frame was sent */
} conns[MAX_CONNS];
static unsigned long held_order;

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

/* Writes all of it, waiting up to 10 s at a time for a slow reader. */
static void send_all(int c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(c, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = c, .events = POLLOUT };
			if (poll(&pf, 1, 10000) <= 0)
				return;
		} else {
			return;
		}
	}
}

/* extra: more header lines, each ending in \r\n */
static void reply_x(int c, int status, const char *extra, const char *body, size_t len)
{
	char head[512];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
			 status == 200 ? "OK" : "Error", len, extra);
	send_all(c, head, n);
	send_all(c, body, len);
}

static void reply_n(int c, int status, const char *body, size_t len)
{
	reply_x(c, status, "", body, len);
}

static void reply(int c, int status, const char *body)
{
	reply_n(c, status, body, strlen(body));
}

static int hex(int ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* Decodes %XX in place. */
static char *unescape(char *s)
{
	char *o = s;
	for (char *i = s; *i; i++) {
		if (i[0] == '%' && hex(i[1]) >= 0 && hex(i[2]) >= 0) {
			*o++ = (char)(hex(i[1]) << 4 | hex(i[2]));
			i += 2;
		} else {
			*o++ = *i;
		}
	}
	*o = 0;
	return s;
}

/* Index of the hook named by the n bytes at s; -1 if none. */
static int find_hook(const char *s, size_t n)
{
	for (int i = 0; i < NHOOKS; i++)
		if (strlen(hook_names[i]) == n && strncmp(s, hook_names[i], n) == 0)
			return i;
	return -1;
}

static int find_mode(const char *s)
{
	for (int i = 0; i < NMODES; i++)
		if (strcmp(s, mode_names[i]) == 0)
			return i;
	return -1;
}

/* Records and logs a hook call; returns 1 when the connection is to be held. */
static int hook(int c, int h, const char *body, size_t len)
{
	if (nrecs == caprecs) {
		size_t cap = caprecs ? caprecs * 2 : 64;
		struct rec *r = realloc(recs, cap * sizeof *r);
		if (r) {
			recs = r;
			caprecs = cap;
		}
	}
	if (nrecs < caprecs) {
		size_t keep = len < REC_MAX ? len : REC_MAX;
		char *b = malloc(keep + 1);
		if (b) {
			memcpy(b, body, keep);
			recs[nrecs++] = (struct rec){ h, b, keep };
		}
	}
	printf("hook %s ", hook_names[h]);
	fwrite(body, 1, len, stdout);
	putchar('\n');
	fflush(stdout);

	if (h == 0 && ready_calls++ < ready_after) {
		reply(c, 503, "not ready");
		return 0;
	}
	switch (hook_mode[h]) {
	case FAIL:
		reply(c, 500, "hook failed");
		return 0;
	case BUSY:
		reply(c, 503, "busy");
		return 0;
	case HANG:
		return 1;
	default:
		reply(c, 200, "ok");
		return 0;
	}
}

static void list_hooks(int c)
{
	size_t total = 0, at = 0;
	for (size_t i = 0; i < nrecs; i++)
		total += strlen(hook_names[recs[i].hook]) + 1 + recs[i].len + 1;
	char *out = malloc(total + 1);
	if (!out) {
		reply(c, 500, "out of memory");
		return;
	}
	for (size_t i = 0; i < nrecs; i++) {
		at += sprintf(out + at, "%s ", hook_names[recs[i].hook]);
		memcpy(out + at, recs[i].body, recs[i].len);
		at += recs[i].len;
		out[at++] = '\n';
	}
	reply_n(c, 200, out, at);
	free(out);
}

static void drop(struct conn *k)
{
	close(k->fd);
	free(k->buf);
	free(k->out);
	*k = (struct conn){ .fd = -1 };
}

static int count(enum kind kind)
{
	int n = 0;
	for (int i = 0; i < MAX_CONNS; i++)
		n += conns[i].fd >= 0 && conns[i].kind == kind;
	return n;
}

/* Appends to the connection's output; sent by pump() and when the socket is writable. */
static void queue(struct conn *k, const void *p, size_t n)
{
	if (k->ocap - k->olen < n && k->ooff) {
		memmove(k->out, k->out + k->ooff, k->olen - k->ooff);
		k->olen -= k->ooff;
		k->ooff = 0;
	}
	if (k->ocap - k->olen < n) {
		size_t cap = k->ocap ? k->ocap * 2 : 4096;
		if (cap < k->olen + n)
			cap = k->olen + n;
		char *o = realloc(k->out, cap);
		if (!o) {
			k->olen = k->ooff = 0;
			k->closing = 1; /* out of memory: give up on the connection */
			return;
		}
		k->out = o;
		k->ocap = cap;
	}
	memcpy(k->out + k->olen, p, n);
	k->olen += n;
}

/* Sends what the socket takes of the queued output; drops the connection on
 * a send error, or when it is closing and all is sent. Returns 0 if dropped. */
static int pump(struct conn *k)
{
	while (k->ooff < k->olen) {
		ssize_t w = send(k->fd, k->out + k->ooff, k->olen - k->ooff, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			k->ooff += w;
			k->since = now_ms();
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && errno == EAGAIN) {
			return 1;
		} else {
			drop(k);
			return 0;
		}
	}
	k->olen = k->ooff = 0;
	if (k->closing) {
		drop(k);
		return 0;
	}
	return 1;
}

struct hdr {
	const char *name, *val;
	size_t nlen, vlen;
};

/* The next request header line from *pos (start with 0), value trimmed; 0 at the end. */
static int next_hdr(const struct conn *k, size_t *pos, struct hdr *h)
{
	size_t end = k->head ? k->head - 2 : k->len; /* the blank line, or what came */
	if (*pos == 0) {
		const char *l = strstr(k->buf, "\r\n");
		*pos = l ? (size_t)(l + 2 - k->buf) : end;
	}
	while (*pos < end) {
		const char *l = k->buf + *pos, *e = memmem(l, end - *pos, "\r\n", 2);
		size_t n = e ? (size_t)(e - l) : end - *pos;
		*pos += n + (e ? 2 : 0);
		const char *colon = memchr(l, ':', n), *v, *ve = l + n;
		if (!colon || colon == l)
			continue;
		for (v = colon + 1; v < ve && (*v == ' ' || *v == '\t'); v++)
			;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		*h = (struct hdr){ l, v, colon - l, ve - v };
		return 1;
	}
	return 0;
}

static int hdr_is(const struct hdr *h, const char *name)
{
	return h->nlen == strlen(name) && strncasecmp(h->name, name, h->nlen) == 0;
}

/* The next comma-separated element of a header value, trimmed; 0 at the end. */
static int next_token(const struct hdr *h, size_t *pos, const char **tok, size_t *tlen)
{
	while (*pos < h->vlen) {
		const char *t = h->val + *pos, *e = memchr(t, ',', h->vlen - *pos);
		size_t n = e ? (size_t)(e - t) : h->vlen - *pos;
		*pos += n + 1;
		while (n && (*t == ' ' || *t == '\t'))
			t++, n--;
		while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
			n--;
		if (n) {
			*tok = t;
			*tlen = n;
			return 1;
		}
	}
	return 0;
}

/* Whether some header NAME has the element TOKEN (case-insensitive). */
static int has_token(const struct conn *k, const char *name, const char *token)
{
	struct hdr h;
	const char *t;
	size_t n;
	for (size_t pos = 0; next_hdr(k, &pos, &h);)
		for (size_t tp = 0; hdr_is(&h, name) && next_token(&h, &tp, &t, &n);)
			if (n == strlen(token) && strncasecmp(t, token, n) == 0)
				return 1;
	return 0;
}

static void list_headers(struct conn *k)
{
	char *out = malloc(k->len + 1), *o = out;
	struct hdr h;
	if (!out) {
		reply(k->fd, 500, "out of memory");
		return;
	}
	for (size_t pos = 0; next_hdr(k, &pos, &h);) {
		for (size_t i = 0; i < h.nlen; i++)
			*o++ = (char)tolower((unsigned char)h.name[i]);
		*o++ = ':';
		*o++ = ' ';
		memcpy(o, h.val, h.vlen);
		o += h.vlen;
		*o++ = '\n';
	}
	reply_n(k->fd, 200, out, o - out);
	free(out);
}

/* "123" or "123?query": the number, else -1. */
static long number(const char *s)
{
	long v = 0;
	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++)
		v = v < 100000000 ? v * 10 + (*s - '0') : v;
	return *s == 0 || *s == '?' ? v : -1;
}

/* The next event of a stream, or its end. */
static void stream_tick(struct conn *k, long long t)
{
	char ev[64], chunk[80];
	int n;
	if (k->sent < k->total) {
		k->sent++;
		n = snprintf(ev, sizeof ev, k->sse ? "data: %ld\n\n" : "line %ld\n", k->sent);
		if (k->chunked)
			n = snprintf(chunk, sizeof chunk, "%x\r\n%s\r\n", (unsigned)n, ev);
		queue(k, k->chunked ? chunk : ev, n);
		k->next += STREAM_MS;
		if (k->next < t)
			k->next = t + STREAM_MS; /* fell behind (e.g. the VM was paused): no burst */
	}
	if (k->sent == k->total) {
		if (k->chunked)
			queue(k, "0\r\n\r\n", 5);
		k->closing = 1;
	}
	pump(k);
}

static int start_stream(struct conn *k, int sse, long n, const char *version)
{
	char head[256];
	if (n < 0) {
		reply(k->fd, 400, "bad count");
		return 0;
	}
	if (count(STREAM) >= MAX_STREAMS) {
		reply(k->fd, 503, "too many streams");
		return 0;
	}
	k->chunked = strcmp(version, "HTTP/1.1") == 0;
	int len =
		snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n%sConnection: close\r\n\r\n",
			 sse ? "text/event-stream" : "text/plain", k->chunked ? "Transfer-Encoding: chunked\r\n" : "");
	k->kind = STREAM;
	k->sse = sse;
	k->total = n < STREAM_MAX ? n : STREAM_MAX;
	k->next = k->since = now_ms(); /* the first event at once, from the poll loop */
	free(k->buf);
	k->buf = NULL;
	k->len = k->cap = 0;
	queue(k, head, len);
	return 2;
}

static void sha1(const unsigned char *m, size_t n, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0 }, w[80];
	size_t blocks = (n + 72) / 64; /* the message, 0x80, the 64-bit bit length */
	for (size_t b = 0; b < blocks; b++) {
		for (int i = 0; i < 64; i++) {
			size_t at = b * 64 + i;
			unsigned char c = at < n ? m[at] : at == n ? 0x80 : 0;
			if (b == blocks - 1 && i >= 56)
				c = (unsigned char)((uint64_t)n * 8 >> (8 * (63 - i)));
			if (i % 4 == 0)
				w[i / 4] = 0;
			w[i / 4] |= (uint32_t)c << (8 * (3 - i % 4));
		}
		for (int i = 16; i < 80; i++) {
			uint32_t x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
			w[i] = x << 1 | x >> 31;
		}
		uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
		for (int i = 0; i < 80; i++) {
			uint32_t f = i < 20   ? ((bb & c) | (~bb & d)) + 0x5a827999
				     : i < 40 ? (bb ^ c ^ d) + 0x6ed9eba1
				     : i < 60 ? ((bb & c) | (bb & d) | (c & d)) + 0x8f1bbcdc
					      : (bb ^ c ^ d) + 0xca62c1d6;
			uint32_t t = (a << 5 | a >> 27) + f + e + w[i];
			e = d;
			d = c;
			c = bb << 30 | bb >> 2;
			bb = a;
			a = t;
		}
		h[0] += a;
		h[1] += bb;
		h[2] += c;
		h[3] += d;
		h[4] += e;
	}
	for (int i = 0; i < 20; i++)
		out[i] = (unsigned char)(h[i / 4] >> (8 * (3 - i % 4)));
}

/* out: 4 * ((n + 2) / 3) + 1 bytes */
static void base64(const unsigned char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
		*out++ = t[v >> 18 & 63];
		*out++ = t[v >> 12 & 63];
		*out++ = i + 1 < n ? t[v >> 6 & 63] : '=';
		*out++ = i + 2 < n ? t[v & 63] : '=';
	}
	*out = 0;
}

/* Queues a frame (fin_op: the first header byte) announcing len bytes of payload. */
static void ws_head(struct conn *k, int fin_op, unsigned long long len)
{
	unsigned char h[10];
	size_t n = 2;
	h[0] = (unsigned char)fin_op;
	if (len < 126) {
		h[1] = (unsigned char)len;
	} else if (len < 65536) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		n = 4;
	} else {
		h[1] = 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
		n = 10;
	}
	queue(k, h, n);
}

static void ws_send(struct conn *k, int fin_op, const void *p, size_t len)
{
	ws_head(k, fin_op, len);
	queue(k, p, len);
}

/* Sends a close frame (unless one was); with end, the connection is closed once it is sent. */
static void ws_close(struct conn *k, int code, const char *reason, int end)
{
	if (!k->ws_closed) {
		unsigned char p[125] = { (unsigned char)(code >> 8), (unsigned char)code };
		size_t n = strlen(reason);
		memcpy(p + 2, reason, n);
		ws_send(k, 0x88, p, 2 + n);
		k->ws_closed = 1;
		k->since = now_ms();
	}
	if (end)
		k->closing = 1;
}

/* Echoes the complete frames in k->buf, and the payload so far of a long one. */
static void ws_process(struct conn *k)
{
	size_t at = 0;
	while (at < k->len && !k->closing) {
		unsigned char *b = (unsigned char *)k->buf + at;
		size_t avail = k->len - at;
		if (k->ws_left) {
			/* a long data frame: its header went out, its payload follows as it comes */
			size_t n = avail < k->ws_left ? avail : k->ws_left;
			for (size_t i = 0; i < n; i++)
				b[i] ^= k->ws_mask[(k->ws_mpos + i) & 3];
			if (!k->ws_closed)
				queue(k, b, n);
			k->ws_mpos += n;
			k->ws_left -= n;
			at += n;
			continue;
		}
		if (avail < 2)
			break;
		int fin = b[0] & 0x80, op = b[0] & 0x0f, len7 = b[1] & 0x7f;
		if ((b[0] & 0x70) || !(b[1] & 0x80) || (op > 2 && op < 8) || op > 10 || (op >= 8 && (!fin || len7 > 125)) ||
		    (op == 0 && !k->ws_frag) || ((op == 1 || op == 2) && k->ws_frag)) {
			ws_close(k, 1002, "protocol error", 1); /* reserved bits or opcode, unmasked, bad control frame or fragment */
			break;
		}
		size_t hl = len7 == 127 ? 14 : len7 == 126 ? 8 : 6;
		if (avail < hl)
			break;
		unsigned long long len = len7;
		if (len7 == 126)
			len = b[2] << 8 | b[3];
		else if (len7 == 127)
			for (int i = 0; i < 8; i++)
				len = (i ? len << 8 : 0) | b[2 + i];
		if (len >> 63) {
			ws_close(k, 1002, "protocol error", 1);
			break;
		}
		memcpy(k->ws_mask, b + hl - 4, 4);
		if (op < 8)
			k->ws_frag = !fin;
		if (len > 125) {
			if (!k->ws_closed)
				ws_head(k, b[0] & 0x8f, len);
			k->ws_left = len;
			k->ws_mpos = 0;
			at += hl;
			continue;
		}
		if (avail < hl + len)
			break;
		unsigned char *p = b + hl;
		for (size_t i = 0; i < len; i++)
			p[i] ^= k->ws_mask[i & 3];
		at += hl + len;
		if (k->ws_closed && op != 8)
			continue; /* after our close frame only the peer's close matters */
		if (op == 1 && fin && len == 8 && memcmp(p, "close-me", 8) == 0)
			ws_close(k, 1000, "bye", 0);
		else if (op < 8)
			ws_send(k, b[0] & 0x8f, p, len);
		else if (op == 9)
			ws_send(k, 0x8a, p, len);
		else if (op == 8 && len == 1)
			ws_close(k, 1002, "protocol error", 1);
		else if (op == 8) {
			if (!k->ws_closed)
				ws_send(k, 0x88, p, len < 2 ? 0 : 2); /* echo the status code */
			k->ws_closed = 1;
			k->closing = 1;
		}
	}
	memmove(k->buf, k->buf + at, k->len - at);
	k->len -= at;
}

static int start_ws(struct conn *k, const char *method, size_t body_end)
{
	const char *key = NULL, *t, *proto = NULL;
	size_t klen = 0, tlen, plen = 0;
	struct hdr h;
	if (strcmp(method, "GET") != 0) {
		reply(k->fd, 405, "GET only");
		return 0;
	}
	if (!has_token(k, "Upgrade", "websocket")) {
		reply_x(k->fd, 426, "Upgrade: websocket\r\n", "websocket upgrade expected", 26);
		return 0;
	}
	if (!has_token(k, "Sec-WebSocket-Version", "13")) {
		reply_x(k->fd, 426, "Sec-WebSocket-Version: 13\r\n", "unsupported websocket version", 29);
		return 0;
	}
	for (size_t pos = 0; next_hdr(k, &pos, &h);) {
		if (hdr_is(&h, "Sec-WebSocket-Key")) {
			key = h.val;
			klen = h.vlen;
		}
		for (size_t tp = 0; !proto && hdr_is(&h, "Sec-WebSocket-Protocol") && next_token(&h, &tp, &t, &tlen);) {
			if ((tlen == 15 || (tlen > 15 && t[15] == '.')) && strncmp(t, "lambda-microvms", 15) == 0)
				continue;
			proto = t;
			plen = tlen;
		}
	}
	if (!key || klen == 0 || klen > 256) {
		reply(k->fd, 400, "bad Sec-WebSocket-Key");
		return 0;
	}
	if (count(WS) >= MAX_WS) {
		reply(k->fd, 503, "too many websockets");
		return 0;
	}
	unsigned char cat[256 + sizeof WS_GUID], dig[20];
	char acc[29], head[256];
	memcpy(cat, key, klen);
	memcpy(cat + klen, WS_GUID, sizeof WS_GUID - 1);
	sha1(cat, klen + sizeof WS_GUID - 1, dig);
	base64(dig, 20, acc);
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s",
			 acc, proto ? "Sec-WebSocket-Protocol: " : "\r\n");
	queue(k, head, n);
	if (proto) {
		queue(k, proto, plen);
		queue(k, "\r\n\r\n", 4);
	}
	/* Frames the client sent right after its request stay in the buffer. */
	char *b = k->cap < WS_BUF ? realloc(k->buf, WS_BUF) : k->buf;
	if (!b) {
		k->closing = 1;
		return 2;
	}
	k->buf = b;
	k->cap = k->cap < WS_BUF ? WS_BUF : k->cap;
	memmove(k->buf, k->buf + body_end, k->len - body_end);
	k->len -= body_end;
	k->kind = WS;
	k->since = now_ms();
	ws_process(k);
	return 2;
}

/* Answers one request; returns 0 when done, 1 when the connection is to be
 * held unanswered, 2 when it goes on as another kind (k->kind is set). */
static int handle(struct conn *k, const char *method, char *path, const char *version, const char *body, size_t blen)
{
	char out[256];
	int c = k->fd;
	if (strcmp(path, "/") == 0) {
		reply(c, 200, "ok");
	} else if (strcmp(path, "/inc") == 0) {
		snprintf(out, sizeof out, "%ld", ++counter);
		reply(c, 200, out);
	} else if (strcmp(path, "/get") == 0) {
		snprintf(out, sizeof out, "%ld", counter);
		reply(c, 200, out);
	} else if (strncmp(path, "/write/", 7) == 0) {
		int fd = open(FILE_PATH, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, path + 7, strlen(path + 7)) < 0 || fsync(fd) < 0) {
			reply(c, 500, "write failed");
		} else {
			reply(c, 200, "written");
		}
		if (fd >= 0)
			close(fd);
	} else if (strcmp(path, "/read") == 0) {
		int fd = open(FILE_PATH, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, out, sizeof out - 1) : -1;
		if (fd >= 0)
			close(fd);
		out[n > 0 ? n : 0] = 0;
		reply(c, n >= 0 ? 200 : 404, n >= 0 ? out : "no file");
	} else if (strncmp(path, "/touch/", 7) == 0) {
		long mib = atol(path + 7);
		char *p = mib > 0 && mib < 4096 ? malloc((size_t)mib << 20) : NULL;
		if (!p) {
			reply(c, 400, "bad size");
			return 0;
		}
		for (size_t i = 0; i < (size_t)mib << 20; i += 4096)
			p[i] = (char)(i >> 12) | 1;
		snprintf(out, sizeof out, "touched %ld MiB", mib);
		reply(c, 200, out);
	} else if (strcmp(path, "/random") == 0) {
		unsigned char r[16];
		if (getrandom(r, sizeof r, 0) != sizeof r) {
			reply(c, 500, "getrandom failed");
			return 0;
		}
		for (int i = 0; i < 16; i++)
			sprintf(out + 2 * i, "%02x", r[i]);
		reply(c, 200, out);
	} else if (strcmp(path, "/hostname") == 0) {
		gethostname(out, sizeof out);
		reply(c, 200, out);
	} else if (strncmp(path, "/echo-env/", 10) == 0) {
		const char *v = getenv(unescape(path + 10));
		reply(c, v ? 200 : 404, v ? v : "unset");
	} else if (strncmp(path, "/log/", 5) == 0) {
		printf("%s\n", unescape(path + 5));
		fflush(stdout);
		reply(c, 200, "logged");
	} else if (strncmp(path, "/err/", 5) == 0) {
		fprintf(stderr, "%s\n", unescape(path + 5));
		fflush(stderr);
		reply(c, 200, "logged");
	} else if (strncmp(path, HOOK_PREFIX, strlen(HOOK_PREFIX)) == 0) {
		const char *name = path + strlen(HOOK_PREFIX);
		int h = find_hook(name, strcspn(name, "?"));
		if (h < 0)
			reply(c, 404, "no such hook");
		else if (strcmp(method, "POST") != 0)
			reply(c, 405, "POST only");
		else
			return hook(c, h, body, blen);
	} else if (strncmp(path, "/hookmode/", 10) == 0) {
		char *name = path + 10, *slash = strchr(name, '/');
		int h = slash ? find_hook(name, slash - name) : -1;
		int m = slash ? find_mode(slash + 1) : -1;
		if (h < 0 || m < 0) {
			reply(c, 400, "usage: /hookmode/{ready|validate|run|resume|suspend|terminate}/{ok|fail|busy|hang}");
		} else {
			hook_mode[h] = m;
			reply(c, 200, "ok");
		}
	} else if (strcmp(path, "/hooks") == 0) {
		list_hooks(c);
	} else if (strcmp(path, "/headers") == 0 || strncmp(path, "/headers?", 9) == 0) {
		list_headers(k);
	} else if (strncmp(path, "/slow/", 6) == 0) {
		long ms = number(path + 6);
		if (ms < 0 || ms > SLOW_MAX) {
			reply(c, 400, "bad ms");
			return 0;
		}
		k->kind = SLOW;
		k->next = now_ms() + ms;
		free(k->buf);
		k->buf = NULL;
		k->len = k->cap = 0;
		return 2;
	} else if (strncmp(path, "/sse/", 5) == 0) {
		return start_stream(k, 1, number(path + 5), version);
	} else if (strncmp(path, "/stream/", 8) == 0) {
		return start_stream(k, 0, number(path + 8), version);
	} else if (strcmp(path, "/ws") == 0 || strncmp(path, "/ws?", 4) == 0) {
		return start_ws(k, method, body + blen - k->buf);
	} else {
		reply(c, 404, "not found");
	}
	return 0;
}

static int nheld(struct conn **oldest)
{
	int n = 0;
	*oldest = NULL;
	for (int i = 0; i < MAX_CONNS; i++) {
		if (conns[i].fd >= 0 && conns[i].kind == HELD) {
			n++;
			if (!*oldest || conns[i].order < (*oldest)->order)
				*oldest = &conns[i];
		}
	}
	return n;
}

/* The request is complete (or the client stopped sending): answer it. */
static void dispatch(struct conn *k)
{
	char method[8], path[4096], version[16] = "";
	size_t head = k->head ? k->head : k->len;
	size_t blen = k->len - head < k->need ? k->len - head : k->need;
	int hold = 0;
	if (sscanf(k->buf, "%7s %4095s %15s", method, path, version) >= 2)
		hold = handle(k, method, path, version, k->buf + head, blen);
	if (hold == 2) {
		pump(k);
		return;
	}
	if (!hold) {
		drop(k);
		return;
	}
	struct conn *oldest;
	if (nheld(&oldest) >= MAX_HELD)
		drop(oldest);
	k->kind = HELD;
	k->order = ++held_order;
	k->since = now_ms();
	free(k->buf);
	k->buf = NULL;
	k->len = k->cap = 0;
}

/* Parses the headers once "\r\n\r\n" has arrived; returns 0 to drop the connection. */
static int parse_head(struct conn *k)
{
	char *end = strstr(k->buf, "\r\n\r\n");
	if (!end)
		return 1;
	k->head = end + 4 - k->buf;
	int expect = 0;
	for (char *l = strstr(k->buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
		char *h = l + 2;
		if (strncasecmp(h, "Content-Length:", 15) == 0) {
			unsigned long n = strtoul(h + 15, NULL, 10);
			if (n > BODY_MAX) {
				reply(k->fd, 413, "body too large");
				return 0;
			}
			k->need = n;
		} else if (strncasecmp(h, "Expect:", 7) == 0 && strncasecmp(h + 7 + strspn(h + 7, " \t"), "100-continue", 12) == 0) {
			expect = 1;
		}
	}
	if (expect && k->len - k->head < k->need) {
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
		send_all(k->fd, cont, sizeof cont - 1);
	}
	return 1;
}

static void readable(struct conn *k)
{
	if (k->kind == HELD || k->kind == STREAM) {
		char junk[4096];
		ssize_t n = read(k->fd, junk, sizeof junk);
		if (n == 0 && k->kind == STREAM)
			k->rdeof = 1; /* maybe only shut its sending side: keep streaming */
		else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			drop(k);
		return;
	}
	if (k->kind == WS) {
		ssize_t n = read(k->fd, k->buf + k->len, k->cap - k->len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			drop(k);
			return;
		}
		k->len += n;
		k->since = now_ms();
		ws_process(k);
		pump(k);
		return;
	}
	if (k->cap - k->len < 4096 && k->cap < HEAD_MAX + BODY_MAX) {
		size_t cap = k->cap ? k->cap * 2 : 8192;
		if (cap > HEAD_MAX + BODY_MAX)
			cap = HEAD_MAX + BODY_MAX;
		char *b = realloc(k->buf, cap + 1);
		if (!b) {
			drop(k);
			return;
		}
		k->buf = b;
		k->cap = cap;
	}
	ssize_t n = read(k->fd, k->buf + k->len, k->cap - k->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* As before: the client closed its side, answer what came. */
		if (n == 0 && k->len > 0)
			dispatch(k);
		else
			drop(k);
		return;
	}
	k->len += n;
	k->buf[k->len] = 0;
	if (!k->head) {
		if (!parse_head(k)) {
			drop(k);
			return;
		}
		if (!k->head && k->len >= HEAD_MAX) {
			dispatch(k); /* headers too long: answer the request line */
			return;
		}
	}
	if ((k->head && k->len - k->head >= k->need) || k->len == HEAD_MAX + BODY_MAX)
		dispatch(k);
}

static void load_modes(void)
{
	const char *v = getenv("CELLA_DEMO_HOOKS");
	char *s = v ? strdup(v) : NULL, *save = NULL;
	for (char *item = s ? strtok_r(s, ", \t", &save) : NULL; item; item = strtok_r(NULL, ", \t", &save)) {
		char *colon = strchr(item, ':');
		int h = colon ? find_hook(item, colon - item) : -1;
		int m = colon ? find_mode(colon + 1) : -1;
		if (h >= 0 && m >= 0)
			hook_mode[h] = m;
		else
			fprintf(stderr, "cella-demo: CELLA_DEMO_HOOKS: ignoring \"%s\"\n", item);
	}
	free(s);
	v = getenv("CELLA_DEMO_READY_AFTER");
	ready_after = v ? atol(v) : 0;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 8080;
	signal(SIGPIPE, SIG_IGN);
	load_modes();
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = { INADDR_ANY } };
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 128) < 0) {
		perror("cella-demo: listen");
		return 1;
	}
	printf("cella-demo listening on %d\n", port);
	fflush(stdout);
	for (int i = 0; i < MAX_CONNS; i++)
		conns[i].fd = -1;
	for (;;) {
		struct pollfd pf[MAX_CONNS + 1];
		int slot[MAX_CONNS + 1], n = 0, open = 0;
		long long t = now_ms(), wake = -1;
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *k = &conns[i];
			if (k->fd < 0)
				continue;
			if (k->kind == SLOW && t >= k->next) {
				reply(k->fd, 200, "slow");
				drop(k);
				continue;
			}
			if (k->kind == STREAM && !k->closing && t >= k->next) {
				stream_tick(k, t);
				if (k->fd < 0)
					continue;
			}
			long long idle = k->kind == HELD                  ? HOLD_SECS
					 : k->kind == WS && !k->ws_closed ? WS_IDLE_SECS
					 : k->kind == WS                  ? CLOSE_SECS
					 : k->kind == SLOW                ? -1
									  : IDLE_SECS;
			if (idle >= 0 && t - k->since >= idle * 1000) {
				drop(k);
				continue;
			}
			short ev = POLLIN, pending = k->olen > k->ooff;
			if (k->kind == STREAM)
				ev = (k->rdeof ? 0 : POLLIN) | (pending ? POLLOUT : 0);
			else if (k->kind == SLOW)
				ev = 0;
			else if (k->kind == WS)
				ev = (!k->closing && k->olen - k->ooff < WS_OUT_MAX ? POLLIN : 0) | (pending ? POLLOUT : 0);
			if ((k->kind == STREAM && !k->closing) || k->kind == SLOW)
				wake = wake < 0 || k->next < wake ? k->next : wake;
			pf[n] = (struct pollfd){ .fd = k->fd, .events = ev };
			slot[n++] = i;
			open++;
		}
		if (open < MAX_CONNS) {
			pf[n] = (struct pollfd){ .fd = s, .events = POLLIN };
			slot[n++] = -1;
		}
		int ms = !open ? -1 : wake < 0 || wake - t > 1000 ? 1000 : wake > t ? (int)(wake - t) : 0;
		if (poll(pf, n, ms) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (!pf[i].revents)
				continue;
			if (slot[i] >= 0) {
				struct conn *k = &conns[slot[i]];
				/* skip a connection dropped meanwhile (an evicted held one) */
				if (k->fd != pf[i].fd)
					continue;
				if (k->kind == SLOW || (k->kind == STREAM && (pf[i].revents & (POLLERR | POLLHUP)))) {
					drop(k); /* reset or gone */
					continue;
				}
				if ((pf[i].revents & POLLOUT) && !pump(k))
					continue;
				if (pf[i].revents & (POLLIN | POLLERR | POLLHUP))
					readable(k);
				continue;
			}
			for (int j = 0; j < MAX_CONNS; j++) {
				if (conns[j].fd >= 0)
					continue;
				int c = accept4(s, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (c < 0)
					break;
				conns[j] = (struct conn){ .fd = c, .since = now_ms() };
			}
		}
	}
}
