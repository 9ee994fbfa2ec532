/**
 * cella-netd (guest/host/netd.c) and its client: the request parser under
 * sanitizers, then (root, gcc and libnftables-dev needed) a namespace it makes
 * against one made by the `ip`/`sysctl`/`nft` commands it replaced, which must
 * read back the same, and how failures come back.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isCellaError } from '../contract/index.js';
import { run } from '../host/index.js';
import { Netd, SLOT_TAKEN } from './netd.js';
import { GUEST, namespaceRules, slotAddresses } from './rules.js';

const GUEST_SRC = fileURLToPath(new URL('../../guest', import.meta.url));
/** The repository's own build folder (ignored by git), kept between runs. */
const BUILD = fileURLToPath(new URL('../../.cella-build/netd', import.meta.url));
const NETD = join(BUILD, 'cella-netd');
const hasGcc = !spawnSync('gcc', ['--version']).error;
const hasNft = existsSync('/usr/include/nftables/libnftables.h');
const skipBuild = (!hasGcc && 'gcc is not installed') || (!hasNft && 'libnftables-dev is not installed (setup installs it)');
const skipRoot = skipBuild || (process.getuid?.() !== 0 && 'needs root');

function build(): void {
  execFileSync('make', ['-C', GUEST_SRC, '--no-print-directory', `OUT=${BUILD}`, NETD, 'netd-test'], { stdio: 'pipe' });
}

/** A high slot, far from what engines hand out first, different per test process. */
const SLOT = 16_200 + (process.pid % 60);
const NS = `cella-${SLOT}`;
const HOST_IF = `cellah${SLOT}`;
const TAG = 'cella-owner:netd-test';

