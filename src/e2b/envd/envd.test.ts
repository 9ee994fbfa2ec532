/**
 * envd against the real, unmodified e2b SDK (E2B_DEBUG mode pointed at a
 * plain HTTP server on port 0) and a fake guest agent: commands, exit codes,
 * stdin, signals, listing, terminals, the file-system calls and /files.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { CommandExitError, FilesystemEventType, FileNotFoundError, FileType, getSignature, NotEnoughSpaceError, Sandbox } from 'e2b';
import type { ExitStatus, FileEntry, GuestProcessInfo, ProcessSpec, PtySpec, UserInfo, Watcher } from '../../agent/index.js';
import { CellaError } from '../../contract/index.js';
import type { EnvdAgent, GuestExec, GuestPty } from './context.js';
import { envdAuthProblem, ENVD_VERSION } from './access.js';
import { Filesystem } from './gen/filesystem_pb.js';
import { createEnvdHandler, type EnvdHandler } from './handler.js';

const T = { timeout: 20_000 };

/** A guest process that plays a few bash scripts. */
class FakeProc extends EventEmitter implements GuestExec, GuestPty {
  exitStatus: ExitStatus | undefined;
  closed = false;
  stdin = '';
  constructor(
    readonly pid: number,
    readonly spec: ProcessSpec | PtySpec,
    readonly kind: 'exec' | 'pty',
  ) {
    super();
  }
  exit(code: number | null, signal: number | null = null): void {
    if (this.closed) return;
    this.exitStatus = { status: signal ?? (code ?? 0) << 8, exitCode: code, signal };
    this.closed = true;
    this.emit('exit', this.exitStatus);
    this.emit('close');
  }
  async signal(sig: number): Promise<void> {
    if (this.closed) throw new CellaError('NOT_FOUND', 'no such process');
    setImmediate(() => this.exit(null, sig));
  }
  detach(): void {}
  // eslint-disable-next-line @typescript-eslint/no-misused-promises -- one fake plays both; a terminal's caller ignores the promise
  async write(data: Buffer): Promise<void> {
    if (this.kind === 'pty') {
      setImmediate(() => this.emit('data', data));
      return;
    }
    this.stdin += data.toString();
    this.emit('stdout', data);
  }
  async closeStdin(): Promise<void> {
    setImmediate(() => this.exit(0));
  }
  resize(cols: number, rows: number): void {
    this.emit('data', Buffer.from(`${cols}x${rows}`));
  }
}

/** A guest watch: the test emits its events. */
class FakeWatch extends EventEmitter {
  closed = false;
  constructor(private readonly onClose: () => void) {
    super();
  }
  async close(): Promise<void> {
    this.closed = true;
    this.onClose();
  }
}

