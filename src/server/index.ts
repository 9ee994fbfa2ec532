/**
 * cellad: one process that owns a data directory and serves the API.
 * Start-up order matters for restart safety: the store first, then the
 * engine, then recovery of every live VM from the store (re-adopting running
 * QEMUs), then reclaiming whatever no VM owns, and only then the API.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { totalmem } from 'node:os';
import path from 'node:path';
import { createApi, CONTRACT_MIN_IDLE_SECONDS } from '../api/index.js';
import { ApiKeys, TokenMinter, ensureApiKey } from '../auth/index.js';
import { Engine } from '../engine/index.js';
import { CellaError } from '../errors/index.js';
import { Connectors } from '../connectors/index.js';
import { DEFAULT_DNS_PORT, ensureHostGuard, startDnsForwarder, type DnsForwarder, type DnsUpstream } from '../net/index.js';
import { Images, managedArn } from '../images/index.js';
import { demoZip } from '../images/demo.js';
import type { S3Settings } from '../archive/index.js';
import { Lifecycle } from '../lifecycle/index.js';
import { LogHub } from '../logs/index.js';
import { SqliteStore, type Store } from '../store/index.js';
import { startProxy } from '../proxy/index.js';
import { shellHandler } from '../shell/index.js';
import { loadTls } from '../tls/index.js';

export const DEFAULT_API_PORT = 7470;
export const DEFAULT_DOMAIN = 'cella.localhost';
export const DEFAULT_PROXY_PORT = 7443;
export const DEFAULT_RESUME_WINDOW_SECONDS = 30;
export const DEFAULT_API_RATE_SCALE = 10;
export const DEMO_IMAGE = 'demo';

export interface ServerOptions {
  dataDir: string;
  guestDir?: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  domain?: string;
  /** Lowers the contract's 60 s minimum for maxIdleDurationSeconds (tests, demos). */
  minIdleSeconds?: number;
  /** Quota on the memory of all live MicroVMs together (default: 4 × host RAM; clones share their image's pages). */
  maxMemoryMiB?: number;
  accel?: 'kvm' | 'tcg';
  warmClones?: number;
  /** Builds the demo app as image `demo` at the first start, so `cella run demo` works out of the box. */
  demoImage?: boolean;
  /** The endpoint proxy's port (0 picks one; default 7443, or 443 for a service). */
  proxyPort?: number;
  /** An operator's certificate and key for `*.<domain>` instead of Cella's own CA. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Multiplies the contract's per-caller API rates (default 10; 0 turns throttling off). */
  apiRateScale?: number;
  /** How long a suspended VM's stopped QEMU is kept for a resume in place (default 30; 0 frees RAM at once). */
  resumeWindowSeconds?: number;
  /** Accepted as an API key besides the stored ones (default: env CELLA_API_KEY). */
  apiKey?: string;
  /** Requests per second per MicroVM and vCPU at its endpoint (default 100; 0: no limit). */
  endpointRpsPerVcpu?: number;
  /** Where `s3://` code artifacts come from (an S3-compatible endpoint). */
  s3?: S3Settings;
  /** Where the guests' DNS forwarder asks (default: the first nameserver of /etc/resolv.conf). */
  dnsUpstream?: DnsUpstream;
  /** Registries (host:port) that image builds may pull from over plain HTTP; loopback always may. */
  insecureRegistries?: string[];
  log?: (line: string) => void;
}

