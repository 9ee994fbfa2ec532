/* The few rtnetlink requests cella-netd sends (netd_nl.c), each as iproute2 sends it for the same `ip` command. */
#ifndef CELLA_NETD_NL_H
#define CELLA_NETD_NL_H

#include <stdint.h>

/* A NETLINK_ROUTE socket in the calling thread's network namespace; -1 (errno set) on failure. */
int nl_open(void);
/* Each returns 0, or -1 with errno set to what the kernel answered. Addresses are in network order. */
int nl_veth(int nl, const char *name, const char *peer, int peer_netns_fd);
int nl_link_up(int nl, int ifindex);
int nl_link_alias(int nl, int ifindex, const char *alias);
int nl_link_mac(int nl, int ifindex, const uint8_t mac[6]);
int nl_addr(int nl, int ifindex, uint32_t addr, int prefix);
int nl_default_route(int nl, int ifindex, uint32_t gateway);
int nl_neigh_permanent(int nl, int ifindex, uint32_t addr, const uint8_t mac[6]);

#endif
