import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
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

const COMMANDS = ['setup', 'doctor', 'demo', 'server', 'run', 'ls', 'get', 'suspend', 'resume', 'terminate', 'logs', 'token', 'usage'];
const IMAGE_SUBCOMMANDS = ['register', 'ls', 'get', 'rm', 'logs'];

test('--help prints usage and exits 0, for cella and for every command and subcommand', async () => {
  const top = await cella(['--help']);
  assert.equal(top.code, 0);
  for (const c of [...COMMANDS, 'image register', 'image ls']) assert.match(top.out, new RegExp(`^  ${c}\\b`, 'm'), c);
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
    [['image', 'register', 'demo', '--rootfs', '/x'], /missing NAME and the command/, /^Usage: cella image register/m],
    [['image', 'register', 'demo', '--', '/bin/app'], /missing --rootfs DIR/, /^Usage: cella image register/m],
    [['image', 'register', 'demo', '--rootfs', '/x', '--env', 'NOEQUALS', '--', '/a'], /--env takes K=V/, /Usage/],
    [['image', 'register', 'demo', '--rootfs', '/x', '--hook', 'run', '--', '/a'], /--hook needs --hooks-port/, /Usage/],
    [['image', 'register', 'demo', '--rootfs', '/x', '--port', '80', '--hook', 'run,boot', '--', '/a'], /--hook takes run, resume, suspend or terminate, not "boot"/, /Usage/],
    [['image', 'register', 'demo', '--rootfs', '/x', '--memory-mib', '300', '--', '/a'], /--memory-mib must be one of 256, 512, 1024, 2048, 4096, 8192, not 300/, /Usage/],
    [['run', 'demo', '--idle', 'soon'], /--idle must be a whole number, not "soon"/, /Usage: cella run/],
    [['run', 'demo', '--suspended-ttl', '5'], /give --idle SECONDS too/, /Usage: cella run/],
    [['run', 'demo', '--no-auto-resume'], /give --idle SECONDS too/, /Usage: cella run/],
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
  for (const argv of [['ls', '--url', url, '--api-key', 'k'], ['--url', url, 'get', 'mvm-1', '--api-key', 'k']]) {
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
  body: unknown;
}

async function fake(answer: (method: string, path: string, res: ServerResponse) => void): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', body: body ? JSON.parse(body) : undefined });
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

const send = (res: ServerResponse, status: number, body: unknown): void => void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const ARN = 'arn:cella:lambda:local:000000000000:microvm-image:demo';
const vm = (id: string, state: string, extra: Record<string, unknown> = {}) => ({
  microvmId: id,
  state,
  endpoint: `${id}.cella.localhost`,
  imageArn: ARN,
  imageVersion: '1.0',
  maximumDurationInSeconds: 28800,
  startedAt: '2025-01-01T00:00:00.123Z',
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
    const j = await cella(['run', 'demo', '--json', '--no-wait', '--max-duration', '60'], { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(j.code, 0);
    assert.deepEqual(f.seen.at(-1)?.body, { imageIdentifier: 'demo', maximumDurationInSeconds: 60 });
    assert.equal(JSON.parse(j.out).microvmId, 'mvm-1');
  } finally {
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
    assert.equal(JSON.parse(j.err).error.code, 'NOT_FOUND');
    assert.equal(JSON.parse(j.err).error.resourceId, 'nope');
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
      JSON.parse(all.out).items.map((i: { microvmId: string }) => i.microvmId),
      ['mvm-a', 'mvm-b', 'mvm-c'],
    );
  } finally {
    await f.close();
  }
});

test("token defaults to the image's port and prints the header line", async () => {
  const f = await fake((method, path, res) => {
    if (path === '/2025-09-09/microvms/mvm-1') return send(res, 200, vm('mvm-1', 'RUNNING'));
    if (path.startsWith('/cella/v1/images/')) {
      return send(res, 200, { imageArn: ARN, name: 'demo', state: 'CREATED', imageVersion: '1.0', memoryMiB: 256, vcpus: 1, port: 8080, createdAt: 'x' });
    }
    if (method === 'POST') return send(res, 200, { authToken: { 'X-aws-proxy-auth': 'tok.en' } });
    send(res, 404, { code: 'UNKNOWN_OPERATION', message: path });
  });
  try {
    const env = { CELLA_URL: f.url, CELLA_API_KEY: 'k' };
    const r = await cella(['token', 'mvm-1'], env);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'X-aws-proxy-auth: tok.en\n');
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

test('image register sends the image, waits for the build and on CREATE_FAILED shows the reason and the log tail', async () => {
  const states = ['CREATING', 'CREATE_FAILED'];
  const image = (state: string) => ({
    imageArn: ARN,
    name: 'demo',
    state,
    imageVersion: '1.0',
    memoryMiB: 256,
    vcpus: 1,
    port: 8080,
    createdAt: '2025-01-01T00:00:00.000Z',
    ...(state === 'CREATE_FAILED' ? { stateReason: 'the app exited' } : {}),
  });
  const f = await fake((method, path, res) => {
    if (method === 'POST') return send(res, 200, image('CREATING'));
    if (path === '/cella/v1/images/demo') return send(res, 200, image(states.shift() ?? 'CREATE_FAILED'));
    if (path === '/cella/v1/images/demo/logs') return void res.writeHead(200).end(`${Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n')}\n`);
    send(res, 404, { code: 'UNKNOWN_OPERATION', message: path });
  });
  try {
    const argv = ['image', 'register', 'demo', '--rootfs', 'rel/dir', '--memory-mib', '256', '--env', 'A=1=2', '--hook', 'run', '--hooks-port', '9000', '--', '/bin/app', '--flag'];
    const r = await cella(argv, { CELLA_URL: f.url, CELLA_API_KEY: 'k' });
    assert.equal(r.code, 1);
    assert.deepEqual(f.seen[0]?.body, {
      name: 'demo',
      rootfsDir: path.resolve('rel/dir'),
      command: ['/bin/app', '--flag'],
      memoryMiB: 256,
      environmentVariables: { A: '1=2' },
      hooks: { port: 9000, microvmHooks: { run: 'ENABLED' } },
    });
    assert.match(r.err, /building image demo .*\.+ CREATE_FAILED/);
    assert.match(r.err, /cella: image demo CREATE_FAILED: the app exited/);
    assert.match(r.err, /line 10\n/);
    assert.match(r.err, /line 29\n/);
    assert.doesNotMatch(r.err, /line 9\n/);
    assert.match(r.out, /^state +CREATE_FAILED$/m);
  } finally {
    await f.close();
  }
});
