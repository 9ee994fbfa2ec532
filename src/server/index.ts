/**
 * cellad: one process that owns a data directory and serves the API.
 * Start-up order matters for restart safety: the store first, then the
 * engine, then recovery of every live VM from the store (re-adopting running
 * QEMUs), then reclaiming whatever no VM owns, and only then the API.
 */
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { totalmem } from 'node:os';
import path from 'node:path';
import { answerProtocolErrors, createApi } from '../api/index.js';
import { AccessKeys, ApiKeys, Authenticator, SigV4Verifier, TokenMinter, ensureApiKey, type AccessKeyPair } from '../auth/index.js';
import { Engine, processStartTime } from '../engine/index.js';
import { DiskCapacity } from '../capacity/index.js';
import { Arns, CellaError, CONTRACT_MIN_IDLE_SECONDS } from '../contract/index.js';
import { Connectors } from '../connectors/index.js';
import { createE2bApi, createEnvdHandler, isE2bPath, Sandboxes } from '../e2b/index.js';

import { DEFAULT_DNS_PORT, ensureHostGuard, pruneDnsPorts, startDnsForwarder, type DnsForwarder, type DnsUpstream } from '../net/index.js';
import { DEFAULT_LAYER_CACHE_BYTES, type ImageQuotas, Images, type ManagedImage, managedImages } from '../images/index.js';
import type { S3Settings } from '../archive/index.js';
import { Lifecycle } from '../lifecycle/index.js';
import { LogHub } from '../logs/index.js';
import { SqliteStore, type Store } from '../store/index.js';
import { startProxy } from '../proxy/index.js';
import { shellHandler } from '../shell/index.js';
import { consoleHandler, isConsolePath } from '../console/index.js';
import { loadGuestArtifacts } from '../setup/index.js';
import { HOUSEKEEPING_INTERVAL_MS, housekeep, type HousekeepingContext } from './housekeeping.js';
import { loadTls } from '../tls/index.js';

export const DEFAULT_API_PORT = 7470;
export const DEFAULT_DOMAIN = 'cella.localhost';
export const DEFAULT_PROXY_PORT = 7443;
export const DEFAULT_RESUME_WINDOW_SECONDS = 30;
export const DEFAULT_API_RATE_SCALE = 10;
export const DEMO_IMAGE = 'demo';
/** E2B API requests per second per API key, per unit of apiRateScale. */
const E2B_RATE_PER_SCALE = 10;

export interface ServerOptions {
  dataDir: string;
  guestDir?: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  domain?: string;
  /**
   * The region SigV4 requests must be signed for and every ARN names
   * (default us-east-1, as MinIO's: the AWS documentation's examples run as
   * written); ARNs of another region are refused.
   */
  region?: string;
  /** The account in every ARN of a customer resource (default 000000000000); ARNs of another account are refused. */
  accountId?: string;
  /** Lowers the contract's 60 s minimum for maxIdleDurationSeconds (tests, demos). */
  minIdleSeconds?: number;
  /**
   * Quota on the baseline memory of all live MicroVMs together (default: host RAM). Guests are given
   * 4× their baseline (the contract's peak), so by default their peaks add up to at most 4× host RAM:
   * clones share their image's pages and touch little of the rest (docs/design.md, "Sizing").
   */
  maxMemoryMiB?: number;
  /** The contract's image quotas: images, versions per image, builds at once (defaults 100, 50, 5). */
  imageQuotas?: Partial<ImageQuotas>;
  accel?: 'kvm' | 'tcg';
  warmClones?: number;
  /** Builds the demo app as image `demo` at the first start, so `cella run demo` works out of the box. */
  demoImage?: boolean;
  /** Builds E2B's default templates `base` and `code-interpreter-v1` at the first start (src/images/templates.ts). */
  e2bImages?: boolean;
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
  /** Accepted as a SigV4 access key besides the stored ones (default: env CELLA_ACCESS_KEY_ID and CELLA_SECRET_ACCESS_KEY). */
  accessKey?: AccessKeyPair;
  /** Requests per second per MicroVM and vCPU at its endpoint (default 100; 0: no limit). */
  endpointRpsPerVcpu?: number;
  /** Connections open at once per client address on the endpoint port (default 64). */
  endpointConnectionsPerClient?: number;
  /** Where `s3://` code artifacts come from (an S3-compatible endpoint). */
  s3?: S3Settings;
  /** Where the guests' DNS forwarder asks (default: the first nameserver of /etc/resolv.conf). */
  dnsUpstream?: DnsUpstream;
  /** Registries (host:port) that image builds may pull from over plain HTTP; loopback always may. */
  insecureRegistries?: string[];
  /** Below this much free space on the data directory's file system, new work is refused (default: max(1 GiB, 2 %)). */
  minFreeDiskMiB?: number;
  /** Bound on the build cache's layers (default 10 GiB). */
  layerCacheMiB?: number;
  log?: (line: string) => void;
}

