/*
 * cella-demo: a tiny HTTP app for the VM suites, the benchmarks and the
 * image templates. It keeps a counter in memory (what a resume must keep),
 * writes a file on its disk, touches memory on request, reports what
 * identifies the VM it runs in, and plays the app's side of the AWS Lambda
 * MicroVMs runtime hook contract. Port: argv[1], else 8080. One request per
 * connection (Connection: close); any method unless noted. The endpoint
 * proxy's protocol tests (headers, SSE, WebSocket, large bodies) use a Node
 * app on the host instead (test/fixtures/app-upstream.ts).
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
 *
 * Environment, read at start:
 *   CELLA_DEMO_HOOKS        initial modes, e.g. "run:fail,suspend:busy,resume:hang"
 *   CELLA_DEMO_READY_AFTER  K: the first K ready calls answer 503, whatever the mode
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
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
	REQ,  /* reading a request */
	HELD, /* a hook in mode hang: never answered */
};

static struct conn {
	int fd; /* -1: free slot */
	enum kind kind;
	char *buf; /* REQ: the request so far, NUL-terminated */
	size_t len, cap;
	size_t head;         /* 0 until the headers are complete, then where the body starts */
	size_t need;         /* Content-Length */
	long long since;     /* ms; REQ: accepted, HELD: held */
	unsigned long order; /* when held: the oldest is dropped first */
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

static void reply_n(int c, int status, const char *body, size_t len)
{
	char head[256];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
			 status == 200 ? "OK" : "Error", len);
	send_all(c, head, n);
	send_all(c, body, len);
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
	*k = (struct conn){ .fd = -1 };
}

/* Answers one request; returns 0 when done, 1 when the connection is to be held unanswered. */
static int handle(struct conn *k, const char *method, char *path, const char *body, size_t blen)
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
	char method[8], path[4096];
	size_t head = k->head ? k->head : k->len;
	size_t blen = k->len - head < k->need ? k->len - head : k->need;
	int hold = 0;
	if (sscanf(k->buf, "%7s %4095s", method, path) == 2)
		hold = handle(k, method, path, k->buf + head, blen);
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
	if (k->kind == HELD) {
		char junk[4096];
		ssize_t n = read(k->fd, junk, sizeof junk);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			drop(k);
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
		int slot[MAX_CONNS + 1], n = 0;
		long long t = now_ms();
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *k = &conns[i];
			if (k->fd < 0)
				continue;
			if (t - k->since >= (k->kind == HELD ? HOLD_SECS : IDLE_SECS) * 1000LL) {
				drop(k);
				continue;
			}
			pf[n] = (struct pollfd){ .fd = k->fd, .events = POLLIN };
			slot[n++] = i;
		}
		int open = n;
		if (open < MAX_CONNS) {
			pf[n] = (struct pollfd){ .fd = s, .events = POLLIN };
			slot[n++] = -1;
		}
		if (poll(pf, n, open ? 1000 : -1) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (!pf[i].revents)
				continue;
			if (slot[i] >= 0) {
				struct conn *k = &conns[slot[i]];
				/* skip a connection dropped meanwhile (an evicted held one) */
				if (k->fd == pf[i].fd)
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