/** What src/net made per namespace before cella-netd: the same commands, for comparison. */
async function makeTheOldWay(slot: number): Promise<void> {
  const { host, ns } = slotAddresses(slot);
  await run('ip', ['netns', 'add', NS]);
  await run('ip', ['-batch', '-'], {
    input: [
      `link add ${HOST_IF} type veth peer name eth0 netns ${NS}`,
      `addr add ${host}/30 dev ${HOST_IF}`,
      `link set ${HOST_IF} up`,
      `link set ${HOST_IF} alias ${TAG}`,
    ].join('\n'),
  });
  await run('ip', ['-n', NS, '-batch', '-'], {
    input: [
      'link set lo up',
      `addr add ${ns}/30 dev eth0`,
      'link set eth0 up',
      `route add default via ${host} dev eth0`,
      `tuntap add dev ${GUEST.tap} mode tap`,
      `link set ${GUEST.tap} address ${GUEST.gatewayMac}`,
      `addr add ${GUEST.gatewayCidr} dev ${GUEST.tap}`,
      `link set ${GUEST.tap} up`,
      `neigh add ${GUEST.address} lladdr ${GUEST.mac} dev ${GUEST.tap} nud permanent`,
    ].join('\n'),
  });
  await run('nsenter', [`--net=/run/netns/${NS}`, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await run('nsenter', [`--net=/run/netns/${NS}`, 'nft', '-f', '-'], { input: namespaceRules(slot) });
}

/** Fields that differ between any two namespaces made alike: random MACs, host-wide indexes, link state settling. */
const VOLATILE = new Set(['ifindex', 'link_index', 'link_netnsid', 'operstate', 'linkmode']);

function normalize(json: string, randomMacs: boolean): unknown {
  return JSON.parse(json, (key, value: unknown) => {
    if (VOLATILE.has(key)) return undefined;
    if (randomMacs && key === 'address' && typeof value === 'string' && value.includes(':')) return undefined;
    // Carrier: the kernel notes it (and marks the tap's route linkdown) a moment after the link is up.
    if (key === 'flags' && Array.isArray(value)) return (value as unknown[]).filter((f) => f !== 'LOWER_UP' && f !== 'NO-CARRIER' && f !== 'linkdown');
    // IPv6 link-local addresses come from the random veth MAC, and DAD settles on its own time.
    if (key === 'addr_info' && Array.isArray(value)) return (value as { family?: string }[]).filter((a) => a.family !== 'inet6');
    return value;
  });
}

/** Everything a namespace and its host end read back as, through the tools an operator would use. */
async function readBack(): Promise<Record<string, unknown>> {
  const inNs = (args: string[]): Promise<string> => run('ip', ['-n', NS, '-j', ...args]);
  const nsenter = (args: string[]): Promise<string> => run('nsenter', [`--net=/run/netns/${NS}`, ...args]);
  const links = normalize(await inNs(['-d', 'link']), false) as { ifname: string; address?: string }[];
  // eth0's MAC is random; the tap's is ours and must match.
  for (const l of links) if (l.ifname === 'eth0') delete l.address;
  return {
    links,
    addrs: normalize(await inNs(['addr']), true),
    routes: normalize(await inNs(['route']), false),
    neigh: JSON.parse(await inNs(['neigh'])) as unknown,
    rules: await nsenter(['nft', '-a', 'list', 'ruleset']),
    forward: (await nsenter(['cat', '/proc/sys/net/ipv4/ip_forward'])).trim(),
    hostLink: normalize(await run('ip', ['-d', '-j', 'link', 'show', 'dev', HOST_IF]), true),
    hostAddr: normalize(await run('ip', ['-j', 'addr', 'show', 'dev', HOST_IF]), true),
    hostRoutes: JSON.parse(await run('ip', ['-j', 'route', 'show', 'dev', HOST_IF])) as unknown,
    alias: readFileSync(`/sys/class/net/${HOST_IF}/ifalias`, 'utf8').trim(),
  };
}

/** The kernel frees a namespace (and so its veth pair) after its last reference goes, from a work queue. */
async function linkGone(ifname: string): Promise<boolean> {
  for (let i = 0; i < 200 && existsSync(`/sys/class/net/${ifname}`); i++) await new Promise((r) => setTimeout(r, 50));
  return !existsSync(`/sys/class/net/${ifname}`);
}

async function cleanup(): Promise<void> {
  if (existsSync(`/run/netns/${NS}`)) await run('ip', ['netns', 'del', NS]).catch(() => {});
}

test('cella-netd: its request parser holds on edge cases and random input under sanitizers', { timeout: 120_000, skip: skipBuild }, () => {
  build();
  const res = spawnSync(join(BUILD, 'netd-proto-test'), ['1', '5000'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(res.status, 0, `netd-proto-test failed:\n${res.stderr}${res.stdout}`);
  assert.deepEqual(JSON.parse(res.stdout.trim()), { cases: 5000, failures: 0 });
});

test('cella-netd: a namespace it makes reads back exactly as one made by ip, sysctl and nft', { timeout: 60_000, skip: skipRoot }, async () => {
  build();
  const netd = new Netd(NETD);
  try {
    await cleanup();
    await makeTheOldWay(SLOT);
    const old = await readBack();
    await run('ip', ['netns', 'del', NS]);
    await netd.add(SLOT);
    await netd.setup(SLOT, TAG, namespaceRules(SLOT));
    const now = await readBack();
    assert.deepEqual(now, old);
    assert.equal(now.alias, TAG);
    assert.match(now.rules as string, /table ip cella/);
    await netd.destroy(SLOT);
    assert.ok(!existsSync(`/run/netns/${NS}`), 'the namespace is gone');
    assert.ok(await linkGone(HOST_IF), 'and its veth pair with it');
  } finally {
    await netd.close();
    await cleanup();
  }
});

test('cella-netd: failures name their step, undo what was made, and leave the helper in the host namespace', { timeout: 60_000, skip: skipRoot }, async () => {
  build();
  const netd = new Netd(NETD);
  const step = (s: string) => (e: unknown) => isCellaError(e, 'NETWORK_SETUP_FAILED') && e.details.step === s && e.message.includes(NS);
  try {
    await cleanup();
    // Pipelined: the second add finds the name taken and changes nothing.
    const [first, second] = await Promise.allSettled([netd.add(SLOT), netd.add(SLOT)]);
    assert.equal(first.status, 'fulfilled');
    assert.ok(second.status === 'rejected' && step(SLOT_TAKEN)(second.reason), String((second as PromiseRejectedResult).reason));
    assert.ok(existsSync(`/run/netns/${NS}`), 'the first add is untouched');
    // Rules nft refuses: libnftables' own message; then setup removes the namespace it could not finish.
    await assert.rejects(netd.nft(SLOT, 'table ip cella { bogus }'), (e) => step('nft')(e) && (e as Error).message.includes('syntax error'));
    await assert.rejects(netd.setup(SLOT, TAG, 'table ip cella { bogus }'), step('nft'));
    assert.ok(!existsSync(`/run/netns/${NS}`), 'a failed setup removed the namespace');
    assert.ok(await linkGone(HOST_IF), 'and its veth pair');
    await assert.rejects(netd.destroy(SLOT), step('netns-del'));
    await assert.rejects(netd.nft(SLOT, 'flush ruleset'), step('netns'));
    // Out of range: answered, nothing done.
    await assert.rejects(netd.add(16_384), (e) => isCellaError(e, 'NETWORK_SETUP_FAILED') && e.message.includes('slot out of range'));
    const pid = (netd as unknown as { child: { pid: number } }).child.pid;
    assert.equal(readlinkSync(`/proc/${pid}/ns/net`), readlinkSync('/proc/self/ns/net'), 'the helper is back in the host namespace');
    // A helper that dies fails what was in flight, clearly (stopped first, so the request is surely unanswered); the next request starts a new one.
    process.kill(pid, 'SIGSTOP');
    const inFlight = netd.add(SLOT);
    process.kill(pid, 'SIGKILL');
    await assert.rejects(inFlight, (e) => isCellaError(e, 'NETWORK_SETUP_FAILED') && /network helper .* exited \(SIGKILL\)/.test(e.message));
    await cleanup();
    await netd.add(SLOT);
    await netd.destroy(SLOT);
  } finally {
    await netd.close();
    await cleanup();
  }
});
