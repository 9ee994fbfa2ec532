/**
 * JavaScript in `code-interpreter-v1` (guest/code-interpreter/js-kernel.cjs
 * on the base's Debian nodejs) with the unmodified `@e2b/code-interpreter`
 * SDK against a real `cella server` and real VMs, as E2B's ijavascript
 * kernel answers: results, output callbacks, state, errors, contexts, env
 * vars, and the languages still refused.
 *
 * Several cases follow e2b-dev/code-interpreter's js/tests (languages/js,
 * env_vars/js): Copyright (c) 2023 FOUNDRYLABS, INC., MIT License.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Sandbox } from '@e2b/code-interpreter';
import { startE2bServer, type E2bServer } from './fixtures/e2b-server.js';

const T = { timeout: 180_000 };

describe('JavaScript contexts of code-interpreter-v1 with the real SDK', { concurrency: false }, () => {
  let e2b: E2bServer;
  /** Shared: each case uses state of its own names. */
  let sbx: Sandbox;

  before(
    async () => {
      e2b = await startE2bServer('e2b-cijs');
      sbx = await Sandbox.create({ ...e2b.opts, envs: { TEST_ENV_VAR: 'supertest' }, timeoutMs: 600_000 });
    },
    { timeout: 1_800_000 },
  );

  after(async () => {
    await sbx?.kill();
    await e2b?.close();
  });

  test('the last expression is the result: numbers inspected, strings as they are', T, async () => {
    assert.equal((await sbx.runCode('1+1', { language: 'js' })).text, '2');
    assert.equal((await sbx.runCode('const add = (x, y) => x + y;\nadd(1, 2)', { language: 'javascript' })).text, '3');
    assert.equal((await sbx.runCode('"Hello, " + "World!"', { language: 'js' })).text, 'Hello, World!');
    assert.equal((await sbx.runCode('({ a: [1, 2] })', { language: 'js' })).text, '{ a: [ 1, 2 ] }');
    const none = await sbx.runCode('let unused = 1', { language: 'js' });
    assert.deepEqual([none.results, none.error], [[], undefined]);
  });

  test('console output streams to onStdout and onStderr by line', T, async () => {
    const stdout: string[] = [];
    const stderr: string[] = [];
    const run = await sbx.runCode('console.log("Hello"); console.error("oops"); console.log("World"); 42', {
      language: 'js',
      onStdout: (o) => void stdout.push(o.line),
      onStderr: (o) => void stderr.push(o.line),
    });
    assert.deepEqual([stdout, stderr], [['Hello\n', 'World\n'], ['oops\n']]);
    assert.deepEqual(run.logs, { stdout: ['Hello\n', 'World\n'], stderr: ['oops\n'] });
    assert.equal(run.text, '42');
  });

  test('state persists across cells of a context, top-level await included', T, async () => {
    await sbx.runCode('let x = 1', { language: 'js' });
    assert.equal((await sbx.runCode('x + 1', { language: 'js' })).text, '2');
    await sbx.runCode('function twice(n) { return 2 * n }', { language: 'js' });
    assert.equal((await sbx.runCode('twice(x)', { language: 'js' })).text, '2');
    const awaited = await sbx.runCode('async function main() { return "awaited" }\n\nawait main()', { language: 'js' });
    assert.equal(awaited.text, 'awaited');
    assert.equal((await sbx.runCode('process.cwd()', { language: 'js' })).text, '/home/user');
  });

  test("an error is the execution's: name, value and traceback", T, async () => {
    const thrown = await sbx.runCode('throw new RangeError("boom")', { language: 'js' });
    assert.equal(thrown.error?.name, 'RangeError');
    assert.equal(thrown.error?.value, 'boom');
    assert.match(thrown.error?.traceback ?? '', /RangeError: boom/);
    const typeError = await sbx.runCode('undefinedThing.x', { language: 'js' });
    assert.equal(typeError.error?.name, 'ReferenceError');
    assert.match(typeError.error?.value ?? '', /undefinedThing/);
    // the kernel and its state live on
    assert.equal((await sbx.runCode('typeof twice', { language: 'js' })).text, 'function');
  });

  test('a JavaScript context has its own state and cwd, apart from the Python default', T, async () => {
    const ctx = await sbx.createCodeContext({ language: 'js', cwd: '/home' });
    assert.deepEqual([ctx.language, ctx.cwd], ['javascript', '/home']);
    assert.equal((await sbx.runCode('var own = "mine"; process.cwd()', { context: ctx })).text, '/home');
    assert.equal((await sbx.runCode('own', { context: ctx })).text, 'mine');
    assert.equal((await sbx.runCode('typeof own', { language: 'js' })).text, 'undefined');
    await sbx.runCode('py_only = 7');
    assert.equal((await sbx.runCode('py_only * 6')).text, '42');
    assert.equal((await sbx.runCode('typeof py_only', { context: ctx })).text, 'undefined');
    assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id && c.language === 'javascript'));
    await sbx.restartCodeContext(ctx);
    assert.equal((await sbx.runCode('typeof own', { context: ctx })).text, 'undefined');
    await sbx.removeCodeContext(ctx.id);
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
  });

  test("env vars: the sandbox's, overridden per execution, back afterwards", T, async () => {
    const env = 'process.env.TEST_ENV_VAR';
    assert.equal((await sbx.runCode(env, { language: 'javascript' })).text, 'supertest');
    assert.equal((await sbx.runCode(env, { language: 'javascript', envs: { TEST_ENV_VAR: 'overwrite' } })).text, 'overwrite');
    assert.equal((await sbx.runCode(env, { language: 'javascript' })).text, 'supertest');
    assert.equal((await sbx.runCode('process.env.FOO', { language: 'js', envs: { FOO: 'bar' } })).text, 'bar');
    assert.equal((await sbx.runCode("process.env.FOO || 'default'", { language: 'js' })).text, 'default');
  });

  test('TypeScript and other languages are refused with a clear error, not run', T, async () => {
    await assert.rejects(sbx.runCode('const n: number = 1; n', { language: 'typescript' }), /400.*TypeScript/);
    await assert.rejects(sbx.createCodeContext({ language: 'r' }), /400.*language 'r' is not supported/);
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.language !== 'python' && c.language !== 'javascript'));
  });
});
