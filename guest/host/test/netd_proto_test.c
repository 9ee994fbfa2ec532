/*
 * netd_parse on edge cases and on seeded random streams, under ASan and UBSan (src/net/netd.test.ts
 * builds and runs it): each buffer is an exact-size heap copy, so a read past it is caught. A request
 * must parse whole or not at all, every prefix of it must ask for more, and nothing refused may reach
 * the helper's operations. Usage: netd_proto_test SEED ITERATIONS; prints the count of cases as JSON.
 */
#include "../netd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void expect(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "FAIL: %s\n", what);
		failures++;
	}
}

static long parse(const char *text, size_t len, struct netd_req *r, const char **invalid)
{
	char *copy = malloc(len ? len : 1);
	memcpy(copy, text, len);
	long n = netd_parse(copy, len, r, invalid);
	/* Pointers into the copy must stay inside it. */
	if (n > 0 && !*invalid) {
		if (r->tag)
			expect(r->tag >= copy && r->tag + r->tag_len <= copy + n, "tag inside the request");
		if (r->rules)
			expect(r->rules >= copy && r->rules + r->rules_len <= copy + n, "rules inside the request");
	}
	free(copy);
	return n;
}

/* A complete, valid request: accepted whole, and every prefix asks for more. */
static void valid(const char *text, enum netd_op op, unsigned slot, size_t tag_len, size_t rules_len)
{
	struct netd_req r;
	const char *invalid;
	size_t len = strlen(text);
	long n = parse(text, len, &r, &invalid);
	expect(n == (long)len && !invalid, text);
	expect(r.op == op && r.slot == slot && r.tag_len == tag_len && r.rules_len == rules_len, "fields read");
	for (size_t cut = 0; cut < len; cut++)
		expect(parse(text, cut, &r, &invalid) == 0, "a prefix asks for more");
}

/* Framed but refused: answered (consumes the request), never served. */
static void refused(const char *text, size_t len)
{
	struct netd_req r;
	const char *invalid;
	expect(parse(text, len, &r, &invalid) == (long)len && invalid != NULL, text);
}

static void unframeable(const char *text)
{
	struct netd_req r;
	const char *invalid;
	expect(parse(text, strlen(text), &r, &invalid) == -1 && invalid != NULL, text);
}

static void edge_cases(void)
{
	valid("1 setup 0 6\n\ntable", NETD_SETUP, 0, 0, 5);
	valid("7 setup 16383 11\ncella:1\nxyz", NETD_SETUP, 16383, 7, 3);
	valid("9007199254740991 nft 3 4\nrule", NETD_NFT, 3, 0, 4);
	valid("2 destroy 12 0\n", NETD_DESTROY, 12, 0, 0);
	valid("3 add 16383 0\n", NETD_ADD, 16383, 0, 0);

	refused("1 destroy 16384 0\n", 18);
	refused("1 destroy 99999999999 0\n", 24);
	refused("1 destroy 1 3\nabc", 17);
	refused("1 add 1 1\nx", 11);
	refused("1 add 16384 0\n", 14);
	refused("1 nft 1 0\n", 10);
	refused("1 nft 1 3\na\0b", 13);
	refused("1 setup 1 4\nabcd", 16);
	refused("1 setup 1 0\n", 12);
	refused("1 setup 1 4\n\tx\nr", 16);
	refused("1 setup 1 3\n\x80\nr", 15);
	char big[400];
	int n = snprintf(big, sizeof(big), "1 setup 1 %d\n", NETD_MAX_TAG + 3);
	memset(big + n, 'a', NETD_MAX_TAG + 1);
	memcpy(big + n + NETD_MAX_TAG + 1, "\nr", 2);
	refused(big, (size_t)n + NETD_MAX_TAG + 3);

	const char *bad[] = {
		"0 destroy 1 0\n",   "01 destroy 1 0\n",
		"-1 destroy 1 0\n",  "9007199254740992 destroy 1 0\n",
		"1 remove 1 0\n",    "1 destroy -1 0\n",
		"1 destroy 1 -0\n",  "1  destroy 1 0\n",
		"1 destroy 1 0 \n",  "1 destroy 1\n",
		"1 destroy 01 0\n",  "1 nft 1 4194305\n",
		"1 destroy 1 0\r\n", "\n",
		"1 setupx 1 0\n",    "1 create 1 0\n",
		"1 ad 1 0\n",        "x\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		unframeable(bad[i]);
	char longline[NETD_MAX_HEADER + 8];
	memset(longline, '1', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	unframeable(longline);
}

static const char *pieces[] = { "1",
				"42",
				"0",
				"16383",
				"16384",
				" ",
				"setup",
				"nft",
				"destroy",
				"\n",
				"5",
				"ab",
				"\t",
				"\0",
				"cella-owner:x",
				"table ip cella {}",
				"99999999999999999999" };

/* Random streams of protocol-like pieces and bytes: no crash, no read past the end, results in range. */
static void random_cases(unsigned seed, int iterations)
{
	srand(seed);
	for (int i = 0; i < iterations; i++) {
		char buf[256];
		size_t len = 0;
		while (len < 200) {
			const char *p;
			size_t n;
			if (rand() % 4) {
				p = pieces[rand() % (int)(sizeof(pieces) / sizeof(pieces[0]))];
				n = *p ? strlen(p) : 1;
			} else {
				static char byte;
				byte = (char)rand();
				p = &byte;
				n = 1;
			}
			memcpy(buf + len, p, n);
			len += n;
			if (rand() % 8 == 0)
				break;
		}
		struct netd_req r;
		const char *invalid;
		long n = parse(buf, len, &r, &invalid);
		expect(n >= -1 && n <= (long)len, "result in range");
		if (n > 0 && !invalid) {
			expect(r.id >= 1 && r.id <= NETD_MAX_ID && r.slot < NETD_MAX_SLOTS, "served request in range");
			expect(r.op == NETD_DESTROY || (r.rules_len > 0 && !memchr(r.rules, '\0', r.rules_len)), "rules are text");
			for (size_t k = 0; r.tag && k < r.tag_len; k++)
				expect(r.tag[k] >= 0x20 && r.tag[k] <= 0x7e, "tag printable");
		}
	}
}

int main(int argc, char **argv)
{
	unsigned seed = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1;
	int iterations = argc > 2 ? atoi(argv[2]) : 1000;
	edge_cases();
	random_cases(seed, iterations);
	printf("{\"cases\":%d,\"failures\":%d}\n", iterations, failures);
	return failures ? 1 : 0;
}
