/**
 * The two-servers drill (issue 11): several cellads on one host. A restart
 * whose saved DNS port another process took still starts, moves the port and
 * keeps DNS for the VMs that outlived it; a start that cannot go on (a port
 * taken) exits non-zero within seconds with one clear line and leaves
 * nothing behind; one cellad's restart and reclaim never touch another's VMs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { run } from '../../src/host/index.js';
import { GUEST, udpPortsBound } from '../../src/net/index.js';
import { startServer, type CellaServer, type ServerOptions } from '../../src/server/index.js';
import { API_KEY, V, api, createImage, shutdown, waitState, type MicrovmBody } from '../control-helpers.js';
import { startDnsUpstream } from '../fixtures/dns-upstream.js';
import { tempDataDir } from '../helpers.js';
import { demoGet, startDaemon, summary } from './harness.js';
import { hostState } from './host-state.js';

const CLI = path.join(import.meta.dirname, '..', 'fixtures', 'cli.ts');
const PROBE = '203.0.113.77';

/** The ports in the host guard's dns_ports set. */
async function guardDnsPorts(): Promise<number[]> {
  const out = await run('nft', ['list', 'set', 'inet', 'cella_guard', 'dns_ports']).catch(() => '');
  const m = /elements = \{([^}]*)\}/.exec(out);
  return m
    ? (m[1] as string)
        .split(',')
        .map((x) => Number(x.trim()))
        .filter(Number.isInteger)
    : [];
}

