/**
 * The nftables rulesets Cella installs, as pure functions of a slot and a
 * policy: a VM's namespace table (`table ip cella`) and the host's guard
 * (`table inet cella_guard`). Nothing here touches the host.
 */
import { isIPv4 } from 'node:net';
import { CellaError } from '../contract/index.js';

export const GUEST = {
  address: '172.29.0.2',
  cidr: '172.29.0.2/24',
  /** Also the guest's DNS server: the namespace sends its port 53 to Cella's forwarder. */
  gateway: '172.29.0.1',
  gatewayCidr: '172.29.0.1/24',
  mac: '52:54:00:ce:11:a0',
  /** The gateway's MAC is fixed too: restored guests keep it in their ARP cache. */
  gatewayMac: '52:54:00:ce:11:01',
  tap: 'tap0',
} as const;

export const MAX_SLOTS = 16384;
/** Every slot's /30 lies in this range; the host end of each veth is named HOST_IF_PREFIX + slot. */
export const SLOTS_CIDR = '10.213.0.0/16';
export const HOST_IF_PREFIX = 'cellah';
export const NETNS_PREFIX = 'cella-';

/** The network namespace (under /run/netns) of `slot`. */
export function netnsName(slot: number): string {
  return `${NETNS_PREFIX}${slot}`;
}

/** Slot n owns 10.213.0.0/16's n-th /30: .1 on the host, .2 in the namespace. */
export function slotAddresses(slot: number): { host: string; ns: string } {
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_SLOTS) throw new RangeError(`slot ${slot} out of range`);
  const third = slot >> 6;
  const fourth = (slot & 63) * 4;
  return { host: `10.213.${third}.${fourth + 1}`, ns: `10.213.${third}.${fourth + 2}` };
}

