/**
 * One network namespace per VM. Inside it: the guest's tap (always the same
 * guest address, so any snapshot restores without re-addressing) and one end
 * of a veth pair whose host end has a unique /30. The host reaches guest ports
 * by dialling the namespace's address, which is DNATed to the guest.
 *
 * Default policy is deny: only new connections from the host side to the
 * guest are forwarded. The guest can reach nothing: not the host, not other
 * guests, not the internet. Connectors (a later capability) open egress.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { CellaError } from '../errors/index.js';
import { run } from '../host/index.js';

export const GUEST = {
  address: '172.29.0.2',
  cidr: '172.29.0.2/24',
  gateway: '172.29.0.1',
  gatewayCidr: '172.29.0.1/24',
  mac: '52:54:00:ce:11:a0',
  /** The gateway's MAC is fixed too: restored guests keep it in their ARP cache. */
  gatewayMac: '52:54:00:ce:11:01',
  tap: 'tap0',
} as const;

const NETNS_PREFIX = 'cella-';
const MAX_SLOTS = 16384;

export interface VmNetwork {
  slot: number;
  netns: string;
  /** Address the host dials to reach the guest's ports. */
  hostAddress: string;
  tap: string;
}

/** Slot n owns 10.213.0.0/16's n-th /30: .1 on the host, .2 in the namespace. */
export function slotAddresses(slot: number): { host: string; ns: string } {
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_SLOTS) throw new RangeError(`slot ${slot} out of range`);
  const third = slot >> 6;
  const fourth = (slot & 63) * 4;
  return { host: `10.213.${third}.${fourth + 1}`, ns: `10.213.${third}.${fourth + 2}` };
}

export function namespaceRules(slot: number): string {
  const { ns } = slotAddresses(slot);
  return `table ip cella {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip daddr ${ns} dnat to ${GUEST.address}
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth0" oifname "${GUEST.tap}" ip daddr ${GUEST.address} ct state new accept
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    ct state established,related accept
  }
}
table ip6 cella {
  chain forward { type filter hook forward priority filter; policy drop; }
  chain input { type filter hook input priority filter; policy drop; iifname "lo" accept; }
}
`;
}

