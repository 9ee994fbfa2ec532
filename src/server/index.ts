/**
 * cellad: one process that owns a data directory and serves the API.
 * Start-up order matters for restart safety: the store first, then the
 * engine, then recovery of every live VM from the store (re-adopting running
 * QEMUs), then reclaiming whatever no VM owns, and only then the API.
 * The data directory's lock and ARN home are in ./data-dir.ts, the DNS
 * forwarder's lasting port in ./dns.ts, the images cellad builds itself in
 * ./managed-images.ts, and the disk's upkeep in ./housekeeping.ts.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { totalmem } from 'node:os';
import path from 'node:path';
import { answerProtocolErrors, createApi } from '../api/index.js';
import { AccessKeys, ApiKeys, Authenticator, SigV4Verifier, TokenMinter, ensureApiKey, type AccessKeyPair } from '../auth/index.js';
import { Engine } from '../engine/index.js';
import { DiskCapacity } from '../capacity/index.js';
import { Arns, CellaError, CONTRACT_MIN_IDLE_SECONDS } from '../contract/index.js';
import { Connectors } from '../connectors/index.js';
import { createE2bApi, createEnvdHandler, isE2bPath, Sandboxes } from '../e2b/index.js';
import { ensureHostGuard, type DnsUpstream } from '../net/index.js';
import { DEFAULT_LAYER_CACHE_BYTES, type ImageQuotas, Images, managedImages } from '../images/index.js';
import type { S3Settings } from '../archive/index.js';
import { Lifecycle } from '../lifecycle/index.js';
import { LogHub } from '../logs/index.js';
import { SqliteStore, type Store } from '../store/index.js';
import { startProxy } from '../proxy/index.js';
import { shellHandler } from '../shell/index.js';
import { consoleHandler, isConsolePath } from '../console/index.js';
import { loadGuestArtifacts } from '../setup/index.js';
import { loadTls } from '../tls/index.js';
import { checkArnHome, lockDataDir, prepareDataDir } from './data-dir.js';
import { startDns } from './dns.js';
import { scheduleHousekeeping, type HousekeepingContext } from './housekeeping.js';
import { ensureManagedImage, managedPrewarm } from './managed-images.js';
import { checkPortFree, listen } from './ports.js';

export { lockDataDir } from './data-dir.js';

export const DEFAULT_API_PORT = 7470;
export const DEFAULT_DOMAIN = 'cella.localhost';
export const DEFAULT_PROXY_PORT = 7443;
export const DEFAULT_RESUME_WINDOW_SECONDS = 30;
/** Suspended VMs (the last suspended) kept with a standby QEMU (ADR 0011): a few idle QEMUs for a resume without QEMU's start. */
export const DEFAULT_STANDBY_QEMUS = 4;
/**
 * MiB of checkpoint pages those standby QEMUs may hold in advance, all together (ADR 0011): a resume then
 * only loads device state (bench:proxy: about 150 → 105–115 ms to first byte under TCG). It is RAM the
 * VMs held while they ran, bounded here; the memory admission of running VMs does not count it, so on a
 * small host the default is a sixteenth of its RAM (defaultStandbyPreloadMiB).
 */
export const DEFAULT_STANDBY_PRELOAD_MIB = 1024;

/** The default preload budget on a host with `hostMiB` of RAM: DEFAULT_STANDBY_PRELOAD_MIB, at most a sixteenth of it. */
export function defaultStandbyPreloadMiB(hostMiB = totalmem() / 1048576): number {
  return Math.min(DEFAULT_STANDBY_PRELOAD_MIB, Math.floor(hostMiB / 16));
}
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
  /**
   * Suspended VMs, the last suspended first, that keep a standby QEMU so their resume skips QEMU's start
   * (ADR 0011; default 4; 0: none). Each is an idle, paused QEMU holding no guest RAM.
   */
  standbyQemus?: number;
  /** MiB of checkpoint pages the standby QEMUs may hold in advance, all together (default 1024; 0: RAM is not spent on it). */
  standbyPreloadMiB?: number;
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
  const standbyQemus = wholeNumber(opts.standbyQemus ?? DEFAULT_STANDBY_QEMUS, 0, '--standby-qemus');
  const standbyPreloadMiB = wholeNumber(opts.standbyPreloadMiB ?? defaultStandbyPreloadMiB(), 0, '--standby-preload-mib');
  const minIdleSeconds = wholeNumber(opts.minIdleSeconds ?? CONTRACT_MIN_IDLE_SECONDS, 1, '--min-idle-seconds');
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
      standbyQemus,
      standbyPreloadMiB,
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
    // The reclaim ended the standbys of the suspended VMs; those suspended last get new ones, as before the restart.
    engine.restartStandbys(keep);
    const domain = opts.domain ?? DEFAULT_DOMAIN;
    const tokens = await TokenMinter.open(store);
    const maxMemoryMiB = opts.maxMemoryMiB ?? Math.floor(totalmem() / 1048576);
    const apiRateScale = opts.apiRateScale ?? DEFAULT_API_RATE_SCALE;
    const sandboxes = await Sandboxes.open({
      store,
      lifecycle,
      images,
      connectors,
      capacity,
      maxMemoryMiB,
      agentOf: (id) => engine.get(id)?.agent,
      fixedAddresses: engine.accel.accel === 'tcg',
      warmPool: (dir, warmUp, clones) => engine.setWarmUp(dir, warmUp, clones),
    });
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
    // E2B sandboxes are created in bursts by agents: their templates' warm pools are filled once ready, not at a first launch.
    const prewarm = managedPrewarm(engine, images, log, (image) => sandboxes.prepareTemplate(image));
    for (const image of managedImages(engine.guest.demoApp)) {
      const demo = image.name === DEMO_IMAGE;
      if (demo ? opts.demoImage : opts.e2bImages) await ensureManagedImage(image, store, images, arns, dataDir, log, demo ? undefined : prewarm);
    }
    const chores: HousekeepingContext = { dataDir, store, images, layerCacheBytes: (opts.layerCacheMiB ?? DEFAULT_LAYER_CACHE_BYTES / 1048576) * 1048576, log };
    const housekeeping = scheduleHousekeeping(chores, capacity, lifecycle, log);
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

function readVersion(): string {
  const pkg = new URL('../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

/** A numeric server option, refused with INVALID_ARGUMENT unless it is an integer of at least `min` (0 or 1). */
function wholeNumber(n: number, min: 0 | 1, flag: string): number {
  if (!Number.isInteger(n) || n < min)
    throw new CellaError('INVALID_ARGUMENT', `${flag} must be a ${min === 0 ? 'non-negative' : 'positive'} integer, not ${n}`);
  return n;
}