/** The slot whose namespace address is `address`, if it is one. */
export function slotOfNamespaceAddress(address: string): number | undefined {
  const m = /^10\.213\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (!m) return undefined;
  const third = Number(m[1]);
  const fourth = Number(m[2]);
  if (third > 255 || fourth > 255 || fourth % 4 !== 2) return undefined;
  return third * 64 + (fourth - 2) / 4;
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

/** Never reachable from a guest, whatever its policy: other slots (and so other guests), loopback, link-local (metadata), and addresses that are not unicast. */
export const ALWAYS_BLOCKED = [SLOTS_CIDR, '0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4'] as const;

/** Not the internet: private, shared (CGNAT) and benchmarking ranges. 'internet' and addresses learned through DNS never reach them. */
export const NON_PUBLIC = ['10.0.0.0/8', '100.64.0.0/10', '172.16.0.0/12', '192.168.0.0/16', '198.18.0.0/15'] as const;

const DOMAIN = /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

function ipv4Cidr(cidr: string): boolean {
  const [addr, len, ...rest] = cidr.split('/');
  if (rest.length || !addr || !isIPv4(addr)) return false;
  return len === undefined || (/^\d{1,2}$/.test(len) && Number(len) <= 32);
}

/** Rejects a policy that could not be turned into rules (the text of every rule comes from it). */
export function checkPolicy(policy: NetworkPolicy): void {
  const bad = (what: string): never => {
    throw new CellaError('INVALID_ARGUMENT', `network policy: ${what}`);
  };
  if (policy.ingress !== 'all') {
    if (!Array.isArray(policy.ingress)) bad('ingress must be "all" or a list of ports');
    for (const p of policy.ingress) if (!Number.isInteger(p) || p < 1 || p > 65535) bad(`ingress port ${p} is not a TCP port`);
  }
  const { egress } = policy;
  if (egress === 'none' || egress === 'internet') return;
  if (typeof egress !== 'object' || !Array.isArray(egress.cidrs) || !Array.isArray(egress.domains))
    bad('egress must be "none", "internet" or {cidrs, domains}');
  for (const c of egress.cidrs) if (typeof c !== 'string' || !ipv4Cidr(c)) bad(`${JSON.stringify(c)} is not an IPv4 address or CIDR`);
  for (const d of egress.domains) if (typeof d !== 'string' || d.length > 253 || !DOMAIN.test(d)) bad(`${JSON.stringify(d)} is not a domain name or *.domain`);
}

const set = (items: readonly (string | number)[]): string => `{ ${items.join(', ')} }`;

/**
 * The namespace's ruleset for `policy`, as one nft transaction that replaces
 * whatever `cella` tables the namespace had. `dnsPort`: the port of Cella's
 * DNS forwarder on the host, when one runs; the guest's DNS to its gateway is
 * sent there (never for egress 'none').
 *
 * Ingress: connections from the host end of the veth to the namespace
 * address are DNATed to the guest (every port, or only `ingress`). Egress
 * (from tap0): the always-blocked ranges are dropped first, then the policy
 * decides; what leaves is masqueraded behind the namespace address, so the
 * host and the forwarder know the slot it came from. Nothing from the guest
 * is delivered to the namespace itself. IPv6 is dropped entirely.
 */
export function namespaceRules(slot: number, policy: NetworkPolicy = DEFAULT_POLICY, dnsPort?: number): string {
  const { host, ns } = slotAddresses(slot);
  const { egress } = policy;
  const dns = egress !== 'none' && dnsPort !== undefined;
  const list = typeof egress === 'object' ? egress : undefined;
  const ingress = policy.ingress === 'all' ? ['ct state new accept'] : policy.ingress.length ? [`tcp dport ${set(policy.ingress)} ct state new accept`] : [];
  const sets = [
    ...(list?.cidrs.length ? [`  set allowed_cidrs { type ipv4_addr; flags interval; auto-merge; elements = ${set(list.cidrs)}; }`] : []),
    // Filled by the DNS forwarder with the addresses the allowed names resolved to, each for its TTL.
    ...(list?.domains.length ? ['  set allowed_names { type ipv4_addr; flags timeout; }'] : []),
  ];
  const egressRules =
    egress === 'none'
      ? []
      : [
          ...(dns ? [`ip daddr ${host} udp dport ${dnsPort} ct status dnat accept`] : []),
          `ip daddr ${set(ALWAYS_BLOCKED)} drop`,
          ...(egress === 'internet'
            ? [`ip daddr ${set(NON_PUBLIC)} drop`, 'accept']
            : [
                ...(list?.cidrs.length ? ['ip daddr @allowed_cidrs accept'] : []),
                // An allowed name never opens more than 'internet' would: its DNS is not trusted with private ranges.
                ...(list?.domains.length ? [`ip daddr ${set(NON_PUBLIC)} drop`, 'ip daddr @allowed_names accept'] : []),
              ]),
        ];
  const lines = [
    'table ip cella {}',
    'delete table ip cella',
    'table ip cella {',
    ...sets,
    '  chain prerouting {',
    '    type nat hook prerouting priority dstnat; policy accept;',
    `    iifname "eth0" ip saddr ${host} ip daddr ${ns} dnat to ${GUEST.address}`,
    ...(dns ? [`    iifname "${GUEST.tap}" ip daddr ${GUEST.gateway} udp dport 53 dnat to ${host}:${dnsPort}`] : []),
    '  }',
    ...(egress === 'none'
      ? []
      : ['  chain postrouting {', '    type nat hook postrouting priority srcnat; policy accept;', '    oifname "eth0" masquerade', '  }']),
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    `    iifname "${GUEST.tap}" ip saddr != ${GUEST.address} drop`,
    '    ct state established,related accept',
    ...ingress.map((r) => `    iifname "eth0" oifname "${GUEST.tap}" ip daddr ${GUEST.address} ct status dnat ${r}`),
    ...(egress === 'none' ? [] : [`    iifname "${GUEST.tap}" oifname "eth0" ct state new jump egress`]),
    '  }',
    ...(egress === 'none' ? [] : ['  chain egress {', ...egressRules.map((r) => `    ${r}`), '  }']),
    '  chain input {',
    '    type filter hook input priority filter; policy drop;',
    '    iifname "lo" accept',
    '    ct state established,related accept',
    // DNS that no forwarder takes (no egress) is refused at once: a resolver waiting out its timeouts stalls apps that look up a name at start.
    `    iifname "${GUEST.tap}" ip daddr ${GUEST.gateway} udp dport 53 reject`,
    `    iifname "${GUEST.tap}" ip daddr ${GUEST.gateway} tcp dport 53 reject with tcp reset`,
    '  }',
    '}',
    'table ip6 cella {}',
    'delete table ip6 cella',
    'table ip6 cella {',
    '  chain forward { type filter hook forward priority filter; policy drop; }',
    '  chain input { type filter hook input priority filter; policy drop; iifname "lo" accept; }',
    '}',
  ];
  return lines.join('\n') + '\n';
}

export const GUARD_TABLE = 'cella_guard';

/**
 * The host's guard, as one idempotent nft transaction: it creates what is
 * missing and rewrites only its own chains, so running it again (or from two
 * processes) changes nothing, and no other table is touched. The DNS ports
 * set keeps its elements: each forwarder adds and removes its own.
 *
 * - input: from a veth, only replies to the host's own connections and DNS to
 *   a forwarder on the veth's host end (not on the host's other addresses); so a guest never reaches a host service (API, proxy, ...).
 *   Packets claiming a slot address from anywhere else are spoofed.
 * - forward: no veth to veth (guest to guest), no link-local (metadata), and
 *   nothing routed into a namespace from outside: the host reaches guests
 *   directly, no one reaches them through it. The rest from the veths was
 *   already filtered by the namespace's own policy and passes.
 * - postrouting: what leaves the host by another interface wears the host's address.
 */
export function guardRules(dnsPorts: readonly number[] = []): string {
  const t = `inet ${GUARD_TABLE}`;
  const veth = `"${HOST_IF_PREFIX}*"`;
  return (
    [
      `add table ${t}`,
      `add set ${t} dns_ports { type inet_service; }`,
      ...(dnsPorts.length ? [`add element ${t} dns_ports ${set(dnsPorts)}`] : []),
      `add chain ${t} input { type filter hook input priority filter; policy accept; }`,
      `add chain ${t} forward { type filter hook forward priority filter; policy accept; }`,
      `add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
      `flush chain ${t} input`,
      `flush chain ${t} forward`,
      `flush chain ${t} postrouting`,
      `add rule ${t} input iifname ${veth} ct state established,related accept`,
      `add rule ${t} input iifname ${veth} ip daddr ${SLOTS_CIDR} meta l4proto { udp, tcp } th dport @dns_ports accept`,
      `add rule ${t} input iifname ${veth} drop`,
      `add rule ${t} input iifname != "lo" ip saddr ${SLOTS_CIDR} drop`,
      `add rule ${t} forward iifname ${veth} oifname ${veth} drop`,
      `add rule ${t} forward iifname ${veth} ip daddr 169.254.0.0/16 drop`,
      `add rule ${t} forward oifname ${veth} ct state new drop`,
      `add rule ${t} postrouting ip saddr ${SLOTS_CIDR} oifname != ${veth} masquerade`,
    ].join('\n') + '\n'
  );
}
