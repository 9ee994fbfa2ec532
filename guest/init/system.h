/* Requests about the guest as a whole: liveness, the clock, entropy, disk sync, the hostname, usage figures, the sandbox's environment. */
#ifndef CELLA_SYSTEM_H
#define CELLA_SYSTEM_H

#include <stdint.h>

#define ENV_MAX_BYTES (64 * 1024) /* SET_ENV: KEY=VALUE bytes in all */

/* Request handlers (the dispatcher's table). */
void sys_ping(uint32_t id, const uint8_t *body, uint32_t len);
void sys_set_clock(uint32_t id, const uint8_t *body, uint32_t len);
void sys_reseed(uint32_t id, const uint8_t *body, uint32_t len);
void sys_sync(uint32_t id, const uint8_t *body, uint32_t len);
void sys_identify(uint32_t id, const uint8_t *body, uint32_t len);
void sys_stats(uint32_t id, const uint8_t *body, uint32_t len);
void sys_set_env(uint32_t id, const uint8_t *body, uint32_t len);

/* The sandbox's environment (SET_ENV): KEY=VALUE strings, NULL-ended; *n is their number. */
char *const *env_global(int *n);

#endif
