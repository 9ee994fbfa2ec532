/**
 * E2B's default templates on a real `cella server` with real VMs, driven by
 * the unmodified `@e2b/code-interpreter` and `e2b` SDKs: the server builds
 * `base` and `code-interpreter-v1` at its first start (src/images/templates.ts),
 * and the SDKs reach them through the endpoint proxy at
 * `https://<port>-<id>.cella.localhost:<port>` (setup makes *.localhost resolve).
 *
 * Several cases are ported from e2b-dev/code-interpreter's js/tests (basic,
 * statefulness, callbacks, contexts, env_vars/python, killedSandbox):
 * Copyright (c) 2023 FOUNDRYLABS, INC., MIT License.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Sandbox as CodeSandbox, TimeoutError } from '@e2b/code-interpreter';
import { Sandbox } from 'e2b';
import { startE2bServer, type E2bServer } from './fixtures/e2b-server.js';

const T = { timeout: 180_000 };

describe('E2B templates base and code-interpreter-v1 with the real SDKs', { concurrency: false }, () => {
  let e2b: E2bServer;
  let opts: E2bServer['opts'];

  before(
    async () => {
      e2b = await startE2bServer('e2b-interp');
      opts = e2b.opts;
    },
    { timeout: 1_800_000 },
  );

  after(async () => {
    await e2b?.close();
  });

  test('base: user `user` with passwordless sudo, python and git', T, async () => {
    const sbx = await Sandbox.create('base', opts);
    try {
      assert.equal((await sbx.commands.run('whoami; echo $HOME')).stdout, 'user\n/home/user\n');
      assert.match((await sbx.commands.run('sudo id')).stdout, /^uid=0\(root\)/);
      assert.match((await sbx.commands.run('python --version')).stdout, /^Python 3\.11\./);
      assert.match((await sbx.commands.run('git --version')).stdout, /^git version 2\./);
    } finally {
      await sbx.kill();
    }
  });

  test('code interpreter: results, state, streaming callbacks, errors, env vars, contexts', T, async () => {
    const sbx = await CodeSandbox.create({ ...opts, envs: { TEST_ENV_VAR: 'supertest' } });
    try {
      // basic, statefulness
      assert.equal((await sbx.runCode('x =1; x')).text, '1');
      await sbx.runCode('test_stateful = 1');
      assert.equal((await sbx.runCode('test_stateful+=1; test_stateful')).text, '2');

      // callbacks: one callback per line, as E2B's kernels stream them
      const stdout: string[] = [];
      const stderr: string[] = [];
      const results: string[] = [];
      const printed = await sbx.runCode('import sys\nprint("hello")\nprint("This is an error message", file=sys.stderr)\n41 + 1', {
        onStdout: (o) => void stdout.push(o.line),
        onStderr: (o) => void stderr.push(o.line),
        onResult: (r) => void results.push(r.text ?? ''),
      });
      assert.deepEqual([stdout, stderr, results], [['hello\n'], ['This is an error message\n'], ['42']]);
      assert.deepEqual(printed.logs, { stdout: ['hello\n'], stderr: ['This is an error message\n'] });
      assert.equal(typeof printed.executionCount, 'number');

      // an error is the execution's, not the call's
      const failed = await sbx.runCode('xyz');
      assert.equal(failed.error?.name, 'NameError');
      assert.match(failed.error?.value ?? '', /xyz/);

      // env_vars/python: the sandbox's, overridden per execution, back afterwards
      const env = "import os; os.getenv('TEST_ENV_VAR')";
      assert.equal((await sbx.runCode(env)).text, 'supertest');
      assert.equal((await sbx.runCode(env, { envs: { TEST_ENV_VAR: 'overwrite' } })).text, 'overwrite');
      assert.equal((await sbx.runCode(env)).text, 'supertest');
      assert.equal((await sbx.runCode("import os; os.getenv('FOO', 'default')")).text, 'default');

      // contexts: their own state and cwd, listed, restarted, removed
      const ctx = await sbx.createCodeContext({ language: 'python', cwd: '/root' });
      assert.deepEqual([ctx.language, ctx.cwd], ['python', '/root']);
      await sbx.runCode('inside = "ctx"', { context: ctx });
      assert.equal((await sbx.runCode('import os; inside + " " + os.getcwd()', { context: ctx })).text, 'ctx /root');
      assert.equal((await sbx.runCode("globals().get('inside', 'not here')")).text, 'not here');
      assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
      await sbx.restartCodeContext(ctx);
      assert.equal((await sbx.runCode("globals().get('inside', 'restarted')", { context: ctx })).text, 'restarted');
      await sbx.removeCodeContext(ctx.id);
      assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id));

      // a language without a kernel here (JavaScript's are in e2b-code-interpreter-js): refused, not run as Python
      await assert.rejects(sbx.createCodeContext({ language: 'r' }), /400/);
    } finally {
      await sbx.kill();
    }
  });

  test('killedSandbox: runCode fails with a descriptive TimeoutError when the sandbox is killed mid-run', T, async () => {
    const sbx = await CodeSandbox.create(opts);
    // E2B's test waits 2 s; under TCG the cell may not run by then, so it says when it does.
    let running: () => void = () => {};
    const started = new Promise<void>((r) => (running = r));
    const execution = sbx.runCode('import time; print("running"); time.sleep(60)', { onStdout: () => running() });
    await Promise.race([started, execution]);
    await sbx.kill();
    await assert.rejects(execution, (e: unknown) => e instanceof TimeoutError && /sandbox was killed while the request was in progress/.test(e.message));
  });
});
