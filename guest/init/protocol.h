/*
 * Wire protocol between cellad and cella-init over virtio-serial.
 * Mirrored by src/agent/protocol.ts; keep both in step.
 *
 * Frame: u32 body length (LE), u8 type, u8 stream, u16 reserved, u32 id (LE), body.
 * Spec and request bodies are TLV records: u8 tag, u32 length (LE), bytes; so
 * are structured replies (an OK body, PROC_INFO, FS_ENTRY).
 * Guest -> host frames carry at most CELLA_MAX_OUT body bytes; the host still
 * treats every guest frame as untrusted.
 *
 * Version 3 added everything marked (v3). A v2 guest answers a v3 request
 * with ERROR "unknown message N" (stream 0); HELLO and, from v3 on, PONG carry
 * the version, so the host can tell before it asks.
 * ERROR: body is a message; from v3 on, `stream` is the errno when there is one.
 */
#ifndef CELLA_PROTOCOL_H
#define CELLA_PROTOCOL_H

#define CELLA_PROTOCOL_VERSION 3
#define CELLA_HEADER_LEN 12
#define CELLA_MAX_BODY (1u << 20)
#define CELLA_MAX_OUT 16384

enum cella_msg {
	/* host -> guest */
	MSG_PING = 1,      /* reply PONG, body (v3): u32 protocol version */
	MSG_START = 2,     /* body: spec; starts the app, output goes to the log port */
	MSG_EXEC = 3,      /* body: spec; output streamed back as EXEC_OUT frames; OK body (v3): u32 pid */
	MSG_SET_CLOCK = 4, /* body: i64 seconds, u32 nanoseconds */
	MSG_RESEED = 5,    /* body: entropy bytes */
	MSG_SYNC = 6,
	MSG_IDENTIFY = 7,    /* body: VM id, becomes the hostname */
	MSG_SIGNAL = 8,      /* body: u32 signal; id names the exec (0 = app) or (v3) the terminal */
	MSG_PTY_OPEN = 9,    /* body: spec (argv may be empty: /bin/sh) with TAG_WINSIZE; id names the session; OK body (v3): u32 pid */
	MSG_PTY_IN = 10,     /* body: bytes for the terminal; no reply */
	MSG_PTY_RESIZE = 11, /* body: u16 rows, u16 cols; no reply */
	MSG_PTY_CLOSE = 12,  /* no body; hangs the session up (id 0: every session); no reply, PTY_EXIT follows */
	/* (v3) host -> guest */
	MSG_SESSION = 13,       /* id 0, no body, no reply: a new host; processes and terminals are detached, streams and watches dropped */
	MSG_EXEC_IN = 14,       /* id names the exec (TAG_STDIN_PIPE); body: stdin bytes; EXEC_IN_ACK follows */
	MSG_EXEC_CLOSE_IN = 15, /* id names the exec; closes its stdin once what is pending was written; reply OK/ERROR */
	MSG_EXEC_LIST = 16,     /* no body; reply: PROC_INFO per exec and terminal, then OK */
	MSG_ATTACH = 17,        /* id names an exec or terminal: its output and exit come here now; OK, then its exit if known */
	MSG_USER_LOOKUP = 18,   /* body: TAG_NAME or TAG_UID; OK body: NAME UID GID HOME SHELL GROUPS */
	MSG_FS_STAT = 19,       /* body: TAG_PATH; OK body: entry (lstat) */
	MSG_FS_LIST = 20,       /* body: TAG_PATH, TAG_DEPTH; FS_ENTRY per entry (TAG_PATH: path given/relative name), then OK */
	MSG_FS_MKDIR = 21,      /* body: TAG_PATH [UID GID MODE]; with parents; EEXIST: a directory is there, ENOTDIR: not one */
	MSG_FS_RENAME = 22,     /* body: TAG_PATH, TAG_DEST [UID GID for new parents]; OK body: the destination's entry */
	MSG_FS_REMOVE = 23,     /* body: TAG_PATH; recursive, OK when missing */
	MSG_FS_READ = 24,       /* body: TAG_PATH, TAG_CREDIT; OK body: TAG_SIZE; then FS_DATA within the credit, FS_END */
	MSG_FS_CREDIT = 25,     /* id names a read; body: u32 more bytes the host takes; no reply */
	MSG_FS_WRITE_OPEN = 26, /* body: TAG_PATH [UID GID MODE XATTR...]; parents made, truncated; reply OK/ERROR */
	MSG_FS_WRITE_DATA = 27, /* id names a write; body: bytes; no reply (FS_END with the errno when a write failed) */
	MSG_FS_WRITE_CLOSE = 28, /* id names a write; OK body: the file's entry, or ERROR with the first errno */
	MSG_FS_CLOSE = 29,       /* id names a read, write or FS_LIST: abandoned, no reply */
	MSG_FS_WATCH = 30,       /* body: TAG_PATH [TAG_RECURSIVE]; reply OK/ERROR, then FS_EVENT frames */
	MSG_FS_UNWATCH = 31,     /* id names a watch; reply OK/ERROR */
	MSG_STATS = 32,   /* OK body: u32 cpus, u32 cpu use since the last STATS (1/10000), u64 mem total, used, cache, disk total, used */
	MSG_SET_ENV = 33, /* body: TAG_ENV records: the sandbox's environment, under each later spec's own; reply OK/ERROR */
	MSG_ENVD_LISTEN = 34, /* body: empty or u16 port (default 49983); HTTP on 127.0.0.1: GET /envs, GET /health; reply OK/ERROR */
	/* guest -> host */
	MSG_HELLO = 64, /* body: u32 protocol version */
	MSG_OK = 65,
	MSG_ERROR = 66,     /* body: message text; stream (v3): errno or 0 */
	MSG_EXEC_OUT = 67,  /* stream: 1 stdout, 2 stderr; body: bytes */
	MSG_EXEC_EXIT = 68, /* body: i32 wait status */
	MSG_APP_EXIT = 69,  /* body: i32 wait status */
	MSG_LOG = 70,       /* log port only; stream: 1 stdout, 2 stderr */
	MSG_PONG = 71,
	MSG_PTY_OUT = 72,         /* stream 1; body: bytes from the terminal */
	MSG_PTY_EXIT = 73,        /* body: i32 wait status; the session is gone */
	MSG_ACTIVITY = 74,        /* id 0, no body: the guest asks to count as active (at most 1/s) */
	MSG_SUSPEND_REQUEST = 75, /* id 0, no body: the guest asks to be suspended (at most 1/s) */
	/* (v3) guest -> host */
	MSG_EXEC_IN_ACK = 76, /* id names the exec; body: u32 stdin bytes done with, u32 errno (0, EPIPE, ENOBUFS) */
	MSG_PROC_INFO = 77,   /* id names the EXEC_LIST; body: ID PID KIND [STATUS] [TRUNCATED] and the spec's ARG ENV CWD LABEL */
	MSG_FS_ENTRY = 78,    /* id names the FS_LIST; body: entry */
	MSG_FS_DATA = 79,     /* id names the read; body: bytes */
	MSG_FS_END = 80,      /* id names the read or write; body: u32 errno, 0 at the end of the file */
	MSG_FS_EVENT = 81,    /* id names the watch; stream: enum cella_fs_op; body: name relative to the watched directory */
};

