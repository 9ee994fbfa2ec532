/**
 * `cella server`: runs cellad in the foreground until SIGINT or SIGTERM.
 * Stopping leaves the VMs running; the next start re-adopts them.
 */
import path from 'node:path';
import { DEFAULT_URL } from '../client/index.js';
import { DEFAULT_ACCOUNT_ID, DEFAULT_REGION } from '../contract/index.js';
import {
  DEFAULT_API_PORT,
  DEFAULT_DOMAIN,
  DEFAULT_PROXY_PORT,
  DEFAULT_RESUME_WINDOW_SECONDS,
  DEFAULT_STANDBY_PRELOAD_MIB,
  DEFAULT_STANDBY_QEMUS,
  DEFAULT_API_RATE_SCALE,
  startServer,
} from '../server/index.js';
import { DEFAULT_GUEST_DIR } from '../setup/index.js';
import { int, str, UsageError, type Command } from './args.js';

export const DEFAULT_DATA_DIR = '/var/lib/cella';

export const server: Command = {
  usage: `Usage: cella server [options]

Serves the Cella API until Ctrl-C (SIGINT) or SIGTERM. Stopping leaves the
MicroVMs running; the next start re-adopts them. The first start creates an
API key and an access key (SigV4, for the AWS SDK) and prints them once, and
builds the demo app as the image "demo". CELLA_API_KEY, and CELLA_ACCESS_KEY_ID
with CELLA_SECRET_ACCESS_KEY, in the environment are accepted too.

Options:
  --port N                 port to listen on (default ${DEFAULT_API_PORT}; 0 picks a free one)
  --host H                 address to listen on (default 127.0.0.1)
  --domain D               endpoints are <id>.D (default ${DEFAULT_DOMAIN}, which resolves to loopback)
  --proxy-port N           the endpoints' HTTPS port (default ${DEFAULT_PROXY_PORT}; 443 for a service; 0 picks one)
  --tls-cert FILE          certificate (PEM, with chain) for *.D instead of the CA Cella generates
  --tls-key FILE           its private key (PEM)
  --resume-window-seconds N
                           a suspended VM's stopped QEMU is kept this long so a resume is a continue
                           (default ${DEFAULT_RESUME_WINDOW_SECONDS}; 0 frees its RAM as soon as the checkpoint is written)
  --standby-qemus N        the last N suspended VMs keep an idle QEMU so their resume skips QEMU's start
                           (default ${DEFAULT_STANDBY_QEMUS}; 0: none)
  --standby-preload-mib N  MiB of suspended VMs' pages those QEMUs may hold in advance, all together
                           (default ${DEFAULT_STANDBY_PRELOAD_MIB}, at most 1/16 of host RAM; trades RAM for a faster resume)
  --api-rate-scale N       multiplies the contract's per-caller API rates (default ${DEFAULT_API_RATE_SCALE}; 0: no throttling)
  --endpoint-rps-per-vcpu N
                           requests per second per MicroVM and vCPU at its endpoint (default 100; 0: no limit)
  --s3-endpoint URL        S3-compatible endpoint for s3:// code artifacts (credentials from
                           AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, region from AWS_REGION)
  --insecure-registry H:P  a registry image builds may pull from over plain HTTP (repeatable; loopback always may)
  --region R               the region SigV4 requests are signed for and every ARN names (default ${DEFAULT_REGION});
                           ARNs of another region are refused
  --account-id N           the 12-digit account in every customer ARN (default ${DEFAULT_ACCOUNT_ID}); a data directory
                           keeps the region and account it was first started with
  --min-idle-seconds N     lowest maxIdleDurationSeconds accepted (default 60, the contract's)
  --max-memory-mib N       quota on the baseline memory of all live MicroVMs (default host RAM;
                           guests get 4x their baseline, the contract's peak)
  --min-free-disk-mib N    below this much free disk, new runs, resumes, suspends and builds are refused
                           with InsufficientCapacityException (default: 1024 or 2 % of the disk, the larger)
  --layer-cache-mib N      bound on the image build cache (default 10240); least recently used layers go first
  --accel kvm|tcg          force the accelerator (default: KVM if a probe guest boots on it)
  --data-dir DIR           database, images, VMs, logs (default ${DEFAULT_DATA_DIR}, env CELLA_DATA_DIR)
  --guest-dir DIR          guest artifacts (default ${DEFAULT_GUEST_DIR}, env CELLA_GUEST_DIR)
  -h, --help               this help
`,
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    domain: { type: 'string' },
    region: { type: 'string' },
    'account-id': { type: 'string' },
    'proxy-port': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'min-idle-seconds': { type: 'string' },
    'resume-window-seconds': { type: 'string' },
    'standby-qemus': { type: 'string' },
    'standby-preload-mib': { type: 'string' },
    'api-rate-scale': { type: 'string' },
    'endpoint-rps-per-vcpu': { type: 'string' },
    's3-endpoint': { type: 'string' },
    'insecure-registry': { type: 'string', multiple: true },
    'max-memory-mib': { type: 'string' },
    'min-free-disk-mib': { type: 'string' },
    'layer-cache-mib': { type: 'string' },
    accel: { type: 'string' },
    'data-dir': { type: 'string' },
    'guest-dir': { type: 'string' },
  },
  args: { min: 0, max: 0, names: '' },
  async run({ values }, io) {
    const accel = str(values, 'accel');
    if (accel !== undefined && accel !== 'kvm' && accel !== 'tcg') throw new UsageError(`--accel must be kvm or tcg, not "${accel}"`);
    const port = int(values, 'port', 0, 65535);
    const proxyPort = int(values, 'proxy-port', 0, 65535);
    const tlsCertFile = str(values, 'tls-cert');
    const tlsKeyFile = str(values, 'tls-key');
    if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
    const minIdleSeconds = int(values, 'min-idle-seconds', 1);
    const resumeWindowSeconds = int(values, 'resume-window-seconds', 0, 86_400);
    const standbyQemus = int(values, 'standby-qemus', 0, 10_000);
    const standbyPreloadMiB = int(values, 'standby-preload-mib', 0);
    const apiRateScale = int(values, 'api-rate-scale', 0, 1_000_000);
    const maxMemoryMiB = int(values, 'max-memory-mib', 1);
    const minFreeDiskMiB = int(values, 'min-free-disk-mib', 0);
    const layerCacheMiB = int(values, 'layer-cache-mib', 0);
    const endpointRpsPerVcpu = int(values, 'endpoint-rps-per-vcpu', 0, 1_000_000);
    const s3Endpoint = str(values, 's3-endpoint');
    const insecure = values['insecure-registry'];
    const insecureRegistries = Array.isArray(insecure) ? insecure.filter((x): x is string => typeof x === 'string') : [];
    const host = str(values, 'host');
    const domain = str(values, 'domain');
    const region = str(values, 'region');
    const accountId = str(values, 'account-id');
    const guestDir = str(values, 'guest-dir');
    const dataDir = path.resolve(str(values, 'data-dir') ?? io.env.CELLA_DATA_DIR ?? DEFAULT_DATA_DIR);
    const srv = await startServer({
      dataDir,
      ...(guestDir !== undefined ? { guestDir: path.resolve(guestDir) } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(proxyPort !== undefined ? { proxyPort } : {}),
      ...(tlsCertFile !== undefined && tlsKeyFile !== undefined ? { tlsCertFile: path.resolve(tlsCertFile), tlsKeyFile: path.resolve(tlsKeyFile) } : {}),
      ...(host !== undefined ? { host } : {}),
      ...(domain !== undefined ? { domain } : {}),
      ...(region !== undefined ? { region } : {}),
      ...(accountId !== undefined ? { accountId } : {}),
      ...(minIdleSeconds !== undefined ? { minIdleSeconds } : {}),
      ...(resumeWindowSeconds !== undefined ? { resumeWindowSeconds } : {}),
      ...(standbyQemus !== undefined ? { standbyQemus } : {}),
      ...(standbyPreloadMiB !== undefined ? { standbyPreloadMiB } : {}),
      ...(apiRateScale !== undefined ? { apiRateScale } : {}),
      ...(maxMemoryMiB !== undefined ? { maxMemoryMiB } : {}),
      ...(minFreeDiskMiB !== undefined ? { minFreeDiskMiB } : {}),
      ...(layerCacheMiB !== undefined ? { layerCacheMiB } : {}),
      ...(endpointRpsPerVcpu !== undefined ? { endpointRpsPerVcpu } : {}),
      ...(s3Endpoint !== undefined
        ? {
            s3: {
              endpoint: s3Endpoint,
              ...(io.env.AWS_REGION ? { region: io.env.AWS_REGION } : {}),
              ...(io.env.AWS_ACCESS_KEY_ID ? { accessKeyId: io.env.AWS_ACCESS_KEY_ID } : {}),
              ...(io.env.AWS_SECRET_ACCESS_KEY ? { secretAccessKey: io.env.AWS_SECRET_ACCESS_KEY } : {}),
            },
          }
        : {}),
      ...(insecureRegistries.length ? { insecureRegistries } : {}),
      ...(accel !== undefined ? { accel } : {}),
      demoImage: true,
      e2bImages: true,
      log: (line) => io.err(`cellad: ${line}\n`),
    });
    io.out(`cella server: listening on ${srv.url} (data ${dataDir}); Ctrl-C stops it, MicroVMs keep running\n`);
    if (srv.url !== DEFAULT_URL) io.out(`  export CELLA_URL=${srv.url}\n`);
    io.out(`endpoints: https://<microvm-id>.${srv.domain}:${srv.proxyPort}${srv.caFile ? ` (CA: ${srv.caFile}; curl --cacert it)` : ''}\n`);
    if (srv.newApiKey) {
      io.out(
        `\nA new API key was created. Save it: it is shown once.\n  export CELLA_API_KEY=${srv.newApiKey}\n` +
          `(The key in CELLA_API_KEY when the server starts is accepted too.)\n\n`,
      );
    }
    if (srv.newAccessKey) {
      io.out(
        `A new access key (SigV4, for the AWS SDK; region ${srv.region}) was created. Save it: it is shown once.\n` +
          `  export AWS_ACCESS_KEY_ID=${srv.newAccessKey.accessKeyId}\n  export AWS_SECRET_ACCESS_KEY=${srv.newAccessKey.secretAccessKey}\n` +
          `(\`cella keys create\` makes more; CELLA_ACCESS_KEY_ID and CELLA_SECRET_ACCESS_KEY when the server starts are accepted too.)\n\n`,
      );
    }
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const stop = (s: NodeJS.Signals): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve(s);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    io.out(`cella server: ${signal}: stopping; MicroVMs keep running and the next start re-adopts them\n`);
    await srv.close();
    return 0;
  },
};
