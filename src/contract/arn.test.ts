import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Arns, arnName } from './arn.js';
import { isCellaError } from './errors.js';

const invalid = (e: unknown): boolean => isCellaError(e, 'INVALID_ARGUMENT');

test('ARNs are built in the contract scheme, under the server region and account (managed ones under aws)', () => {
  const a = new Arns();
  assert.equal(a.image('demo'), 'arn:aws:lambda:us-east-1:000000000000:microvm-image:demo');
  assert.equal(a.managedImage('busybox'), 'arn:aws:lambda:us-east-1:aws:microvm-image:busybox');
  assert.equal(a.managedConnector('HTTP_INGRESS'), 'arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS');
  assert.equal(a.customerConnector('pypi'), 'arn:aws:lambda:us-east-1:000000000000:network-connector:pypi');
  const b = new Arns('eu-west-1', '123456789012');
  assert.equal(b.image('demo'), 'arn:aws:lambda:eu-west-1:123456789012:microvm-image:demo');
  assert.equal(arnName(b.managedConnector('NO_INGRESS')), 'NO_INGRESS');
});

test('a region or account id that is not one is refused', () => {
  for (const [region, account] of [
    ['local', '000000000000'],
    ['US-EAST-1', '000000000000'],
    ['us-east-1', '0'],
    ['us-east-1', 'aws'],
  ]) {
    assert.throws(() => new Arns(region, account), invalid, `${region} ${account}`);
  }
});

test('ARNs are parsed back to names; an ARN of another partition, region or account is refused', () => {
  const a = new Arns('eu-west-1', '123456789012');
  assert.equal(a.imageName('demo'), 'demo');
  assert.equal(a.imageName(a.image('demo')), 'demo');
  assert.equal(a.managedImageName(a.managedImage('busybox')), 'busybox');
  assert.equal(a.managedImageName(a.image('demo')), undefined);
  assert.equal(a.managedImageName('busybox'), undefined);
  assert.equal(a.managedConnectorName(a.managedConnector('SHELL_INGRESS')), 'SHELL_INGRESS');
  assert.equal(a.managedConnectorName(a.customerConnector('x')), undefined);
  assert.equal(a.customerConnectorName(a.customerConnector('x')), 'x');
  assert.equal(a.customerConnectorName(a.managedConnector('HTTP_INGRESS')), undefined);
  const elsewhere = [
    new Arns().image('demo'),
    new Arns('eu-west-1', '000000000000').image('demo'),
    'arn:aws-cn:lambda:eu-west-1:123456789012:microvm-image:demo',
    'arn:cella:lambda:local:000000000000:microvm-image:demo',
  ];
  for (const arn of elsewhere) assert.throws(() => a.imageName(arn), invalid, arn);
  assert.throws(() => a.managedImageName(new Arns().managedImage('busybox')), invalid);
  assert.throws(() => a.managedConnectorName(new Arns().managedConnector('HTTP_INGRESS')), invalid);
  for (const bad of ['', 'a b', 'x'.repeat(65), 'arn:aws:s3:::bucket', a.managedImage('busybox'), `${a.image('demo')}/x`]) {
    assert.throws(() => a.imageName(bad), invalid, bad);
  }
});

test('only images and connectors of the server account take tags', () => {
  const a = new Arns();
  assert.deepEqual(a.taggable(a.image('demo')), { type: 'microvm-image', name: 'demo' });
  assert.deepEqual(a.taggable(a.customerConnector('pypi')), { type: 'network-connector', name: 'pypi' });
  for (const bad of [
    'demo',
    a.managedImage('busybox'),
    a.managedConnector('HTTP_INGRESS'),
    'arn:aws:lambda:us-east-1:000000000000:microvm:mvm-1',
    new Arns('eu-west-1').image('demo'),
  ]) {
    assert.throws(() => a.taggable(bad), invalid, bad);
  }
});
