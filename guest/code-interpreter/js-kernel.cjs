'use strict';
/*
 * The JavaScript worker of Cella's code interpreter (server.py runs one per
 * context as `node --expose-internals --experimental-vm-modules
 * js-kernel.cjs <fd>`; the latter lets a cell import()). It plays the part
 * of E2B's ijavascript kernel: cells run in this process's global scope, so
 * `let`/`const`, functions and globals persist from cell to cell; the value
 * of a cell's last expression is its result (a string as is, anything else
 * as util.inspect shows it, undefined as nothing); top-level await works
 * through the rewrite Node's own REPL uses (internal/repl/await, hence
 * --expose-internals).
 *
 * Protocol (the same as server.py's Python worker): one JSON request a line
 * on stdin {code, env, global_env}; events as JSON lines on fd <fd>
 * (stdout/stderr by line, result, error), then {"type":"done"}. Fd 1 and 2
 * are the server's log, so children that inherit them cannot corrupt the
 * protocol. SIGINT interrupts the running cell, a busy loop or an await.
 */
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const url = require('node:url');
const util = require('node:util');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const CHANNEL = Number(process.argv[2]);
if (!Number.isInteger(CHANNEL) || CHANNEL < 3) {
  process.stderr.write('usage: node --expose-internals js-kernel.cjs <protocol fd>\n');
  process.exit(2);
}

let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch {
  // Without --expose-internals a cell with a top-level await is a SyntaxError, as in a plain script.
}

const now = () => new Date().toISOString();
const emit = (event) => fs.writeSync(CHANNEL, JSON.stringify(event) + '\n');

/** process.stdout/stderr while a cell runs: whole lines out as events, the rest at the end. */
class LineSink {
  constructor(kind) {
    this.kind = kind;
    this.buf = '';
  }
  write(text) {
    this.buf += text;
    const cut = this.buf.lastIndexOf('\n');
    if (cut >= 0) {
      const out = this.buf.slice(0, cut + 1);
      this.buf = this.buf.slice(cut + 1);
      emit({ type: this.kind, text: out, timestamp: now() });
    }
  }
  flush() {
    if (this.buf) {
      const out = this.buf;
      this.buf = '';
      emit({ type: this.kind, text: out, timestamp: now() });
    }
  }
}

const sinks = { stdout: new LineSink('stdout'), stderr: new LineSink('stderr') };
let running = false;
for (const kind of ['stdout', 'stderr']) {
  const stream = process[kind];
  const original = stream.write.bind(stream);
  // console.log writes through these; output after a cell ended (a late timer) goes to the server's log.
  stream.write = (chunk, encoding, cb) => {
    if (!running) return original(chunk, encoding, cb);
    sinks[kind].write(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    const done = typeof encoding === 'function' ? encoding : cb;
    if (typeof done === 'function') process.nextTick(done);
    return true;
  };
}

function report(label, err) {
  const text = `${label} ${err instanceof Error ? err.stack : util.inspect(err)}\n`;
  (running ? sinks.stderr : process.stderr).write(text);
}
// A cell's stray callbacks must not take the kernel (and the context's state) down.
process.on('uncaughtException', (err) => report('Uncaught', err));
process.on('unhandledRejection', (err) => report('Unhandled rejection:', err));

let interrupt = null;
// Also keeps SIGINT from killing the kernel between cells; during synchronous code breakOnSigint throws instead.
process.on('SIGINT', () => interrupt?.());

function interruptible(promise) {
  const stop = new Promise((_, reject) => {
    interrupt = () => reject(new Error('Script execution was interrupted by SIGINT'));
  });
  return Promise.race([promise, stop]).finally(() => {
    interrupt = null;
  });
}

/** What a cell's value shows as text/plain; null for no result. */
function shown(value) {
  if (value === undefined) return null;
  return typeof value === 'string' ? value : util.inspect(value);
}

/** The stack without the kernel's own frames (vm's and this file's). */
function userStack(err) {
  const lines = String(err.stack ?? `${err.name}: ${err.message}`).split('\n');
  const cut = lines.findIndex((l) => /^\s+at /.test(l) && (l.includes(__filename) || l.includes('node:vm') || l.includes('node:internal')));
  return (cut < 0 ? lines : lines.slice(0, cut)).join('\n');
}

function errorEvent(err) {
  if (util.types.isNativeError(err) || err instanceof Error) {
    return { type: 'error', name: String(err.name), value: String(err.message), traceback: userStack(err) };
  }
  return { type: 'error', name: 'Error', value: `Uncaught ${util.inspect(err)}`, traceback: `Uncaught ${util.inspect(err)}` };
}

/** import() from a cell: packages resolve from the context's cwd, as require does. */
async function importFromCwd(specifier) {
  let target = specifier;
  try {
    const resolved = globalThis.require.resolve(specifier);
    if (path.isAbsolute(resolved)) target = url.pathToFileURL(resolved).href;
  } catch {
    // a builtin, a URL, or an ESM-only package require cannot resolve: import() says what it can.
  }
  return import(target);
}

let cells = 0;

async function runCell(code) {
  cells += 1;
  const wrapped = processTopLevelAwait && code.includes('await') ? processTopLevelAwait(code) : null;
  const script = new vm.Script(wrapped ?? code, { filename: `cell${cells}`, importModuleDynamically: importFromCwd });
  const value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  // The rewrite runs the cell in an async function that resolves to {value} of its last expression.
  return wrapped === null ? value : (await interruptible(value))?.value;
}

function setEnv(vars) {
  const saved = {};
  for (const [k, v] of Object.entries(vars ?? {})) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  return saved;
}

async function handle(req) {
  setEnv(req.global_env);
  const saved = setEnv(req.env);
  running = true;
  try {
    const text = shown(await runCell(req.code));
    sinks.stdout.flush();
    sinks.stderr.flush();
    if (text !== null) emit({ type: 'result', text, is_main_result: true });
  } catch (err) {
    sinks.stdout.flush();
    sinks.stderr.flush();
    emit(errorEvent(err));
  } finally {
    running = false;
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  emit({ type: 'done' });
}

// What Node's REPL gives its global scope: require from the cwd, and module/exports to assign to.
globalThis.require = createRequire(path.join(process.cwd(), '<cell>'));
globalThis.module = { exports: {} };
globalThis.exports = globalThis.module.exports;

(async () => {
  for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    await handle(JSON.parse(line));
  }
  process.exit(0);
})();
