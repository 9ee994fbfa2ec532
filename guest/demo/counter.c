/*
 * cella-demo: a tiny HTTP app used by the tests and benchmarks.
 * It keeps a counter in memory, writes a file on its disk, touches memory on
 * request and reports what identifies the VM it runs in.
 *
 *   GET /            "ok"
 *   GET /inc         increments the in-memory counter, returns it
 *   GET /get         returns the counter
 *   GET /write/TEXT  writes TEXT to /var/cella-demo.txt (fsync'd)
 *   GET /read        returns that file
 *   GET /touch/N     allocates and dirties N MiB (kept until exit)
 *   GET /random      16 random bytes from getrandom(), hex
 *   GET /hostname    the VM's hostname
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#define FILE_PATH "/var/cella-demo.txt"

static long counter;

static void reply(int c, int status, const char *body)
{
	char head[256];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, status == 200 ? "OK" : "Error", strlen(body));
	(void)!write(c, head, n);
	(void)!write(c, body, strlen(body));
}

static void handle(int c, char *path)
{
	char out[256];
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
			return;
		}
		for (size_t i = 0; i < (size_t)mib << 20; i += 4096)
			p[i] = (char)(i >> 12) | 1;
		snprintf(out, sizeof out, "touched %ld MiB", mib);
		reply(c, 200, out);
	} else if (strcmp(path, "/random") == 0) {
		unsigned char r[16];
		if (getrandom(r, sizeof r, 0) != sizeof r) {
			reply(c, 500, "getrandom failed");
			return;
		}
		for (int i = 0; i < 16; i++)
			sprintf(out + 2 * i, "%02x", r[i]);
		reply(c, 200, out);
	} else if (strcmp(path, "/hostname") == 0) {
		gethostname(out, sizeof out);
		reply(c, 200, out);
	} else {
		reply(c, 404, "not found");
	}
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 8080;
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr = { INADDR_ANY } };
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 128) < 0) {
		perror("cella-demo: listen");
		return 1;
	}
	printf("cella-demo listening on %d\n", port);
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		char req[2048];
		size_t len = 0;
		while (len < sizeof req - 1) {
			ssize_t n = read(c, req + len, sizeof req - 1 - len);
			if (n <= 0)
				break;
			len += n;
			req[len] = 0;
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[len] = 0;
		char method[8], path[1024];
		if (sscanf(req, "%7s %1023s", method, path) == 2)
			handle(c, path);
		close(c);
	}
}
