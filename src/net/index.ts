/**
 * One network namespace per VM. Inside it: the guest's tap (always the same
 * guest address, so any snapshot restores without re-addressing) and one end
 * of a veth pair whose host end has a unique /30. The host reaches guest ports
 * by dialling the namespace's address, which is DNATed to the guest.
 *
 * A fresh namespace denies: only new connections from the host side to the
 * guest are forwarded, and the guest reaches nothing. At launch, applyPolicy
 * installs the VM's policy (rules.ts): ingress ports, and egress to the
 * internet or to an allowlist of CIDRs and domains (dns.ts). Whatever the
 * policy, a guest never reaches the host, other guests or link-local
 * addresses; the host guard (guard.ts) holds that on the host's side too.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CellaError, isCellaError } from '../contract/index.js';
import { crashPoint } from '../host/index.js';
import { dnsForwarderPort, forgetPolicy, rememberPolicy } from './dns.js';
import { ensureHostGuard } from './guard.js';
import { SLOT_TAKEN, networkHelper, useNetworkHelper } from './netd.js';
import { GUEST, HOST_IF_PREFIX, MAX_SLOTS, NETNS_PREFIX, checkPolicy, namespaceRules, netnsName, slotAddresses, type NetworkPolicy } from './rules.js';

export { DEFAULT_DNS_PORT, forgetPolicy, rememberPolicy, startDnsForwarder } from './dns.js';
export type { DnsForwarder, DnsForwarderOptions, DnsUpstream } from './dns.js';
export { ensureHostGuard, pruneDnsPorts, udpPortsBound } from './guard.js';
export { useNetworkHelper } from './netd.js';
export { DEFAULT_POLICY, GUEST, namespaceRules, slotAddresses } from './rules.js';
export type { NetworkPolicy } from './rules.js';

export interface VmNetwork {
  slot: number;
  netns: string;
  /** Address the host dials to reach the guest's ports. */
  hostAddress: string;
  tap: string;
}

/**
 * Who makes namespaces, and where it notes those it is making: the owner tag
 * goes on the veth pair once it exists, and an intent file in `intentDir`
 * (one per slot) is written before the namespace is added and removed after
 * it is deleted, so one that a crash left untagged is still found as ours.
 */
export interface NamespaceOwner {
  tag: string;
  intentDir: string;
}

function intentFile(owner: NamespaceOwner, slot: number): string {
  return path.join(owner.intentDir, String(slot));
}

async function create(slot: number, owner: NamespaceOwner | undefined): Promise<VmNetwork | undefined> {
  const helper = networkHelper();
  if (owner) writeFileSync(intentFile(owner, slot), owner.tag);
  try {
    await helper.add(slot);
  } catch (err) {
    if (owner) rmSync(intentFile(owner, slot), { force: true });
    // The name exists: that is the slot lock between concurrent engines.
    if (isCellaError(err, 'NETWORK_SETUP_FAILED') && err.details.step === SLOT_TAKEN) return undefined;
    throw err;
  }
  crashPoint('netns:added');
  try {
    // The veth pair (tagged), tap, routes and base rules, or (cella-netd removes the namespace) nothing.
    await helper.setup(slot, owner?.tag ?? '', namespaceRules(slot));
  } catch (err) {
    // Left only if the helper died half way.
    await destroy(slot, owner).catch(() => {});
    throw err;
  }
  return networkForSlot(slot);
}

