/*
 * Raw rtnetlink for cella-netd: one request per call, acknowledged before the next. The messages carry
 * what iproute2 puts in them for the matching `ip` command (flags, scope, protocol), so a namespace made
 * here reads back exactly like one made by `ip` (src/net/namespaces.test.ts compares the two).
 */
#include "netd_nl.h"

#include <errno.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

union msg {
	struct nlmsghdr n;
	char bytes[1024];
};

static unsigned seq;

int nl_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -1;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void *tail(union msg *m)
{
	return m->bytes + NLMSG_ALIGN(m->n.nlmsg_len);
}

static void start(union msg *m, unsigned short type, unsigned short flags, const void *hdr, size_t len)
{
	memset(m, 0, sizeof(*m));
	m->n.nlmsg_len = NLMSG_LENGTH(len);
	m->n.nlmsg_type = type;
	m->n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	memcpy(NLMSG_DATA(&m->n), hdr, len);
}

/* Appends an attribute; the messages here are far smaller than `bytes`, so no bound is checked at run time. */
static struct rtattr *attr(union msg *m, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = tail(m);
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	m->n.nlmsg_len = NLMSG_ALIGN(m->n.nlmsg_len) + RTA_ALIGN(a->rta_len);
	return a;
}

static void nest_end(union msg *m, struct rtattr *a)
{
	a->rta_len = (unsigned short)((char *)tail(m) - (char *)a);
}

static int talk(int nl, union msg *m)
{
	m->n.nlmsg_seq = ++seq;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	if (sendto(nl, &m->n, m->n.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -1;
	char buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
	for (;;) {
		ssize_t got = recv(nl, buf, sizeof(buf), 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)got); h = NLMSG_NEXT(h, got)) {
			if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
				continue;
			const struct nlmsgerr *e = NLMSG_DATA(h);
			if (!e->error)
				return 0;
			errno = -e->error;
			return -1;
		}
	}
}

static int link_change(int nl, int ifindex, unsigned flags, unsigned change, unsigned short type, const void *data, size_t len)
{
	union msg m;
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = ifindex, .ifi_flags = flags, .ifi_change = change };
	start(&m, RTM_NEWLINK, 0, &ifi, sizeof(ifi));
	if (type)
		attr(&m, type, data, len);
	return talk(nl, &m);
}

/* ip link add NAME type veth peer name PEER netns NS */
int nl_veth(int nl, const char *name, const char *peer, int peer_netns_fd)
{
	union msg m;
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
	start(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof(ifi));
	attr(&m, IFLA_IFNAME, name, strlen(name) + 1);
	struct rtattr *info = attr(&m, IFLA_LINKINFO, NULL, 0);
	attr(&m, IFLA_INFO_KIND, "veth", 4);
	struct rtattr *data = attr(&m, IFLA_INFO_DATA, NULL, 0);
	struct rtattr *p = attr(&m, VETH_INFO_PEER, &ifi, sizeof(ifi));
	attr(&m, IFLA_IFNAME, peer, strlen(peer) + 1);
	attr(&m, IFLA_NET_NS_FD, &peer_netns_fd, sizeof(peer_netns_fd));
	nest_end(&m, p);
	nest_end(&m, data);
	nest_end(&m, info);
	return talk(nl, &m);
}

/* ip link set DEV up */
int nl_link_up(int nl, int ifindex)
{
	return link_change(nl, ifindex, IFF_UP, IFF_UP, 0, NULL, 0);
}

/* ip link set DEV alias ALIAS */
int nl_link_alias(int nl, int ifindex, const char *alias)
{
	return link_change(nl, ifindex, 0, 0, IFLA_IFALIAS, alias, strlen(alias));
}

/* ip link set DEV address MAC */
int nl_link_mac(int nl, int ifindex, const uint8_t mac[6])
{
	return link_change(nl, ifindex, 0, 0, IFLA_ADDRESS, mac, 6);
}

/* ip addr add ADDR/PREFIX dev DEV */
int nl_addr(int nl, int ifindex, uint32_t addr, int prefix)
{
	union msg m;
	struct ifaddrmsg ifa = { .ifa_family = AF_INET,
				 .ifa_prefixlen = (unsigned char)prefix,
				 .ifa_scope = RT_SCOPE_UNIVERSE,
				 .ifa_index = (unsigned)ifindex };
	start(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifa, sizeof(ifa));
	attr(&m, IFA_LOCAL, &addr, 4);
	attr(&m, IFA_ADDRESS, &addr, 4);
	return talk(nl, &m);
}

/* ip route add default via GATEWAY dev DEV */
int nl_default_route(int nl, int ifindex, uint32_t gateway)
{
	union msg m;
	struct rtmsg rt = { .rtm_family = AF_INET,
			    .rtm_table = RT_TABLE_MAIN,
			    .rtm_protocol = RTPROT_BOOT,
			    .rtm_scope = RT_SCOPE_UNIVERSE,
			    .rtm_type = RTN_UNICAST };
	start(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rt, sizeof(rt));
	attr(&m, RTA_GATEWAY, &gateway, 4);
	attr(&m, RTA_OIF, &ifindex, sizeof(ifindex));
	return talk(nl, &m);
}

/* ip neigh add ADDR lladdr MAC dev DEV nud permanent */
int nl_neigh_permanent(int nl, int ifindex, uint32_t addr, const uint8_t mac[6])
{
	union msg m;
	struct ndmsg nd = { .ndm_family = AF_INET, .ndm_ifindex = ifindex, .ndm_state = NUD_PERMANENT };
	start(&m, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, &nd, sizeof(nd));
	attr(&m, NDA_DST, &addr, 4);
	attr(&m, NDA_LLADDR, mac, 6);
	return talk(nl, &m);
}