async function create(slot: number, owner: string | undefined): Promise<VmNetwork | undefined> {
  const netns = `${NETNS_PREFIX}${slot}`;
  const hostIf = `cellah${slot}`;
  const { host, ns } = slotAddresses(slot);
  try {
    // `ip netns add` fails if the name exists: that is the slot lock between concurrent engines.
    await run('ip', ['netns', 'add', netns]);
  } catch {
    return undefined;
  }
  try {
    await run('ip', ['-batch', '-'], {
      input: [
        `link add ${hostIf} type veth peer name eth0 netns ${netns}`,
        `addr add ${host}/30 dev ${hostIf}`,
        `link set ${hostIf} up`,
        ...(owner ? [`link set ${hostIf} alias ${owner}`] : []),
      ].join('\n'),
      code: 'NETWORK_SETUP_FAILED',
    });
    await run('ip', ['-n', netns, '-batch', '-'], {
      input: [
        'link set lo up',
        `addr add ${ns}/30 dev eth0`,
        'link set eth0 up',
        `tuntap add dev ${GUEST.tap} mode tap`,
        `link set ${GUEST.tap} address ${GUEST.gatewayMac}`,
        `addr add ${GUEST.gatewayCidr} dev ${GUEST.tap}`,
        `link set ${GUEST.tap} up`,
        // No ARP round trip before the first packet to a freshly restored guest.
        `neigh add ${GUEST.address} lladdr ${GUEST.mac} dev ${GUEST.tap} nud permanent`,
      ].join('\n'),
      code: 'NETWORK_SETUP_FAILED',
    });
    await run('nsenter', [`--net=/run/netns/${netns}`, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'], { code: 'NETWORK_SETUP_FAILED' });
    await run('nsenter', [`--net=/run/netns/${netns}`, 'nft', '-f', '-'], { input: namespaceRules(slot), code: 'NETWORK_SETUP_FAILED' });
  } catch (err) {
    await destroy(netns).catch(() => {});
    throw err;
  }
  return { slot, netns, hostAddress: ns, tap: GUEST.tap };
}

async function destroy(netns: string): Promise<void> {
  // Deleting the namespace takes the veth pair (and so the host end) and the tap with it.
  if (existsSync(`/run/netns/${netns}`)) await run('ip', ['netns', 'del', netns], { code: 'NETWORK_SETUP_FAILED' });
}

/** Names of every Cella namespace on the host (for leak checks and recovery). */
export function listNamespaces(): string[] {
  try {
    return readdirSync('/run/netns').filter((n) => n.startsWith(NETNS_PREFIX));
  } catch {
    return [];
  }
}

/**
 * Who made the namespace of `slot`: the tag its creator wrote on the host end
 * of its veth pair (a namespace itself carries no label, and this one can be
 * read without starting a process).
 */
export function namespaceOwner(slot: number): string | undefined {
  try {
    return readFileSync(`/sys/class/net/cellah${slot}/ifalias`, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Identity (device and inode) of a network namespace file. */
function nsKey(file: string): string | undefined {
  try {
    const s = statSync(file);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * Deletes the namespaces tagged `owner` whose slot is not in `keep` and in
 * which no process runs: those a cellad that died left behind. Namespaces of
 * other owners (another data directory on this host) are never touched.
 * Returns how many were deleted.
 */
export async function reclaimNamespaces(owner: string, keep: ReadonlySet<number>): Promise<number> {
  const inUse = new Set<string>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const key = nsKey(`/proc/${pid}/ns/net`);
    if (key) inUse.add(key);
  }
  let removed = 0;
  for (const netns of listNamespaces()) {
    const slot = Number(netns.slice(NETNS_PREFIX.length));
    if (!Number.isInteger(slot) || keep.has(slot) || namespaceOwner(slot) !== owner) continue;
    const key = nsKey(`/run/netns/${netns}`);
    if (!key || inUse.has(key)) continue;
    await destroy(netns);
    removed++;
  }
  return removed;
}

/**
 * Hands out ready namespaces. Creating one costs several process launches,
 * so a few are kept warm and refilled in the background, off the launch path.
 */
export class NetworkPool {
  private readonly ready: VmNetwork[] = [];
  /** Slots of the namespaces this pool made and that were not released yet. */
  private readonly made = new Set<number>();
  private refilling: Promise<void> | undefined;
  private nextSlot = 0;
  private closed = false;

  /** `owner` tags every namespace made (see namespaceOwner), so a restarted cellad can reclaim its own. */
  constructor(
    private readonly warm = 2,
    private readonly owner?: string,
  ) {}

  private async createNext(): Promise<VmNetwork> {
    for (let tries = 0; tries < MAX_SLOTS; tries++) {
      const slot = this.nextSlot;
      this.nextSlot = (this.nextSlot + 1) % MAX_SLOTS;
      const net = await create(slot, this.owner);
      if (net) {
        this.made.add(slot);
        return net;
      }
    }
    throw new CellaError('NETWORK_SETUP_FAILED', 'no free network slot');
  }

  private refill(): void {
    if (this.refilling || this.closed) return;
    this.refilling = (async () => {
      try {
        while (!this.closed && this.ready.length < this.warm) this.ready.push(await this.createNext());
      } catch {
        // The next acquire() creates synchronously and reports the error.
      } finally {
        this.refilling = undefined;
      }
    })();
  }

  /** Prepares the warm namespaces now; resolves when they are ready. */
  async prewarm(): Promise<void> {
    this.refill();
    await this.refilling;
  }

  async acquire(): Promise<VmNetwork> {
    const net = this.ready.shift() ?? (await this.createNext());
    this.refill();
    return net;
  }

  async release(net: VmNetwork): Promise<void> {
    this.made.delete(net.slot);
    await destroy(net.netns);
  }

  /** Slots this pool made and still holds or handed out: spares, and those of VMs starting or running. */
  slots(): number[] {
    return [...this.made];
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.refilling;
    await Promise.all(this.ready.splice(0).map((n) => this.release(n)));
  }
}

/**
 * What a VM's network may do, fixed for its lifetime (connectors, resolved).
 * Whatever it says, a guest never reaches the host, other guests or the
 * link-local range.
 */
export interface NetworkPolicy {
  /** Guest TCP ports the host side (proxy, hooks) may open: every port, or these. */
  ingress: 'all' | number[];
  /** 'none': nothing; 'internet': any public address; or only these CIDRs and domain names (wildcards `*.example.com`). */
  egress: 'none' | 'internet' | { cidrs: string[]; domains: string[] };
}

/** The policy of a namespace fresh from the pool: host-to-guest on any port, no egress. */
export const DEFAULT_POLICY: NetworkPolicy = { ingress: 'all', egress: 'none' };

/** Installs `policy` in the VM's namespace, replacing the one it had. */
export async function applyPolicy(net: VmNetwork, policy: NetworkPolicy): Promise<void> {
  if (policy.ingress === 'all' && policy.egress === 'none') return;
  throw new CellaError('NETWORK_SETUP_FAILED', `network policy ${JSON.stringify(policy)} for ${net.netns} is not supported yet`);
}

/** Rebuilds the handle of a namespace that already exists (a suspended VM's). */
export function networkForSlot(slot: number): VmNetwork {
  return { slot, netns: `${NETNS_PREFIX}${slot}`, hostAddress: slotAddresses(slot).ns, tap: GUEST.tap };
}
