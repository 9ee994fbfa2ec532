/**
 * Network policies against real VMs: what a guest reaches under each policy,
 * and what it never reaches under any. The "internet" is a test-owned
 * namespace joined to the host by a veth (TEST-NET-2 addresses, plus a
 * link-local one standing in for a metadata service); its DNS is a test
 * server the forwarder uses as upstream. No mocks.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Engine, type RunningVm } from '../src/engine/index.js';
import {
  GUEST,
  ensureHostGuard,
  listNamespaces,
  namespaceOwner,
  slotAddresses,
  startDnsForwarder,
  type DnsForwarder,
  type NetworkPolicy,
} from '../src/net/index.js';
import { DEMO_APP, DEMO_PORT, buildDemoRootfs } from '../src/setup/index.js';
import { INET_HOST, LINK_LOCAL, SITE_A, SITE_B, SITE_PORT, startFakeInternet, type FakeInternet } from './fixtures/fake-internet.js';
import { getAt, tempDataDir } from './helpers.js';
import { startDnsUpstream } from './fixtures/dns-upstream.js';

/** A second port the guests listen on (busybox httpd), to see ingress lists close it. */
const EXTRA_PORT = 9001;

let engine: Engine;
let dataDir: string;
let imageDir: string;
let internet: FakeInternet;
let upstream: dgram.Socket;
/** Names the test DNS server was asked for: what the forwarder let through. */
const asked: string[] = [];
let forwarder: DnsForwarder;
/** What the forwarder logged (its failures): shown when a DNS assertion fails. */
const dnsLog: string[] = [];
let hostServer: Server;
let hostPort: number;
/** Peers of the connections the host server accepted. */
const hostPeers: string[] = [];
let seq = 0;
const nextId = (): string => `net-${process.pid}-${++seq}`;

/**
 * Whether `vm`'s guest gets an HTTP answer from `host:port`: an HTTP request
 * through busybox nc (3 s connect timeout; busybox wget crashes in this image).
 */
async function guestGets(vm: RunningVm, { host, port }: Target): Promise<boolean> {
  const r = await vm.agent.exec(
    { argv: ['/bin/busybox', 'nc', '-w', '3', host, String(port)], stdin: Buffer.from(`GET / HTTP/1.0\r\nHost: ${host}\r\n\r\n`) },
    { timeoutMs: 30_000 },
  );
  return r.exitCode === 0 && /^HTTP\/1\.[01] 200/.test(r.stdout.toString());
}

/**
 * The addresses the guest gets for `name` from its gateway (busybox
 * nslookup). A records only: asked for A and AAAA together, this nslookup
 * at times ignores an A answer that comes after the AAAA one (as an
 * allowlist's does, waiting for nft): the datagram reaches its socket and it
 * waits on until its timeout.
 */
async function guestResolves(vm: RunningVm, name: string): Promise<string[]> {
  const r = await vm.agent.exec({ argv: ['/bin/busybox', 'nslookup', '-type=a', name, GUEST.gateway] }, { timeoutMs: 30_000 });
  return [...r.stdout.toString().matchAll(/^Address:\s*(\d+\.\d+\.\d+\.\d+)$/gm)].map((m) => m[1]!);
}

/** What the host gets dialling `host:port` for a few seconds. */
function hostDials(host: string, port: number): Promise<'connected' | 'refused' | 'timeout'> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(3000);
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('error', () => resolve('refused'));
  });
}

interface Target {
  host: string;
  port: number;
}
const at = (host: string, port: number): Target => ({ host, port });
const url = ({ host, port }: Target): string => `http://${host}:${port}/`;

const POLICIES = {
  none: { ingress: 'all', egress: 'none' },
  internet: { ingress: 'all', egress: 'internet' },
  cidr: { ingress: 'all', egress: { cidrs: [`${SITE_A}/32`], domains: [] } },
  domain: { ingress: 'all', egress: { cidrs: [], domains: ['*.allowed.test'] } },
  ports: { ingress: [DEMO_PORT], egress: 'internet' },
} satisfies Record<string, NetworkPolicy>;
type Kind = keyof typeof POLICIES;
const vms = {} as Record<Kind, RunningVm>;

before(async () => {
  dataDir = tempDataDir('net');
  engine = await Engine.open({ dataDir, log: () => {}, warmNetworks: 1, warmClones: 0 });
  await ensureHostGuard();
  const site = path.join(dataDir, 'site');
  mkdirSync(site);
  writeFileSync(path.join(site, 'index.html'), 'site\n');
  internet = startFakeInternet(site);
  upstream = await startDnsUpstream({ 'app.allowed.test': SITE_A, 'other.test': SITE_B }, asked);
  forwarder = await startDnsForwarder({
    port: 0,
    upstream: { address: '127.0.0.1', port: upstream.address().port },
    log: (line) => dnsLog.push(line),
  });
  hostServer = createServer((req, res) => {
    hostPeers.push(req.socket.remoteAddress ?? '');
    res.end('host\n');
  });
  await new Promise<void>((resolve) => hostServer.listen(0, '0.0.0.0', resolve));
  hostPort = (hostServer.address() as AddressInfo).port;
  imageDir = path.join(dataDir, 'images', 'demo');
  const rootfs = path.join(dataDir, 'demo.ext4');
  await buildDemoRootfs(engine.guest, rootfs);
  await engine.createSnapshot({ dir: imageDir, rootfs, app: DEMO_APP, port: DEMO_PORT, memoryMiB: 256 });
  for (const kind of Object.keys(POLICIES) as Kind[]) vms[kind] = await engine.launch(imageDir, nextId(), { network: POLICIES[kind] });
  for (let tries = 0; !(await internet.fetch(url(at(SITE_A, SITE_PORT)))); tries++) {
    if (tries === 20) throw new Error('the fake internet does not serve');
    await sleep(250);
  }
});

