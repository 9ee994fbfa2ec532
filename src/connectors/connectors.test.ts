import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Arns, isCellaError } from '../contract/index.js';
import { SqliteStore } from '../store/index.js';
import { Connectors, checkCidr, checkDomain } from './index.js';

const arns = new Arns();
const managedConnectorArn = (n: string): string => arns.managedConnector(n);
const customerConnectorArn = (n: string): string => arns.customerConnector(n);

test('CIDRs and domain names are checked and normalised', () => {
  assert.equal(checkCidr('10.1.0.0/16'), '10.1.0.0/16');
  assert.equal(checkCidr('203.0.113.7'), '203.0.113.7/32');
  for (const bad of ['10.1.0.1/16', '10.0.0.0/33', '::1/128', '1.2.3/8', 'x', '10.0.0.0/8/1']) {
    assert.throws(
      () => checkCidr(bad),
      (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'),
      bad,
    );
  }
  assert.equal(checkDomain('API.Example.com.'), 'api.example.com');
  assert.equal(checkDomain('*.example.com'), '*.example.com');
  for (const bad of ['localhost', '*.com', 'a..b', '-a.com', 'ex ample.com', '*example.com', `${'a'.repeat(64)}.com`]) {
    assert.throws(
      () => checkDomain(bad),
      (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'),
      bad,
    );
  }
});

test('connectors resolve into the VM policy: contract defaults, managed and customer ones, errors', async () => {
  const store = new SqliteStore(':memory:');
  const c = new Connectors(store, arns);
  assert.deepEqual((await c.resolve(undefined, undefined, undefined)).policy, { ingress: 'all', egress: 'internet' });
  assert.deepEqual((await c.resolve([managedConnectorArn('NO_INGRESS')], [], 9000)).policy, { ingress: [9000], egress: 'none' });
  assert.deepEqual((await c.resolve([managedConnectorArn('SHELL_INGRESS')], [], undefined)).policy, { ingress: [], egress: 'none' });
  await c.create({ name: 'api', egress: { cidrs: ['198.51.100.0/24'], domains: ['*.example.com'] } });
  await c.create({ name: 'pkg', egress: { domains: ['deb.debian.org', '*.example.com'] } });
  const r = await c.resolve([managedConnectorArn('ALL_INGRESS')], [customerConnectorArn('api'), customerConnectorArn('pkg')], 8080);
  assert.deepEqual(r.policy, { ingress: 'all', egress: { cidrs: ['198.51.100.0/24'], domains: ['*.example.com', 'deb.debian.org'] } });
  assert.deepEqual((await c.resolve(undefined, [customerConnectorArn('api'), managedConnectorArn('INTERNET_EGRESS')], undefined)).policy.egress, 'internet');
  const fails: [string[] | undefined, string[] | undefined, string][] = [
    [['bare-name'], undefined, 'INVALID_ARGUMENT'],
    [[managedConnectorArn('INTERNET_EGRESS')], undefined, 'NOT_FOUND'],
    [undefined, [managedConnectorArn('HTTP_INGRESS')], 'NOT_FOUND'],
    [undefined, [customerConnectorArn('missing')], 'NOT_FOUND'],
    [undefined, ['arn:aws:lambda:local:12:network-connector:x'], 'INVALID_ARGUMENT'],
    [undefined, [new Arns('eu-west-1').customerConnector('api')], 'INVALID_ARGUMENT'],
    [undefined, [new Arns('us-east-1', '123456789012').customerConnector('api')], 'INVALID_ARGUMENT'],
    [[new Arns('eu-west-1').managedConnector('HTTP_INGRESS')], undefined, 'INVALID_ARGUMENT'],
  ];
  for (const [i, e, code] of fails)
    await assert.rejects(c.resolve(i, e, undefined), (err: unknown) => isCellaError(err, code as 'NOT_FOUND'), JSON.stringify([i, e]));
  await assert.rejects(c.create({ name: 'api', egress: { cidrs: ['10.0.0.0/8'] } }), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'));
  await assert.rejects(c.create({ name: 'empty', egress: {} }), (e: unknown) => isCellaError(e, 'INVALID_ARGUMENT'));
  assert.equal(await store.getConnector('empty'), undefined, 'a refused create writes nothing');
  await c.delete(customerConnectorArn('api'));
  await c.delete('api');
  assert.equal(await store.getConnector('api'), undefined);
  await store.close();
});

test('two creates of one name at once: one is made, the other refused as taken', async () => {
  const store = new SqliteStore(':memory:');
  const c = new Connectors(store, arns);
  const both = await Promise.allSettled([
    c.create({ name: 'x', egress: { cidrs: ['10.0.0.0/8'] } }),
    c.create({ name: 'x', egress: { cidrs: ['10.1.0.0/16'] } }),
  ]);
  assert.equal(both.filter((r) => r.status === 'fulfilled').length, 1);
  const refused = both.find((r) => r.status === 'rejected');
  assert.ok(refused && isCellaError(refused.reason, 'INVALID_ARGUMENT'), 'taken, not an internal duplicate-key error');
  assert.deepEqual((await store.getConnector('x'))?.cidrs, ['10.0.0.0/8']);
  await store.close();
});
