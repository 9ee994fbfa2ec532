/*
 * Processes the host starts: the app (START; its output goes to the log port)
 * and execs (EXEC; output streamed back as EXEC_OUT, then EXEC_EXIT; stdin
 * given at once or, with TAG_STDIN_PIPE, streamed by EXEC_IN).
 * Execs outlive the host connection that started them: when it goes (or a
 * new host says SESSION) they are detached, their output held in their pipes,
 * until a host ATTACHes them; one that no host claims within ORPHAN_GRACE_S of
 * arriving has its output read and dropped. Ended execs are kept, for
 * EXEC_LIST and ATTACH, RETAIN_S or until their slot is needed.
 * Also what terminals share with them: the environment, groups, PATH lookup,
 * the child's last steps and the host's name for a process (its id).
 */
#ifndef CELLA_PROC_H
#define CELLA_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "decode.h"
#include "record.h"

#define MAX_EXECS 256
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define ORPHAN_GRACE_S 60
#define RETAIN_S 300
#define INFO_MAX 8192 /* spec records kept per process for EXEC_LIST */
/* The most envp entries a child gets: the sandbox's, the spec's and a few defaults. */
#define MAX_ENV (2 * MAX_ARGS + 4)

/* Request handlers (the dispatcher's table). */
void proc_start(uint32_t id, const uint8_t *body, uint32_t len);
void proc_exec(uint32_t id, const uint8_t *body, uint32_t len);
void proc_signal(uint32_t id, const uint8_t *body, uint32_t len);
void proc_in(uint32_t id, const uint8_t *body, uint32_t len);
void proc_close_in(uint32_t id, const uint8_t *body, uint32_t len);
void proc_list(uint32_t id, const uint8_t *body, uint32_t len);
void proc_attach(uint32_t id, const uint8_t *body, uint32_t len);

/* The host is gone or replaced: execs are detached, a listing under way is dropped. */
void proc_detach_all(void);
/* Adds the pipes to the poll set (execs' output only while `produce`, the app's always) and runs the timers. */
void proc_poll(int produce);
/* Sends the next entries of an EXEC_LIST while the host keeps up. */
void proc_pump(void);
/* A child was reaped: reports it once its output is drained too. */
void proc_reaped(pid_t pid, int status);
/* 1 when an exec that has not ended has this id. */
int proc_id_live(uint32_t id);
/* Forgets an ended exec of this id. */
void proc_forget(uint32_t id);
/* Before a new exec or terminal takes `id`: 0, or -1 with EEXIST sent when a live one has it. Ended ones of that id are forgotten. */
int proc_claim_id(uint32_t id);

/* What a spec's process runs with: the sandbox's environment under the spec's, then `defaults` (KEY=VALUE, NULL-ended) for keys neither
 * has. Static; NULL-ended. */
char **proc_env(const struct spec *s, const char *const *defaults);
/* Fills in the groups (and gid, if not given) of the spec's uid from /etc/passwd and /etc/group unless the spec names them. */
void proc_groups(struct spec *s);
/* `file` as execve wants it: searched in envp's PATH (or the default) when it has no slash. */
const char *lookup_path(char *const *envp, const char *file, char *buf, size_t cap);
/* In a child: default signal mask and file limit. */
void child_signals(void);
/* In a child with stdio in place: becomes the spec's process, or exits with a reason on stderr. */
void child_exec(const struct spec *s, const char *exe, char *const *envp) __attribute__((noreturn));

/* What EXEC_LIST and ATTACH keep of any process, exec or terminal. */
struct proc_rec {
	uint32_t id;
	pid_t pid;
	int exited, status;
	int done;     /* ended and its output forwarded (or dropped): only the exit is left */
	int attached; /* its output and exit go to the host */
	int orphan_armed;
	struct timespec orphan_at; /* detached with a host present: given up on then */
	struct timespec done_at;
	uint8_t *info; /* spec_info() of its spec */
	uint32_t info_len;
	int info_truncated;
};
/* Keeps the spec's records (malloc'd; dropped if memory is short). */
void rec_keep(struct proc_rec *r, const uint8_t *body, uint32_t len);
void rec_free(struct proc_rec *r);
/* The PROC_INFO body of a process; kind 1 exec, 2 terminal. */
void rec_info(const struct proc_rec *p, int kind, struct rec *out);
/*
 * Timers of a detached or ended process: 1 when it is due (orphaned past the
 * grace, or ended past RETAIN_S: the caller acts), else 0 with the loop woken
 * in time.
 */
int rec_orphan_due(struct proc_rec *r);
int rec_retention_due(const struct proc_rec *r);
/* 1 when `a` ended, and before `b` (or b is NULL): the slot to give up first. */
int rec_ended_before(const struct proc_rec *a, const struct proc_rec *b);

#endif
