/**
 * Cella's DNS forwarder: how a domain allowlist becomes addresses.
 *
 * Each namespace sends its guest's DNS (to the gateway, port 53) to this
 * forwarder on the host end of its veth, masqueraded behind the namespace
 * address, so the source names the slot and so the VM's policy. For an
 * allowlist, a name that matches none of its domains is refused without
 * being forwarded; the A records of a matching name's answer are added to
 * the namespace's `allowed_names` set, for their TTL, before the guest sees
 * the answer. An address the guest did not resolve here stays unreachable.
 * 'internet' VMs are forwarded everything; 'none' VMs have no DNS at all.
 *
 * UDP only: an answer too big for a datagram reaches the guest truncated.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { CellaError } from '../contract/index.js';
import { run } from '../host/index.js';
import { closeDnsPort, openDnsPort } from './guard.js';
import { netnsName, slotOfNamespaceAddress, type NetworkPolicy } from './rules.js';

/** Not 5353: mDNS responders hold that port on many hosts. */
export const DEFAULT_DNS_PORT = 5354;

const TYPE_A = 1;
const TYPE_CNAME = 5;
const CLASS_IN = 1;
const RCODE_SERVFAIL = 2;
const RCODE_REFUSED = 5;
/** Bounds on how long a resolved address stays allowed, in seconds. */
const MIN_TTL = 30;
const MAX_TTL = 3600;

/** Policies of the slots in use, by slot: what the forwarder asks. */
const policies = new Map<number, NetworkPolicy>();
let current: { port: number } | undefined;

/** Tells the forwarder the policy of `slot`'s VM, without touching its rules (after a restart, a resume). */
export function rememberPolicy(net: { slot: number }, policy: NetworkPolicy): void {
  policies.set(net.slot, policy);
}

export function forgetPolicy(slot: number): void {
  policies.delete(slot);
}

/** The port of the forwarder running in this process, if one does. */
export function dnsForwarderPort(): number | undefined {
  return current?.port;
}

/** `name` (any case, trailing dot or not) against patterns: `example.com` exactly, `*.example.com` any name below it. */
export function domainMatches(name: string, patterns: readonly string[]): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => {
    const q = p.toLowerCase();
    return q.startsWith('*.') ? n.endsWith(q.slice(1)) && n.length > q.length - 1 : n === q;
  });
}

/** A name at `off`, following compression pointers; undefined if malformed. */
function readName(buf: Buffer, off: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let end: number | undefined;
  for (let jumps = 0; jumps < 64;) {
    const len = buf[off];
    if (len === undefined) return undefined;
    if (len === 0) return { name: labels.join('.').toLowerCase(), end: end ?? off + 1 };
    if ((len & 0xc0) === 0xc0) {
      const lo = buf[off + 1];
      if (lo === undefined) return undefined;
      end ??= off + 2;
      off = ((len & 0x3f) << 8) | lo;
      jumps++;
    } else if (len & 0xc0 || off + 1 + len > buf.length) {
      return undefined;
    } else {
      labels.push(buf.toString('latin1', off + 1, off + 1 + len));
      off += 1 + len;
    }
  }
  return undefined;
}

export interface DnsQuestion {
  id: number;
  name: string;
  type: number;
  /** Offset just past the (single) question. */
  end: number;
}

/** The question of a standard query with exactly one; undefined for anything else. */
export function parseQuery(buf: Buffer): DnsQuestion | undefined {
  if (buf.length < 12) return undefined;
  const flags = buf.readUInt16BE(2);
  // A response, or an opcode other than QUERY.
  if (flags & 0x8000 || (flags >> 11) & 0xf) return undefined;
  if (buf.readUInt16BE(4) !== 1) return undefined;
  const q = readName(buf, 12);
  if (!q || q.end + 4 > buf.length) return undefined;
  return { id: buf.readUInt16BE(0), name: q.name, type: buf.readUInt16BE(q.end), end: q.end + 4 };
}

/** An answer with no records and `rcode`, echoing the query's id, question and RD bit. */
export function errorReply(query: Buffer, q: DnsQuestion, rcode: number): Buffer {
  const out = Buffer.from(query.subarray(0, q.end));
  out.writeUInt16BE(0x8000 | 0x0080 | (query.readUInt16BE(2) & 0x0100) | rcode, 2);
  out.writeUInt16BE(1, 4);
  out.fill(0, 6, 12);
  return out;
}

/**
 * The IPv4 addresses an answer gives for `name`, with their TTLs: A records
 * of the name itself or of the CNAME chain starting at it, and nothing the
 * answer says about other names.
 */
export function answerAddresses(res: Buffer, name: string): { address: string; ttl: number }[] {
  if (res.length < 12) return [];
  const qd = res.readUInt16BE(4);
  const an = res.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) {
    const q = readName(res, off);
    if (!q) return [];
    off = q.end + 4;
  }
  const records: { owner: string; type: number; ttl: number; data: Buffer; at: number }[] = [];
  for (let i = 0; i < an; i++) {
    const r = readName(res, off);
    if (!r || r.end + 10 > res.length) return [];
    const type = res.readUInt16BE(r.end);
    const cls = res.readUInt16BE(r.end + 2);
    const ttl = res.readUInt32BE(r.end + 4);
    const len = res.readUInt16BE(r.end + 8);
    const at = r.end + 10;
    if (at + len > res.length) return [];
    if (cls === CLASS_IN) records.push({ owner: r.name, type, ttl, data: res.subarray(at, at + len), at });
    off = at + len;
  }
  const names = new Set([name.toLowerCase().replace(/\.$/, '')]);
  for (let grew = true; grew;) {
    grew = false;
    for (const r of records) {
      if (r.type !== TYPE_CNAME || !names.has(r.owner)) continue;
      const target = readName(res, r.at)?.name;
      if (target !== undefined && !names.has(target)) {
        names.add(target);
        grew = true;
      }
    }
  }
  return records.filter((r) => r.type === TYPE_A && r.data.length === 4 && names.has(r.owner)).map((r) => ({ address: [...r.data].join('.'), ttl: r.ttl }));
}

