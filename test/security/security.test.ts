/**
 * npm run test:security
 *
 * Attacks against a real cellad and real VMs, from inside a guest and from
 * outside. The API and the proxy listen on every host address here, so a
 * guest that got past its namespace would find them. Each attack must fail
 * without harming the host or the other VM (which must keep answering
 * through its endpoint). Prints how many attacks were tried and blocked.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { connect as h2connect } from 'node:http2';
import { localhostLookup } from '../../src/cli/index.js';
import { after, before, describe, test } from 'node:test';
import { Arns } from '../../src/contract/index.js';
import { TokenMinter } from '../../src/auth/index.js';
import { vmFiles } from '../../src/engine/index.js';
import { GUEST, slotAddresses } from '../../src/net/index.js';
import { startServer, type CellaServer } from '../../src/server/index.js';
import { API_KEY, V, api, createImage, endpointRequest, shutdown, waitState, type MicrovmBody } from '../control-helpers.js';
import { alive, processesWith, tempDataDir } from '../helpers.js';

/** The ARNs of a server started with the default region and account. */
const ARNS = new Arns();

interface Outcome {
  name: string;
  blocked: boolean;
  detail: string;
}

describe('security: attacks from a guest and from outside', { concurrency: false }, () => {
  let dir: string;
  let server: CellaServer;
  let base: string;
  let ca: Buffer;
  let hostService: Server;
  let hostPort: number;
  /** The victim: every attack is also checked against its health. */
  let victim: string;
  let victimToken: string;
  const outcomes: Outcome[] = [];

  const record = (name: string, blocked: boolean, detail = ''): void => {
    outcomes.push({ name, blocked, detail });
  };

  const endpoint = (id: string, p: string, headers: Record<string, string>): Promise<{ status: number; body: string }> =>
    endpointRequest(server, ca, id, p, headers);

  const flood = async (id: string, tokenValue: string, n: number): Promise<number[]> => {
    const host = `${id}.${server.domain}`;
    const session = h2connect(`https://${host}:${server.proxyPort}`, { ca, lookup: localhostLookup });
    try {
      return await Promise.all(
        Array.from(
          { length: n },
          () =>
            new Promise<number>((resolve) => {
              const req = session.request({ ':path': '/', 'x-aws-proxy-auth': tokenValue });
              req.on('response', (h) => resolve(Number(h[':status'])));
              req.on('error', () => resolve(0));
              req.resume();
              req.end();
            }),
        ),
      );
    } finally {
      session.close();
    }
  };

  const launch = async (body: Record<string, unknown> = {}): Promise<string> => {
    const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo', ...body });
    assert.equal(r.status, 200, r.text);
    await waitState(base, r.body.microvmId, ['RUNNING']);
    return r.body.microvmId;
  };
  const tokenFor = async (id: string, ports: unknown[] = [{ port: 8080 }]): Promise<string> => {
    const r = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${id}/auth-token`, {
      expirationInMinutes: 10,
      allowedPorts: ports,
    });
    assert.equal(r.status, 200, r.text);
    return r.body.authToken['X-aws-proxy-auth'] as string;
  };
  /** Runs a shell command in the guest (busybox); resolves to its exit code (null: killed). */
  const inGuest = async (id: string, script: string, timeoutMs = 30_000): Promise<{ code: number | null; out: string }> => {
    const vm = server.engine.get(id);
    assert.ok(vm, `VM ${id} runs`);
    const r = await vm.agent
      .exec({ argv: ['/bin/busybox', 'sh', '-c', script] }, { timeoutMs })
      .catch((err: Error) => ({ exitCode: null, stdout: Buffer.from(''), stderr: Buffer.from(err.message) }));
    return { code: r.exitCode, out: `${r.stdout.toString()}${r.stderr.toString()}`.trim() };
  };
  /** Whether the guest can open a TCP connection to host:port. */
  const connects = async (id: string, host: string, port: number): Promise<boolean> => (await reachable(id, [[host, port]])).has(`${host}:${port}`);
  /** Which of `targets` the guest can open a TCP connection to, all tried at once (a blocked one waits out nc's 3 s). */
  const reachable = async (id: string, targets: [string, number][]): Promise<Set<string>> => {
    const script = targets.map(([h, p]) => `(/bin/busybox nc -w 3 ${h} ${p} </dev/null >/dev/null 2>&1 && echo "open ${h}:${p}") &`).join('\n');
    const { out } = await inGuest(id, `${script}\nwait`, 60_000);
    return new Set([...out.matchAll(/^open (\S+)$/gm)].map((m) => m[1] as string));
  };
  const victimHealthy = async (): Promise<boolean> =>
    (await endpoint(victim, '/get', { 'x-aws-proxy-auth': victimToken }).catch(() => ({ status: 0 }))).status === 200;

  before(async () => {
    dir = tempDataDir('security');
    server = await startServer({ dataDir: dir, host: '0.0.0.0', port: 0, proxyPort: 0, apiKey: API_KEY, log: () => {} });
    base = `http://127.0.0.1:${server.port}`;
    ca = readFileSync(server.caFile as string);
    hostService = createServer((s) => s.end('host secret\n'));
    await new Promise<void>((resolve) => hostService.listen(0, '0.0.0.0', () => resolve()));
    hostPort = (hostService.address() as { port: number }).port;
    const { build, log } = await createImage(base, 'demo');
    assert.equal(build.buildState, 'SUCCESSFUL', log);
    victim = await launch();
    victimToken = await tokenFor(victim);
    assert.ok(await victimHealthy(), 'the victim answers before the attacks');
  });

  after(async () => {
    hostService.close();
    await shutdown(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('from inside a guest: the host, its services, other guests and metadata are out of reach', async () => {
    const hostIps = Object.values(networkInterfaces())
      .flat()
      .filter((a) => a && a.family === 'IPv4')
      .map((a) => a?.address as string);
    const victimSlot = (await server.store.getVm(victim))?.slot as number;
    // The most a customer can ask for: internet egress plus an allowlist naming the host and the other guests.
    const greedy = await api(base, 'POST', '/cella/v1/network-connectors', {
      name: 'greedy',
      egress: { cidrs: [...hostIps.map((ip) => `${ip}/32`), '10.213.0.0/16', '169.254.169.254/32', '172.29.0.0/24'] },
    });
    assert.equal(greedy.status, 200, greedy.text);
    const attackers = [
      { label: 'default connectors', id: await launch() },
      {
        label: 'an allowlist naming the host',
        id: await launch({ egressNetworkConnectors: [ARNS.customerConnector('greedy'), ARNS.managedConnector('INTERNET_EGRESS')] }),
      },
      { label: 'no egress', id: await launch({ egressNetworkConnectors: [] }) },
    ];
    for (const { label, id } of attackers) {
      // The probe works: the guest reaches its own app.
      assert.equal(await connects(id, '127.0.0.1', 8080), true, `${label}: the probe reaches the guest's own app`);
      const slot = (await server.store.getVm(id))?.slot as number;
      const own = slotAddresses(slot);
      const targets: [string, string, number][] = [
        ...hostIps.flatMap((ip): [string, string, number][] => [
          [`host ${ip}: cellad API`, ip, server.port],
          [`host ${ip}: endpoint proxy`, ip, server.proxyPort],
          [`host ${ip}: another host service`, ip, hostPort],
        ]),
        ['its veth host end: cellad API', own.host, server.port],
        ['its veth host end: another host service', own.host, hostPort],
        ['its namespace (gateway): cellad API', GUEST.gateway, server.port],
        ['its namespace (gateway): another host service', GUEST.gateway, hostPort],
        ['the other VM, by its namespace address', slotAddresses(victimSlot).ns, 8080],
        ["the other VM's veth host end", slotAddresses(victimSlot).host, hostPort],
        ['link-local metadata', '169.254.169.254', 80],
      ];
      const open = await reachable(
        id,
        targets.map(([, h, p]) => [h, p]),
      );
      for (const [what, host, port] of targets) record(`${label} → ${what} (${host}:${port})`, !open.has(`${host}:${port}`));
    }
    // Connectors hold for the VM's lifetime: after a suspend to disk and a resume, the same probes fail again.
    const { label, id: again } = attackers[0] as (typeof attackers)[number];
    assert.equal((await api(base, 'POST', `${V}/microvms/${again}/suspend`)).status, 200);
    await waitState(base, again, ['SUSPENDED']);
    assert.equal((await api(base, 'POST', `${V}/microvms/${again}/resume`)).status, 200);
    await waitState(base, again, ['RUNNING']);
    const slot = (await server.store.getVm(again))?.slot as number;
    const after = await reachable(again, [
      [slotAddresses(slot).host, server.port],
      [GUEST.gateway, hostPort],
      [slotAddresses(victimSlot).ns, 8080],
      ...hostIps.map((ip): [string, number] => [ip, server.port]),
    ]);
    record(`${label}, after suspend and resume → the host and the other VM (${after.size} reached)`, after.size === 0);
    for (const { id } of attackers) await api(base, 'DELETE', `${V}/microvms/${id}`);
    record('the victim still answers after the network attacks', await victimHealthy());
  });

  test('from inside a guest: memory, CPU, disk and process exhaustion stay inside it', async () => {
    const id = await launch();
    // Memory: a process that grows until the guest's OOM killer stops it.
    const mem = await inGuest(id, '/bin/busybox tail -c 2000000000 /dev/zero >/dev/null; echo exit=$?', 120_000);
    record(`memory exhaustion (${mem.out.split('\n').pop()})`, await victimHealthy());
    // CPU: every vCPU busy while the victim is asked to answer.
    const spin = inGuest(id, 'for i in 1 2 3 4; do /bin/busybox timeout 15 /bin/busybox sh -c "while :; do :; done" & done; wait', 60_000);
    await new Promise((r) => setTimeout(r, 3000));
    record('CPU exhaustion', await victimHealthy());
    await spin;
    // Disk: write until the VM's disk is full; the host's file for it stays within the disk's size.
    const disk = await inGuest(id, '/bin/busybox dd if=/dev/zero of=/fill bs=1M 2>&1; /bin/busybox sync; echo exit=$?', 600_000);
    const overlay = vmFiles(server.engine.vmDir(id)).disk;
    const allocated = statSync(overlay).blocks * 512;
    record(
      `disk exhaustion (${/No space left/.test(disk.out) ? 'ENOSPC in the guest' : disk.out.slice(-80)}, overlay ${Math.round(allocated / 1048576)} MiB)`,
      /No space left/.test(disk.out) && allocated <= 4608 * 1048576 && (await victimHealthy()),
    );
    // Fork bomb: the guest may drown; the host and the victim must not.
    await inGuest(id, 'f() { f | f & }; f', 10_000);
    await new Promise((r) => setTimeout(r, 5000));
    record('fork bomb', await victimHealthy());
    const pid = (await server.store.getVm(id))?.pid as number;
    assert.equal((await api(base, 'DELETE', `${V}/microvms/${id}`)).status, 200);
    await waitState(base, id, ['TERMINATED']);
    record('the exhausted VM is terminated and its QEMU is gone', !processesWith(id).length && !alive(pid));
  });

  test('from outside: floods and other VMs, expired, forged or missing tokens are refused', async () => {
    const a = await launch({ ingressNetworkConnectors: [ARNS.managedConnector('HTTP_INGRESS'), ARNS.managedConnector('SHELL_INGRESS')] });
    const ta = await tokenFor(a);
    // A flood on one endpoint (400 requests at once on one HTTP/2 connection): refused beyond its limits; the other VM keeps answering.
    const statuses = await flood(a, ta, 400);
    const throttled = statuses.filter((s) => s === 429).length;
    record(`endpoint flood (${throttled} of 400 answered 429)`, throttled > 0 && (await victimHealthy()));
    const minter = await TokenMinter.open(server.store);
    const expired = await minter.mint(a, 'http', [{ port: 8080 }], -1);
    await server.store.putToken({ jti: expired.jti, vmId: a, kind: 'http', ports: '[]', expiresAt: expired.expiresAt, createdAt: Date.now() });
    const shell = await api<{ authToken: Record<string, string> }>(base, 'POST', `${V}/microvms/${a}/shell-auth-token`, { expirationInMinutes: 5 });
    const forged = victimToken.slice(0, -4) + (victimToken.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const cases: [string, Record<string, string>][] = [
      ["another VM's token", { 'x-aws-proxy-auth': victimToken }],
      ['an expired token', { 'x-aws-proxy-auth': expired.token }],
      ['a forged token', { 'x-aws-proxy-auth': forged }],
      ['garbage', { 'x-aws-proxy-auth': 'x'.repeat(900) }],
      ['no token', {}],
      ['a port outside the token', { 'x-aws-proxy-auth': ta, 'x-aws-proxy-port': '22' }],
    ];
    if (shell.status === 200) cases.push(['a shell token on HTTPS', { 'x-aws-proxy-auth': shell.body.authToken['X-aws-proxy-auth'] as string }]);
    for (const [what, headers] of cases) {
      const r = await endpoint(a, '/inc', headers);
      record(`endpoint with ${what} (HTTP ${r.status})`, r.status >= 400);
    }
    assert.equal((await api(base, 'DELETE', `${V}/microvms/${a}`)).status, 200);
    await waitState(base, a, ['TERMINATED']);
    const late = await endpoint(a, '/inc', { 'x-aws-proxy-auth': ta });
    record(`endpoint with the token of a terminated VM (HTTP ${late.status})`, late.status === 403);
    for (const [what, key] of [
      ['no API key', null],
      ['a wrong API key', 'cella_wrong'],
    ] as const) {
      const r = await api(base, 'GET', `${V}/microvms`, undefined, { key });
      record(`API with ${what} (HTTP ${r.status})`, r.status === 401);
    }
  });

  test('every attack was blocked', () => {
    const blocked = outcomes.filter((o) => o.blocked).length;
    process.stdout.write(`security: ${outcomes.length} attacks tried, ${blocked} blocked\n`);
    for (const o of outcomes) process.stdout.write(`  ${o.blocked ? 'blocked' : 'NOT BLOCKED'}: ${o.name}${o.detail ? ` ${o.detail}` : ''}\n`);
    assert.ok(outcomes.length > 30, 'the suite ran its attacks');
    assert.deepEqual(
      outcomes.filter((o) => !o.blocked).map((o) => o.name),
      [],
    );
  });
});
