/**
 * envd against the real, unmodified e2b SDK (E2B_DEBUG mode pointed at a
 * plain HTTP server on port 0) and a fake guest agent: commands, exit codes,
 * stdin, signals, listing, terminals, the file-system calls and /files.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { CommandExitError, FileNotFoundError, FileType, Sandbox } from 'e2b';
import type { ExitStatus, FileEntry, GuestProcessInfo, ProcessSpec, PtySpec, UserInfo } from '../../agent/index.js';
import { CellaError } from '../../contract/index.js';
import type { EnvdAgent, GuestExec, GuestPty } from './context.js';
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

class FakeAgent implements EnvdAgent {
  procs = new Map<number, FakeProc>();
  users: UserInfo[] = [
    { name: 'root', uid: 0, gid: 0, home: '/root', shell: '/bin/sh', groups: [0] },
    { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/bash', groups: [1000] },
  ];
  files = new Map<string, Buffer>([['/home/user/hello.txt', Buffer.from('hello')]]);
  dirs = new Set(['/', '/home', '/home/user', '/root']);
  private nextPid = 100;

  private play(p: FakeProc): void {
    const script = p.spec.argv?.[3] ?? ''; // bash -l -c <script>
    const m = /^exit (\d+)$/.exec(script);
    setImmediate(() => {
      if (script.startsWith('echo ')) {
        p.emit('stdout', Buffer.from(`${script.slice(5)}\n`));
        p.exit(0);
      } else if (script === 'env') {
        p.emit('stdout', Buffer.from(Object.entries(p.spec.env ?? {}).map(([k, v]) => `${k}=${v}\n`).join('')));
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
    return { type: dir ? 'directory' : 'file', mode: dir ? 0o40755 : 0o100644, size: data?.length ?? 4096, mtimeMs: 1e12, uid: 1000, gid: 1000, owner: 'user', group: 'user', metadata: {} };
  }
  readonly fs: EnvdAgent['fs'] = {
    stat: async (p) => this.entry(p),
    list: async (p) => {
      if (!this.dirs.has(p)) throw new CellaError(this.files.has(p) ? 'INVALID_ARGUMENT' : 'NOT_FOUND', p);
      const kids = [...this.dirs, ...this.files.keys()].filter((x) => x !== p && x.startsWith(p.endsWith('/') ? p : `${p}/`) && !x.slice(p.length + 1).includes('/'));
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
    write: async (p, data) => {
      const chunks: Buffer[] = [];
      if (typeof data === 'string' || Buffer.isBuffer(data)) chunks.push(Buffer.from(data));
      else for await (const c of data) chunks.push(Buffer.from(c));
      this.files.set(p, Buffer.concat(chunks));
      return this.entry(p);
    },
    watch: () => Promise.reject(new CellaError('AGENT_UNSUPPORTED', 'no watch in the fake')),
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
    assert.deepEqual([info.name, info.path, info.type, info.size, info.permissions, info.owner], ['hello.txt', '/home/user/hello.txt', FileType.FILE, 5, '-rw-r--r--', 'user']);
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
