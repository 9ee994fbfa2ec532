import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ImageBuild } from '../contract/index.js';
import { imageBuild } from '../../test/fixtures/image-build.js';
import type { Io } from './args.js';
import { main } from './index.js';

/** Runs main() in-process with captured output and the given environment (no CELLA_* unless set). */
async function cella(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => (out += typeof t === 'string' ? t : Buffer.from(t).toString()), err: (t) => (err += t), env };
  const code = await main(argv, io);
  return { code, out, err };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The CLI's --json output, typed as the test expects it (a wrong shape fails the assertions that read it). */
const parsed = <T>(text: string): T => JSON.parse(text) as T;

const COMMANDS = ['setup', 'doctor', 'demo', 'server', 'run', 'ls', 'get', 'suspend', 'resume', 'terminate', 'logs', 'token', 'usage'];
const IMAGE_SUBCOMMANDS = ['create', 'update', 'ls', 'get', 'versions', 'activate', 'deactivate', 'rm', 'builds', 'logs', 'bases'];

test('--help prints usage and exits 0, for cella and for every command and subcommand', async () => {
  const top = await cella(['--help']);
  assert.equal(top.code, 0);
  for (const c of [...COMMANDS, 'image create', 'image update', 'image ls', 'image builds']) assert.match(top.out, new RegExp(`^  ${c}\\b`, 'm'), c);
  for (const c of COMMANDS) {
    const r = await cella([c, '--help']);
    assert.equal(r.code, 0, c);
    assert.match(r.out, new RegExp(`^Usage: cella ${c}\\b`), c);
    assert.equal(r.err, '');
  }
  const image = await cella(['image', '--help']);
  assert.equal(image.code, 0);
  assert.match(image.out, /^Usage: cella image <subcommand>/);
  for (const s of IMAGE_SUBCOMMANDS) {
    const r = await cella(['image', s, '-h']);
    assert.equal(r.code, 0, s);
    assert.match(r.out, new RegExp(`^Usage: cella image ${s}\\b`), s);
  }
  // Help wins over other mistakes on the same line.
  assert.equal((await cella(['run', '--bogus', '--help'])).code, 0);
  const ls = await cella(['ls', '--help']);
  assert.match(ls.out, /--all/);
  assert.match(ls.out, /--api-key KEY/);
});

