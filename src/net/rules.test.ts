import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { isCellaError } from '../contract/index.js';
import { ALWAYS_BLOCKED, NON_PUBLIC, checkPolicy, guardRules, namespaceRules, slotAddresses, slotOfNamespaceAddress, type NetworkPolicy } from './rules.js';

const rulesOf = (text: string, chain: string): string[] => {
  const m = new RegExp(`chain ${chain} \\{\\n([\\s\\S]*?)\\n  \\}`).exec(text);
  assert.ok(m, `chain ${chain} present`);
  return m[1]!
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => !l.startsWith('type '));
};

/** Whether the kernel accepts `text` (checked in a throwaway namespace; needs root). */
const root = process.getuid?.() === 0;
function nftAccepts(text: string): void {
  const r = spawnSync('unshare', ['-n', 'nft', '-c', '-f', '-'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

test('slot addresses round-trip, and only namespace ends name a slot', () => {
  for (const slot of [0, 1, 63, 64, 16383]) assert.equal(slotOfNamespaceAddress(slotAddresses(slot).ns), slot);
  assert.deepEqual(slotAddresses(65), { host: '10.213.1.5', ns: '10.213.1.6' });
  for (const a of ['10.213.0.1', '10.213.0.4', '10.214.0.2', '10.213.256.2', '172.29.0.2']) assert.equal(slotOfNamespaceAddress(a), undefined, a);
});

const DNS_REFUSED = ['iifname "tap0" ip daddr 172.29.0.1 udp dport 53 reject', 'iifname "tap0" ip daddr 172.29.0.1 tcp dport 53 reject with tcp reset'];

test('the default policy: host to any guest port, nothing out, no NAT, no DNS', () => {
  const text = namespaceRules(5, undefined, 5354);
  assert.match(text, /^table ip cella \{\}\ndelete table ip cella\ntable ip cella \{/, 'replaces the table in the same transaction');
  assert.deepEqual(rulesOf(text, 'prerouting'), ['iifname "eth0" ip saddr 10.213.0.21 ip daddr 10.213.0.22 dnat to 172.29.0.2']);
  assert.deepEqual(rulesOf(text, 'forward'), [
    'iifname "tap0" ip saddr != 172.29.0.2 drop',
    'ct state established,related accept',
    'iifname "eth0" oifname "tap0" ip daddr 172.29.0.2 ct status dnat ct state new accept',
  ]);
  // DNS to the gateway is refused at once (no forwarder takes it), never forwarded.
  assert.deepEqual(rulesOf(text, 'input'), ['iifname "lo" accept', 'ct state established,related accept', ...DNS_REFUSED]);
  assert.doesNotMatch(text, /postrouting|masquerade|chain egress|dnat to 10\.213/);
  assert.match(text, /table ip6 cella \{\n {2}chain forward \{ type filter hook forward priority filter; policy drop; \}/);
});

test('ingress by port list opens only those TCP ports; an empty list none', () => {
  const fwd = rulesOf(namespaceRules(0, { ingress: [8080, 9000], egress: 'none' }), 'forward');
  assert.deepEqual(
    fwd.filter((r) => r.includes('oifname "tap0"')),
    ['iifname "eth0" oifname "tap0" ip daddr 172.29.0.2 ct status dnat tcp dport { 8080, 9000 } ct state new accept'],
  );
  assert.deepEqual(
    rulesOf(namespaceRules(0, { ingress: [], egress: 'none' }), 'forward').filter((r) => r.includes('oifname "tap0"')),
    [],
  );
});

test('internet: blocked ranges first, then non-public, then out masqueraded; DNS to the forwarder', () => {
  const text = namespaceRules(1, { ingress: 'all', egress: 'internet' }, 5354);
  assert.deepEqual(rulesOf(text, 'prerouting')[1], 'iifname "tap0" ip daddr 172.29.0.1 udp dport 53 dnat to 10.213.0.5:5354');
  assert.deepEqual(rulesOf(text, 'postrouting'), ['oifname "eth0" masquerade']);
  assert.ok(rulesOf(text, 'forward').includes('iifname "tap0" oifname "eth0" ct state new jump egress'));
  assert.deepEqual(rulesOf(text, 'egress'), [
    'ip daddr 10.213.0.5 udp dport 5354 ct status dnat accept',
    `ip daddr { ${ALWAYS_BLOCKED.join(', ')} } drop`,
    `ip daddr { ${NON_PUBLIC.join(', ')} } drop`,
    'accept',
  ]);
  for (const r of ['10.213.0.0/16', '169.254.0.0/16', '127.0.0.0/8']) assert.ok(ALWAYS_BLOCKED.includes(r as never), r);
  assert.deepEqual(rulesOf(text, 'input').slice(2), DNS_REFUSED, 'nothing from the guest is delivered to the namespace');
});

test('internet without a forwarder has no DNS path', () => {
  const text = namespaceRules(1, { ingress: 'all', egress: 'internet' });
  assert.doesNotMatch(text, /dport 53 dnat|ct status dnat accept/);
  assert.deepEqual(rulesOf(text, 'input').slice(2), DNS_REFUSED);
});

test('allowlist: CIDRs (private allowed, if listed), then resolved names (public only), nothing else', () => {
  const policy: NetworkPolicy = { ingress: 'all', egress: { cidrs: ['198.51.100.1/32', '10.1.0.0/16'], domains: ['*.allowed.test'] } };
  const text = namespaceRules(2, policy, 5354);
  assert.match(text, /set allowed_cidrs \{ type ipv4_addr; flags interval; auto-merge; elements = \{ 198\.51\.100\.1\/32, 10\.1\.0\.0\/16 \}; \}/);
  assert.match(text, /set allowed_names \{ type ipv4_addr; flags timeout; \}/);
  assert.deepEqual(rulesOf(text, 'egress'), [
    'ip daddr 10.213.0.9 udp dport 5354 ct status dnat accept',
    `ip daddr { ${ALWAYS_BLOCKED.join(', ')} } drop`,
    'ip daddr @allowed_cidrs accept',
    `ip daddr { ${NON_PUBLIC.join(', ')} } drop`,
    'ip daddr @allowed_names accept',
  ]);
  const cidrsOnly = namespaceRules(2, { ingress: 'all', egress: { cidrs: ['198.51.100.0/24'], domains: [] } });
  assert.deepEqual(rulesOf(cidrsOnly, 'egress'), [`ip daddr { ${ALWAYS_BLOCKED.join(', ')} } drop`, 'ip daddr @allowed_cidrs accept']);
  assert.doesNotMatch(cidrsOnly, /allowed_names/);
  const empty = namespaceRules(2, { ingress: 'all', egress: { cidrs: [], domains: [] } });
  assert.deepEqual(rulesOf(empty, 'egress'), [`ip daddr { ${ALWAYS_BLOCKED.join(', ')} } drop`]);
});

test('policies that would not make sound rules are refused', () => {
  const bad: unknown[] = [
    { ingress: [0], egress: 'none' },
    { ingress: [8080.5], egress: 'none' },
    { ingress: 'some', egress: 'none' },
    { ingress: 'all', egress: 'everything' },
    { ingress: 'all', egress: { cidrs: ['10.0.0.0/33'], domains: [] } },
    { ingress: 'all', egress: { cidrs: ['fd00::/8'], domains: [] } },
    { ingress: 'all', egress: { cidrs: ['1.2.3.4; flush ruleset'], domains: [] } },
    { ingress: 'all', egress: { cidrs: [], domains: ['*'] } },
    { ingress: 'all', egress: { cidrs: [], domains: ['a.*.test'] } },
    { ingress: 'all', egress: { cidrs: [], domains: ['x.test }'] } },
    { ingress: 'all', egress: { cidrs: [] } },
  ];
  for (const p of bad)
    assert.throws(
      () => checkPolicy(p as NetworkPolicy),
      (e) => isCellaError(e) && e.code === 'INVALID_ARGUMENT',
      JSON.stringify(p),
    );
  checkPolicy({ ingress: [1, 65535], egress: { cidrs: ['1.2.3.4', '10.0.0.0/8'], domains: ['*.example.com', 'example.com', 'a-b_c.test'] } });
});

test('the host guard: only its own table, idempotent statements, veths fenced in', () => {
  const text = guardRules([5354]);
  const lines = text.trim().split('\n');
  assert.ok(
    lines.every((l) => l.includes('inet cella_guard')),
    'touches no other table',
  );
  assert.ok(!/flush (ruleset|table)|delete table/.test(text), 'never flushes more than its own chains');
  assert.ok(lines.includes('add element inet cella_guard dns_ports { 5354 }'));
  const rules = lines.filter((l) => l.startsWith('add rule')).map((l) => l.replace('add rule inet cella_guard ', ''));
  assert.deepEqual(rules, [
    'input iifname "cellah*" ct state established,related accept',
    'input iifname "cellah*" ip daddr 10.213.0.0/16 meta l4proto { udp, tcp } th dport @dns_ports accept',
    'input iifname "cellah*" drop',
    'input iifname != "lo" ip saddr 10.213.0.0/16 drop',
    'forward iifname "cellah*" oifname "cellah*" drop',
    'forward iifname "cellah*" ip daddr 169.254.0.0/16 drop',
    'forward oifname "cellah*" ct state new drop',
    'postrouting ip saddr 10.213.0.0/16 oifname != "cellah*" masquerade',
  ]);
  assert.doesNotMatch(guardRules(), /add element/);
});

test('the kernel accepts every ruleset', { skip: !root && 'needs root (a throwaway network namespace)' }, () => {
  const policies: NetworkPolicy[] = [
    { ingress: 'all', egress: 'none' },
    { ingress: [], egress: 'internet' },
    { ingress: [8080], egress: { cidrs: ['198.51.100.0/24', '198.51.100.7'], domains: ['*.allowed.test'] } },
    { ingress: 'all', egress: { cidrs: [], domains: [] } },
  ];
  for (const p of policies) nftAccepts(namespaceRules(16383, p, 5354));
  nftAccepts(guardRules([5354, 40000]));
});
