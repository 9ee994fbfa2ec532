/* Requests about the guest as a whole: liveness, the clock, entropy, disk sync, the hostname. */
#ifndef CELLA_SYSTEM_H
#define CELLA_SYSTEM_H

#include <stdint.h>

/* Request handlers (the dispatcher's table). */
void sys_ping(uint32_t id, const uint8_t *body, uint32_t len);
void sys_set_clock(uint32_t id, const uint8_t *body, uint32_t len);
void sys_reseed(uint32_t id, const uint8_t *body, uint32_t len);
void sys_sync(uint32_t id, const uint8_t *body, uint32_t len);
void sys_identify(uint32_t id, const uint8_t *body, uint32_t len);

#endif
