/*
 * Decoding request bodies from the host: TLV records, process specs, file
 * requests and the fixed-size fields. Pure (no system calls), so the fuzz
 * harness runs it on the build host; a protocol operation with a new body
 * adds its decoder here.
 */
#ifndef CELLA_DECODE_H
#define CELLA_DECODE_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define MAX_ARGS 256
#define MAX_GROUPS 256
#define MAX_XATTRS 32

/* One TLV record: u8 tag, u32 length (LE), `len` bytes at `val` (inside the body). */
struct tlv {
	uint8_t tag;
	uint32_t len;
	const uint8_t *val;
};

/* A START, EXEC or PTY_OPEN body. Strings end in a NUL and point into a static copy. */
struct spec {
	char *argv[MAX_ARGS + 1];
	char *envp[MAX_ARGS + 3]; /* room for the terminal defaults */
	int argc, envc;
	const char *cwd;
	uid_t uid;
	gid_t gid;
	int gid_given;
	const uint8_t *stdin_data;
	uint32_t stdin_len;
	int stdin_pipe;
	unsigned short rows, cols;
	gid_t groups[MAX_GROUPS];
	int ngroups, groups_given;
	const char *label; /* NULL when none */
};

/* A file-system, user or watch request (TAG_PATH, TAG_DEST, ...). Strings end in a NUL and point into a static copy. */
struct req {
	const char *path, *dest, *name; /* NULL when absent; never with an embedded NUL */
	uint32_t uid, gid, mode, depth, credit;
	int has_uid, has_gid, has_mode, has_depth, has_credit, recursive;
	const uint8_t *xattr[MAX_XATTRS]; /* name, NUL, value: the name is non-empty */
	uint32_t xattr_len[MAX_XATTRS];
	int nxattr;
};

/* The record at *off, advancing *off: 1, or 0 at the end of the body, or -1 when the body does not end on a record. */
int tlv_next(const uint8_t *body, uint32_t len, uint32_t *off, struct tlv *r);

/* A spec, valid until the next call; argv may be empty only if `empty_ok`. 0, or -1 when malformed. */
int parse_spec(const uint8_t *body, uint32_t len, struct spec *s, int empty_ok);

/*
 * What EXEC_LIST reports of a spec: its ARG, ENV, CWD and LABEL records, copied
 * in order into `out` up to the first that does not fit whole in `cap`.
 * Returns the bytes written; *truncated is set when records were left out.
 */
uint32_t spec_info(const uint8_t *body, uint32_t len, uint8_t *out, uint32_t cap, int *truncated);

/* A request, valid until the next call. 0, or -1 when malformed (an unknown tag, a bad size, a NUL in a path). */
int parse_req(const uint8_t *body, uint32_t len, struct req *r);

/* A SET_ENV body: TAG_ENV records only, each KEY=VALUE with a non-empty key and no NUL. The count, or -1 when malformed or over `max`. */
int parse_env(const uint8_t *body, uint32_t len, struct tlv *vals, int max);

/* Exactly four bytes: u32. */
int decode_u32(const uint8_t *body, uint32_t len, uint32_t *v);

/* Exactly four bytes: u16 rows, u16 cols. */
int decode_winsize(const uint8_t *body, uint32_t len, unsigned short *rows, unsigned short *cols);

/* Exactly twelve bytes: i64 seconds, u32 nanoseconds. */
int decode_clock(const uint8_t *body, uint32_t len, struct timespec *t);

#endif