export interface CellaServer {
  url: string;
  port: number;
  /** The API key generated at this start, if it was the first one; shown once. */
  newApiKey: string | undefined;
  /** The endpoint proxy: https://<id>.<domain>:<proxyPort>. */
  proxyPort: number;
  domain: string;
  /** The CA that signed the proxy's certificate, when Cella made it. */
  caFile: string | undefined;
  store: Store;
  engine: Engine;
  lifecycle: Lifecycle;
  images: Images;
  /** Stops serving; VMs keep running and the next start re-adopts them. */
  close(): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<CellaServer> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`cellad: ${line}\n`));
  const dataDir = path.resolve(opts.dataDir);
  const unlock = lockDataDir(dataDir);
  const cleanups: Array<() => unknown> = [unlock];
  try {
    const store = new SqliteStore(path.join(dataDir, 'cella.db'));
    cleanups.unshift(() => store.close());
    const newApiKey = ensureApiKey(store);
    const keys = new ApiKeys(store, opts.apiKey ?? process.env.CELLA_API_KEY);
    const engine = await Engine.open({
      dataDir,
      log,
      outliveParent: true,
      parkSeconds: opts.resumeWindowSeconds ?? DEFAULT_RESUME_WINDOW_SECONDS,
      ...(opts.guestDir ? { guestDir: opts.guestDir } : {}),
      ...(opts.accel ? { accel: opts.accel } : {}),
      ...(opts.warmClones !== undefined ? { warmClones: opts.warmClones } : {}),
    });
    cleanups.unshift(() => engine.close({ keepRunning: true }));
    const logs = new LogHub(dataDir);
    const connectors = new Connectors(store);
    const images = new Images({
      store,
      engine,
      connectors,
      dataDir,
      log,
      ...(opts.s3 ? { s3: opts.s3 } : {}),
      ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    });
    const lifecycle = new Lifecycle({ store, driver: engine, logs, images: (n, v) => images.lookup(n, v), log });
    cleanups.unshift(() => lifecycle.close());
    const keep = await lifecycle.recover();
    const reclaimed = await engine.reclaim(keep);
    if (reclaimed.killed + reclaimed.removedDirs + reclaimed.removedNamespaces > 0) {
      log(`reclaimed what no VM owned: ${reclaimed.killed} QEMU processes, ${reclaimed.removedDirs} folders, ${reclaimed.removedNamespaces} namespaces`);
    }
    // Before any guest runs: guests never reach the host's services, whatever happened before this start.
    await ensureHostGuard();
    const dns = await startDns(store, opts.dnsUpstream, log);
    cleanups.unshift(() => dns.close());
    const minIdleSeconds = opts.minIdleSeconds ?? CONTRACT_MIN_IDLE_SECONDS;
    if (!Number.isInteger(minIdleSeconds) || minIdleSeconds < 1) throw new CellaError('INVALID_ARGUMENT', '--min-idle-seconds must be a positive integer');
    const domain = opts.domain ?? DEFAULT_DOMAIN;
    const tokens = TokenMinter.open(store);
    const tls = await loadTls(dataDir, domain, opts.tlsCertFile && opts.tlsKeyFile ? { certFile: opts.tlsCertFile, keyFile: opts.tlsKeyFile } : undefined);
    const proxy = await startProxy({
      store,
      lifecycle,
      engine,
      tokens,
      tls,
      domain,
      port: opts.proxyPort ?? DEFAULT_PROXY_PORT,
      host: opts.host ?? '127.0.0.1',
      shell: shellHandler(engine, (n, v) => images.lookup(n, v), log),
      ...(opts.endpointRpsPerVcpu !== undefined ? { rpsPerVcpu: opts.endpointRpsPerVcpu } : {}),
      log,
    });
    cleanups.unshift(() => proxy.close());
    const handler = createApi({
      store,
      lifecycle,
      images,
      connectors,
      logs,
      keys,
      tokens,
      domain,
      minIdleSeconds,
      apiRateScale: opts.apiRateScale ?? DEFAULT_API_RATE_SCALE,
      info: { proxyPort: proxy.port, accelerator: engine.accel.accel, ...(tls.caFile ? { caCertificate: readFileSync(tls.caFile, 'utf8') } : {}) },
      maxMemoryMiB: opts.maxMemoryMiB ?? Math.floor((4 * totalmem()) / 1048576),
      version: readVersion(),
    });
    // Builds queued or running when cellad stopped: after recovery, so a build never races the reclaim of its VMs.
    images.recover();
    if (opts.demoImage && !store.getImage(DEMO_IMAGE)) await createDemo(images, engine, dataDir, log);
    const server = createServer({ keepAliveTimeout: 30_000, requestTimeout: 0 }, handler);
    await listen(server, opts.port ?? DEFAULT_API_PORT, opts.host ?? '127.0.0.1');
    const port = (server.address() as AddressInfo).port;
    const url = `http://${opts.host ?? '127.0.0.1'}:${port}`;
    log(`serving the API on ${url} and endpoints on https://<id>.${domain}:${proxy.port} (data ${dataDir}, accelerator ${engine.accel.accel})`);
    let closing: Promise<void> | undefined;
    return {
      url,
      port,
      newApiKey,
      proxyPort: proxy.port,
      domain,
      caFile: tls.caFile,
      store,
      engine,
      lifecycle,
      images,
      close: () =>
        (closing ??= (async () => {
          server.closeAllConnections();
          await new Promise<void>((resolve) => server.close(() => resolve()));
          await proxy.close();
          lifecycle.close();
          await lifecycle.settle();
          await images.close();
          await engine.close({ keepRunning: true });
          await dns.close();
          store.close();
          unlock();
        })()),
    };
  } catch (err) {
    for (const c of cleanups) await c();
    throw err;
  }
}