export interface CellaServer {
  url: string;
  port: number;
  /** The API key generated at this start, if it was the first one; shown once. */
  newApiKey: string | undefined;
  /** The access key generated at this start, if it was the first one; shown once. */
  newAccessKey: AccessKeyPair | undefined;
  region: string;
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
  const host = opts.host ?? '127.0.0.1';
  // Start-up checks first, before anything is made or changed: the data directory, the lock, the guest, the ports.
  prepareDataDir(dataDir);
  const unlock = lockDataDir(dataDir);
  const cleanups: Array<() => unknown> = [unlock];
  try {
    const arns = new Arns(opts.region, opts.accountId);
    loadGuestArtifacts(opts.guestDir);
    await Promise.all([
      checkPortFree(opts.port ?? DEFAULT_API_PORT, host, '--port'),
      checkPortFree(opts.proxyPort ?? DEFAULT_PROXY_PORT, host, '--proxy-port'),
    ]);
    const capacity = new DiskCapacity({ dir: dataDir, log, ...(opts.minFreeDiskMiB !== undefined ? { minFreeBytes: opts.minFreeDiskMiB * 1024 * 1024 } : {}) });
    const store = new SqliteStore(path.join(dataDir, 'cella.db'));
    cleanups.unshift(() => store.close());
    await checkArnHome(store, arns);
    const newApiKey = await ensureApiKey(store);
    const keys = await ApiKeys.open(store, opts.apiKey ?? process.env.CELLA_API_KEY);
    const region = arns.region;
    const accessKeys = await AccessKeys.open(
      store,
      opts.accessKey ?? { accessKeyId: process.env.CELLA_ACCESS_KEY_ID, secretAccessKey: process.env.CELLA_SECRET_ACCESS_KEY },
    );
    const auth = new Authenticator(keys, new SigV4Verifier({ secretOf: (id) => accessKeys.secretOf(id), region }));
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
    const connectors = new Connectors(store, arns);
    const images = new Images({
      store,
      engine,
      connectors,
      dataDir,
      arns,
      log,
      ...(opts.imageQuotas ? { quotas: opts.imageQuotas } : {}),
      ...(opts.s3 ? { s3: opts.s3 } : {}),
      ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    });
    const lifecycle = new Lifecycle({ store, driver: engine, logs, images: (n, v) => images.lookup(n, v), capacity, log });
    cleanups.unshift(() => lifecycle.close());
    // Before any guest runs on: guests never reach the host's services, whatever happened before this start.
    await ensureHostGuard();
    const { forwarder: dns, moved } = await startDns(store, opts.dnsUpstream, log);
    cleanups.unshift(() => dns.close());
    // A VM that ran before this start keeps its DNS even when the forwarder had to take another port.
    const keep = await lifecycle.recover({ reapplyNetwork: moved });
    const reclaimed = await engine.reclaim(keep);
    if (reclaimed.killed + reclaimed.removedDirs + reclaimed.removedNamespaces > 0) {
      log(`reclaimed what no VM owned: ${reclaimed.killed} QEMU processes, ${reclaimed.removedDirs} folders, ${reclaimed.removedNamespaces} namespaces`);
    }
    const minIdleSeconds = opts.minIdleSeconds ?? CONTRACT_MIN_IDLE_SECONDS;
    if (!Number.isInteger(minIdleSeconds) || minIdleSeconds < 1) throw new CellaError('INVALID_ARGUMENT', '--min-idle-seconds must be a positive integer');
    const domain = opts.domain ?? DEFAULT_DOMAIN;
    const tokens = await TokenMinter.open(store);
    const maxMemoryMiB = opts.maxMemoryMiB ?? Math.floor(totalmem() / 1048576);
    const apiRateScale = opts.apiRateScale ?? DEFAULT_API_RATE_SCALE;
    const sandboxes = await Sandboxes.open({ store, lifecycle, images, connectors, capacity, maxMemoryMiB, agentOf: (id) => engine.get(id)?.agent });
    const tls = await loadTls(dataDir, domain, opts.tlsCertFile && opts.tlsKeyFile ? { certFile: opts.tlsCertFile, keyFile: opts.tlsKeyFile } : undefined);
    const proxy = await startProxy({
      store,
      lifecycle,
      engine,
      tokens,
      tls,
      domain,
      port: opts.proxyPort ?? DEFAULT_PROXY_PORT,
      host,
      shell: shellHandler(engine, (n, v) => images.lookup(n, v), log),
      // E2B sandbox hosts: envd in process, over the guest agent, for the sandboxes the REST facade made.
      e2b: { access: sandboxes, envd: createEnvdHandler({ agent: (id) => engine.get(id)?.agent, defaults: (id) => sandboxes.defaults(id) }, log) },
      ...(opts.endpointRpsPerVcpu !== undefined ? { rpsPerVcpu: opts.endpointRpsPerVcpu } : {}),
      ...(opts.endpointConnectionsPerClient !== undefined ? { connections: { perClient: opts.endpointConnectionsPerClient } } : {}),
      log,
    });
    cleanups.unshift(() => proxy.close());
    const handler = createApi({
      store,
      lifecycle,
      images,
      connectors,
      logs,
      auth,
      accessKeys,
      tokens,
      domain,
      arns,
      minIdleSeconds,
      apiRateScale,
      info: { proxyPort: proxy.port, accelerator: engine.accel.accel, region, ...(tls.caFile ? { caCertificate: readFileSync(tls.caFile, 'utf8') } : {}) },
      maxMemoryMiB,
      capacity,
      version: readVersion(),
    });
    // Builds queued or running when cellad stopped: after recovery, so a build never races the reclaim of its VMs.
    await images.recover();
    for (const image of managedImages(engine.guest.demoApp)) {
      const wanted = image.name === DEMO_IMAGE ? opts.demoImage : opts.e2bImages;
      if (wanted) await ensureManagedImage(image, store, images, arns, dataDir, log);
    }
    const chores: HousekeepingContext = { dataDir, store, images, layerCacheBytes: (opts.layerCacheMiB ?? DEFAULT_LAYER_CACHE_BYTES / 1048576) * 1048576, log };
    const housekeeping = schedule(chores, capacity, lifecycle, log);
    cleanups.unshift(housekeeping);
    // E2B's SDKs build envd's hosts from this: `<port>-<id>.<domain>[:<proxy port>]`.
    const e2b = createE2bApi({
      sandboxes,
      keys,
      domain: proxy.port === 443 ? domain : `${domain}:${proxy.port}`,
      ratePerSecond: apiRateScale * E2B_RATE_PER_SCALE,
    });
    const web = consoleHandler();
    const server = createServer({ keepAliveTimeout: 30_000, requestTimeout: 0 }, (req, res) =>
      isE2bPath(req.url) ? e2b(req, res) : isConsolePath(req.url) ? web(req, res) : handler(req, res),
    );
    answerProtocolErrors(server);
    await listen(server, opts.port ?? DEFAULT_API_PORT, host);
    const port = (server.address() as AddressInfo).port;
    const url = `http://${host}:${port}`;
    log(`serving the API on ${url} and endpoints on https://<id>.${domain}:${proxy.port} (data ${dataDir}, accelerator ${engine.accel.accel})`);
    let closing: Promise<void> | undefined;
    return {
      url,
      port,
      newApiKey,
      newAccessKey: accessKeys.created,
      region,
      proxyPort: proxy.port,
      domain,
      caFile: tls.caFile,
      store,
      engine,
      lifecycle,
      images,
      close: () =>
        (closing ??= (async () => {
          housekeeping();
          server.closeAllConnections();
          await new Promise<void>((resolve) => server.close(() => resolve()));
          await proxy.close();
          lifecycle.close();
          await lifecycle.settle();
          await images.close();
          await engine.close({ keepRunning: true });
          await dns.close();
          await store.close();
          unlock();
        })()),
    };
  } catch (err) {
    for (const c of cleanups) await c();
    throw err;
  }
}

