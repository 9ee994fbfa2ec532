/**
 * The `cella` command: host setup (setup, doctor, demo), the server, and
 * the client commands that drive a running server through CellaClient.
 * Exit codes: 0 ok, 1 failure, 2 usage error, 3 server unreachable.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CellaConnectionError, DEFAULT_URL } from '../client/index.js';
import { Engine } from '../engine/index.js';
import { CellaError, isCellaError } from '../contract/index.js';
import { tlsFiles } from '../tls/index.js';
import { DEFAULT_GUEST_DIR, DEMO_APP, DEMO_PORT, buildDemoRootfs, loadGuestArtifacts, setupGuest } from '../setup/index.js';
import { flag, processIo, runCommand, str, UsageError, wantsHelp, type Command, type Io, type Options, type Values } from './args.js';
import { IMAGE_USAGE, imageCommands } from './images.js';
import { KEYS_USAGE, keysCommands } from './keys.js';
import { vmCommands } from './remote.js';
import { DEFAULT_DATA_DIR, server } from './server.js';

// The suites dial endpoints with the same `*.localhost` lookup as `cella shell`.
export { localhostLookup } from './shell.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const USAGE = `Usage: cella <command> [options]

Host:
  setup [--force]          build the guest kernel, initrd (cella-init) and base root filesystems
  doctor                   check the host: QEMU, guest artifacts, accelerator in use
  demo                     boot the demo app, snapshot it, launch a clone, suspend, resume, terminate
  server                   serve the API and the endpoints until Ctrl-C (MicroVMs keep running when it stops)
  ca                       print where the endpoints' certificate authority is

Images:
  image create NAME (--zip FILE | --dir DIR | --uri URI) [options]
                           build an image from the Dockerfile in the code, following the build log
  image update NAME (--zip FILE | --dir DIR | --uri URI) [options]
                           build a new version of an image
  image ls | get NAME | versions NAME | activate/deactivate NAME VERSION | rm NAME [--version V]
  image builds NAME [VERSION] | logs NAME [-f] | bases

MicroVMs:
  run IMAGE [--version V]  launch a MicroVM and wait until it is RUNNING
  ls [--image NAME] [--all]
                           list MicroVMs (TERMINATED ones only with --all)
  get VM                   describe a MicroVM
  suspend VM               suspend to disk and wait until SUSPENDED
  resume VM                resume a SUSPENDED MicroVM
  terminate VM             terminate and wait until TERMINATED
  logs [-f] VM             print (or follow) the app's output
  token VM                 mint an endpoint token; prints the header line to send
  shell VM                 an interactive shell in the MicroVM through its endpoint (SHELL_INGRESS)
  usage [VM]               metered usage

Access keys (SigV4, for the AWS SDK):
  keys create | ls | revoke ACCESS_KEY_ID

Common options:
  --data-dir DIR           setup, doctor, demo, server: where images and VMs live (default ${DEFAULT_DATA_DIR}, env CELLA_DATA_DIR)
  --guest-dir DIR          setup, doctor, demo, server: guest artifacts (default ${DEFAULT_GUEST_DIR}, env CELLA_GUEST_DIR)
  --url URL                client commands: the server (default ${DEFAULT_URL}, env CELLA_URL)
  --api-key KEY            client commands: its API key (env CELLA_API_KEY)
  --json                   machine-readable output (the API response, for client commands)
  -h, --help               this help; \`cella <command> --help\` for a command's options

Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 cannot reach the server.
`;

// setup, doctor, demo: they work on the host directly, without a server.

interface HostOpts {
  dataDir: string;
  guestDir: string;
  json: boolean;
  force: boolean;
}

const hostOptions: Options = {
  'data-dir': { type: 'string' },
  'guest-dir': { type: 'string' },
  json: { type: 'boolean' },
  force: { type: 'boolean' },
};

const HOST_FLAGS = `Options:
  --data-dir DIR           where images and VMs live (default ${DEFAULT_DATA_DIR}, env CELLA_DATA_DIR)
  --guest-dir DIR          guest artifacts (default ${DEFAULT_GUEST_DIR}, env CELLA_GUEST_DIR)
  --json                   machine-readable output
  -h, --help               this help
`;

function hostOpts(v: Values, io: Io): HostOpts {
  return {
    dataDir: path.resolve(str(v, 'data-dir') ?? io.env.CELLA_DATA_DIR ?? DEFAULT_DATA_DIR),
    guestDir: path.resolve(str(v, 'guest-dir') ?? DEFAULT_GUEST_DIR),
    json: flag(v, 'json'),
    force: flag(v, 'force'),
  };
}

function hostCommand(usage: string, run: (opts: HostOpts, io: Io) => Promise<void>): Command {
  return {
    usage: `${usage}\n${HOST_FLAGS}`,
    options: hostOptions,
    args: { min: 0, max: 0, names: '' },
    run: async (p, io) => {
      await run(hostOpts(p.values, io), io);
      return 0;
    },
  };
}

function out(io: Io, opts: HostOpts, human: string, data: unknown): void {
  io.out(opts.json ? `${JSON.stringify(data)}\n` : `${human}\n`);
}

async function httpGet(host: string, port: number, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ host, port, path: p, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    })
      .on('error', reject)
      .end();
  });
}

const setup = hostCommand(
  'Usage: cella setup [--force]\n\nBuilds the guest kernel, initrd (cella-init) and base root filesystems. --force rebuilds them.\n',
  async (opts, io) => {
    const a = await setupGuest({ guestDir: opts.guestDir, repoRoot: REPO_ROOT, force: opts.force, log: (l) => io.out(`${l}\n`) });
    loadGuestArtifacts(a.dir);
    out(io, opts, `guest artifacts ready in ${a.dir} (kernel ${a.manifest.kernelVersion})`, { guestDir: a.dir, kernel: a.manifest.kernelVersion });
  },
);

const doctor = hostCommand('Usage: cella doctor\n\nChecks the host: QEMU, guest artifacts, the accelerator in use and why.\n', async (opts, io) => {
  const engine = await Engine.open({ dataDir: opts.dataDir, guestDir: opts.guestDir, log: () => {} });
  try {
    const g = engine.guest.manifest;
    out(
      io,
      opts,
      [`accelerator: ${engine.accel.reason}`, `guest kernel: ${g.kernelVersion}`, `guest dir: ${engine.guest.dir}`, `data dir: ${opts.dataDir}`].join('\n'),
      {
        accel: engine.accel,
        kernel: g.kernelVersion,
        guestDir: engine.guest.dir,
        dataDir: opts.dataDir,
      },
    );
  } finally {
    await engine.close();
  }
});

const demo = hostCommand(
  'Usage: cella demo\n\nBoots the demo app in a template VM, captures its snapshot, launches a clone, suspends it, resumes it and terminates it.\n',
  async (opts, io) => {
    const say = (s: string): void => {
      if (!opts.json) io.out(`${s}\n`);
    };
    const engine = await Engine.open({ dataDir: opts.dataDir, guestDir: opts.guestDir, log: say });
    const imageDir = path.join(opts.dataDir, 'images', 'demo');
    const report: Record<string, unknown> = { accel: engine.accel.accel };
    try {
      rmSync(imageDir, { recursive: true, force: true });
      mkdirSync(imageDir, { recursive: true });
      const rootfs = path.join(imageDir, 'rootfs.ext4');
      await buildDemoRootfs(engine.guest, rootfs);
      say('booting the demo app in a template VM and capturing its snapshot...');
      const snap = await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
      say(`  template booted in ${snap.templateBootMs} ms, snapshot captured in ${snap.captureMs} ms (device state ${snap.devstateBytes} bytes)`);
      let t = Date.now();
      const vm = await engine.launch(imageDir, `demo-${process.pid}`);
      const addr = vm.address(DEMO_PORT);
      const first = await httpGet(addr.host, addr.port, '/inc');
      report.launchToAnswerMs = Date.now() - t;
      say(`launched ${vm.id}; the app answered "${first}" after ${report.launchToAnswerMs as number} ms (via ${addr.host}:${addr.port})`);
      await httpGet(addr.host, addr.port, '/inc');
      const s = await engine.suspend(vm);
      report.suspend = { ms: s.ms, bytes: s.bytes };
      say(`suspended in ${s.ms} ms, ${(s.bytes / 1048576).toFixed(1)} MiB written (${s.dirtyPages} of ${s.totalPages} pages dirty)`);
      t = Date.now();
      const back = await engine.resume(vm.ref);
      const counter = await httpGet(addr.host, addr.port, '/inc');
      report.resumeToAnswerMs = Date.now() - t;
      say(`resumed; the counter kept in guest RAM reads ${counter} after ${report.resumeToAnswerMs as number} ms`);
      await engine.terminate(back.ref);
      say('terminated; nothing left behind');
      if (opts.json) out(io, opts, '', report);
    } finally {
      await engine.close();
    }
  },
);

const ca = hostCommand(
  'Usage: cella ca\n\nPrints where the certificate authority of the endpoints is (made at the first `cella server`), for `curl --cacert` or a trust store.\n',
  async (opts, io) => {
    const file = tlsFiles(opts.dataDir).ca;
    if (!existsSync(file))
      throw new CellaError('NOT_FOUND', `no CA at ${file} yet: \`cella server\` makes it at its first start (unless it was given --tls-cert)`);
    out(io, opts, file, { caFile: file, pem: readFileSync(file, 'utf8') });
  },
);

const COMMANDS: Record<string, Command> = { setup, doctor, demo, server, ca, ...vmCommands };

/** Commands with subcommands: `cella image ls`, `cella keys create`. */
const GROUPS: Record<string, { usage: string; commands: Record<string, Command> }> = {
  image: { usage: IMAGE_USAGE, commands: imageCommands },
  keys: { usage: KEYS_USAGE, commands: keysCommands },
};

