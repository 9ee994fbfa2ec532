/* The boot sequence of PID 1; failures are logged to the console, a missing root disk powers off. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "boot.h"
#include "log.h"
#include "util.h"

#define MODULE_DIR "/cella/modules"
#define BUILD_DIR RUN_DIR "/build" /* image builds: context disk, read-only */

/* The value of `key=` in the command line (space-separated words), or `def`; at most cap - 1 bytes of it. */
static const char *cmdline_get(const char *cmdline, const char *key, char *out, size_t cap, const char *def)
{
	size_t kl = strlen(key);
	const char *p = cmdline;
	while ((p = strstr(p, key))) {
		if ((p == cmdline || p[-1] == ' ') && p[kl] == '=') {
			p += kl + 1;
			size_t n = strcspn(p, " \n");
			if (n >= cap)
				n = cap - 1;
			memcpy(out, p, n);
			out[n] = 0;
			return out;
		}
		p += kl;
	}
	snprintf(out, cap, "%s", def);
	return out;
}

static void load_modules(void)
{
	/* Dependencies are resolved by retrying until a pass makes no progress. */
	char names[32][300];
	int n = 0, loaded[32] = { 0 };
	DIR *d = opendir(MODULE_DIR);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && n < 32)
		if (strstr(e->d_name, ".ko"))
			snprintf(names[n++], sizeof names[0], "%s/%s", MODULE_DIR, e->d_name);
	closedir(d);
	for (int progress = 1; progress;) {
		progress = 0;
		for (int i = 0; i < n; i++) {
			if (loaded[i])
				continue;
			int fd = open(names[i], O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			long r = syscall(SYS_finit_module, fd, "", 0);
			close(fd);
			if (r == 0 || errno == EEXIST) {
				loaded[i] = progress = 1;
				unlink(names[i]);
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (!loaded[i])
			logmsg("module %s failed to load", names[i]);
}

static int wait_for(const char *path, int ms)
{
	struct stat st;
	for (int i = 0; i < ms; i++) {
		if (stat(path, &st) == 0)
			return 0;
		usleep(1000);
	}
	return -1;
}

static int mount_root(const char *dev)
{
	mkdir("/newroot", 0755);
	if (wait_for(dev, 5000) < 0) {
		logmsg("root device %s did not appear", dev);
		return -1;
	}
	if (mount(dev, "/newroot", "ext4", MS_NOATIME, "") < 0) {
		logmsg("mount %s: %s", dev, strerror(errno));
		return -1;
	}
	const char *moves[] = { "/dev", "/proc", "/sys" };
	for (int i = 0; i < 3; i++) {
		char target[64];
		snprintf(target, sizeof target, "/newroot%s", moves[i]);
		mkdir(target, 0755);
		if (mount(moves[i], target, NULL, MS_MOVE, NULL) < 0)
			logmsg("move %s: %s", moves[i], strerror(errno));
	}
	if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		logmsg("switch root: %s", strerror(errno));
		return -1;
	}
	mkdir("/dev/pts", 0755);
	mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
	mkdir("/dev/shm", 01777);
	mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	return 0;
}

static int parse_cidr(const char *s, struct in_addr *a, int *prefix)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%s", s);
	char *slash = strchr(buf, '/');
	*prefix = 32;
	if (slash) {
		*slash = 0;
		*prefix = atoi(slash + 1);
	}
	return inet_pton(AF_INET, buf, a) == 1 && *prefix >= 0 && *prefix <= 32 ? 0 : -1;
}

static void set_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_addr = a;
}

static void if_up(int sock, const char *name)
{
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
			logmsg("up %s: %s", name, strerror(errno));
	}
}

static void setup_network(const char *cmdline)
{
	char ip[32], gw[32];
	cmdline_get(cmdline, "cella.ip", ip, sizeof ip, "172.29.0.2/24");
	cmdline_get(cmdline, "cella.gw", gw, sizeof gw, "172.29.0.1");
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return;
	if_up(sock, "lo");
	struct in_addr addr, mask, gwa;
	int prefix;
	if (parse_cidr(ip, &addr, &prefix) < 0 || inet_pton(AF_INET, gw, &gwa) != 1) {
		logmsg("bad network parameters %s via %s", ip, gw);
		close(sock);
		return;
	}
	mask.s_addr = prefix ? htonl(~0u << (32 - prefix)) : 0;
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, IFNAMSIZ, "eth0");
	set_sin(&ifr.ifr_addr, addr);
	if (ioctl(sock, SIOCSIFADDR, &ifr) < 0)
		logmsg("eth0 address: %s", strerror(errno));
	set_sin(&ifr.ifr_netmask, mask);
	if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0)
		logmsg("eth0 netmask: %s", strerror(errno));
	if_up(sock, "eth0");
	struct rtentry rt = { 0 };
	set_sin(&rt.rt_dst, (struct in_addr){ 0 });
	set_sin(&rt.rt_genmask, (struct in_addr){ 0 });
	set_sin(&rt.rt_gateway, gwa);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	if (ioctl(sock, SIOCADDRT, &rt) < 0)
		logmsg("default route: %s", strerror(errno));
	close(sock);
}

void boot(char *cmdline, size_t cap)
{
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
	mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
	mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");

	memset(cmdline, 0, cap);
	int cfd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (cfd >= 0) {
		(void)!read(cfd, cmdline, cap - 1);
		close(cfd);
	}
	load_modules();
	char probe[8];
	if (strcmp(cmdline_get(cmdline, "cella.probe", probe, sizeof probe, "0"), "1") == 0) {
		/* Accelerator probe: reaching userspace is the proof; the host reads this line. */
		logmsg("probe ok");
		reboot(RB_POWER_OFF);
	}
	char root[64];
	cmdline_get(cmdline, "cella.root", root, sizeof root, "/dev/vda");
	if (mount_root(root) < 0) {
		logmsg("cannot mount the root disk; powering off");
		reboot(RB_POWER_OFF);
	}
	setup_network(cmdline);
	sethostname("cella", 5);
}

/*
 * Image builds attach a second, read-only disk: the build context and the
 * host's static busybox, so COPY and user lookups never depend on the tools
 * of the image being built.
 */
void boot_build_disk(const char *cmdline)
{
	char dev[64];
	if (!*cmdline_get(cmdline, "cella.build", dev, sizeof dev, ""))
		return;
	mkdir(BUILD_DIR, 0755);
	if (wait_for(dev, 5000) < 0 || mount(dev, BUILD_DIR, "ext4", MS_RDONLY | MS_NOATIME | MS_NODEV | MS_NOSUID, "") < 0)
		logmsg("build disk %s: %s", dev, strerror(errno));
}