enum cella_tag {
	TAG_ARG = 1,
	TAG_ENV = 2,
	TAG_CWD = 3,
	TAG_UID = 4,     /* u32 */
	TAG_GID = 5,     /* u32 */
	TAG_STDIN = 6,   /* bytes written to the process's stdin, which is then closed unless STDIN_PIPE (PTY: typed into the terminal) */
	TAG_WINSIZE = 7, /* u16 rows, u16 cols (PTY_OPEN) */
	/* (v3) */
	TAG_STDIN_PIPE = 8,   /* empty: stdin stays open for EXEC_IN until EXEC_CLOSE_IN */
	TAG_GROUPS = 9,       /* u32 each: the supplementary groups (default with a uid: the user's, from /etc/group) */
	TAG_LABEL = 10,       /* the host's name for the process (E2B's tag), kept for EXEC_LIST */
	TAG_ID = 11,          /* u32 */
	TAG_PID = 12,         /* u32 */
	TAG_KIND = 13,        /* u8: 1 exec, 2 terminal */
	TAG_STATUS = 14,      /* i32 wait status, once the process was reaped */
	TAG_PATH = 15,        /* bytes, as given: the host resolves ~ and relative paths */
	TAG_DEPTH = 16,       /* u32 */
	TAG_MODE = 17,        /* u32: st_mode (an entry) or permission bits (a request) */
	TAG_NAME = 18,        /* a user's name */
	TAG_HOME = 19,        /* a user's home */
	TAG_SHELL = 20,       /* a user's shell */
	TAG_SIZE = 21,        /* u64 */
	TAG_MTIME = 22,       /* i64 seconds, u32 nanoseconds */
	TAG_OWNER = 23,       /* the owner's name, when /etc/passwd has it */
	TAG_GROUP = 24,       /* the group's name, when /etc/group has it */
	TAG_TARGET = 25,      /* a symlink's target, fully resolved */
	TAG_TARGET_MODE = 26, /* u32: st_mode of what the symlink resolves to */
	TAG_XATTR = 27,       /* name, NUL, value: user.e2b.* attributes */
	TAG_RECURSIVE = 28,   /* empty */
	TAG_CREDIT = 29,      /* u32 */
	TAG_DEST = 30,        /* a rename's destination */
	TAG_TRUNCATED = 31,   /* empty: the spec records were cut to fit */
};

/* (v3) What an FS_EVENT reports, fsnotify's operations. */
enum cella_fs_op {
	FS_OP_CREATE = 1,
	FS_OP_WRITE = 2,
	FS_OP_REMOVE = 3,
	FS_OP_RENAME = 4,
	FS_OP_CHMOD = 5,
	FS_OP_OVERFLOW = 6, /* events were lost (the kernel's queue overflowed, or too many directories); no name */
};

#endif
