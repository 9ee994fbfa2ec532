/*
 * cella-netd: makes, configures and removes the per-VM network namespaces for cellad, one long-lived
 * root helper instead of about seven `ip`/`nsenter`/`sysctl`/`nft` processes per launch (ADR 0013).
 * cellad writes requests on stdin and reads replies on stdout (netd.h). Each operation does what those
 * commands did, in the same order, through rtnetlink (netd_nl.c), ioctls and libnftables. After every
 * request the helper is back in the host's namespace; if it cannot get back it exits. It exits when its
 * stdin closes, and is killed with cellad (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include "netd.h"
#include "netd_nl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define NETNS_DIR "/run/netns"
#define SELF_NS "/proc/thread-self/ns/net"

/* src/net/rules.ts GUEST: the same inside every namespace, so a snapshot restores without re-addressing. */
static const uint8_t GUEST_MAC[6] = { 0x52, 0x54, 0x00, 0xce, 0x11, 0xa0 };
static const uint8_t GATEWAY_MAC[6] = { 0x52, 0x54, 0x00, 0xce, 0x11, 0x01 };
#define GUEST_ADDRESS "172.29.0.2"
#define GATEWAY_ADDRESS "172.29.0.1"
#define GATEWAY_PREFIX 24
#define TAP "tap0"

static int host_ns = -1;
static int host_nl = -1;
static char err[1024];

/* Records the first failure as "step: reason" and returns -1. */
static int fail(const char *step, const char *fmt, ...)
{
	char why[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(err, sizeof(err), "%s: %s", step, why);
	return -1;
}

static int fail_errno(const char *step)
{
	int e = errno;
	return fail(step, "%s (errno %d)", strerror(e), e);
}

/* Never stay in a VM's namespace: a helper that cannot get back is of no use, and must not go on. */
static void back_home(void)
{
	if (setns(host_ns, CLONE_NEWNET) < 0) {
		fprintf(stderr, "cella-netd: cannot return to the host's network namespace: %s\n", strerror(errno));
		_exit(1);
	}
}

static void netns_path(char *out, size_t n, unsigned slot)
{
	snprintf(out, n, NETNS_DIR "/cella-%u", slot);
}

/* 10.213.0.0/16's slot-th /30: .1 on the host, .2 in the namespace (src/net/rules.ts slotAddresses). */
static uint32_t slot_address(unsigned slot, unsigned host_part)
{
	return htonl((10u << 24) | (213u << 16) | ((slot >> 6) << 8) | ((slot & 63) * 4 + host_part));
}

static uint32_t ipv4(const char *text)
{
	struct in_addr a;
	inet_pton(AF_INET, text, &a);
	return a.s_addr;
}

/* As `ip netns add` makes NETNS_DIR a shared mount point, so the namespaces' mounts propagate. */
static int share_netns_dir(void)
{
	if (mkdir(NETNS_DIR, 0755) < 0 && errno != EEXIST)
		return fail_errno("netns-add");
	int remounted = 0;
	while (mount("", NETNS_DIR, "none", MS_SHARED | MS_REC, NULL) < 0) {
		if (errno != EINVAL || remounted)
			return fail_errno("netns-add");
		if (mount(NETNS_DIR, NETNS_DIR, "none", MS_BIND | MS_REC, NULL) < 0)
			return fail_errno("netns-add");
		remounted = 1;
	}
	return 0;
}

/* ip netns del: the namespace goes once nothing holds it, and its links with it. */
static int destroy(unsigned slot)
{
	char path[64];
	netns_path(path, sizeof(path), slot);
	umount2(path, MNT_DETACH);
	if (unlink(path) < 0)
		return fail_errno("netns-del");
	return 0;
}

/* Applies `rules` in the current namespace as one transaction, as `nft -f` does. */
static int run_nft(const char *rules)
{
	/* libnftables opens its netlink socket in nft_ctx_new, so the context is made here, inside. */
	struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!nft)
		return fail("nft", "cannot make a libnftables context");
	nft_ctx_buffer_output(nft);
	nft_ctx_buffer_error(nft);
	int rc = 0;
	if (nft_run_cmd_from_buffer(nft, rules) != 0) {
		const char *msg = nft_ctx_get_error_buffer(nft);
		rc = fail("nft", "%s", msg && *msg ? msg : "the ruleset was refused");
	}
	nft_ctx_free(nft);
	return rc;
}