/** The demo app (guest/demo) from its Dockerfile on the busybox base, built like any user image. */
async function createDemo(images: Images, engine: Engine, dataDir: string, log: (line: string) => void): Promise<void> {
  const zip = await demoZip(path.join(dataDir, 'artifacts', 'demo.zip'), engine.guest.demoApp);
  const started = images.create({
    name: DEMO_IMAGE,
    baseImageArn: managedArn('busybox'),
    codeArtifact: { uri: `file://${zip}` },
    resources: [{ minimumMemoryInMiB: 256 }],
  });
  log(`building the demo image "${DEMO_IMAGE}" (first start; build ${started.build.buildId})`);
  void images.enqueue(started).then(() => {
    const v = images.latest(DEMO_IMAGE, 'SUCCESSFUL');
    log(v ? `image "${DEMO_IMAGE}" is ready: cella run ${DEMO_IMAGE}` : `image "${DEMO_IMAGE}" failed: see cella image logs ${DEMO_IMAGE}`);
  });
}

/**
 * The guests' DNS forwarder. Namespaces send their DNS to its port, so the
 * port must outlive restarts: the first start takes the default (or any free
 * port if that one is taken, e.g. by another data directory's cellad) and
 * keeps it in the store.
 */
async function startDns(store: Store, upstream: DnsUpstream | undefined, log: (line: string) => void): Promise<DnsForwarder> {
  const saved = store.getSecret('dns-port');
  const port = saved ? Number(saved.toString()) : DEFAULT_DNS_PORT;
  const start = (p: number): Promise<DnsForwarder> => startDnsForwarder({ port: p, log, ...(upstream ? { upstream } : {}) });
  let dns: DnsForwarder;
  try {
    dns = await start(port);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    dns = await start(0);
    log(`DNS forwarder: port ${port} is taken, using ${dns.port}${saved ? ': VMs that ran before this start lose DNS until relaunched' : ''}`);
  }
  if (!saved || dns.port !== port) store.putSecret('dns-port', Buffer.from(String(dns.port)));
  return dns;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new CellaError('INVALID_ARGUMENT', `port ${port} on ${host} is already in use`) : err),
    );
    server.listen(port, host, () => resolve());
  });
}

/** One cellad per data directory: a second would fight the first over its VMs. */
function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'cellad.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => {
        if (existsSync(file) && readFileSync(file, 'utf8') === String(process.pid)) rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        mkdirSync(dataDir, { recursive: true });
        continue;
      }
      const owner = Number(readFileSync(file, 'utf8'));
      if (owner > 0 && owner !== process.pid && pidAlive(owner)) {
        throw new CellaError('INVALID_STATE', `another cellad (pid ${owner}) already serves ${dataDir}`);
      }
      // The previous owner died (e.g. kill -9): its lock is stale.
      rmSync(file, { force: true });
    }
  }
  throw new CellaError('INVALID_STATE', `could not lock ${dataDir}`);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readVersion(): string {
  const pkg = new URL('../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}