after(async () => {
  const tag = engine?.networkTag;
  for (const vm of Object.values(vms)) await engine.terminate(vm.ref).catch(() => {});
  await engine?.close();
  await forwarder?.close();
  upstream?.close();
  hostServer?.close();
  internet.stop();
  rmSync(dataDir, { recursive: true, force: true });
  assert.deepEqual(
    listNamespaces().filter((n) => namespaceOwner(Number(n.slice('cella-'.length))) === tag),
    [],
    'no network namespace leaked',
  );
  assert.ok(!spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(internet.netns), 'the fake internet is gone');
});

describe('egress', () => {
  test('the fake internet, the host server and the metadata stand-in all answer (controls for what guests fail to reach)', async () => {
    assert.ok(await internet.fetch(url(at(SITE_B, SITE_PORT))));
    assert.ok(await internet.fetch(url(at(INET_HOST, hostPort))), 'the host server answers the internet side');
    assert.equal((await getAt({ host: LINK_LOCAL, port: SITE_PORT }, '/')).status, 200, 'the link-local stand-in answers the host');
  });

  test("'none' reaches nothing, not even DNS", async () => {
    const vm = vms.none;
    assert.equal(await guestGets(vm, at(SITE_A, SITE_PORT)), false);
    assert.equal(await guestGets(vm, at(SITE_B, SITE_PORT)), false);
    assert.deepEqual(await guestResolves(vm, 'app.allowed.test'), []);
  });

  test("'internet' reaches a public address and resolves any name through the gateway", async () => {
    const vm = vms.internet;
    assert.ok(await guestGets(vm, at(SITE_A, SITE_PORT)));
    assert.ok(await guestGets(vm, at(SITE_B, SITE_PORT)));
    assert.deepEqual(await guestResolves(vm, 'other.test'), [SITE_B]);
  });

  test('an allowlist by CIDR reaches what it lists and nothing else', async () => {
    const vm = vms.cidr;
    assert.ok(await guestGets(vm, at(SITE_A, SITE_PORT)));
    assert.equal(await guestGets(vm, at(SITE_B, SITE_PORT)), false);
  });

  test('an allowlist by domain reaches an address only once an allowed name resolved to it through Cella', async () => {
    const vm = vms.domain;
    assert.equal(await guestGets(vm, at(SITE_A, SITE_PORT)), false, 'not before resolving');
    assert.deepEqual(await guestResolves(vm, 'app.allowed.test'), [SITE_A], `app.allowed.test resolves (forwarder log: ${dnsLog.join('; ')})`);
    assert.ok(await guestGets(vm, at(SITE_A, SITE_PORT)), 'and is then reachable');
    const before = asked.length;
    assert.deepEqual(await guestResolves(vm, 'other.test'), [], 'other.test does not resolve');
    assert.ok(!asked.slice(before).includes('other.test'), 'a name outside the allowlist is never forwarded');
    assert.equal(await guestGets(vm, at(SITE_B, SITE_PORT)), false, 'nor is its address reachable by IP');
  });
});

describe('always blocked, whatever the policy', () => {
  for (const kind of Object.keys(POLICIES) as Kind[]) {
    test(`${kind}: not the host, not another VM, not link-local`, async () => {
      const vm = vms[kind];
      const other = kind === 'none' ? vms.internet : vms.none;
      const own = slotAddresses(vm.network.slot);
      const hostAddresses = Object.values(networkInterfaces())
        .flat()
        .filter((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.213.'))
        .map((a) => a!.address);
      const targets = [
        ...[own.host, own.ns, GUEST.gateway, slotAddresses(other.network.slot).host, ...hostAddresses].map((h) => at(h, hostPort)),
        at(GUEST.gateway, SITE_PORT),
        at(other.network.hostAddress, DEMO_PORT),
        at('169.254.169.254', 80),
        at(LINK_LOCAL, SITE_PORT),
      ];
      assert.ok(hostAddresses.includes(INET_HOST), 'the host address on the internet side is among them');
      const peersBefore = hostPeers.length;
      const reached = await Promise.all(targets.map(async (t) => ((await guestGets(vm, t)) ? url(t) : undefined)));
      assert.deepEqual(reached.filter(Boolean), []);
      assert.deepEqual(hostPeers.slice(peersBefore), [], 'the host server saw no connection');
      assert.equal((await getAt(other.address(DEMO_PORT), '/hostname')).body, other.id, 'the other VM does serve the host');
    });
  }
});

describe('ingress', () => {
  test('a port list lets the host open the listed port and no other', async () => {
    for (const vm of [vms.ports, vms.none]) {
      const r = await vm.agent.exec({ argv: ['/bin/busybox', 'httpd', '-p', String(EXTRA_PORT), '-h', '/'] }, { timeoutMs: 30_000 });
      assert.equal(r.exitCode, 0);
    }
    assert.equal(await hostDials(vms.none.network.hostAddress, EXTRA_PORT), 'connected', "with 'all' the extra port is open");
    assert.equal((await getAt(vms.ports.address(DEMO_PORT), '/hostname')).body, vms.ports.id);
    assert.notEqual(await hostDials(vms.ports.network.hostAddress, EXTRA_PORT), 'connected');
  });
});
