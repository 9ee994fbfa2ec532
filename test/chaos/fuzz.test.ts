/**
 * The API fuzz drill (issue 11): a real cellad on port 0 with no VM and no
 * throttling, and hostile requests for every operation in its
 * /openapi.json (see ./fuzz-cases.ts). Every answer must come, within a
 * bound, and never be a 5xx; every error must be a 4xx with the contract's
 * JSON body (`message`, `code`) and `x-amzn-errortype`; a case the API must
 * refuse must not succeed.
 *
 * CHAOS_FUZZ_CASES bounds the number of cases (600, or 3000 with CHAOS_FULL=1); CHAOS_SEED
 * repeats a run (the seed is printed). The last line is the summary, e.g.
 * `fuzz: 3000 cases, 0 5xx, 0 hangs, 0 non-json`, where non-json counts
 * every answer that is not the JSON error it should be: a non-JSON error,
 * a success where a refusal was due, or a connection closed or reset
 * without an answer.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { startServer, type CellaServer } from '../../src/server/index.js';
import { API_KEY } from '../control-helpers.js';
import { exchange, type RawOutcome } from '../fixtures/raw-http.js';
import { CaseMaker, operations, type FuzzCase, type OpenApi } from './fuzz-cases.js';
import { budget, seedFromEnv, summary } from './harness.js';

const CASES = budget('CHAOS_FUZZ_CASES', 600, 3000);
const SEED = seedFromEnv();
/** A bound on waiting for one answer (not a performance figure): beyond it the case counts as a hang. */
const ANSWER_BOUND_MS = 20_000;

let dir: string;
let server: CellaServer;

before(async () => {
  dir = mkdtempSync('/tmp/cfz-');
  server = await startServer({ dataDir: dir, port: 0, proxyPort: 0, apiKey: API_KEY, demoImage: false, apiRateScale: 0, log: () => {} });
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

type Verdict = 'ok' | '5xx' | 'hang' | 'non-json';

function judge(c: FuzzCase, out: RawOutcome): { verdict: Verdict; why: string } {
  if (out.kind === 'hang') return { verdict: 'hang', why: `no answer in ${ANSWER_BOUND_MS} ms` };
  if (out.kind === 'reset') return { verdict: 'non-json', why: `connection ${out.detail}` };
  const { status, headers, body } = out;
  const text = body.toString('utf8');
  if (status >= 500) return { verdict: '5xx', why: `${status} ${text.slice(0, 160)}` };
  if (status < 400)
    return c.mustFail ? { verdict: 'non-json', why: `${status}: accepted what must be refused: ${text.slice(0, 120)}` } : { verdict: 'ok', why: '' };
  if (!headers['content-type']?.startsWith('application/json'))
    return { verdict: 'non-json', why: `${status} content-type ${headers['content-type'] ?? 'none'}: ${text.slice(0, 120)}` };
  if (!headers['x-amzn-errortype']) return { verdict: 'non-json', why: `${status} without x-amzn-errortype` };
  // A HEAD answer has headers only.
  if (c.method === 'HEAD') return { verdict: 'ok', why: '' };
  try {
    const e = JSON.parse(text) as { message?: unknown; code?: unknown };
    if (typeof e.message === 'string' && typeof e.code === 'string') return { verdict: 'ok', why: '' };
  } catch {
    // judged below
  }
  return { verdict: 'non-json', why: `${status} body ${text.slice(0, 120)}` };
}

test(`API fuzz: ${CASES} hostile requests over every operation, never a 5xx, a hang or a non-JSON error`, { timeout: 60 * 60_000 }, async () => {
  console.log(`fuzz: seed ${SEED} (CHAOS_SEED=${SEED} repeats this run), ${CASES} cases`);
  const auth = { authorization: `Bearer ${API_KEY}` };
  const doc = (await (await fetch(`${server.url}/openapi.json`, { headers: auth })).json()) as OpenApi;
  const ops = operations(doc);
  assert.ok(ops.length >= 30, `operations in /openapi.json: ${ops.length}`);
  const managed = (await (await fetch(`${server.url}/2025-09-09/managed-microvm-images`, { headers: auth })).json()) as { items: Array<{ imageArn: string }> };
  const maker = new CaseMaker(
    SEED,
    ops,
    API_KEY,
    managed.items.map((i) => i.imageArn),
  );

  const counts: Record<Verdict, number> = { ok: 0, '5xx': 0, hang: 0, 'non-json': 0 };
  const failures: string[] = [];
  for (let i = 0; i < CASES; i++) {
    const c = maker.next();
    const { verdict, why } = judge(c, await exchange(server.port, c, ANSWER_BOUND_MS));
    counts[verdict]++;
    if (verdict !== 'ok') {
      const body = c.body ? JSON.stringify(c.body.subarray(0, 80).toString('latin1')) : '-';
      failures.push(`#${i} ${c.kind}: ${c.method} ${c.target.slice(0, 120)} body ${body} → ${verdict}: ${why}`);
    }
  }
  // The server still serves after all of it.
  assert.equal((await fetch(`${server.url}/cella/v1/info`, { headers: auth })).status, 200, 'GetServerInfo after the fuzz');
  for (const f of failures.slice(0, 15)) console.log(`fuzz failure ${f}`);
  summary(`fuzz: ${CASES} cases, ${counts['5xx']} 5xx, ${counts.hang} hangs, ${counts['non-json']} non-json (seed ${SEED})`);
  assert.deepEqual(failures.slice(0, 15), [], `seed ${SEED}: ${failures.length} of ${CASES} cases failed`);
});