test('usage errors exit 2 with the concerned usage on stderr', async () => {
  const cases: Array<[string[], RegExp, RegExp]> = [
    [[], /no command given/, /^Usage: cella <command>/m],
    [['frob'], /unknown command "frob"/, /^Usage: cella <command>/m],
    [['run'], /missing IMAGE/, /^Usage: cella run IMAGE/m],
    [['run', 'a', 'b'], /unexpected argument "b"/, /^Usage: cella run/m],
    [['ls', '--bogus'], /Unknown option '--bogus'$/m, /^Usage: cella ls/m],
    [['get'], /missing VM/, /^Usage: cella get VM/m],
    [['image'], /missing the image subcommand/, /^Usage: cella image <subcommand>/m],
    [['image', 'frob'], /unknown image subcommand "frob"/, /^Usage: cella image <subcommand>/m],
    [['image', 'create'], /missing NAME/, /^Usage: cella image create NAME/m],
    [['image', 'create', 'demo'], /missing the code: --zip FILE, --dir DIR or --uri URI/, /^Usage: cella image create/m],
    [['image', 'create', 'demo', '--zip', 'a.zip', '--dir', 'app'], /--zip and --dir exclude each other: give one/, /Usage: cella image create/],
    [
      ['image', 'update', 'demo', '--zip', 'a.zip', '--dir', 'app', '--uri', 's3://b/k.zip'],
      /--zip and --dir and --uri exclude each other/,
      /Usage: cella image update/,
    ],
    [['image', 'create', 'demo', '--uri', 'https://example.com/a.zip'], /--uri takes s3:\/\/BUCKET\/KEY\.zip or file:\/\/\/PATH\.zip/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--env', 'NOEQUALS'], /--env takes K=V, not "NOEQUALS"/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--env', '=x'], /--env takes K=V/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--env', '1A=x'], /--env 1A: a variable name is letters, digits and _/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--memory', '300'], /--memory must be one of 256, 512, 1024, 2048, 4096, 8192, not 300/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--memory', 'lots'], /--memory must be a whole number/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--ready-timeout', '30'], /--ready-timeout needs --ready/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--ready', '--ready-timeout', '0'], /--ready-timeout must be between 1 and 3600/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--hooks-port', '9000'], /--hooks-port needs a hook/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--ready', '--hooks-port', '0'], /--hooks-port must be between 1 and 65535/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--tag', 'team'], /--tag takes K=V/, /Usage/],
    [['image', 'create', 'demo', '--dir', 'app', '--hook', 'run'], /Unknown option '--hook'/, /Usage: cella image create/],
    [['image', 'update', 'demo', '--dir', 'app', '--tag', 'a=b'], /Unknown option '--tag'/, /Usage: cella image update/],
    [['image', 'activate', 'demo'], /missing NAME and VERSION/, /^Usage: cella image activate/m],
    [['image', 'builds', 'demo', '1.0', 'x'], /unexpected argument "x"/, /^Usage: cella image builds/m],
    [['image', 'logs'], /missing NAME/, /^Usage: cella image logs/m],
    [['run', 'demo', '--version'], /argument missing/, /Usage: cella run/],
    [['run', 'demo', '--idle', 'soon'], /--idle must be a whole number, not "soon"/, /Usage: cella run/],
    [['run', 'demo', '--suspended-ttl', '5'], /give --idle SECONDS too/, /Usage: cella run/],
    [['run', 'demo', '--no-auto-resume'], /give --idle SECONDS too/, /Usage: cella run/],
    [['run', '--image-identifier', 'x', 'y'], /IMAGE and --image-identifier say the same thing: give one/, /Usage: cella run/],
    [['run', 'demo', '--idle', '60', '--idle-policy', '{}'], /--idle and --idle-policy say the same thing/, /Usage: cella run/],
    [['run', 'demo', '--max-duration', '9', '--maximum-duration-in-seconds', '9'], /--max-duration and --maximum-duration-in-seconds/, /Usage: cella run/],
    [['run', 'demo', '--idle-policy', '{"maxIdle'], /--idle-policy is not valid JSON/, /Usage: cella run/],
    [['run', 'demo', '--idle-policy', 'maxIdleDurationSeconds'], /--idle-policy: "maxIdleDurationSeconds" is not key=value/, /Usage: cella run/],
    [['run', 'demo', '--logging', '[]'], /--logging must be a JSON object/, /Usage: cella run/],
    [['run', '--cli-input-json', '[1]'], /--cli-input-json must be a JSON object/, /Usage: cella run/],
    [['run', '--cli-input-json', 'file:///nonexistent/run.json'], /--cli-input-json: ENOENT/, /Usage: cella run/],
    [['run', '--cli-input-json', '{}'], /missing IMAGE \(or --image-identifier\)/, /Usage: cella run/],
    [['run', 'demo', '--ingress-network-connectors', '["a",1]'], /--ingress-network-connectors must be a list of ARNs/, /Usage: cella run/],
    [['run', 'demo', '--egress-network-connectors', 'a', '--no-egress'], /--egress and --no-egress exclude each other/, /Usage: cella run/],
    [['token', 'vm', '--ports', '90-80'], /--ports 90-80 is empty/, /Usage: cella token/],
    [['token', 'vm', '--ports', '80'], /--ports takes A-B/, /Usage: cella token/],
    [['token', 'vm', '--port', '99999'], /--port must be between 1 and 65535/, /Usage: cella token/],
    [['token', 'vm', '--shell', '--port', '80'], /--shell takes no port options/, /Usage: cella token/],
    [['token', 'vm', '--minutes', '61'], /--minutes must be between 1 and 60/, /Usage: cella token/],
    [['server', '--accel', 'hvf'], /--accel must be kvm or tcg/, /^Usage: cella server/m],
    [['server', '--port', 'http'], /--port must be a whole number/, /^Usage: cella server/m],
    [['server', 'extra'], /unexpected argument "extra"/, /^Usage: cella server/m],
    [['doctor', 'extra'], /unexpected argument "extra"/, /^Usage: cella doctor/m],
  ];
  for (const [argv, message, usage] of cases) {
    const r = await cella(argv, { CELLA_API_KEY: 'k', CELLA_URL: 'http://127.0.0.1:9' });
    assert.equal(r.code, 2, argv.join(' '));
    assert.ok(r.err.startsWith('cella: '), argv.join(' '));
    assert.match(r.err, message, argv.join(' '));
    assert.match(r.err, usage, argv.join(' '));
    assert.equal(r.out, '', argv.join(' '));
  }
});

test('a missing API key is a usage error with a pointer to the fix', async () => {
  const r = await cella(['ls']);
  assert.equal(r.code, 2);
  assert.match(r.err, /^cella: no API key: pass --api-key KEY or set CELLA_API_KEY/);
  assert.doesNotMatch(r.err, /Usage/);
});

