/*
 * Processes the host starts: the app (START; its output goes to the log port)
 * and execs (EXEC; output streamed back as EXEC_OUT, then EXEC_EXIT).
 * Also what terminals share with them: PATH lookup and the child's last steps.
 */
#ifndef CELLA_PROC_H
#define CELLA_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "decode.h"

#define MAX_EXECS 32
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Request handlers (the dispatcher's table). */
void proc_start(uint32_t id, const uint8_t *body, uint32_t len);
void proc_exec(uint32_t id, const uint8_t *body, uint32_t len);
void proc_signal(uint32_t id, const uint8_t *body, uint32_t len);

/* Adds the output pipes to the poll set; execs' only while `produce`, the app's always (the log port never queues). */
void proc_poll(int produce);
/* A child was reaped: reports it once its output is drained too. */
void proc_reaped(pid_t pid, int status);

/* `file` as execve wants it: searched in the spec's PATH (or the default) when it has no slash. */
const char *lookup_path(const struct spec *s, const char *file, char *buf, size_t cap);
/* In a child: default signal mask. */
void child_signals(void);
/* In a child with stdio in place: becomes the spec's process, or exits with a reason on stderr. */
void child_exec(const struct spec *s, const char *exe) __attribute__((noreturn));

#endif
