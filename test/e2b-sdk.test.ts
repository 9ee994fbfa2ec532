/**
 * E2B's acceptance subset with the unmodified `e2b` SDK against a real
 * `cella server` and real VMs of the `base` template, reached as the SDK
 * reaches E2B: REST under /e2b, envd and ports at
 * `https://<port>-<id>.<domain>:<proxy port>` through the TLS proxy. What the
 * other suites cover (create/list/kill in e2b-rest, the code interpreter in
 * e2b-interpreter, envd without REST in e2b-envd) is not repeated here.
 *
 * Several cases follow e2b-dev/E2B's js-sdk tests
 * (https://github.com/e2b-dev/E2B/tree/main/packages/js-sdk/tests: pty,
 * commands, files, sandbox/snapshot, sandbox/host, sandbox/secure,
 * sandbox/metrics): Copyright (c) 2023 FOUNDRYLABS, INC., MIT License.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  AuthenticationError,
  CommandExitError,
  FileNotFoundError,
  FileType,
  FilesystemEventType,
  NotEnoughSpaceError,
  Sandbox,
  SandboxError,
  SandboxNotFoundError,
  TimeoutError,
} from 'e2b';
import type { CellaServer } from '../src/server/index.js';
import { startE2bServer, type E2bServer } from './fixtures/e2b-server.js';

const T = { timeout: 180_000 };
const META = { suite: 'e2b-sdk', run: String(process.pid) };

/** Polls `cond` until it holds, up to `ms` (a bound on waiting, not a timing assertion). */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`still waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A Sandbox handle with another envd access token: the SDK's constructor is protected, a subclass may call it. */
class WithToken extends Sandbox {
  static of(sbx: Sandbox, envdAccessToken: string, opts: { apiKey: string; apiUrl: string }): Sandbox {
    return new WithToken({ ...opts, sandboxId: sbx.sandboxId, sandboxDomain: sbx.sandboxDomain, envdVersion: '0.6.4', envdAccessToken });
  }
}

describe('the e2b SDK on `base` sandboxes behind the TLS proxy', { concurrency: false }, () => {
  let e2b: E2bServer;
  let server: CellaServer;
  let opts: E2bServer['opts'];
  /** Shared by the cases that leave it as they found it. */
  let sbx: Sandbox;

  before(
    async () => {
      e2b = await startE2bServer('e2b-sdk');
      ({ server, opts } = e2b);
      sbx = await Sandbox.create('base', { ...opts, metadata: META, timeoutMs: 600_000 });
    },
    { timeout: 1_800_000 },
  );

  after(async () => {
    await e2b?.close();
  });

  test('pty: create, sendInput, output, resize, kill', T, async () => {
    let out = '';
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo pty-$((40+2)); stty size\n'));
    await until(() => /pty-42/.test(out) && /24 80/.test(out), 'the terminal to echo');
    await sbx.pty.resize(term.pid, { cols: 100, rows: 30 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size\n'));
    await until(() => /30 100/.test(out), 'the resized terminal');
    // ptyConnect: a second handle on the same terminal gets its output from then on.
    let more = '';
    const again = await sbx.pty.connect(term.pid, { onData: (d) => void (more += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('echo again-$((6*7))\n'));
    await until(() => /again-42/.test(more), 'the connected handle to see the output');
    assert.equal(await sbx.pty.kill(term.pid), true);
    await assert.rejects(term.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1);
    await assert.rejects(again.wait(), CommandExitError);
    assert.ok(!(await sbx.commands.list()).some((p) => p.pid === term.pid), 'the killed terminal is gone');
  });

  test('commands: cwd, envs, user, exit code, list, kill, sendStdin, connect', T, async () => {
    assert.equal((await sbx.commands.run('whoami; pwd; echo $OWN', { cwd: '/tmp', envs: { OWN: 'o' } })).stdout, 'user\n/tmp\no\n');
    assert.equal((await sbx.commands.run('whoami; echo $HOME', { user: 'root' })).stdout, 'root\n/root\n');
    await assert.rejects(sbx.commands.run('echo oops >&2; exit 3'), (e: unknown) => e instanceof CommandExitError && e.exitCode === 3 && e.stderr === 'oops\n');

    const sleep = await sbx.commands.run('sleep 600', { background: true });
    assert.ok((await sbx.commands.list()).some((p) => p.pid === sleep.pid && p.args.join(' ').includes('sleep 600')));
    assert.equal(await sbx.commands.kill(sleep.pid), true);
    await assert.rejects(sleep.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1);
    assert.ok(!(await sbx.commands.list()).some((p) => p.pid === sleep.pid));
    assert.equal(await sbx.commands.kill(sleep.pid), false);

    const cat = await sbx.commands.run('cat', { background: true, stdin: true });
    let seen = '';
    const again = await sbx.commands.connect(cat.pid, { onStdout: (d) => void (seen += d) });
    await sbx.commands.sendStdin(cat.pid, 'from stdin\n');
    await until(() => seen === 'from stdin\n', 'the connected handle to see the echo');
    await sbx.commands.closeStdin(cat.pid);
    assert.equal((await cat.wait()).stdout, 'from stdin\n');
    assert.equal((await again.wait()).exitCode, 0);
  });

  test('under TCG a sandbox runs processes at fixed addresses; its warm clone ran the first command and left nothing (ADR 0010)', T, async () => {
    const tcg = server.engine.accel.accel === 'tcg';
    // A sandbox from a warm clone made with the template's warm-up in place (the server's prewarm sets it first).
    await server.engine.prewarm((await server.images.runnable('base')).dir);
    const fresh = await Sandbox.create('base', { ...opts, metadata: META });
    try {
      const warmUps = (await server.engine.get(fresh.sandboxId)!.agent.listProcesses()).filter((p) => p.argv.join(' ') === '/bin/bash -l -c true');
      // Under TCG the clone ran it once, and it ended (cella-init keeps an ended exec's record for a while); under KVM it runs nothing.
      assert.deepEqual(
        warmUps.map((p) => p.status),
        tcg ? [0] : [],
      );
      const r = await fresh.commands.run('cat /proc/sys/kernel/randomize_va_space; ls -A ~; echo "[$E2B_SANDBOX_ID]"');
      assert.equal(r.stdout, `${tcg ? '0' : '2'}\n${(await sbx.commands.run('ls -A /etc/skel')).stdout}[${fresh.sandboxId}]\n`);
      // envd lists live processes only: the warm-up's is not there.
      assert.deepEqual(await fresh.commands.list(), []);
    } finally {
      await fresh.kill();
    }
  });

  test('files: write, read, list, getInfo, makeDir, rename, exists, remove, watchDir', T, async () => {
    assert.equal(await sbx.files.makeDir('f'), true);
    assert.equal(await sbx.files.makeDir('f'), false);
    const events: string[] = [];
    const watch = await sbx.files.watchDir('f', (e) => void events.push(`${e.type} ${e.name}`), { recursive: true });
    const w = await sbx.files.write('f/a.txt', 'content');
    assert.equal(w.path, '/home/user/f/a.txt');
    assert.equal(await sbx.files.read('f/a.txt'), 'content');
    const info = await sbx.files.getInfo('f/a.txt');
    assert.deepEqual([info.name, info.type, info.size, info.owner], ['a.txt', FileType.FILE, 7, 'user']);
    assert.deepEqual(
      (await sbx.files.list('f')).map((e) => [e.name, e.type]),
      [['a.txt', FileType.FILE]],
    );
    await sbx.files.rename('f/a.txt', 'f/b.txt');
    assert.equal(await sbx.files.exists('f/a.txt'), false);
    assert.equal(await sbx.files.exists('f/b.txt'), true);
    await sbx.files.remove('f/b.txt');
    await until(() => events.includes(`${FilesystemEventType.REMOVE} b.txt`), 'the watch to see the removal', 30_000);
    await watch.stop();
    assert.ok(events.includes(`${FilesystemEventType.CREATE} a.txt`), events.join(', '));
    assert.ok(events.includes(`${FilesystemEventType.RENAME} a.txt`), events.join(', '));
    await sbx.files.remove('f');
    assert.equal(await sbx.files.exists('f'), false);
    await assert.rejects(sbx.files.read('f/b.txt'), FileNotFoundError);
  });

  test('signed URLs: upload and download through the proxy; an altered signature is refused', T, async () => {
    const up = await sbx.uploadUrl('signed/s.txt', { useSignatureExpiration: 120 });
    const form = new FormData();
    form.append('file', new Blob(['signed content']), 's.txt');
    const posted = await fetch(up, { method: 'POST', body: form });
    assert.equal(posted.status, 200, await posted.clone().text());
    assert.equal(await sbx.files.read('signed/s.txt'), 'signed content');
    const down = await sbx.downloadUrl('signed/s.txt');
    const got = await fetch(down);
    assert.deepEqual([got.status, await got.text()], [200, 'signed content']);
    const altered = new URL(down);
    altered.searchParams.set('signature', `${altered.searchParams.get('signature') ?? ''}x`);
    assert.equal((await fetch(altered)).status, 401);
    const unsigned = new URL(down);
    unsigned.searchParams.delete('signature');
    assert.equal((await fetch(unsigned)).status, 401);
  });

  test('getHost: a server in the sandbox over https; with allowPublicTraffic false the traffic token is required', T, async () => {
    const serve = async (s: Sandbox): Promise<void> => {
      await s.files.write('www/hello.txt', 'hello from the sandbox');
      await s.commands.run('python -m http.server 8000 --directory www', { background: true });
    };
    await serve(sbx);
    const url = `https://${sbx.getHost(8000)}/hello.txt`;
    await until(async () => (await fetch(url).catch(() => undefined))?.status === 200, 'the http server', 90_000);
    assert.equal(await (await fetch(url)).text(), 'hello from the sandbox');

    const closed = await Sandbox.create('base', { ...opts, metadata: META, network: { allowPublicTraffic: false } });
    try {
      assert.ok(closed.trafficAccessToken, 'a traffic token is given');
      await serve(closed);
      const host = `https://${closed.getHost(8000)}/hello.txt`;
      const withToken = { headers: { 'e2b-traffic-access-token': closed.trafficAccessToken ?? '' } };
      await until(async () => (await fetch(host, withToken).catch(() => undefined))?.status === 200, 'the protected http server', 90_000);
      assert.equal(await (await fetch(host, withToken)).text(), 'hello from the sandbox');
      const refused = await fetch(host);
      assert.equal(refused.status, 403, await refused.text());
      assert.equal((await fetch(host, { headers: { 'e2b-traffic-access-token': 'not-the-token' } })).status, 403);
    } finally {
      await closed.kill();
    }
  });

  test('metrics, setTimeout, getInfo, list by metadata', T, async () => {
    await until(async () => (await sbx.getMetrics()).length > 0, 'a metrics entry', 60_000);
    const [m] = await sbx.getMetrics();
    assert.ok(m && m.cpuCount > 0 && m.memTotal > 0 && m.diskTotal > 0, JSON.stringify(m));
    await sbx.setTimeout(300_000);
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, 'base');
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, META);
    assert.ok(info.endAt.getTime() <= Date.now() + 300_000 && info.endAt.getTime() > Date.now() + 200_000);
    const listed = await Sandbox.list({ ...opts, query: { metadata: META } }).nextItems();
    assert.deepEqual(
      listed.map((s) => s.sandboxId),
      [sbx.sandboxId],
    );
    assert.deepEqual(await Sandbox.list({ ...opts, query: { metadata: { suite: 'none-such' } } }).nextItems(), []);
  });

  test('timeout: a sandbox past its end is gone (isRunning false, getInfo not found)', T, async () => {
    const short = await Sandbox.create('base', { ...opts, metadata: META, timeoutMs: 3_000 });
    assert.equal(await short.isRunning(), true);
    await until(async () => !(await short.isRunning()), 'the sandbox to end', 60_000);
    await assert.rejects(short.getInfo(), SandboxNotFoundError);
  });

  test('bad input: each a clear SDK error, and nothing else changes', T, async () => {
    await server.lifecycle.settle();
    const live = (await server.store.liveVms()).length;
    await assert.rejects(
      Sandbox.create('no-such-template', opts),
      (e: unknown) => e instanceof SandboxError && e.statusCode === 404 && /no-such-template/.test(e.message),
    );
    await assert.rejects(Sandbox.create('base', { ...opts, apiKey: 'cella_not-a-key' }), AuthenticationError);
    assert.equal((await server.store.liveVms()).length, live, 'nothing launched');

    const forged = WithToken.of(sbx, 'not-the-envd-token', opts);
    await assert.rejects(forged.commands.run('touch /tmp/forged'), AuthenticationError);
    await assert.rejects(forged.files.write('forged.txt', 'x'), AuthenticationError);
    await assert.rejects(forged.files.read('/etc/hostname'), AuthenticationError);
    assert.equal(await sbx.files.exists('/tmp/forged'), false);
    assert.equal(await sbx.files.exists('forged.txt'), false);

    // What the user may not touch. envd writes files as root and gives them to the user, as E2B's does
    // (envd/internal/api/upload.go), so the kernel's own refusals are what is left: a read-only mount, and a
    // command run as `user`.
    await sbx.commands.run('mkdir -p /mnt/ro && mount -t tmpfs -o ro,size=64k tmpfs /mnt/ro', { user: 'root' });
    // The SDK has no class for 403 or permission_denied: a SandboxError that names the status.
    const denied = (status: string) => (e: unknown) => e instanceof SandboxError && e.message.startsWith(status) && /read-only/i.test(e.message);
    await assert.rejects(sbx.files.write('/mnt/ro/x', 'no'), denied('403: '));
    await assert.rejects(sbx.files.makeDir('/mnt/ro/d'), denied('7: [permission_denied] '));
    assert.deepEqual(await sbx.files.list('/mnt/ro'), []);
    await sbx.commands.run('umount /mnt/ro', { user: 'root' });
    await assert.rejects(
      sbx.commands.run('touch /root/x'),
      (e: unknown) => e instanceof CommandExitError && e.exitCode === 1 && /Permission denied/.test(e.stderr),
    );
    assert.equal(await sbx.files.exists('/root/x'), false);

    // A disk too small for the file: 507, NotEnoughSpaceError; the sandbox goes on.
    await sbx.commands.run('mkdir -p /mnt/small && mount -t tmpfs -o size=64k tmpfs /mnt/small && chmod 1777 /mnt/small', { user: 'root' });
    await assert.rejects(sbx.files.write('/mnt/small/big.bin', new ArrayBuffer(1 << 20)), NotEnoughSpaceError);
    await assert.rejects(sbx.files.write('/mnt/small/big.bin', new ArrayBuffer(1 << 20), { useOctetStream: true }), NotEnoughSpaceError);
    assert.equal(await sbx.files.exists('/mnt/small/big.bin'), false, 'no partial file is left');
    assert.equal((await sbx.files.write('/mnt/small/ok.txt', 'fits')).path, '/mnt/small/ok.txt');
    assert.equal(await sbx.files.read('/mnt/small/ok.txt'), 'fits');
    await sbx.commands.run('umount /mnt/small', { user: 'root' });
  });

  test('pause and connect keep files and a running background process', T, async () => {
    await sbx.files.write('kept.txt', 'before the pause');
    const counter = await sbx.commands.run('i=0; while true; do i=$((i+1)); echo tick-$i; echo $i > count; sleep 0.2; done', { background: true });
    await until(async () => Number((await sbx.files.read('count').catch(() => '0')).trim()) > 2, 'the counter to run');
    assert.equal(await sbx.pause(), true);
    assert.equal((await sbx.getInfo()).state, 'paused');
    const countAtPause = Number((await sbx.files.read('count').catch(() => '')).trim() || 0);
    const resumed = await Sandbox.connect(sbx.sandboxId, { ...opts, timeoutMs: 600_000 });
    assert.equal((await resumed.getInfo()).state, 'running');
    assert.equal(await resumed.files.read('kept.txt'), 'before the pause');
    assert.ok(
      (await resumed.commands.list()).some((p) => p.pid === counter.pid),
      'the counter is still listed',
    );
    const atResume = Number((await resumed.files.read('count')).trim());
    let ticks = '';
    const handle = await resumed.commands.connect(counter.pid, { onStdout: (d) => void (ticks += d) });
    await until(() => /tick-\d+/.test(ticks), 'the counter to print after the resume');
    await until(async () => Number((await resumed.files.read('count')).trim()) > atResume, 'the counter to go on');
    assert.ok(atResume >= countAtPause);
    assert.equal(await resumed.commands.kill(counter.pid), true);
    await assert.rejects(handle.wait(), CommandExitError);
    sbx = resumed;
  });

  test('a killed sandbox: a run in flight and later calls fail with the SDK error for a gone sandbox', T, async () => {
    // The http server of the getHost case went through the pause too.
    const host = `https://${sbx.getHost(8000)}/hello.txt`;
    assert.equal((await fetch(host)).status, 200);
    // sandboxKilledDuringRun: the REST kill aborts the open stream through the proxy.
    const running = sbx.commands.run('sleep 120');
    await until(async () => (await sbx.commands.list()).some((p) => p.args.join(' ').includes('sleep 120')), 'the command to start');
    assert.equal(await sbx.kill(), true);
    await assert.rejects(running, (e: unknown) => e instanceof TimeoutError && /killed|end of life/.test(e.message));
    assert.equal(await sbx.kill(), false);
    await assert.rejects(sbx.getInfo(), SandboxNotFoundError);
    await assert.rejects(sbx.setTimeout(60_000), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, opts), SandboxNotFoundError);
    await assert.rejects(sbx.commands.run('true'), SandboxNotFoundError);
    await assert.rejects(sbx.files.read('kept.txt'), TimeoutError);
    await assert.rejects(sbx.files.list('.'), TimeoutError);
    const gone = await fetch(host);
    assert.equal(gone.status, 502);
    assert.equal(((await gone.json()) as { sandboxId?: string }).sandboxId, sbx.sandboxId);
    assert.equal(await sbx.isRunning(), false);
  });
});
