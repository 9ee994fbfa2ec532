/**
 * The `cella` command. This commands: setup, doctor, demo.
 * Exit codes: 0 ok, 1 failure, 2 usage error.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Engine } from '../engine/index.js';
import { CellaError, isCellaError } from '../errors/index.js';
import { DEFAULT_GUEST_DIR, DEMO_APP, DEMO_PORT, buildDemoRootfs, loadGuestArtifacts, setupGuest } from '../setup/index.js';

const DEFAULT_DATA_DIR = process.env.CELLA_DATA_DIR ?? '/var/lib/cella';
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const USAGE = `Usage: cella <command> [options]

Commands:
  setup [--force]        build the guest kernel, initrd (cella-init) and base root filesystems
  doctor                 check the host: QEMU, guest artifacts, accelerator in use
  demo                   boot the demo app, snapshot it, launch a clone, suspend, resume, terminate

Options:
  --data-dir DIR         where images and VMs live (default ${DEFAULT_DATA_DIR}, env CELLA_DATA_DIR)
  --guest-dir DIR        guest artifacts (default ${DEFAULT_GUEST_DIR}, env CELLA_GUEST_DIR)
  --json                 machine-readable output
  -h, --help             this help
`;

interface Opts {
  dataDir: string;
  guestDir: string;
  json: boolean;
  force: boolean;
}

function out(opts: Opts, human: string, data: unknown): void {
  process.stdout.write(opts.json ? `${JSON.stringify(data)}\n` : `${human}\n`);
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

async function doctor(opts: Opts): Promise<void> {
  const engine = await Engine.open({ dataDir: opts.dataDir, guestDir: opts.guestDir, log: () => {} });
  try {
    const g = engine.guest.manifest;
    out(opts, [`accelerator: ${engine.accel.reason}`, `guest kernel: ${g.kernelVersion}`, `guest dir: ${engine.guest.dir}`, `data dir: ${opts.dataDir}`].join('\n'), {
      accel: engine.accel,
      kernel: g.kernelVersion,
      guestDir: engine.guest.dir,
      dataDir: opts.dataDir,
    });
  } finally {
    await engine.close();
  }
}

async function demo(opts: Opts): Promise<void> {
  const say = (s: string): void => {
    if (!opts.json) process.stdout.write(`${s}\n`);
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
    if (opts.json) out(opts, '', report);
  } finally {
    await engine.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'data-dir': { type: 'string' },
        'guest-dir': { type: 'string' },
        json: { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    process.stderr.write(`cella: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const command = positionals[0];
  if (values.help || !command) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const opts: Opts = {
    dataDir: path.resolve(values['data-dir'] ?? DEFAULT_DATA_DIR),
    guestDir: path.resolve(values['guest-dir'] ?? DEFAULT_GUEST_DIR),
    json: values.json ?? false,
    force: values.force ?? false,
  };
  try {
    switch (command) {
      case 'setup': {
        const a = await setupGuest({ guestDir: opts.guestDir, repoRoot: REPO_ROOT, force: opts.force, log: (l) => process.stdout.write(`${l}\n`) });
        loadGuestArtifacts(a.dir);
        out(opts, `guest artifacts ready in ${a.dir} (kernel ${a.manifest.kernelVersion})`, { guestDir: a.dir, kernel: a.manifest.kernelVersion });
        return 0;
      }
      case 'doctor':
        await doctor(opts);
        return 0;
      case 'demo':
        await demo(opts);
        return 0;
      default:
        process.stderr.write(`cella: unknown command "${command}"\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    const e = isCellaError(err) ? err : new CellaError('COMMAND_FAILED', (err as Error).message ?? String(err));
    if (opts.json) process.stderr.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
    else process.stderr.write(`cella: ${e.code}: ${e.message}\n`);
    return 1;
  }
}