test('an unreachable server exits 3, naming the URL and `cella server`', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  for (const argv of [
    ['ls', '--url', url, '--api-key', 'k'],
    ['--url', url, 'get', 'mvm-1', '--api-key', 'k'],
  ]) {
    const r = await cella(argv);
    assert.equal(r.code, 3, argv.join(' '));
    assert.match(r.err, new RegExp(`cannot reach the Cella server at ${url.replace(/\./g, '\\.')} \\(ECONNREFUSED\\)`));
    assert.match(r.err, /cella server/);
  }
  // The URL from the environment is the one used.
  const r = await cella(['usage'], { CELLA_URL: url, CELLA_API_KEY: 'k' });
  assert.equal(r.code, 3);
  assert.match(r.err, new RegExp(url.replace(/\./g, '\\.')));
});

// Against a fake server: what the commands send and how they print and exit.

interface Seen {
  method: string;
  url: string;
  type: string | undefined;
  /** Parsed when JSON; the raw bytes otherwise (uploads). */
  body: unknown;
}

async function fake(answer: (method: string, path: string, res: ServerResponse) => void): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const type = req.headers['content-type'];
      const body = raw.length === 0 ? undefined : type === 'application/json' ? (JSON.parse(raw.toString()) as unknown) : raw;
      // The server's region and account, which the CLI asks for when it makes an ARN from a name: not one of the calls a test follows.
      if (req.method === 'GET' && req.url === '/cella/v1/info') return send(res, 200, INFO);
      seen.push({ method: req.method ?? '', url: req.url ?? '', type, body });
      answer(req.method ?? '', (req.url ?? '').split('?')[0] ?? '', res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const INFO = { version: 't', domain: 'cella.localhost', region: 'eu-west-1', accountId: '123456789012', proxyPort: 7443, accelerator: 'tcg' };
const send = (res: ServerResponse, status: number, body: unknown): void =>
  void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const ARN = 'arn:aws:lambda:eu-west-1:123456789012:microvm-image:demo';
const vm = (id: string, state: string, extra: Record<string, unknown> = {}) => ({
  microvmId: id,
  state,
  endpoint: `${id}.cella.localhost`,
  imageArn: ARN,
  imageVersion: '1.0',
  maximumDurationInSeconds: 28800,
  startedAt: 1735689600.123,
  ingressNetworkConnectors: [],
  egressNetworkConnectors: [],
  ...extra,
});

test('run sends the idle policy with its defaults, waits for RUNNING and prints the endpoint', async () => {
  let polls = 0;
  const f = await fake((method, path, res) => {
    if (method === 'POST' && path === '/2025-09-09/microvms') return send(res, 200, vm('mvm-1', 'PENDING'));
    if (method === 'GET' && path === '/2025-09-09/microvms/mvm-1') return send(res, 200, vm('mvm-1', ++polls < 2 ? 'PENDING' : 'RUNNING'));
    send(res, 404, { code: 'UNKNOWN_OPERATION', message: path });
  });
  try {
    const r = await cella(['run', 'demo', '--idle', '90', '--payload', 'hi', '--no-logs'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(f.seen[0]?.body, {
      imageIdentifier: 'demo',
      idlePolicy: { maxIdleDurationSeconds: 90, suspendedDurationSeconds: 3600, autoResumeEnabled: true },
      runHookPayload: 'hi',
      logging: { disabled: {} },
    });
    assert.match(r.out, /^id +mvm-1$/m);
    assert.match(r.out, /^state +RUNNING$/m);
    assert.match(r.out, /^endpoint +https:\/\/mvm-1\.cella\.localhost$/m);

    // Without --idle there is no idle policy; --json prints the MicroVM.
    const j = await cella(['run', 'demo', '--json', '--no-wait', '--max-duration', '60', '--version', '2.0'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(j.code, 0);
    assert.deepEqual(f.seen.at(-1)?.body, { imageIdentifier: 'demo', imageVersion: '2.0', maximumDurationInSeconds: 60 });
    assert.equal(parsed<{ microvmId: string }>(j.out).microvmId, 'mvm-1');

    // Connector names become ARNs of the server's region and account (GetServerInfo); ARNs pass as they are.
    const other = 'arn:aws:lambda:eu-west-1:123456789012:network-connector:given';
    const n = await cella(['run', 'demo', '--no-wait', '--ingress', 'http_ingress', '--egress', 'pypi', '--egress', 'INTERNET_EGRESS', '--egress', other], {
      CELLA_URL: f.url,
      CELLA_API_KEY: 'k',
    });
    assert.equal(n.code, 0, n.err);
    assert.deepEqual(f.seen.at(-1)?.body, {
      imageIdentifier: 'demo',
      ingressNetworkConnectors: ['arn:aws:lambda:eu-west-1:aws:network-connector:aws-network-connector:HTTP_INGRESS'],
      egressNetworkConnectors: [
        'arn:aws:lambda:eu-west-1:123456789012:network-connector:pypi',
        'arn:aws:lambda:eu-west-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS',
        other,
      ],
    });
  } finally {
    await f.close();
  }
});

test("run takes the AWS CLI's run-microvm flags and shapes, lists up to the next option, and --cli-input-json under the flags", async () => {
  const f = await fake((method, path, res) => {
    if (method === 'POST' && path === '/2025-09-09/microvms') return send(res, 200, vm('mvm-1', 'RUNNING'));
    send(res, 404, { code: 'UNKNOWN_OPERATION', message: path });
  });
  const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
  const IMAGE = 'arn:aws:lambda:us-east-1:000000000000:microvm-image:demo';
  const HTTP = 'arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:HTTP_INGRESS';
  const SHELL = 'arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:SHELL_INGRESS';
  const EGRESS = 'arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:INTERNET_EGRESS';
  const ROLE = 'arn:aws:iam::123456789012:role/app';
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-cli-input-'));
  try {
    const aws = [
      'run',
      '--image-identifier',
      IMAGE,
      '--image-version',
      '1.0',
      '--idle-policy',
      '{"maxIdleDurationSeconds":300,"suspendedDurationSeconds":0,"autoResumeEnabled":false}',
      '--ingress-network-connectors',
      HTTP,
      SHELL,
      '--egress-network-connectors',
      EGRESS,
      '--maximum-duration-in-seconds',
      '3600',
      '--execution-role-arn',
      ROLE,
      '--run-hook-payload',
      '{"job":1}',
      '--logging',
      '{"disabled":{}}',
      '--no-wait',
    ];
    assert.equal((await cella(aws, env)).code, 0);
    assert.deepEqual(f.seen.at(-1)?.body, {
      imageIdentifier: IMAGE,
      imageVersion: '1.0',
      idlePolicy: { maxIdleDurationSeconds: 300, suspendedDurationSeconds: 0, autoResumeEnabled: false },
      maximumDurationInSeconds: 3600,
      runHookPayload: '{"job":1}',
      executionRoleArn: ROLE,
      logging: { disabled: {} },
      ingressNetworkConnectors: [HTTP, SHELL],
      egressNetworkConnectors: [EGRESS],
    });

    // The shorthand idle policy, a JSON list, and --ingress with a full ARN beside a name.
    const mixed = [
      'run',
      'demo',
      '--idle-policy',
      'maxIdleDurationSeconds=60,suspendedDurationSeconds=600,autoResumeEnabled=true',
      '--ingress',
      SHELL,
      '--ingress',
      'http_ingress',
      '--egress-network-connectors',
      `["${EGRESS}"]`,
      '--no-wait',
    ];
    assert.equal((await cella(mixed, env)).code, 0);
    assert.deepEqual(f.seen.at(-1)?.body, {
      imageIdentifier: 'demo',
      idlePolicy: { maxIdleDurationSeconds: 60, suspendedDurationSeconds: 600, autoResumeEnabled: true },
      ingressNetworkConnectors: [SHELL, 'arn:aws:lambda:eu-west-1:aws:network-connector:aws-network-connector:HTTP_INGRESS'],
      egressNetworkConnectors: [EGRESS],
    });

    // --cli-input-json from a file: the flags given win over it, the rest of it is sent as it is.
    const input = path.join(dir, 'run.json');
    writeFileSync(input, JSON.stringify({ imageIdentifier: IMAGE, maximumDurationInSeconds: 60, clientToken: 'from-file', ingressNetworkConnectors: [HTTP] }));
    assert.equal((await cella(['run', '--cli-input-json', `file://${input}`, '--maximum-duration-in-seconds', '120', '--no-wait'], env)).code, 0);
    assert.deepEqual(f.seen.at(-1)?.body, {
      imageIdentifier: IMAGE,
      maximumDurationInSeconds: 120,
      clientToken: 'from-file',
      ingressNetworkConnectors: [HTTP],
    });
    assert.equal((await cella(['run', '--cli-input-json', JSON.stringify({ imageIdentifier: 'demo' }), '--no-wait'], env)).code, 0);
    assert.deepEqual(f.seen.at(-1)?.body, { imageIdentifier: 'demo' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await f.close();
  }
});

test('run exits 1 with the state reason when the MicroVM terminates instead', async () => {
  const f = await fake((method, _path, res) =>
    method === 'POST' ? send(res, 200, vm('mvm-2', 'PENDING')) : send(res, 200, vm('mvm-2', 'TERMINATED', { stateReason: 'run hook answered 500' })),
  );
  try {
    const r = await cella(['run', 'demo'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 1);
    assert.match(r.err, /MicroVM mvm-2 TERMINATED before it ran: run hook answered 500/);
  } finally {
    await f.close();
  }
});

test('API errors exit 1 as "cella: CODE: message"; with --json as a JSON error', async () => {
  const f = await fake((_m, _p, res) => send(res, 404, { message: 'MicroVM nope not found', code: 'NOT_FOUND', resourceId: 'nope', resourceType: 'Microvm' }));
  try {
    const r = await cella(['get', 'nope'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 1);
    assert.equal(r.err, 'cella: NOT_FOUND: MicroVM nope not found\n');
    const j = await cella(['terminate', 'nope', '--json'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(j.code, 1);
    assert.equal(parsed<{ error: { code: string } }>(j.err).error.code, 'NOT_FOUND');
    assert.equal(parsed<{ error: { resourceId: string } }>(j.err).error.resourceId, 'nope');
  } finally {
    await f.close();
  }
});

test('ls follows pages and hides TERMINATED MicroVMs unless --all', async () => {
  const f = await fake((_m, _p, res) => {
    const token = new URL(f.seen.at(-1)?.url ?? '', 'http://x').searchParams.get('nextToken');
    send(res, 200, token ? { items: [vm('mvm-c', 'TERMINATED')] } : { items: [vm('mvm-a', 'RUNNING'), vm('mvm-b', 'SUSPENDED')], nextToken: 'p2' });
  });
  try {
    const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
    const r = await cella(['ls', '--image', 'demo'], env);
    assert.equal(r.code, 0);
    const lines = r.out.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^ID +STATE +IMAGE +STARTED$/);
    assert.match(lines[1] ?? '', /^mvm-a +RUNNING +demo +2025-01-01T00:00:00Z$/);
    assert.match(lines[2] ?? '', /^mvm-b +SUSPENDED +demo/);
    assert.equal(lines.length, 3);
    assert.equal(new URL(f.seen[0]?.url ?? '', 'http://x').searchParams.get('imageIdentifier'), 'demo');
    const all = await cella(['ls', '--all', '--json'], env);
    assert.deepEqual(
      parsed<{ items: { microvmId: string }[] }>(all.out).items.map((i) => i.microvmId),
      ['mvm-a', 'mvm-b', 'mvm-c'],
    );
  } finally {
    await f.close();
  }
});

test('token defaults to port 8080 and prints the header line', async () => {
  const f = await fake((method, path, res) => {
    if (method === 'POST') return send(res, 200, { authToken: { 'X-aws-proxy-auth': 'tok.en' } });
    send(res, 404, { code: 'UNKNOWN_OPERATION', message: path });
  });
  try {
    const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
    const r = await cella(['token', 'mvm-1'], env);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'X-aws-proxy-auth: tok.en\n');
    assert.deepEqual(
      f.seen.map((x) => `${x.method} ${x.url}`),
      ['POST /2025-09-09/microvms/mvm-1/auth-token'],
    );
    assert.deepEqual(f.seen.at(-1)?.body, { expirationInMinutes: 15, allowedPorts: [{ port: 8080 }] });
    await cella(['token', 'mvm-1', '--ports', '3000-3005', '--port', '22', '--minutes', '5'], env);
    assert.deepEqual(f.seen.at(-1)?.body, { expirationInMinutes: 5, allowedPorts: [{ port: 22 }, { range: { startPort: 3000, endPort: 3005 } }] });
    const shell = await cella(['token', 'mvm-1', '--shell', '--json'], env);
    assert.equal(f.seen.at(-1)?.url, '/2025-09-09/microvms/mvm-1/shell-auth-token');
    assert.deepEqual(JSON.parse(shell.out), { authToken: { 'X-aws-proxy-auth': 'tok.en' } });
  } finally {
    await f.close();
  }
});

// Images, against a fake server that keeps one image with versions 1.0 and 2.0.

const T = 1735689600.123;
const BUSYBOX = 'arn:aws:lambda:eu-west-1:aws:microvm-image:busybox';
const IMG = '/2025-09-09/microvm-images';
const build = (version: string, buildId: string, buildState: string, extra: Partial<ImageBuild> = {}) =>
  imageBuild(ARN, version, buildId, buildState, T, extra);
const version = (v: string, state: string, status = 'ACTIVE', extra: Record<string, unknown> = {}) => ({
  imageArn: ARN,
  imageVersion: v,
  state,
  status,
  createdAt: T,
  baseImageArn: BUSYBOX,
  codeArtifact: { uri: 'file:///a.zip' },
  ...extra,
});

/** How the fake's builds end, by build id; the log of each is two lines, sent apart. */
async function imageServer(outcome: Record<string, Record<string, unknown>>) {
  const started = (v: string, buildId: string, state: string) => ({
    imageArn: ARN,
    name: 'demo',
    state,
    imageVersion: v,
    buildId,
    createdAt: T,
    baseImageArn: BUSYBOX,
    codeArtifact: { uri: 'x' },
  });
  return fake((method, path, res) => {
    const route = `${method} ${path}`;
    if (route === 'POST /cella/v1/code-artifacts')
      return send(res, 200, { uri: 'file:///data/artifacts/abc.zip', sizeInBytes: 2048, sha256: 'abcdef0123456789' });
    if (route === `POST ${IMG}`) return send(res, 200, started('1.0', 'b-1', 'CREATING'));
    if (route === `PUT ${IMG}/demo`) return send(res, 200, started('2.0', 'b-2', 'UPDATING'));
    if (route === `GET ${IMG}`)
      return send(res, 200, {
        items: [{ imageArn: ARN, name: 'demo', state: 'UPDATED', latestActiveImageVersion: '1.0', latestFailedImageVersion: '2.0', createdAt: T }],
      });
    if (route === `GET ${IMG}/demo`)
      return send(res, 200, { imageArn: ARN, name: 'demo', state: 'UPDATED', latestActiveImageVersion: '1.0', createdAt: T, tags: { team: 'a' } });
    if (route === `GET ${IMG}/demo/versions`) {
      return send(res, 200, { items: [version('1.0', 'SUCCESSFUL'), version('2.0', 'FAILED', 'ACTIVE', { stateReason: 'CONTAINER_BUILD_FAILED' })] });
    }
    if (route === `PATCH ${IMG}/demo/versions/1.0`) return send(res, 200, version('1.0', 'SUCCESSFUL', 'INACTIVE'));
    if (route === `DELETE ${IMG}/demo/versions/1.0`) return send(res, 200, { imageIdentifier: 'demo', imageVersion: '1.0', state: 'DELETED' });
    if (route === `GET ${IMG}/demo/versions/2.0/builds`) return send(res, 200, { items: [build('2.0', 'b-0', 'FAILED'), build('2.0', 'b-2', 'FAILED')] });
    const b = /^GET \/2025-09-09\/microvm-images\/demo\/versions\/([\d.]+)\/builds\/([\w-]+)$/.exec(route);
    if (b) return send(res, 200, build(b[1] as string, b[2] as string, 'FAILED', outcome[b[2] as string]));
    const log = /^GET \/cella\/v1\/microvm-images\/demo\/versions\/[\d.]+\/builds\/([\w-]+)\/logs$/.exec(route);
    if (log) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(`Step 1/2 : FROM busybox (${log[1]})\n`);
      return void setTimeout(() => res.end('Step 2/2 : COPY . /app\n'), 10);
    }
    if (route === 'GET /2025-09-09/managed-microvm-images') return send(res, 200, { items: [{ imageArn: BUSYBOX, createdAt: T, description: 'BusyBox' }] });
    send(res, 404, { code: 'UNKNOWN_OPERATION', message: route });
  });
}

test('image create zips --dir, uploads it, creates, follows the build log, and on FAILED exits 1 with the reason last', async () => {
  const f = await imageServer({
    'b-1': { buildState: 'FAILED', stateReason: 'CONTAINER_BUILD_FAILED', stateReasonMessage: 'step 2 (RUN make) exited with 2' },
  });
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-cli-'));
  writeFileSync(path.join(dir, 'Dockerfile'), 'FROM busybox\nCOPY . /app\n');
  try {
    const argv = ['image', 'create', 'demo', '--dir', dir, '--memory', '256', '--env', 'A=1=2', '--ready', '--ready-timeout', '30', '--run-hook'];
    const r = await cella([...argv, '--tag', 'team=a', '--description', 'first'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 1, r.err);
    assert.deepEqual(
      f.seen.map((s) => `${s.method} ${s.url}`),
      [
        'POST /cella/v1/code-artifacts',
        `POST ${IMG}`,
        'GET /cella/v1/microvm-images/demo/versions/1.0/builds/b-1/logs?follow=true',
        `GET ${IMG}/demo/versions/1.0/builds/b-1`,
      ],
    );
    assert.equal(f.seen[0]?.type, 'application/zip');
    assert.equal((f.seen[0]?.body as Buffer).subarray(0, 2).toString(), 'PK');
    assert.deepEqual(f.seen[1]?.body, {
      name: 'demo',
      baseImageArn: BUSYBOX,
      resources: [{ minimumMemoryInMiB: 256 }],
      environmentVariables: { A: '1=2' },
      hooks: { port: 9000, microvmHooks: { run: 'ENABLED' }, microvmImageHooks: { ready: 'ENABLED', readyTimeoutInSeconds: 30 } },
      description: 'first',
      codeArtifact: { uri: 'file:///data/artifacts/abc.zip' },
      tags: { team: 'a' },
    });
    assert.match(r.err, /building demo version 1\.0 \(build b-1\)\nStep 1\/2 : FROM busybox \(b-1\)\nStep 2\/2 : COPY \. \/app\n/);
    assert.match(r.err, /cella: the build of demo version 1\.0 FAILED: CONTAINER_BUILD_FAILED: step 2 \(RUN make\) exited with 2\n$/);
    assert.match(r.out, /^state +FAILED$/m);
    assert.match(r.out, /^reason +CONTAINER_BUILD_FAILED: step 2/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await f.close();
  }
});

test('image create --uri passes the URI through; --base takes a name or an ARN; SUCCESSFUL exits 0; --json prints the build', async () => {
  const snapshotBuild = { memorySnapshotSizeInBytes: 64 * 1048576, diskSnapshotSizeInBytes: 1048576 };
  const f = await imageServer({ 'b-1': { buildState: 'SUCCESSFUL', snapshotBuild } });
  try {
    const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
    const r = await cella(['image', 'create', 'demo', '--uri', 's3://bucket/app.zip', '--base', 'debian-12-python'], env);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(f.seen[0]?.body, {
      name: 'demo',
      baseImageArn: 'arn:aws:lambda:eu-west-1:aws:microvm-image:debian-12-python',
      codeArtifact: { uri: 's3://bucket/app.zip' },
    });
    assert.match(r.out, /^state +SUCCESSFUL$/m);
    assert.match(r.out, /^snapshot +memory 64\.0 MiB, disk 1\.0 MiB$/m);

    const j = await cella(
      ['image', 'create', 'demo', '--uri', 'file:///srv/app.zip', '--base', 'arn:aws:lambda:us-east-1:aws:microvm-image:al2023-1', '--json'],
      env,
    );
    assert.equal(j.code, 0, j.err);
    assert.equal(parsed<{ buildState: string }>(j.out).buildState, 'SUCCESSFUL');
    // With --json the log is not followed: stderr stays quiet, stdout is JSON only.
    assert.equal(j.err, '');
    assert.deepEqual(
      f.seen.slice(3).map((s) => `${s.method} ${s.url}`),
      [`POST ${IMG}`, `GET ${IMG}/demo/versions/1.0/builds/b-1`],
    );
    assert.deepEqual(f.seen[3]?.body, {
      name: 'demo',
      baseImageArn: 'arn:aws:lambda:us-east-1:aws:microvm-image:al2023-1',
      codeArtifact: { uri: 'file:///srv/app.zip' },
    });
  } finally {
    await f.close();
  }
});

test('image update --zip streams the file and PUTs a new version; --no-wait returns at once', async () => {
  const f = await imageServer({});
  const dir = mkdtempSync(path.join(tmpdir(), 'cella-cli-'));
  const zip = path.join(dir, 'app.zip');
  writeFileSync(zip, 'PK not really a zip');
  try {
    const r = await cella(['image', 'update', 'demo', '--zip', zip, '--client-token', 't-1', '--no-wait'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      f.seen.map((s) => `${s.method} ${s.url}`),
      ['POST /cella/v1/code-artifacts', `PUT ${IMG}/demo`],
    );
    assert.equal((f.seen[0]?.body as Buffer).toString(), 'PK not really a zip');
    assert.deepEqual(f.seen[1]?.body, { baseImageArn: BUSYBOX, clientToken: 't-1', codeArtifact: { uri: 'file:///data/artifacts/abc.zip' } });
    assert.match(r.out, /^version +2\.0$/m);
    assert.match(r.out, /^build +b-2$/m);
    assert.match(r.err, /cella image logs demo --version 2\.0 -f/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await f.close();
  }
});

test('image logs defaults to the latest build of the latest version', async () => {
  const f = await imageServer({});
  try {
    const r = await cella(['image', 'logs', 'demo'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'Step 1/2 : FROM busybox (b-2)\nStep 2/2 : COPY . /app\n');
    assert.deepEqual(
      f.seen.map((s) => `${s.method} ${s.url}`),
      [`GET ${IMG}/demo/versions`, `GET ${IMG}/demo/versions/2.0/builds`, 'GET /cella/v1/microvm-images/demo/versions/2.0/builds/b-2/logs'],
    );
    await cella(['image', 'logs', 'demo', '--version', '1.0', '--build', 'b-9', '-f'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(f.seen.at(-1)?.url, '/cella/v1/microvm-images/demo/versions/1.0/builds/b-9/logs?follow=true');
  } finally {
    await f.close();
  }
});

test('image ls, get, versions, builds, bases print tables; activate, deactivate and rm --version act on a version', async () => {
  const f = await imageServer({});
  try {
    const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
    const ls = await cella(['image', 'ls', '--name-filter', 'de'], env);
    assert.equal(ls.code, 0, ls.err);
    assert.match(ls.out, /^NAME +STATE +ACTIVE +FAILED +CREATED\ndemo +UPDATED +1\.0 +2\.0 +2025-01-01T00:00:00Z\n$/);
    assert.equal(f.seen.at(-1)?.url, `${IMG}?nameFilter=de`);

    const get = await cella(['image', 'get', 'demo'], env);
    assert.equal(get.code, 0, get.err);
    assert.match(get.out, /^latest active +1\.0$/m);
    assert.match(get.out, /^tags +team=a$/m);
    assert.match(get.out, /^VERSION +STATE +STATUS +CREATED +REASON$/m);
    assert.match(get.out, /^2\.0 +FAILED +ACTIVE +2025-01-01T00:00:00Z +CONTAINER_BUILD_FAILED$/m);
    const getJson = parsed<{ image: { name: string }; versions: unknown[] }>((await cella(['image', 'get', 'demo', '--json'], env)).out);
    assert.equal(getJson.image.name, 'demo');
    assert.equal(getJson.versions.length, 2);

    assert.match((await cella(['image', 'versions', 'demo'], env)).out, /^1\.0 +SUCCESSFUL +ACTIVE/m);

    const builds = await cella(['image', 'builds', 'demo'], env);
    assert.equal(builds.code, 0, builds.err);
    assert.match(builds.out, /^BUILD +VERSION +STATE +ARCH +CREATED +REASON\nb-0 +2\.0 +FAILED/);

    const deact = await cella(['image', 'deactivate', 'demo', '1.0'], env);
    assert.equal(deact.out, 'demo 1.0 INACTIVE\n');
    assert.deepEqual(f.seen.at(-1)?.body, { status: 'INACTIVE' });
    await cella(['image', 'activate', 'demo', '1.0'], env);
    assert.deepEqual(f.seen.at(-1)?.body, { status: 'ACTIVE' });

    const rm = await cella(['image', 'rm', 'demo', '--version', '1.0'], env);
    assert.equal(rm.out, 'image demo version 1.0: DELETED\n');
    assert.equal(f.seen.at(-1)?.method, 'DELETE');
    assert.equal(f.seen.at(-1)?.url, `${IMG}/demo/versions/1.0`);

    const b = await cella(['image', 'bases'], env);
    assert.match(b.out, /^busybox +arn:aws:lambda:eu-west-1:aws:microvm-image:busybox +2025-01-01T00:00:00Z +BusyBox$/m);
  } finally {
    await f.close();
  }
});

test('keys create prints the pair once as exports; ls follows pages; revoke DELETEs the id; help for each', async () => {
  const f = await fake((method, p, res) => {
    if (method === 'POST' && p === '/cella/v1/access-keys')
      return send(res, 200, { accessKeyId: 'CELLANEWKEY000000001', secretAccessKey: 's3cr3t', createdAt: 1735689600.123 });
    if (method === 'GET' && p === '/cella/v1/access-keys') {
      const second = f.seen.at(-1)?.url.includes('nextToken=t');
      return send(
        res,
        200,
        second
          ? { items: [{ accessKeyId: 'CELLAKEYB', createdAt: 1735776000 }] }
          : { items: [{ accessKeyId: 'CELLAKEYA', createdAt: 1735689600 }], nextToken: 't' },
      );
    }
    if (method === 'DELETE' && p === '/cella/v1/access-keys/CELLAGONE') return void res.writeHead(200, { 'content-length': 0 }).end();
    send(res, 404, { code: 'NOT_FOUND', message: `access key ${p.split('/').at(-1)} not found` });
  });
  try {
    const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
    const made = await cella(['keys', 'create'], env);
    assert.equal(made.code, 0, made.err);
    assert.match(made.out, /^ {2}export AWS_ACCESS_KEY_ID=CELLANEWKEY000000001$/m);
    assert.match(made.out, /^ {2}export AWS_SECRET_ACCESS_KEY=s3cr3t$/m);
    const ls = await cella(['keys', 'ls'], env);
    assert.equal(ls.code, 0, ls.err);
    assert.match(ls.out, /^ACCESS KEY ID +CREATED\nCELLAKEYA +2025-01-01T00:00:00Z\nCELLAKEYB +2025-01-02T00:00:00Z\n$/);
    const revoked = await cella(['keys', 'revoke', 'CELLAGONE'], env);
    assert.equal(revoked.code, 0, revoked.err);
    assert.equal(f.seen.at(-1)?.method, 'DELETE');
    const unknown = await cella(['keys', 'revoke', 'CELLANOPE'], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.err, /NOT_FOUND/);
    assert.equal((await cella(['keys', 'revoke'], env)).code, 2);
    assert.equal((await cella(['keys', 'bogus'], env)).code, 2);
    for (const s of ['create', 'ls', 'revoke']) assert.match((await cella(['keys', s, '--help'])).out, new RegExp(`^Usage: cella keys ${s}\\b`));
    assert.match((await cella(['keys', '--help'])).out, /^Usage: cella keys <subcommand>/);
  } finally {
    await f.close();
  }
});