/**
 * Watches the disk and keeps its use bounded: housekeeping now, every ten
 * minutes and when the disk runs low; VMs a full disk paused are continued
 * once it has room again. Returns what stops it all.
 */
function schedule(ctx: HousekeepingContext, capacity: DiskCapacity, lifecycle: Lifecycle, log: (line: string) => void): () => void {
  const run = (lowDisk: boolean): void => void housekeep(ctx, { lowDisk }).catch((err: Error) => log(`housekeeping: ${err.message}`));
  run(capacity.isLow);
  const every = setInterval(() => run(capacity.isLow), HOUSEKEEPING_INTERVAL_MS);
  every.unref();
  const continueVms = (): void => void lifecycle.continueDiskPaused().catch((err: Error) => log(`continuing paused VMs: ${err.message}`));
  const onLow = (): void => run(true);
  capacity.on('low', onLow);
  capacity.on('ok', continueVms);
  // A VM paused again right after a crossing is tried on later ticks too.
  const retry = setInterval(continueVms, 5000);
  retry.unref();
  capacity.start();
  return () => {
    clearInterval(every);
    clearInterval(retry);
    capacity.off('low', onLow);
    capacity.off('ok', continueVms);
    capacity.close();
  };
}

/**
 * An image cellad makes itself (the demo app, E2B's templates) from its
 * Dockerfile on a managed base, built like any user image at the first
 * start; and again at a later start if no build of it ever succeeded (one
 * cut short by a failed start, say).
 */
