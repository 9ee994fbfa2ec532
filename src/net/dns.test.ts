import assert from 'node:assert/strict';
import { test } from 'node:test';
import { answerAddresses, domainMatches, errorReply, parseQuery } from './dns.js';

function name(n: string): Buffer {
  return Buffer.concat([...n.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
}

function query(id: number, n: string, type = 1): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2);
  h.writeUInt16BE(1, 4);
  const q = Buffer.alloc(4);
  q.writeUInt16BE(type, 0);
  q.writeUInt16BE(1, 2);
  return Buffer.concat([h, name(n), q]);
}

function record(owner: Buffer, type: number, ttl: number, data: Buffer): Buffer {
  const f = Buffer.alloc(10);
  f.writeUInt16BE(type, 0);
  f.writeUInt16BE(1, 2);
  f.writeUInt32BE(ttl, 4);
  f.writeUInt16BE(data.length, 8);
  return Buffer.concat([owner, f, data]);
}

function response(q: Buffer, answers: Buffer[]): Buffer {
  const r = Buffer.from(q);
  r.writeUInt16BE(0x8180, 2);
  r.writeUInt16BE(answers.length, 6);
  return Buffer.concat([r, ...answers]);
}

/** A compression pointer to the question's name. */
const toQuestion = Buffer.from([0xc0, 12]);

test('names match exactly, or any sub-domain under a wildcard', () => {
  assert.ok(domainMatches('example.com', ['example.com']));
  assert.ok(domainMatches('Example.COM.', ['example.com']));
  assert.ok(!domainMatches('www.example.com', ['example.com']));
  assert.ok(domainMatches('a.example.com', ['*.example.com']));
  assert.ok(domainMatches('a.b.example.com', ['*.example.com']));
  assert.ok(!domainMatches('example.com', ['*.example.com']));
  assert.ok(!domainMatches('badexample.com', ['*.example.com']));
  assert.ok(!domainMatches('example.com.evil.test', ['example.com', '*.example.com']));
});

test('a standard query with one question is parsed; anything else is not', () => {
  const q = query(0x1234, 'App.Allowed.test', 28);
  assert.deepEqual(parseQuery(q), { id: 0x1234, name: 'app.allowed.test', type: 28, end: q.length });
  const resp = Buffer.from(q);
  resp.writeUInt16BE(0x8100, 2);
  assert.equal(parseQuery(resp), undefined, 'a response');
  assert.equal(parseQuery(q.subarray(0, q.length - 2)), undefined, 'truncated');
  const loop = Buffer.concat([q.subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
  assert.equal(parseQuery(loop), undefined, 'a pointer loop');
});

test('a refusal echoes the id and question and carries the rcode', () => {
  const q = query(7, 'other.test');
  const withOpt = Buffer.concat([q, Buffer.from([0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0])]);
  withOpt.writeUInt16BE(1, 10);
  const r = errorReply(withOpt, parseQuery(withOpt)!, 5);
  assert.equal(r.readUInt16BE(0), 7);
  assert.equal(r.readUInt16BE(2) & 0x800f, 0x8005);
  assert.equal(r.readUInt16BE(2) & 0x0100, 0x0100, 'RD echoed');
  assert.deepEqual([r.readUInt16BE(4), r.readUInt16BE(6), r.readUInt16BE(8), r.readUInt16BE(10)], [1, 0, 0, 0]);
  assert.deepEqual(r.subarray(12), q.subarray(12));
});

test('addresses come from the name and its CNAME chain only', () => {
  const q = query(1, 'app.allowed.test');
  const cname = name('edge.cdn.test');
  const res = response(q, [
    record(toQuestion, 5, 300, cname),
    record(name('edge.cdn.test'), 1, 20, Buffer.from([198, 51, 100, 1])),
    record(name('unrelated.test'), 1, 300, Buffer.from([198, 51, 100, 2])),
    record(toQuestion, 28, 300, Buffer.alloc(16)),
    record(toQuestion, 1, 7200, Buffer.from([198, 51, 100, 3])),
  ]);
  assert.deepEqual(answerAddresses(res, 'APP.allowed.test.'), [
    { address: '198.51.100.1', ttl: 20 },
    { address: '198.51.100.3', ttl: 7200 },
  ]);
  assert.deepEqual(answerAddresses(res.subarray(0, res.length - 3), 'app.allowed.test'), [], 'a cut answer gives nothing');
});
