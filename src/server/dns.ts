import type { Store } from '../store/index.js';
import { DEFAULT_DNS_PORT, pruneDnsPorts, startDnsForwarder, type DnsForwarder, type DnsUpstream } from '../net/index.js';

/**
 * The guests' DNS forwarder. Namespaces send their DNS to its port, so the
 * port must outlive restarts: the first start takes the default (or any free
 * port if that one is taken, e.g. by another data directory's cellad) and
 * keeps it in the store.
 */
export async function startDns(
  store: Store,
  upstream: DnsUpstream | undefined,
  log: (line: string) => void,
): Promise<{ forwarder: DnsForwarder; moved: boolean }> {
  const saved = await store.getSecret('dns-port');
  const port = saved ? Number(saved.toString()) : DEFAULT_DNS_PORT;
  const start = (p: number): Promise<DnsForwarder> => startDnsForwarder({ port: p, log, ...(upstream ? { upstream } : {}) });
  let dns: DnsForwarder;
  try {
    dns = await start(port);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    dns = await start(0);
    log(`DNS forwarder: port ${port} is taken (another cellad?), using ${dns.port}${saved ? '; the rules of VMs that ran before this start follow it' : ''}`);
  }
  try {
    if (dns.port !== port || !saved) await store.putSecret('dns-port', Buffer.from(String(dns.port)));
    const stale = await pruneDnsPorts();
    if (stale.length) log(`host guard: closed the DNS ports of cellads that are gone: ${stale.join(', ')}`);
  } catch (err) {
    await dns.close();
    throw err;
  }
  return { forwarder: dns, moved: saved !== undefined && dns.port !== port };
}
