/*
 * cella-netd's protocol (netd.c serves it; netd_proto.c parses it; test/netd_proto_test.c checks the parser).
 *
 * A request is one header line, then LEN bytes of payload:
 *   ID OP SLOT LEN\n
 * ID is the caller's (1..2^53), echoed in the reply so requests can be pipelined; OP is add, setup, nft
 * or destroy; SLOT is 0..NETD_MAX_SLOTS-1. add makes the bare namespace (as `ip netns add`); setup puts
 * the veth pair, tap, routes and base rules in it (a failure removes the namespace); two requests, so
 * cellad can crash between them as between the `ip` commands (its intent file covers that). Payloads:
 * setup "TAG\nRULES" (TAG, possibly empty, goes on the host end of the veth as its ifalias; RULES is the
 * namespace's base ruleset), nft "RULES", add and destroy none. A reply is "ID ok 0\n" or "ID err LEN\n"
 * and LEN bytes of message ("step: what"; step slot-taken: add found the name in use, and changed
 * nothing). Replies come in request order.
 */
#ifndef CELLA_NETD_H
#define CELLA_NETD_H

#include <stddef.h>

/* src/net/rules.ts MAX_SLOTS. */
#define NETD_MAX_SLOTS 16384
#define NETD_MAX_ID 9007199254740991ULL
#define NETD_MAX_HEADER 64
#define NETD_MAX_PAYLOAD (4u << 20)
/* IFALIASZ - 1. */
#define NETD_MAX_TAG 255

enum netd_op { NETD_ADD = 1, NETD_SETUP, NETD_NFT, NETD_DESTROY };

struct netd_req {
	unsigned long long id;
	enum netd_op op;
	unsigned slot;
	/* Point into the parsed buffer; not NUL-terminated. */
	const char *tag;
	size_t tag_len;
	const char *rules;
	size_t rules_len;
};

/*
 * Parses the request at the start of buf[0..len). Returns the bytes it spans when it is complete (then
 * *invalid is NULL and `req` is filled, or *invalid says what is wrong with it, and req->id is set when
 * it could be read), 0 when more bytes are needed, -1 when the stream cannot be framed (a bad header
 * line: *invalid says why; nothing after it can be trusted).
 */
long netd_parse(const char *buf, size_t len, struct netd_req *req, const char **invalid);

#endif
