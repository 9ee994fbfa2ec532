/**
 * npm run bench:e2b [-- --quick]
 *
 * The unmodified `e2b` SDK against a real cellad on port 0 (its endpoints over the proxy's TLS), on E2B's
 * `base` template, which the server builds at its first start: Sandbox.create() to the first
 * commands.run() result (with a warm clone ready, and back to back), the commands.run('true') round trip
 * (with the QEMU's translation cache use, and what the guest alone takes to run /bin/true and bash), files.write + files.read of 1 MiB, pause,
 * connect after a pause (the resume), and on `code-interpreter-v1` create to the first cell's result and a
 * first JavaScript cell. Prints JSON lines (see ./report.ts); asserts nothing.
 */
import { rmSync } from 'node:fs';
import { Sandbox as Interpreter } from '@e2b/code-interpreter';
import { Sandbox } from 'e2b';
import { startServer } from '../src/server/index.js';
import { API_KEY, shutdown } from '../test/control-helpers.js';
import { tempDataDir } from '../test/helpers.js';
import { trustCa } from '../test/fixtures/trust-ca.js';
import { reporter } from './report.js';

const quick = process.argv.includes('--quick');
const N = { creates: quick ? 5 : 10, commands: quick ? 30 : 200, files: quick ? 3 : 10, pauses: quick ? 3 : 10, cells: quick ? 3 : 5 };
const TEMPLATE = 'base';

const dataDir = tempDataDir('bench-e2b');
const server = await startServer({ dataDir, port: 0, proxyPort: 0, apiRateScale: 0, apiKey: API_KEY, e2bImages: true, log: () => {} });
const emit = reporter(() => ({ accel: server.engine.accel.accel, template: TEMPLATE }));
if (!server.caFile) throw new Error('the server made no CA');
const untrust = trustCa(server.caFile);
const opts = { apiKey: API_KEY, apiUrl: `${server.url}/e2b` };
const ms = (t0: number): number => performance.now() - t0;
/** QMP `info jit` of a sandbox's QEMU: translated code in use, and how often the cache was flushed. */
const jit = async (id: string): Promise<{ codeBytes: number; flushes: number } | undefined> => {
  const out = await server.engine.get(id)?.qmp.execute('human-monitor-command', { 'command-line': 'info jit' });
  const text = typeof out === 'string' ? out : '';
  const code = /gen code size\s+(\d+)/.exec(text);
  const flushes = /TB flush count\s+(\d+)/.exec(text);
  return code && flushes ? { codeBytes: Number(code[1]), flushes: Number(flushes[1]) } : undefined;
};

