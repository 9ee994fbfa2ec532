/**
 * envd on the host against a real VM and the real, unmodified e2b SDK: a
 * clone of a Debian 12 image with an E2B-style `user`, served by the envd
 * handler on plain HTTP (E2B_DEBUG mode with sandboxUrl: no REST facade
 * involved), through the guest agent. Commands, exit codes, users, stdin,
 * signals, listing, a terminal, files.
 */
import assert from 'node:assert/strict';
import { appendFileSync, chownSync, cpSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, FilesystemEventType, Sandbox } from 'e2b';
import { ext4FromDir } from '../src/disk/index.js';
import { createEnvdHandler } from '../src/e2b/index.js';
import { Engine, type RunningVm } from '../src/engine/index.js';
import { DEMO_APP, DEMO_PORT, baseTree } from '../src/setup/index.js';
import { tempDataDir } from './helpers.js';

const T = { timeout: 120_000 };
let dataDir: string;
let engine: Engine;
let vm: RunningVm;
let server: Server;
let sandboxUrl: string;
/** Set by the kill test: the sandbox is gone for envd (as once its VM terminates). */
let killed = false;
let envd: ReturnType<typeof createEnvdHandler>;
const connect = (): Promise<Sandbox> => Sandbox.create({ debug: true, sandboxUrl, apiKey: 'unused' });