async function destroy(slot: number, owner: NamespaceOwner | undefined): Promise<void> {
  // Deleting the namespace takes the veth pair (and so the host end) and the tap with it.
  if (existsSync(`/run/netns/${netnsName(slot)}`)) await networkHelper().destroy(slot);
  if (owner) rmSync(intentFile(owner, slot), { force: true });
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
    return readFileSync(`/sys/class/net/${HOST_IF_PREFIX}${slot}/ifalias`, 'utf8').trim() || undefined;
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
 * Deletes the namespaces of `owner` whose slot is not in `keep` and in which
 * no process runs: those a cellad that died left behind, tagged or (cut short
 * before the tag) noted in its intent files. Namespaces of other owners
 * (another data directory on this host) are never touched. Returns how many
 * were deleted.
 */
export async function reclaimNamespaces(owner: NamespaceOwner, keep: ReadonlySet<number>): Promise<number> {
  const inUse = new Set<string>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const key = nsKey(`/proc/${pid}/ns/net`);
    if (key) inUse.add(key);
  }
  const intended = new Set(readdirSync(owner.intentDir).map(Number).filter(Number.isInteger));
  let removed = 0;
  for (const netns of listNamespaces()) {
    const slot = Number(netns.slice(NETNS_PREFIX.length));
    if (!Number.isInteger(slot) || keep.has(slot)) continue;
    const tag = namespaceOwner(slot);
    if (tag !== owner.tag && !(tag === undefined && intended.has(slot))) continue;
    const key = nsKey(`/run/netns/${netns}`);
    if (!key || inUse.has(key)) continue;
    await destroy(slot, owner);
    removed++;
  }
  // Intents whose namespace never came to be (or is gone).
  for (const slot of intended) if (!keep.has(slot) && !existsSync(`/run/netns/${netnsName(slot)}`)) rmSync(intentFile(owner, slot), { force: true });
  return removed;
}

/**
 * Hands out ready namespaces. A few are kept warm and refilled in the
 * background, off the launch path. The pool holds a share of cella-netd,
 * which makes them (and serves applyPolicy and reclaimNamespaces) until close.
 */
export class NetworkPool {
  private readonly ready: VmNetwork[] = [];
  /** Slots of the namespaces this pool made and that were not released yet. */
  private readonly made = new Set<number>();
  private refilling: Promise<void> | undefined;
  private nextSlot = 0;
  private closed = false;
  private readonly releaseHelper: () => Promise<void>;

  /**
   * `owner` tags every namespace made (see NamespaceOwner), so a restarted
   * cellad can reclaim its own. `helper`: the cella-netd binary.
   */
  constructor(
    private readonly warm: number,
    private readonly owner: NamespaceOwner | undefined,
    helper: string,
  ) {
    if (owner) mkdirSync(owner.intentDir, { recursive: true });
    this.releaseHelper = useNetworkHelper(helper);
  }

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

  /**
   * The namespace of `slot`, made again if it is gone (a host restart empties
   * /run/netns; a suspended VM keeps its slot and needs its namespace back).
   * Fails if another engine holds the slot.
   */
  async ensure(slot: number): Promise<{ net: VmNetwork; made: boolean }> {
    if (existsSync(`/run/netns/${netnsName(slot)}`)) return { net: networkForSlot(slot), made: false };
    const net = await create(slot, this.owner);
    if (!net) throw new CellaError('NETWORK_SETUP_FAILED', `the namespace of slot ${slot} could not be made again: another engine holds it`);
    this.made.add(slot);
    return { net, made: true };
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
    forgetPolicy(net.slot);
    await destroy(net.slot, this.owner);
  }

  /** Slots this pool made and still holds or handed out: spares, and those of VMs starting or running. */
  slots(): number[] {
    return [...this.made];
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.refilling;
    await Promise.all(this.ready.splice(0).map((n) => this.release(n)));
    await this.releaseHelper();
  }
}

/**
 * Installs `policy` in the VM's namespace, replacing the rules it had (one
 * nft transaction), and tells the DNS forwarder. Before any egress opens, the
 * host guard is made sure of: the namespace alone cannot keep a guest from
 * the host's own addresses. A domain allowlist needs the DNS forwarder to run
 * in this process; 'internet' without one has no DNS through the gateway.
 */
export async function applyPolicy(net: VmNetwork, policy: NetworkPolicy): Promise<void> {
  checkPolicy(policy);
  const dnsPort = dnsForwarderPort();
  if (typeof policy.egress === 'object' && policy.egress.domains.length && dnsPort === undefined) {
    throw new CellaError('NETWORK_SETUP_FAILED', `${net.netns}: a domain allowlist needs the DNS forwarder, and none runs`);
  }
  if (policy.egress !== 'none') await ensureHostGuard();
  await networkHelper().nft(net.slot, namespaceRules(net.slot, policy, dnsPort));
  rememberPolicy(net, policy);
}

/** Rebuilds the handle of a namespace that already exists (a suspended VM's). */
export function networkForSlot(slot: number): VmNetwork {
  return { slot, netns: netnsName(slot), hostAddress: slotAddresses(slot).ns, tap: GUEST.tap };
}
