/*
 * Wire protocol between cellad and cella-init over virtio-serial.
 * Mirrored by src/agent/protocol.ts; keep both in step.
 *
 * Frame: u32 body length (LE), u8 type, u8 stream, u16 reserved, u32 id (LE), body.
 * Spec bodies (START, EXEC, PTY_OPEN) are TLV records: u8 tag, u32 length (LE), bytes.
 * Guest -> host frames carry at most CELLA_MAX_OUT body bytes; the host still
 * treats every guest frame as untrusted.
 */
#ifndef CELLA_PROTOCOL_H
#define CELLA_PROTOCOL_H

#define CELLA_PROTOCOL_VERSION 2
#define CELLA_HEADER_LEN 12
#define CELLA_MAX_BODY (1u << 20)
#define CELLA_MAX_OUT 16384

enum cella_msg {
	/* host -> guest */
	MSG_PING = 1,
	MSG_START = 2,     /* body: spec; starts the app, output goes to the log port */
	MSG_EXEC = 3,      /* body: spec; output streamed back as EXEC_OUT frames */
	MSG_SET_CLOCK = 4, /* body: i64 seconds, u32 nanoseconds */
	MSG_RESEED = 5,    /* body: entropy bytes */
	MSG_SYNC = 6,
	MSG_IDENTIFY = 7,    /* body: VM id, becomes the hostname */
	MSG_SIGNAL = 8,      /* body: u32 signal; id names the exec (0 = app) */
	MSG_PTY_OPEN = 9,    /* body: spec (argv may be empty: /bin/sh) with TAG_WINSIZE; id names the session; reply OK/ERROR */
	MSG_PTY_IN = 10,     /* body: bytes for the terminal; no reply */
	MSG_PTY_RESIZE = 11, /* body: u16 rows, u16 cols; no reply */
	MSG_PTY_CLOSE = 12,  /* no body; hangs the session up (id 0: every session); no reply, PTY_EXIT follows */
	/* guest -> host */
	MSG_HELLO = 64, /* body: u32 protocol version */
	MSG_OK = 65,
	MSG_ERROR = 66,     /* body: message text */
	MSG_EXEC_OUT = 67,  /* stream: 1 stdout, 2 stderr; body: bytes */
	MSG_EXEC_EXIT = 68, /* body: i32 wait status */
	MSG_APP_EXIT = 69,  /* body: i32 wait status */
	MSG_LOG = 70,       /* log port only; stream: 1 stdout, 2 stderr */
	MSG_PONG = 71,
	MSG_PTY_OUT = 72,         /* stream 1; body: bytes from the terminal */
	MSG_PTY_EXIT = 73,        /* body: i32 wait status; the session is gone */
	MSG_ACTIVITY = 74,        /* id 0, no body: the guest asks to count as active (at most 1/s) */
	MSG_SUSPEND_REQUEST = 75, /* id 0, no body: the guest asks to be suspended (at most 1/s) */
};

enum cella_tag {
	TAG_ARG = 1,
	TAG_ENV = 2,
	TAG_CWD = 3,
	TAG_UID = 4,     /* u32 */
	TAG_GID = 5,     /* u32 */
	TAG_STDIN = 6,   /* bytes written to the process's stdin, which is then closed (PTY: typed into the terminal) */
	TAG_WINSIZE = 7, /* u16 rows, u16 cols (PTY_OPEN) */
};

#endif
