/*
 * The app's way to the host: PID 1 listens on AGENT_SOCK for lines
 * ("activity", "suspend") and turns them into frames, at most one of each
 * kind a second. Run as anything but PID 1 (it copies itself to RUN_DIR/cella
 * at boot) the same binary is the client of that socket.
 */
#ifndef CELLA_AGENT_H
#define CELLA_AGENT_H

#define MAX_CLIENTS 8

/* After the switch to the root disk: a tmpfs at RUN_DIR with this binary as RUN_DIR/cella, and the socket. */
void agent_setup(void);
/* Adds the listening socket and the connected clients to the poll set. */
void agent_poll(void);

/* `cella activity`, `cella suspend`, `cella -` (the lines of stdin). Exit status 0 when every request was taken. */
int client_main(int argc, char **argv);

#endif