/** Allows `addresses` from namespace `netns`, each for its TTL (bounded): one nft process. */
async function allowAddresses(netns: string, addresses: { address: string; ttl: number }[]): Promise<void> {
  const ttls = new Map<string, number>();
  for (const a of addresses) ttls.set(a.address, Math.max(ttls.get(a.address) ?? 0, Math.min(MAX_TTL, Math.max(MIN_TTL, a.ttl))));
  // add, delete, add: the element exists whatever came before, and its timeout is the new one.
  const lines = [...ttls].flatMap(([a, t]) => [
    `add element ip cella allowed_names { ${a} timeout ${t}s }`,
    `delete element ip cella allowed_names { ${a} }`,
    `add element ip cella allowed_names { ${a} timeout ${t}s }`,
  ]);
  await run('nsenter', [`--net=/run/netns/${netns}`, 'nft', '-f', '-'], { input: lines.join('\n') + '\n', code: 'NETWORK_SETUP_FAILED' });
}

export interface DnsUpstream {
  address: string;
  port?: number;
}

export interface DnsForwarderOptions {
  /** Host UDP port (all addresses) the namespaces send DNS to; 0 picks one. Default DEFAULT_DNS_PORT. */
  port?: number;
  /** Where allowed queries go; default the first IPv4 nameserver of /etc/resolv.conf. */
  upstream?: DnsUpstream;
  /** How long to wait for the upstream. */
  timeoutMs?: number;
  log?: (line: string) => void;
}

export interface DnsForwarder {
  port: number;
  close(): Promise<void>;
}

function systemResolver(): DnsUpstream {
  let text = '';
  try {
    text = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    // No resolv.conf: reported below like one without a nameserver.
  }
  for (const line of text.split('\n')) {
    const [key, address] = line.trim().split(/\s+/);
    if (key === 'nameserver' && address && isIPv4(address)) return { address };
  }
  throw new CellaError('NETWORK_SETUP_FAILED', 'no IPv4 nameserver in /etc/resolv.conf: give the DNS forwarder an upstream');
}

/** Sends `query` to the upstream from a fresh socket (its own random port) and waits for the matching answer. */
function ask(upstream: DnsUpstream, query: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const done = (res: Buffer | undefined): void => {
      clearTimeout(timer);
      sock.close();
      resolve(res);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('message', (msg, from) => {
      if (from.address !== upstream.address || msg.length < 12 || msg.readUInt16BE(0) !== query.readUInt16BE(0) || !(msg[2]! & 0x80)) return;
      done(msg);
    });
    sock.send(query, upstream.port ?? 53, upstream.address, (err) => err && done(undefined));
  });
}

/**
 * Starts the forwarder (one per process) and opens its port to the guests in
 * the host guard. Queries from anything but a slot's namespace address are
 * ignored: it is no resolver for the host's network.
 */
export async function startDnsForwarder(opts: DnsForwarderOptions = {}): Promise<DnsForwarder> {
  if (current) throw new CellaError('INVALID_STATE', `a DNS forwarder already runs on port ${current.port}`);
  const upstream = opts.upstream ?? systemResolver();
  const timeoutMs = opts.timeoutMs ?? 5000;
  const log = opts.log ?? (() => {});
  const sock = dgram.createSocket('udp4');

  const answer = async (query: Buffer, slot: number): Promise<Buffer | undefined> => {
    const q = parseQuery(query);
    if (!q) return undefined;
    const egress = policies.get(slot)?.egress;
    if (egress === undefined || egress === 'none') return errorReply(query, q, RCODE_REFUSED);
    if (egress === 'internet') return (await ask(upstream, query, timeoutMs)) ?? errorReply(query, q, RCODE_SERVFAIL);
    if (!domainMatches(q.name, egress.domains)) return errorReply(query, q, RCODE_REFUSED);
    const res = await ask(upstream, query, timeoutMs);
    if (!res) return errorReply(query, q, RCODE_SERVFAIL);
    const addresses = answerAddresses(res, q.name);
    if (addresses.length) {
      try {
        await allowAddresses(netnsName(slot), addresses);
      } catch (err) {
        log(`dns: slot ${slot}: allowing ${q.name}: ${(err as Error).message}`);
        return errorReply(query, q, RCODE_SERVFAIL);
      }
    }
    return res;
  };

  sock.on('message', (query, from) => {
    const slot = slotOfNamespaceAddress(from.address);
    if (slot === undefined) return;
    answer(query, slot)
      .then((res) => res && sock.send(res, from.port, from.address))
      .catch((err: Error) => log(`dns: slot ${slot}: ${err.message}`));
  });
  sock.on('error', (err) => log(`dns: ${err.message}`));
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(opts.port ?? DEFAULT_DNS_PORT, '0.0.0.0', () => {
      sock.off('error', reject);
      resolve();
    });
  });
  const port = sock.address().port;
  const me = { port };
  current = me;
  try {
    await openDnsPort(port);
  } catch (err) {
    current = undefined;
    sock.close();
    throw err;
  }
  return {
    port,
    close: async () => {
      if (current !== me) return;
      current = undefined;
      await closeDnsPort(port);
      await new Promise<void>((resolve) => sock.close(() => resolve()));
    },
  };
}