async function ensureManagedImage(image: ManagedImage, store: Store, images: Images, arns: Arns, dataDir: string, log: (line: string) => void): Promise<void> {
  const name = image.name;
  if (await store.getImage(name)) {
    const pending = (await store.listBuilds(name)).some((b) => b.state === 'PENDING' || b.state === 'IN_PROGRESS');
    if (pending || (await images.latest(name, 'SUCCESSFUL'))) return;
    log(`image "${name}" has no successful build: building it again`);
    await images.delete(name, async () => false);
  }
  const zip = await image.zip(path.join(dataDir, 'artifacts', `${name}.zip`));
  const started = await images.create({
    name,
    baseImageArn: arns.managedImage(image.base),
    codeArtifact: { uri: `file://${zip}` },
    resources: [{ minimumMemoryInMiB: image.memoryMiB }],
  });
  log(`building the image "${name}" (first start; build ${started.build.buildId})`);
  void images
    .enqueue(started)
    .then(async () => {
      const v = await images.latest(name, 'SUCCESSFUL');
      log(v ? `image "${name}" is ready` : `image "${name}" failed: see cella image logs ${name}`);
    })
    .catch((err: Error) => log(`image "${name}": ${err.message}`));
}

/** Where the store keeps the region and account its ARNs were issued under. */
const ARN_HOME = 'arn-home';

/**
 * The data directory's ARNs name the region and account it was first
 * started with (a database from before ARNs had them was migrated to the
 * defaults). A start with another region or account would leave every
 * stored ARN unknown to the API, so it is refused, saying how to start.
 */
async function checkArnHome(store: Store, arns: Arns): Promise<void> {
  const home = `${arns.region}:${arns.accountId}`;
  const saved = (await store.getSecret(ARN_HOME))?.toString();
  if (saved === undefined) return store.putSecret(ARN_HOME, Buffer.from(home));
  if (saved !== home) {
    const [region, account] = saved.split(':');
    throw new CellaError(
      'INVALID_ARGUMENT',
      `the data directory's resources are in region ${region}, account ${account}: start with --region ${region} --account-id ${account}, or use another --data-dir`,
    );
  }
}

/**
 * The guests' DNS forwarder. Namespaces send their DNS to its port, so the
 * port must outlive restarts: the first start takes the default (or any free
 * port if that one is taken, e.g. by another data directory's cellad) and
 * keeps it in the store.
 */
async function startDns(store: Store, upstream: DnsUpstream | undefined, log: (line: string) => void): Promise<{ forwarder: DnsForwarder; moved: boolean }> {
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

/** Creates the data directory if needed and makes sure it is a directory this process may write. */
function prepareDataDir(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true });
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new CellaError('INVALID_ARGUMENT', `data directory ${dataDir} cannot be used: ${(err as Error).message}`);
  }
}

/** Fails at once, before any work, when `port` on `host` is taken (0 picks a free one later and needs no check). */
async function checkPortFree(port: number, host: string, flag: string): Promise<void> {
  if (port === 0) return;
  const probe = createNetServer();
  await listen(probe, port, host, flag);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}

function listen(server: Server | NetServer, port: number, host: string, flag = '--port'): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new CellaError('INVALID_ARGUMENT', `port ${port} on ${host} is already in use (${flag}): another cellad, or another program, holds it`)
          : new CellaError('INVALID_ARGUMENT', `cannot listen on ${host}:${port} (${flag}): ${err.message}`),
      ),
    );
    server.listen(port, host, () => resolve());
  });
}

/**
 * One cellad per data directory: a second would fight the first over its VMs.
 * The lock file names its holder by pid and start time, so neither a reused
 * pid nor a holder that died but was not reaped yet (a zombie) keeps it.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, 'cellad.pid');
  const me = `${process.pid} ${processStartTime(process.pid) ?? ''}`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      writeSync(fd, me);
      closeSync(fd);
      return () => {
        if (existsSync(file) && readFileSync(file, 'utf8') === me) rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new CellaError('INVALID_ARGUMENT', `cannot lock ${dataDir}: ${(err as Error).message}`);
      const [pid, startTime] = readFileSync(file, 'utf8').trim().split(' ');
      const owner = Number(pid);
      const live = processStartTime(owner);
      if (owner > 0 && live !== undefined && (!startTime || live === startTime)) {
        throw new CellaError('INVALID_STATE', `another cellad (pid ${owner}) already serves ${dataDir}`);
      }
      // The previous owner is gone (kill -9, a zombie not yet reaped, a reused pid): its lock is stale.
      rmSync(file, { force: true });
    }
  }
  throw new CellaError('INVALID_STATE', `could not lock ${dataDir}`);
}

function readVersion(): string {
  const pkg = new URL('../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}