class FakeAgent implements EnvdAgent {
  procs = new Map<number, FakeProc>();
  users: UserInfo[] = [
    { name: 'root', uid: 0, gid: 0, home: '/root', shell: '/bin/sh', groups: [0] },
    { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/bash', groups: [1000] },
  ];
  files = new Map<string, Buffer>([['/home/user/hello.txt', Buffer.from('hello')]]);
  metadata = new Map<string, Record<string, string>>();
  /** The watches open now, by path: a test makes their events. */
  watches = new Map<string, FakeWatch>();
  dirs = new Set(['/', '/home', '/home/user', '/root']);
  /** Bytes a write may hold: beyond, it fails with GUEST_DISK_FULL and stops reading, as the guest's does. */
  diskBytes = Infinity;
  private nextPid = 100;

  private play(p: FakeProc): void {
    const script = p.spec.argv?.[3] ?? ''; // bash -l -c <script>
    const m = /^exit (\d+)$/.exec(script);
    setImmediate(() => {
      if (script.startsWith('echo ')) {
        p.emit('stdout', Buffer.from(`${script.slice(5)}\n`));
        p.exit(0);
      } else if (script === 'env') {
        p.emit(
          'stdout',
          Buffer.from(
            Object.entries(p.spec.env ?? {})
              .map(([k, v]) => `${k}=${v}\n`)
              .join(''),
          ),
        );
        p.exit(0);
      } else if (script === 'pwd; id -u') {
        p.emit('stdout', Buffer.from(`${p.spec.cwd}\n${p.spec.uid}\n`));
        p.exit(0);
      } else if (m) {
        p.emit('stderr', Buffer.from('failing\n'));
        p.exit(Number(m[1]));
      }
      // anything else (cat, sleep) runs until stdin closes or a signal
    });
  }

  async spawn(spec: ProcessSpec): Promise<GuestExec> {
    const p = new FakeProc(this.nextPid++, spec, 'exec');
    this.procs.set(p.pid, p);
    this.play(p);
    return p;
  }
  async openPty(spec: PtySpec): Promise<GuestPty> {
    const p = new FakeProc(this.nextPid++, spec, 'pty');
    this.procs.set(p.pid, p);
    return p;
  }
  async listProcesses(): Promise<GuestProcessInfo[]> {
    return [...this.procs.values()].map((p) => ({
      id: p.pid,
      pid: p.pid,
      kind: p.kind,
      argv: p.spec.argv ?? [],
      env: p.spec.env ?? {},
      truncated: false,
      ...(p.closed && { status: 0 }),
      ...('label' in p.spec && p.spec.label !== undefined && { label: p.spec.label }),
    }));
  }
  async attach(info: Pick<GuestProcessInfo, 'pid'>): Promise<GuestExec | GuestPty> {
    const p = this.procs.get(info.pid);
    if (!p) throw new CellaError('NOT_FOUND', 'gone');
    return p;
  }
  async lookupUser(u: string | number): Promise<UserInfo> {
    const found = this.users.find((x) => x.name === u || x.uid === u);
    if (!found) throw new CellaError('NOT_FOUND', `no user ${u}`);
    return found;
  }
  private entry(p: string): FileEntry {
    const dir = this.dirs.has(p);
    const data = this.files.get(p);
    if (!dir && !data) throw new CellaError('NOT_FOUND', `${p}: ENOENT`);
    const metadata = { ...this.metadata.get(p) };
    return {
      type: dir ? 'directory' : 'file',
      mode: dir ? 0o40755 : 0o100644,
      size: data?.length ?? 4096,
      mtimeMs: 1e12,
      uid: 1000,
      gid: 1000,
      owner: 'user',
      group: 'user',
      metadata,
    };
  }
  readonly fs: EnvdAgent['fs'] = {
    stat: async (p) => this.entry(p),
    list: async (p) => {
      if (!this.dirs.has(p)) throw new CellaError(this.files.has(p) ? 'INVALID_ARGUMENT' : 'NOT_FOUND', p);
      const kids = [...this.dirs, ...this.files.keys()].filter(
        (x) => x !== p && x.startsWith(p.endsWith('/') ? p : `${p}/`) && !x.slice(p.length + 1).includes('/'),
      );
      return kids.map((k) => ({ ...this.entry(k), path: k }));
    },
    mkdir: async (p) => {
      if (this.dirs.has(p)) throw new CellaError('ALREADY_EXISTS', p);
      this.dirs.add(p);
    },
    rename: async (from, to) => {
      const data = this.files.get(from);
      if (!data) throw new CellaError('NOT_FOUND', from);
      this.files.delete(from);
      this.files.set(to, data);
      return this.entry(to);
    },
    remove: async (p) => {
      this.files.delete(p);
      this.dirs.delete(p);
    },
    read: async (p) => {
      const data = this.files.get(p);
      if (!data) throw new CellaError('NOT_FOUND', p);
      return { size: data.length, stream: Readable.from([data]) };
    },
    write: async (p, data, opts) => {
      if (opts?.metadata) this.metadata.set(p, opts.metadata);
      const chunks: Buffer[] = [];
      if (typeof data === 'string' || Buffer.isBuffer(data)) chunks.push(Buffer.from(data));
      else
        for await (const c of data) {
          chunks.push(Buffer.from(c));
          if (chunks.reduce((n, x) => n + x.length, 0) > this.diskBytes) {
            this.files.set(p, Buffer.concat(chunks).subarray(0, this.diskBytes)); // what fitted stays, as in the guest
            throw new CellaError('GUEST_DISK_FULL', `write ${p}: no space left on device`);
          }
        }
      this.files.set(p, Buffer.concat(chunks));
      return this.entry(p);
    },
    watch: async (p) => {
      if (!this.dirs.has(p)) throw new CellaError(this.files.has(p) ? 'INVALID_ARGUMENT' : 'NOT_FOUND', p);
      const w = new FakeWatch(() => this.watches.delete(p));
      this.watches.set(p, w);
      return w as unknown as Watcher;
    },
  };
}

let server: Server;
let agent: FakeAgent;
let envd: EnvdHandler;
let sandboxUrl: string;
const connect = (): Promise<Sandbox> => Sandbox.create({ debug: true, sandboxUrl, apiKey: 'unused' });

before(async () => {
  agent = new FakeAgent();
  envd = createEnvdHandler({ agent: () => agent, defaults: async () => ({ user: 'user', envVars: { GLOBAL: 'g' } }) });
  server = createServer((req, res) => envd.handle('sbx-1', req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  sandboxUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('process.Process through the real SDK', () => {
  test('run: output, the user, the environment, cwd', T, async () => {
    const sbx = await connect();
    const r = await sbx.commands.run('echo hi');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'hi\n');
    const env = (await sbx.commands.run('env', { envs: { OWN: 'o' } })).stdout;
    assert.match(env, /^HOME=\/home\/user$/m);
    assert.match(env, /^GLOBAL=g$/m);
    assert.match(env, /^OWN=o$/m);
    assert.equal((await sbx.commands.run('pwd; id -u')).stdout, '/home/user\n1000\n');
    assert.equal((await sbx.commands.run('pwd; id -u', { user: 'root', cwd: '/' })).stdout, '/\n0\n');
  });

  test('a non-zero exit is CommandExitError; a missing cwd or user is refused', T, async () => {
    const sbx = await connect();
    await assert.rejects(sbx.commands.run('exit 3'), (e: unknown) => e instanceof CommandExitError && e.exitCode === 3 && e.stderr === 'failing\n');
    await assert.rejects(sbx.commands.run('echo x', { cwd: '/nowhere' }), /does not exist/);
    await assert.rejects(sbx.commands.run('echo x', { user: 'nobody' }), /invalid username/);
  });

  test('background: sendStdin, closeStdin, list, kill', T, async () => {
    const sbx = await connect();
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    await sbx.commands.sendStdin(h.pid, 'abc');
    const listed = await sbx.commands.list();
    assert.ok(listed.some((p) => p.pid === h.pid && p.cmd === '/bin/bash' && p.args[2] === 'cat'));
    await sbx.commands.closeStdin(h.pid);
    const r = await h.wait();
    assert.equal(r.stdout, 'abc');
    assert.equal(agent.procs.get(h.pid)?.stdin, 'abc');

    const s = await sbx.commands.run('sleep', { background: true });
    assert.equal(await sbx.commands.kill(s.pid), true);
    await assert.rejects(s.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1);
    assert.equal(await sbx.commands.kill(99_999), false);
  });

  test('connect to a running command by pid', T, async () => {
    const sbx = await connect();
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    const again = await sbx.commands.connect(h.pid);
    await sbx.commands.sendStdin(h.pid, 'x');
    await sbx.commands.closeStdin(h.pid);
    assert.equal((await again.wait()).stdout, 'x');
  });

  test('pty: create, input, resize, kill', T, async () => {
    const sbx = await connect();
    let out = '';
    const t = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void (out += Buffer.from(d).toString()) });
    await sbx.pty.sendInput(t.pid, new TextEncoder().encode('ls\n'));
    await sbx.pty.resize(t.pid, { cols: 100, rows: 30 });
    const spec = agent.procs.get(t.pid)?.spec as PtySpec;
    assert.deepEqual([spec.cols, spec.rows, spec.argv], [80, 24, ['/bin/bash', '-i', '-l']]);
    assert.equal(await sbx.pty.kill(t.pid), true);
    await t.wait().catch(() => {});
    assert.equal(out, 'ls\n100x30');
  });
});

describe('filesystem through the real SDK', () => {
  test('exists, info, list, makeDir, rename, remove', T, async () => {
    const sbx = await connect();
    assert.equal(await sbx.files.exists('hello.txt'), true);
    assert.equal(await sbx.files.exists('/nope'), false);
    const info = await sbx.files.getInfo('~/hello.txt');
    assert.deepEqual(
      [info.name, info.path, info.type, info.size, info.permissions, info.owner],
      ['hello.txt', '/home/user/hello.txt', FileType.FILE, 5, '-rw-r--r--', 'user'],
    );
    assert.equal(await sbx.files.makeDir('/home/user/d'), true);
    assert.equal(await sbx.files.makeDir('/home/user/d'), false);
    const names = (await sbx.files.list('/home/user')).map((e) => e.name).sort();
    assert.deepEqual(names, ['d', 'hello.txt']);
    await assert.rejects(sbx.files.list('/missing'), FileNotFoundError);
    const moved = await sbx.files.rename('hello.txt', 'd/moved.txt');
    assert.equal(moved.path, '/home/user/d/moved.txt');
    await sbx.files.remove('d/moved.txt');
    assert.equal(await sbx.files.exists('d/moved.txt'), false);
  });

  test('/files: write (multipart) and read back, an empty file, a missing one', T, async () => {
    const sbx = await connect();
    const w = await sbx.files.write('notes/a.txt', 'some text');
    assert.equal(w.path, '/home/user/notes/a.txt');
    assert.equal(await sbx.files.read('notes/a.txt'), 'some text');
    await sbx.files.write('/tmp/empty', '');
    assert.equal(await sbx.files.read('/tmp/empty'), '');
    await assert.rejects(sbx.files.read('/no/such'), FileNotFoundError);
  });

  test('health answers 204; /envs the sandbox environment', T, async () => {
    assert.equal((await fetch(`${sandboxUrl}/health`)).status, 204);
    assert.deepEqual(await (await fetch(`${sandboxUrl}/envs`)).json(), { E2B_SANDBOX: 'true', E2B_SANDBOX_ID: 'sbx-1', GLOBAL: 'g' });
  });
});

/** Waits until `check` holds (a watch opened, an event arrived). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
}

describe('watches', () => {
  test('watchDir: start, events named as fsnotify does, the entry when asked, a missing directory', T, async () => {
    const sbx = await connect();
    const seen: { name: string; type: FilesystemEventType; size?: number }[] = [];
    agent.files.set('/home/user/five.txt', Buffer.from('12345'));
    const h = await sbx.files.watchDir('/home/user', (e) => void seen.push({ name: e.name, type: e.type, ...(e.entry && { size: e.entry.size }) }), {
      recursive: true,
      includeEntry: true,
    });
    const w = agent.watches.get('/home/user')!;
    w.emit('event', { op: 'create', name: 'five.txt' });
    w.emit('event', { op: 'overflow', name: '' });
    w.emit('event', { op: 'remove', name: 'sub/gone' });
    await until(() => seen.length === 2);
    await h.stop();
    assert.deepEqual(seen, [
      { name: 'five.txt', type: FilesystemEventType.CREATE, size: 5 },
      { name: 'sub/gone', type: FilesystemEventType.REMOVE },
    ]);
    await until(() => !agent.watches.has('/home/user'));
    await assert.rejects(
      sbx.files.watchDir('/missing', () => {}),
      FileNotFoundError,
    );
  });

  test('polling watchers: create, events since the last call, remove; an unknown id is NotFound', T, async () => {
    const fs = createClient(Filesystem, createConnectTransport({ baseUrl: sandboxUrl, httpVersion: '1.1', useBinaryFormat: false }));
    const { watcherId } = await fs.createWatcher({ path: '~', recursive: false });
    const w = agent.watches.get('/home/user')!;
    w.emit('event', { op: 'write', name: 'hello.txt' });
    w.emit('event', { op: 'rename', name: 'old' });
    const first = await fs.getWatcherEvents({ watcherId });
    assert.deepEqual(
      first.events.map((e) => [e.name, e.type, e.entry]),
      [
        ['hello.txt', 2, undefined],
        ['old', 4, undefined],
      ],
    );
    assert.deepEqual((await fs.getWatcherEvents({ watcherId })).events, []);
    await fs.removeWatcher({ watcherId });
    assert.equal(agent.watches.has('/home/user'), false);
    await assert.rejects(fs.getWatcherEvents({ watcherId }), /not found/);
    await assert.rejects(fs.createWatcher({ path: '/missing' }), /not found/);
  });
});

describe('/files encodings and metadata', () => {
  test('gzip both ways, Content-Length: 0 for an empty file, 406 for an encoding it cannot serve', T, async () => {
    const sbx = await connect();
    await sbx.files.write('zipped.txt', 'x'.repeat(5000), { gzip: true });
    assert.equal(agent.files.get('/home/user/zipped.txt')?.toString(), 'x'.repeat(5000));
    assert.equal(await sbx.files.read('zipped.txt', { gzip: true }), 'x'.repeat(5000));
    // fetch inflates it, and leaves the header to say it was gzip on the wire.
    const raw = await fetch(`${sandboxUrl}/files?path=zipped.txt`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(raw.headers.get('content-encoding'), 'gzip');
    assert.equal(await raw.text(), 'x'.repeat(5000));
    agent.files.set('/home/user/empty', Buffer.alloc(0));
    const empty = await fetch(`${sandboxUrl}/files?path=empty`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(empty.headers.get('content-length'), '0');
    const refused = await fetch(`${sandboxUrl}/files?path=zipped.txt`, { headers: { 'accept-encoding': 'br, identity;q=0' } });
    assert.equal(refused.status, 406);
    const badUpload = await fetch(`${sandboxUrl}/files?path=x`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'br' },
      body: gzipSync('x'),
    });
    assert.equal(badUpload.status, 400);
    assert.equal(agent.files.has('/home/user/x'), false);
  });

  test('a full disk part way through an upload: 507, NotEnoughSpaceError, multipart and octet-stream', T, async () => {
    const sbx = await connect();
    agent.diskBytes = 64 * 1024;
    try {
      const big = new ArrayBuffer(1 << 20);
      await assert.rejects(sbx.files.write('big.bin', big), NotEnoughSpaceError);
      await assert.rejects(sbx.files.write('big.bin', big, { useOctetStream: true }), NotEnoughSpaceError);
      await assert.rejects(sbx.files.write('big.bin', big, { gzip: true }), NotEnoughSpaceError);
      assert.equal(agent.files.has('/home/user/big.bin'), false);
      // The connection and the sandbox go on.
      assert.equal((await sbx.files.write('small.txt', 'ok')).path, '/home/user/small.txt');
    } finally {
      agent.diskBytes = Infinity;
    }
  });

  test('metadata: X-Metadata-* headers kept with the file and reported back (envd 0.6.2)', T, async () => {
    const sbx = await connect();
    const w = await sbx.files.write('tagged.txt', 'data', { metadata: { Owner: 'me', 'build.id': '42' } });
    assert.deepEqual(w.metadata, { owner: 'me', 'build.id': '42' });
    assert.deepEqual((await sbx.files.getInfo('tagged.txt')).metadata, { owner: 'me', 'build.id': '42' });
  });
});

describe('signed /files URLs (through the same check the proxy makes)', () => {
  const TOKEN = 'envd-token-of-sbx';
  let rest: Server;
  let secured: Server;
  let apiUrl: string;
  let securedUrl: string;

  before(async () => {
    // The REST facade's create answer, reduced to what the SDK reads.
    rest = createServer((req, res) => {
      req.resume();
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          sandboxID: 'sbx-1',
          templateID: 'base',
          clientID: 'cella',
          envdVersion: ENVD_VERSION,
          envdAccessToken: TOKEN,
          trafficAccessToken: null,
          domain: null,
        }),
      );
    });
    const access = { checkEnvdToken: async (_id: string, t: string | undefined) => t === TOKEN, envdToken: async () => TOKEN };
    secured = createServer((req: IncomingMessage, res) => {
      void envdAuthProblem(access, 'sbx-1', req.method ?? 'GET', req.url ?? '/', req.headers['x-access-token'] as string | undefined).then((problem) => {
        if (!problem) return envd.handle('sbx-1', req, res);
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 401, message: problem }));
      });
    });
    for (const s of [rest, secured]) await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    apiUrl = `http://127.0.0.1:${(rest.address() as AddressInfo).port}`;
    securedUrl = `http://127.0.0.1:${(secured.address() as AddressInfo).port}`;
  });

  after(() => {
    for (const s of [rest, secured]) {
      s.closeAllConnections();
      s.close();
    }
  });

  test('uploadUrl and downloadUrl work without the token, expire, and are refused when altered', T, async () => {
    const sbx = await Sandbox.create({ apiUrl, sandboxUrl: securedUrl, apiKey: 'k' });
    agent.files.set('/home/user/mine.txt', Buffer.from('mine'));
    assert.equal((await fetch(`${securedUrl}/files?path=mine.txt`)).status, 401);
    assert.equal(await sbx.files.read('mine.txt'), 'mine');
    const up = await sbx.uploadUrl('signed.txt');
    const form = new FormData();
    form.append('file', new Blob(['signed data']), 'signed.txt');
    assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200);
    const down = await sbx.downloadUrl('signed.txt', { user: 'user', useSignatureExpiration: 60 });
    assert.equal(await (await fetch(down)).text(), 'signed data');
    // A read signature does not write, another path is not signed, an expired one is refused.
    assert.equal((await fetch(down, { method: 'POST', body: form })).status, 401);
    assert.equal((await fetch(down.replace('signed.txt', 'mine.txt'))).status, 401);
    const old = await getSignature({ path: 'signed.txt', operation: 'read', user: 'user', expirationInSeconds: -10, envdAccessToken: TOKEN });
    const expired = `${securedUrl}/files?path=signed.txt&username=user&signature=${old.signature}&signature_expiration=${old.expiration}`;
    const answer = await fetch(expired);
    assert.equal(answer.status, 401);
    assert.match(((await answer.json()) as { message: string }).message, /expired/);
  });
});