static int write_file(const char *path, const char *text, const char *step)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return fail_errno(step);
	ssize_t n = write(fd, text, strlen(text));
	int e = errno;
	close(fd);
	errno = e;
	return n == (ssize_t)strlen(text) ? 0 : fail_errno(step);
}

static int ifindex(const char *name, const char *step)
{
	int i = (int)if_nametoindex(name);
	if (!i)
		fail_errno(step);
	return i;
}

/* ip tuntap add dev TAP mode tap */
static int add_tap(void)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail_errno("tap");
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	strncpy(ifr.ifr_name, TAP, IFNAMSIZ - 1);
	int rc = ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0 ? fail_errno("tap") : 0;
	close(fd);
	return rc;
}

/* Inside the namespace: ip -n NS -batch (lo, eth0, route, tap0, neighbour), sysctl, then the base rules. */
static int setup_inside(unsigned slot, const char *rules)
{
	int nl = nl_open();
	if (nl < 0)
		return fail_errno("netlink");
	int rc = -1, eth0, tap;
	if (nl_link_up(nl, 1) < 0) /* lo */
		fail_errno("lo-up");
	else if ((eth0 = ifindex("eth0", "eth0-address")) == 0 || nl_addr(nl, eth0, slot_address(slot, 2), 30) < 0)
		fail_errno("eth0-address");
	else if (nl_link_up(nl, eth0) < 0)
		fail_errno("eth0-up");
	else if (nl_default_route(nl, eth0, slot_address(slot, 1)) < 0) /* egress, when a policy allows it, goes via the host */
		fail_errno("route");
	else if (add_tap() < 0 || (tap = ifindex(TAP, "tap")) == 0)
		; /* fail() was called */
	else if (nl_link_mac(nl, tap, GATEWAY_MAC) < 0)
		fail_errno("tap-mac");
	else if (nl_addr(nl, tap, ipv4(GATEWAY_ADDRESS), GATEWAY_PREFIX) < 0)
		fail_errno("tap-address");
	else if (nl_link_up(nl, tap) < 0)
		fail_errno("tap-up");
	else if (nl_neigh_permanent(nl, tap, ipv4(GUEST_ADDRESS), GUEST_MAC) < 0) /* no ARP before a restored guest's first packet */
		fail_errno("neigh");
	else if (write_file("/proc/sys/net/ipv4/ip_forward", "1", "ip_forward") == 0)
		rc = run_nft(rules);
	close(nl);
	return rc;
}

/* ip netns add: a bind mount of a new namespace under NETNS_DIR; nothing is left if a step fails. */
static int add(unsigned slot)
{
	char path[64];
	netns_path(path, sizeof(path), slot);
	if (share_netns_dir() < 0)
		return -1;
	/* O_EXCL: an existing name fails, and that is the slot lock between concurrent engines. */
	int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
	if (fd < 0)
		return fail_errno(errno == EEXIST ? "slot-taken" : "netns-add");
	close(fd);
	int rc = 0;
	if (unshare(CLONE_NEWNET) < 0)
		rc = fail_errno("netns-add");
	else if (mount(SELF_NS, path, "none", MS_BIND, NULL) < 0)
		rc = fail_errno("netns-add");
	back_home();
	if (rc < 0)
		unlink(path);
	return rc;
}

/* Everything in the namespace, as the `ip` batches, sysctl and nft did; a failure removes the namespace. */
static int setup(unsigned slot, const char *tag, const char *rules)
{
	char path[64], hostif[IFNAMSIZ];
	netns_path(path, sizeof(path), slot);
	snprintf(hostif, sizeof(hostif), "cellah%u", slot);
	int ns = open(path, O_RDONLY | O_CLOEXEC);
	int rc = -1, host;
	if (ns < 0)
		fail_errno("netns");
	else if (nl_veth(host_nl, hostif, "eth0", ns) < 0)
		fail_errno("veth");
	else if ((host = ifindex(hostif, "veth")) == 0)
		;
	else if (nl_addr(host_nl, host, slot_address(slot, 1), 30) < 0)
		fail_errno("host-address");
	else if (nl_link_up(host_nl, host) < 0)
		fail_errno("host-up");
	else if (*tag && nl_link_alias(host_nl, host, tag) < 0)
		fail_errno("alias");
	else if (setns(ns, CLONE_NEWNET) < 0)
		fail_errno("enter");
	else {
		rc = setup_inside(slot, rules);
		back_home();
	}
	if (ns >= 0)
		close(ns);
	if (rc < 0 && ns >= 0)
		destroy(slot);
	return rc;
}

