/**
 * The host's side of the isolation: `table inet cella_guard` (see guardRules)
 * and IPv4 forwarding. Installed once per process, idempotent across
 * processes; other tables (docker, the host's firewall) are never touched.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { run } from '../host/index.js';
import { GUARD_TABLE, guardRules } from './rules.js';

let installed: Promise<void> | undefined;
const dnsPorts = new Set<number>();

const nft = (input: string): Promise<string> => run('nft', ['-f', '-'], { input, code: 'NETWORK_SETUP_FAILED' });

/**
 * Installs the guard (the engine calls this when it opens; applyPolicy too,
 * before any egress is opened). Turns on IPv4 forwarding: a guest with egress
 * is routed through the host and masqueraded behind it, like a container.
 */
export function ensureHostGuard(): Promise<void> {
  installed ??= (async () => {
    await nft(guardRules([...dnsPorts]));
    writeFileSync('/proc/sys/net/ipv4/ip_forward', '1\n');
  })().catch((err: unknown) => {
    installed = undefined;
    throw err;
  });
  return installed;
}

/** Lets guests' DNS reach a forwarder on `port` of the host. */
export async function openDnsPort(port: number): Promise<void> {
  dnsPorts.add(port);
  await ensureHostGuard();
  await nft(`add element inet ${GUARD_TABLE} dns_ports { ${port} }\n`);
}

export async function closeDnsPort(port: number): Promise<void> {
  dnsPorts.delete(port);
  // Gone already if someone deleted the table: nothing left to close.
  await nft(`delete element inet ${GUARD_TABLE} dns_ports { ${port} }\n`).catch(() => {});
}

/**
 * Drops from the guard the DNS ports no socket on this host is bound to any
 * more: those of cellads that were killed (their `close` never ran). A port
 * left open there would let guests reach whatever binds it next.
 */
export async function pruneDnsPorts(): Promise<number[]> {
  const out = await run('nft', ['-j', 'list', 'set', 'inet', GUARD_TABLE, 'dns_ports']).catch(() => '');
  let listed: number[] = [];
  try {
    const set = (JSON.parse(out) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables.find((o) => o.set)?.set;
    listed = (set?.elem ?? []).filter((e): e is number => typeof e === 'number');
  } catch {
    return [];
  }
  const bound = udpPortsBound();
  const stale = listed.filter((p) => !bound.has(p));
  for (const p of stale) await closeDnsPort(p);
  return stale;
}

/** Local ports of the host's UDP sockets (/proc/net/udp, hexadecimal). */
export function udpPortsBound(): Set<number> {
  const ports = new Set<number>();
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const local = line.trim().split(/\s+/)[1];
    if (local) ports.add(parseInt(local.slice(local.indexOf(':') + 1), 16));
  }
  return ports;
}