try {
  // Both templates the first start builds must be done, or the other one's build shares the CPU with what is measured.
  for (;;) {
    const last = await Promise.all(['base', 'code-interpreter-v1'].map(async (name) => (await server.store.listBuilds(name)).at(-1)?.state));
    if (last.every((state) => state === 'SUCCESSFUL')) break;
    if (last.includes('FAILED')) throw new Error(`a template's build failed: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  // The server then fills their warm pools (src/server/managed-images.ts); measured once that is done, as on a server up a while.
  for (const name of ['base', 'code-interpreter-v1']) await server.engine.prewarm((await server.images.runnable(name)).dir);

  const baseDir = (await server.images.runnable(TEMPLATE)).dir;
  // Create to first command, and its two parts: the REST create, and the first command in the new sandbox.
  // `pooled`: each create finds a warm clone (the pool refilled in between, as on a server between bursts);
  // else back to back, faster than the pool refills.
  const creates = async (n: number, pooled: boolean): Promise<Record<'total' | 'rest' | 'first', number[]>> => {
    const out = { total: [] as number[], rest: [] as number[], first: [] as number[] };
    for (let i = 0; i < n; i++) {
      if (pooled) await server.engine.prewarm(baseDir);
      const t0 = performance.now();
      const sbx = await Sandbox.create(TEMPLATE, opts);
      const t1 = performance.now();
      await sbx.commands.run('true');
      out.total.push(ms(t0));
      out.rest.push(t1 - t0);
      out.first.push(ms(t1));
      await sbx.kill();
    }
    return out;
  };
  const pooled = await creates(N.creates, true);
  emit('e2b_create_to_first_command_ms', 'ms', pooled.total, 300, 'lower');
  emit('e2b_create_ms', 'ms', pooled.rest, null, 'lower');
  emit('e2b_first_command_ms', 'ms', pooled.first, null, 'lower');
  const burst = await creates(N.creates, false);
  emit('e2b_create_to_first_command_back_to_back_ms', 'ms', burst.total, null, 'lower');

  const sbx = await Sandbox.create(TEMPLATE, opts);
  const jitBefore = await jit(sbx.sandboxId);
  const commands: number[] = [];
  for (let i = 0; i < N.commands; i++) {
    const t0 = performance.now();
    await sbx.commands.run('true');
    commands.push(ms(t0));
  }
  // The QEMU's translation cache (ADR 0010): a flush during the loop would make commands translate again.
  emit('e2b_command_round_trip_ms', 'ms', commands, 30, 'lower', { jit_before: jitBefore, jit_after: await jit(sbx.sandboxId) });
  // The guest's own share of a command: each program run 20 times in a loop inside the sandbox, ms per run.
  for (const [metric, program] of [
    ['e2b_guest_bin_true_ms', '/bin/true'],
    ['e2b_guest_bash_c_true_ms', 'bash -c true'],
    ['e2b_guest_bash_login_c_true_ms', 'bash -l -c true'],
  ] as const) {
    const runs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await sbx.commands.run(`TIMEFORMAT=%R; time (for i in $(seq 20); do ${program}; done)`);
      runs.push((Number(r.stderr.trim()) * 1000) / 20);
    }
    emit(metric, 'ms', runs, null, 'lower');
  }

  const mib = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
  const files: number[] = [];
  for (let i = 0; i < N.files; i++) {
    const t0 = performance.now();
    await sbx.files.write(`/home/user/bench-${i}.bin`, mib.buffer);
    const back = await sbx.files.read(`/home/user/bench-${i}.bin`, { format: 'bytes' });
    files.push(ms(t0));
    if (back.length !== mib.length) throw new Error(`read back ${back.length} bytes of ${mib.length}`);
  }
  emit('e2b_files_write_read_1mib_ms', 'ms', files, null, 'lower');

  const pauses: number[] = [];
  const connects: number[] = [];
  for (let i = 0; i < N.pauses; i++) {
    let t0 = performance.now();
    await sbx.pause();
    pauses.push(ms(t0));
    t0 = performance.now();
    const again = await Sandbox.connect(sbx.sandboxId, opts);
    await again.commands.run('true');
    connects.push(ms(t0));
  }
  emit('e2b_pause_ms', 'ms', pauses, null, 'lower');
  emit('e2b_connect_after_pause_to_command_ms', 'ms', connects, 300, 'lower');
  await sbx.kill();

  // Code interpreter: create to the first cell's result (Python, the default), then a first JavaScript cell.
  const interpreterDir = (await server.images.runnable('code-interpreter-v1')).dir;
  const cells = { python: [] as number[], javascript: [] as number[] };
  for (let i = 0; i < N.cells; i++) {
    await server.engine.prewarm(interpreterDir);
    const t0 = performance.now();
    const ci = await Interpreter.create(opts);
    await ci.runCode('1 + 1');
    cells.python.push(ms(t0));
    const t1 = performance.now();
    await ci.runCode('1 + 1', { language: 'js' });
    cells.javascript.push(ms(t1));
    await ci.kill();
  }
  emit('e2b_interpreter_create_to_first_cell_ms', 'ms', cells.python, null, 'lower', { template: 'code-interpreter-v1' });
  emit('e2b_interpreter_first_js_cell_ms', 'ms', cells.javascript, null, 'lower', { template: 'code-interpreter-v1' });
} finally {
  untrust();
  await shutdown(server);
  rmSync(dataDir, { recursive: true, force: true });
}
