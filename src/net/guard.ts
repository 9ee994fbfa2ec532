/**
 * The host's side of the isolation: `table inet cella_guard` (see guardRules)
 * and IPv4 forwarding. Installed once per process, idempotent across
 * processes; other tables (docker, the host's firewall) are never touched.
 */
import { writeFileSync } from 'node:fs';
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