before(
  async () => {
    dataDir = tempDataDir('e2b-envd');
    engine = await Engine.open({ dataDir, log: () => {}, warmNetworks: 1, warmClones: 0 });
    // Debian 12 with bash, cella-demo as the app, and the `user` an E2B template has.
    const stage = path.join(dataDir, 'stage');
    cpSync(baseTree(engine.guest, 'debian-12'), stage, { recursive: true, verbatimSymlinks: true });
    cpSync(engine.guest.demoApp, path.join(stage, 'usr/bin/cella-demo'));
    appendFileSync(path.join(stage, 'etc/passwd'), 'user:x:1000:1000::/home/user:/bin/bash\n');
    appendFileSync(path.join(stage, 'etc/group'), 'user:x:1000:\n');
    mkdirSync(path.join(stage, 'home/user'), { recursive: true });
    chownSync(path.join(stage, 'home/user'), 1000, 1000);
    const rootfs = path.join(dataDir, 'debian.ext4');
    await ext4FromDir(stage, rootfs, 512);
    rmSync(stage, { recursive: true, force: true });
    const imageDir = path.join(dataDir, 'images', 'debian');
    await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
    vm = await engine.launch(imageDir, `e2b-envd-${process.pid}`);
    envd = createEnvdHandler({
      agent: (id) => (id === 'sbx' && !killed ? vm.agent : undefined),
      defaults: async () => ({ user: 'user', envVars: { FROM_CREATE: 'yes' } }),
    });
    server = createServer((req, res) => envd.handle('sbx', req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    sandboxUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  },
  { timeout: 600_000 },
);

after(async () => {
  server?.closeAllConnections();
  server?.close();
  if (vm) await engine.terminate(vm.ref);
  await engine?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('the e2b SDK on a real VM', () => {
  test('commands.run: output, exit codes, the default user, env vars, cwd', T, async () => {
    const sbx = await connect();
    assert.equal((await sbx.commands.run('echo hi')).stdout, 'hi\n');
    await assert.rejects(sbx.commands.run('echo oops >&2; exit 3'), (e: unknown) => e instanceof CommandExitError && e.exitCode === 3 && e.stderr === 'oops\n');
    assert.equal((await sbx.commands.run('whoami; pwd; echo $FROM_CREATE $OWN')).stdout, 'user\n/home/user\nyes\n');
    assert.equal((await sbx.commands.run('whoami; pwd; echo $OWN', { user: 'root', cwd: '/tmp', envs: { OWN: 'o' } })).stdout, 'root\n/tmp\no\n');
  });

  test('background: sendStdin, closeStdin, list, kill', T, async () => {
    const sbx = await connect();
    const cat = await sbx.commands.run('cat', { background: true, stdin: true });
    await sbx.commands.sendStdin(cat.pid, 'from stdin\n');
    assert.ok((await sbx.commands.list()).some((p) => p.pid === cat.pid && p.args.includes('cat')));
    await sbx.commands.closeStdin(cat.pid);
    assert.equal((await cat.wait()).stdout, 'from stdin\n');

    const sleep = await sbx.commands.run('sleep 600', { background: true });
    assert.equal(await sbx.commands.kill(sleep.pid), true);
    await assert.rejects(sleep.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1);
    assert.equal(await sbx.commands.kill(sleep.pid), false);
  });

  test('pty: a login shell that echoes what is typed', T, async () => {
    const sbx = await connect();
    let out = '';
    const t = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(t.pid, new TextEncoder().encode('echo pty-$((40+2)); exit\n'));
    await t.wait().catch(() => {});
    assert.match(out, /pty-42/);
  });

  test('files: write, read, list, exists, rename, remove', T, async () => {
    const sbx = await connect();
    const w = await sbx.files.write('dir/a.txt', 'content');
    assert.equal(w.path, '/home/user/dir/a.txt');
    assert.equal(await sbx.files.read('dir/a.txt'), 'content');
    assert.equal((await sbx.commands.run('stat -c %U dir/a.txt')).stdout, 'user\n');
    assert.deepEqual(
      (await sbx.files.list('dir')).map((e) => e.name),
      ['a.txt'],
    );
    await sbx.files.rename('dir/a.txt', 'dir/b.txt');
    assert.equal(await sbx.files.exists('dir/a.txt'), false);
    await sbx.files.remove('dir');
    assert.equal(await sbx.files.exists('dir/b.txt'), false);
  });

  test('watchDir: recursive inotify with entries, a directory made later followed', T, async () => {
    const sbx = await connect();
    await sbx.files.makeDir('w');
    const seen: string[] = [];
    const h = await sbx.files.watchDir('w', (e) => void seen.push(`${e.type} ${e.name}${e.entry ? ` ${e.entry.size}` : ''}`), {
      recursive: true,
      includeEntry: true,
    });
    await sbx.commands.run('mkdir w/sub && sleep 0.5 && printf abc > w/sub/f && rm w/sub/f');
    for (let i = 0; i < 100 && !seen.some((x) => x.startsWith(`${FilesystemEventType.REMOVE} sub/f`)); i++) await new Promise((r) => setTimeout(r, 100));
    await h.stop();
    assert.ok(seen.includes(`${FilesystemEventType.CREATE} sub 4096`), seen.join(', '));
    assert.ok(
      seen.some((x) => x.startsWith(`${FilesystemEventType.CREATE} sub/f`)),
      seen.join(', '),
    );
    assert.ok(seen.includes(`${FilesystemEventType.REMOVE} sub/f`), seen.join(', '));
  });

  test('metadata as xattrs, gzip both ways', T, async () => {
    const sbx = await connect();
    const w = await sbx.files.write('m.txt', 'meta', { metadata: { Origin: 'test' } });
    assert.deepEqual(w.metadata, { origin: 'test' });
    assert.deepEqual((await sbx.files.getInfo('m.txt')).metadata, { origin: 'test' });
    await sbx.files.write('z.txt', 'z'.repeat(10000), { gzip: true });
    assert.equal(await sbx.files.read('z.txt', { gzip: true }), 'z'.repeat(10000));
  });

  test('a killed sandbox: open streams abort and the SDK says the sandbox was killed', T, async () => {
    const sbx = await connect();
    const running = sbx.commands.run('sleep 30');
    await new Promise((r) => setTimeout(r, 1000));
    killed = true;
    envd.abort('sbx');
    try {
      await assert.rejects(running, /killed|end of life/);
    } finally {
      killed = false;
    }
  });
});
