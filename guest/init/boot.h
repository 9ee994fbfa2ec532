/*
 * Bringing the guest up from the initramfs: the kernel command line, the
 * virtio modules, the root disk (switched into), the fixed network address,
 * and for image builds the read-only build disk.
 */
#ifndef CELLA_BOOT_H
#define CELLA_BOOT_H

#include <stddef.h>

/* Everything before the agent: returns with the root disk mounted as / and the network up, or powers off. */
void boot(char *cmdline, size_t cap);
/* Mounts the build disk named by cella.build, if any; needs the RUN_DIR tmpfs (agent_setup). */
void boot_build_disk(const char *cmdline);

#endif