/* applyPolicy's ruleset, inside the slot's namespace. */
static int policy(unsigned slot, const char *rules)
{
	char path[64];
	netns_path(path, sizeof(path), slot);
	int ns = open(path, O_RDONLY | O_CLOEXEC);
	if (ns < 0)
		return fail_errno("netns");
	int rc = setns(ns, CLONE_NEWNET) < 0 ? fail_errno("enter") : run_nft(rules);
	close(ns);
	back_home();
	return rc;
}

static void reply(int out, unsigned long long id, const char *msg)
{
	char head[NETD_MAX_HEADER];
	size_t len = msg ? strlen(msg) : 0;
	int n = snprintf(head, sizeof(head), "%llu %s %zu\n", id, msg ? "err" : "ok", len);
	struct part {
		const char *p;
		size_t n;
	} parts[2] = { { head, (size_t)n }, { msg, len } };
	for (int i = 0; i < 2; i++)
		for (size_t done = 0; done < parts[i].n;) {
			ssize_t w = write(out, parts[i].p + done, parts[i].n - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				_exit(0); /* cellad is gone */
			done += (size_t)w;
		}
}

static void serve(int out, const struct netd_req *r)
{
	char tag[NETD_MAX_TAG + 1] = "";
	char *rules = NULL;
	if (r->op == NETD_SETUP || r->op == NETD_NFT) {
		memcpy(tag, r->tag ? r->tag : "", r->tag_len);
		tag[r->tag_len] = '\0';
		rules = strndup(r->rules, r->rules_len);
		if (!rules) {
			reply(out, r->id, "memory: cannot copy the rules");
			return;
		}
	}
	err[0] = '\0';
	int rc;
	switch (r->op) {
	case NETD_ADD:
		rc = add(r->slot);
		break;
	case NETD_SETUP:
		rc = setup(r->slot, tag, rules);
		break;
	case NETD_NFT:
		rc = policy(r->slot, rules);
		break;
	default:
		rc = destroy(r->slot);
	}
	free(rules);
	reply(out, r->id, rc < 0 ? err : NULL);
}

int main(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_IGN);
	/* Replies go to a private copy of stdout; fd 1 points at /dev/null so nothing else can write into the stream. */
	int out = fcntl(1, F_DUPFD_CLOEXEC, 3);
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	host_ns = open(SELF_NS, O_RDONLY | O_CLOEXEC);
	host_nl = nl_open(); /* bound to the host's namespace for good, wherever the helper is later */
	if (out < 0 || devnull < 0 || dup2(devnull, 1) < 0 || host_ns < 0 || host_nl < 0) {
		fprintf(stderr, "cella-netd: cannot start: %s\n", strerror(errno));
		return 1;
	}
	size_t cap = NETD_MAX_HEADER + NETD_MAX_PAYLOAD, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return 1;
	for (;;) {
		ssize_t got = read(0, buf + len, cap - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return 0; /* stdin closed: cellad is gone or done */
		len += (size_t)got;
		size_t at = 0;
		for (;;) {
			struct netd_req r;
			const char *invalid;
			long n = netd_parse(buf + at, len - at, &r, &invalid);
			if (n == 0)
				break;
			if (n < 0) {
				fprintf(stderr, "cella-netd: unreadable request stream: %s\n", invalid);
				reply(out, 0, invalid);
				return 1;
			}
			if (invalid) {
				snprintf(err, sizeof(err), "request: %s", invalid);
				reply(out, r.id, err);
			} else
				serve(out, &r);
			at += (size_t)n;
		}
		memmove(buf, buf + at, len - at);
		len -= at;
	}
}