describe('two servers on one host', { concurrency: false }, () => {
  let upstream: dgram.Socket;
  let checks = 0;
  const dirs: string[] = [];
  const servers: CellaServer[] = [];
  const opts = (dataDir: string): ServerOptions => ({
    dataDir,
    port: 0,
    proxyPort: 0,
    apiKey: API_KEY,
    minIdleSeconds: 1,
    resumeWindowSeconds: 0,
    dnsUpstream: { address: '127.0.0.1', port: upstream.address().port },
    log: () => {},
  });
  const start = async (dataDir: string): Promise<CellaServer> => {
    const s = await startServer(opts(dataDir));
    servers.push(s);
    return s;
  };
  const stop = async (s: CellaServer): Promise<void> => {
    servers.splice(servers.indexOf(s), 1);
    await s.close();
  };
  const runVm = async (s: CellaServer): Promise<string> => {
    const r = await api<MicrovmBody>(s.url, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
    assert.equal(r.status, 200, r.text);
    return (await waitState(s.url, r.body.microvmId, ['RUNNING'])).microvmId;
  };
  const resolves = async (s: CellaServer, id: string): Promise<boolean> => {
    const vm = s.engine.get(id);
    assert.ok(vm, `${id} runs`);
    const r = await vm.agent.exec({ argv: ['/bin/busybox', 'nslookup', '-type=a', 'probe.test', GUEST.gateway] }, { timeoutMs: 30_000 });
    return r.stdout.toString().includes(PROBE);
  };

  before(async () => {
    upstream = await startDnsUpstream({ 'probe.test': PROBE });
  });

  after(async () => {
    for (const s of [...servers]) await shutdown(s).catch(() => {});
    upstream.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    summary(`two-servers: ${checks} checks passed`);
  });

  test('a restart whose DNS port another process took moves it and keeps DNS for the VMs that ran on', { timeout: 10 * 60_000 }, async () => {
    const dir = tempDataDir('two-b');
    dirs.push(dir);
    let b = await start(dir);
    assert.equal((await createImage(b.url, 'demo')).build.buildState, 'SUCCESSFUL');
    const id = await runVm(b);
    assert.ok(await resolves(b, id), 'DNS works before the restart');
    const port = Number((await b.store.getSecret('dns-port'))?.toString());
    await stop(b);
    // Another process (another cellad's forwarder, say) takes the port meanwhile.
    const squatter = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => squatter.bind(port, '0.0.0.0', resolve));
    try {
      b = await start(dir);
      const moved = Number((await b.store.getSecret('dns-port'))?.toString());
      assert.notEqual(moved, port, 'the saved port was updated');
      assert.equal((await api<MicrovmBody>(b.url, 'GET', `${V}/microvms/${id}`)).body.state, 'RUNNING');
      assert.equal(await demoGet(dir, id, '/get'), '0');
      assert.ok(await resolves(b, id), 'the VM that ran on still resolves, through the new port');
      assert.ok((await guardDnsPorts()).includes(moved));
      checks += 4;
      await shutdown(b);
      servers.splice(servers.indexOf(b), 1);
      assert.ok(!(await guardDnsPorts()).includes(moved), 'a stopped cellad closes its DNS port in the guard');
      checks++;
    } finally {
      squatter.close();
    }
  });

  test('a start that cannot go on exits non-zero within seconds, says why in one line, and leaves nothing behind', { timeout: 5 * 60_000 }, async () => {
    const dir = tempDataDir('two-fail');
    dirs.push(dir);
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    const guardBefore = await guardDnsPorts();
    try {
      for (const flags of [
        ['--port', String(port), '--proxy-port', '0'],
        ['--port', '0', '--proxy-port', String(port)],
      ]) {
        const t0 = Date.now();
        const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'server', '--data-dir', dir, ...flags], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, CELLA_API_KEY: API_KEY },
        });
        let err = '';
        child.stderr.on('data', (c: Buffer) => (err += c.toString()));
        const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
        const lines = err.trim().split('\n').filter(Boolean);
        assert.equal(code, 1, err);
        assert.equal(lines.length, 1, `one line: ${err}`);
        assert.match(lines[0] as string, new RegExp(`port ${port} .*already in use \\(${flags[flags.indexOf(String(port)) - 1]}\\)`));
        assert.ok(Date.now() - t0 < 30_000, `exited within seconds (${Date.now() - t0} ms; a bound, this includes tsx's start)`);
        assert.ok(!existsSync(path.join(dir, 'cellad.pid')), 'the lock is released');
        assert.ok(!existsSync(path.join(dir, 'cella.db')), 'nothing was made before the checks');
        checks += 4;
      }
      const h = hostState(dir);
      assert.deepEqual([h.qemus.size, h.namespaces.length, h.cgroups.length], [0, 0, 0]);
      // Other cellads on this host may open ports meanwhile; none may be left that nothing serves.
      const added = (await guardDnsPorts()).filter((p) => !guardBefore.includes(p));
      const bound = udpPortsBound();
      assert.deepEqual(
        added.filter((p) => !bound.has(p)),
        [],
        'no port left in the guard',
      );
      checks += 2;
    } finally {
      taken.close();
    }
  });

  test("two cellads run side by side; one's kill -9 and restart never touches the other's VMs", { timeout: 10 * 60_000 }, async () => {
    const dirA = tempDataDir('two-a');
    const dirC = tempDataDir('two-c');
    dirs.push(dirA, dirC);
    // A in a process of its own (so it can be killed with SIGKILL), C in this one.
    let a = await startDaemon(dirA);
    const c = await start(dirC);
    // A's VM, until it is terminated: a graceful stop leaves VMs running (for the next start), so a failed run must end it.
    let vmOfA: string | undefined;
    try {
      assert.equal((await createImage(a.url, 'demo')).build.buildState, 'SUCCESSFUL');
      assert.equal((await createImage(c.url, 'demo')).build.buildState, 'SUCCESSFUL');
      const runOn = async (url: string): Promise<string> => {
        const r = await api<MicrovmBody>(url, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
        assert.equal(r.status, 200, r.text);
        return (await waitState(url, r.body.microvmId, ['RUNNING'])).microvmId;
      };
      const va = await runOn(a.url);
      vmOfA = va;
      const vc = await runOn(c.url);
      await demoGet(dirA, va, '/inc');
      await demoGet(dirC, vc, '/inc');
      const cBefore = hostState(dirC);
      await a.kill();
      a = await startDaemon(dirA);
      assert.equal((await waitState(a.url, va, ['RUNNING'])).state, 'RUNNING');
      assert.equal(await demoGet(dirA, va, '/get'), '1', "A's VM was re-adopted with its RAM");
      const cAfter = hostState(dirC);
      assert.deepEqual(cAfter.qemus.get(vc), cBefore.qemus.get(vc), "C's VM kept its QEMU");
      // C's own pool may have made more meanwhile (its refill waits after a launch); A must have removed none.
      assert.deepEqual(
        cBefore.namespaces.filter((n) => !cAfter.namespaces.includes(n)),
        [],
        "C's namespaces untouched",
      );
      assert.equal(await demoGet(dirC, vc, '/get'), '1');
      assert.ok(await resolves(c, vc), "C's VM still resolves through C's forwarder");
      checks += 5;
      assert.equal((await api(a.url, 'DELETE', `${V}/microvms/${va}`)).status, 200);
      await waitState(a.url, va, ['TERMINATED']);
      vmOfA = undefined;
    } finally {
      if (vmOfA) {
        await api(a.url, 'DELETE', `${V}/microvms/${vmOfA}`).catch(() => {});
        await waitState(a.url, vmOfA, ['TERMINATED']).catch(() => {});
      }
      // A graceful stop of A, so its warm clone and spare namespaces go too.
      a.child.kill('SIGTERM');
      await a.exited;
    }
  });
});
