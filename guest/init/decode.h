/*
 * Decoding request bodies from the host: TLV records, process specs and the
 * fixed-size fields. Pure (no system calls), so the fuzz harness runs it on
 * the build host; a protocol operation with a new body adds its decoder here.
 */
#ifndef CELLA_DECODE_H
#define CELLA_DECODE_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define MAX_ARGS 256

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
	const uint8_t *stdin_data;
	uint32_t stdin_len;
	unsigned short rows, cols;
};

/* The record at *off, advancing *off: 1, or 0 at the end of the body, or -1 when the body does not end on a record. */
int tlv_next(const uint8_t *body, uint32_t len, uint32_t *off, struct tlv *r);

/* A spec, valid until the next call; argv may be empty only if `empty_ok`. 0, or -1 when malformed. */
int parse_spec(const uint8_t *body, uint32_t len, struct spec *s, int empty_ok);

/* Exactly four bytes: u32. */
int decode_u32(const uint8_t *body, uint32_t len, uint32_t *v);

/* Exactly four bytes: u16 rows, u16 cols. */
int decode_winsize(const uint8_t *body, uint32_t len, unsigned short *rows, unsigned short *cols);

/* Exactly twelve bytes: i64 seconds, u32 nanoseconds. */
int decode_clock(const uint8_t *body, uint32_t len, struct timespec *t);

#endif