/** Flags that take a value, so the command can be found after them (`cella --url U ls`). */
const VALUE_FLAGS = new Set(['--data-dir', '--guest-dir', '--url', '--api-key']);

/** Splits off the first positional argument (the command); the rest keeps its order. */
function splitCommand(argv: string[]): { command: string | undefined; rest: string[] } {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') break;
    if (!a.startsWith('-')) return { command: a, rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
    if (VALUE_FLAGS.has(a)) i++;
  }
  return { command: undefined, rest: argv };
}

async function dispatch(argv: string[], io: Io): Promise<number> {
  const { command, rest } = splitCommand(argv);
  if (command === undefined) {
    if (wantsHelp(argv)) {
      io.out(USAGE);
      return 0;
    }
    throw new UsageError('no command given');
  }
  const group = GROUPS[command];
  if (group) {
    const sub = splitCommand(rest);
    if (sub.command === undefined && wantsHelp(rest)) {
      io.out(group.usage);
      return 0;
    }
    return withUsage(group.usage, async () => {
      if (sub.command === undefined) throw new UsageError(`missing the ${command} subcommand`);
      const cmd = group.commands[sub.command];
      if (!cmd) throw new UsageError(`unknown ${command} subcommand "${sub.command}"`);
      return withUsage(cmd.usage, () => runCommand(cmd, sub.rest, io));
    });
  }
  const cmd = COMMANDS[command];
  if (!cmd) throw new UsageError(`unknown command "${command}"`);
  return withUsage(cmd.usage, () => runCommand(cmd, rest, io));
}

async function withUsage(usage: string, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof UsageError) err.usage ??= usage;
    throw err;
  }
}

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`cella: ${err.message}\n${err.showUsage ? `\n${err.usage ?? USAGE}` : ''}`);
      return 2;
    }
    const json = argv.includes('--json');
    if (err instanceof CellaConnectionError) {
      io.err(`cella: ${err.message}. Is the server running? Start it with \`cella server\`, or point --url / CELLA_URL at it.\n`);
      return 3;
    }
    const e = isCellaError(err) ? err : new CellaError('COMMAND_FAILED', (err as Error)?.message ?? String(err));
    if (json) io.err(`${JSON.stringify({ error: e.toJSON() })}\n`);
    else io.err(`cella: ${e.code}: ${e.message}\n`);
    return 1;
  }
}
