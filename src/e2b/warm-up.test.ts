import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { UserInfo } from '../agent/index.js';
import { CellaError } from '../contract/index.js';
import { INTERPRETER_WARM_UP_ARGV, RANDOMIZE_VA_SPACE, WARM_UP_ARGV, warmUpInterpreter, warmUpSandbox, type WarmUpAgent } from './warm-up.js';

/** A guest whose randomize_va_space starts at `aslr`, with the users in `users`; `log` says what the warm-up did in turn. */
function guest(aslr: string, users: UserInfo[], execFails = false): { agent: WarmUpAgent; log: string[]; aslr: () => string } {
  let value = aslr;
  const log: string[] = [];
  const agent: WarmUpAgent = {
    lookupUser: async (name) => {
      const u = users.find((x) => x.name === name || x.uid === name);
      if (!u) throw new CellaError('NOT_FOUND', `no user ${name}`);
      return u;
    },
    exec: async (spec) => {
      log.push(`exec ${spec.argv.join(' ')} uid=${spec.uid} cwd=${spec.cwd} HOME=${spec.env.HOME} aslr=${value.trim()}`);
      if (execFails) throw new CellaError('AGENT_ERROR', 'guest agent went away');
      return { exitCode: 0 };
    },
    fs: {
      readFile: async (p) => {
        assert.equal(p, RANDOMIZE_VA_SPACE);
        return Buffer.from(value);
      },
      write: async (p, data) => {
        assert.equal(p, RANDOMIZE_VA_SPACE);
        log.push(`write ${data.trim()}`);
        value = data;
      },
    },
  };
  return { agent, log, aslr: () => value };
}

const USER: UserInfo = { name: 'user', uid: 1000, gid: 1000, home: '/home/user', shell: '/bin/bash', groups: [1000] };
const ROOT: UserInfo = { name: 'root', uid: 0, gid: 0, home: '/root', shell: '/bin/bash', groups: [0] };

test("the warm-up runs the SDK's command as the template's user at fixed addresses, then puts randomize_va_space back", async () => {
  const g = guest('2\n', [ROOT, USER]);
  await warmUpSandbox(g.agent);
  assert.deepEqual(WARM_UP_ARGV, ['/bin/bash', '-l', '-c', 'true']);
  assert.deepEqual(g.log, ['write 0', 'exec /bin/bash -l -c true uid=1000 cwd=/home/user HOME=/home/user aslr=0', 'write 2']);
  assert.equal(g.aslr(), '2\n');
});

test("an image without E2B's user is warmed up as root, and a value other than the default is kept", async () => {
  const g = guest('1\n', [ROOT]);
  await warmUpSandbox(g.agent);
  assert.deepEqual(g.log, ['write 0', 'exec /bin/bash -l -c true uid=0 cwd=/root HOME=/root aslr=0', 'write 1']);
  assert.equal(g.aslr(), '1\n');
});

test('an image without a passwd at all is warmed up as uid 0 in /', async () => {
  const g = guest('2\n', []);
  await warmUpSandbox(g.agent);
  assert.deepEqual(g.log, ['write 0', 'exec /bin/bash -l -c true uid=0 cwd=/ HOME=/ aslr=0', 'write 2']);
});

test('a failed command still puts randomize_va_space back, and the warm-up fails', async () => {
  const g = guest('2\n', [ROOT, USER], true);
  await assert.rejects(warmUpSandbox(g.agent), /went away/);
  assert.equal(g.aslr(), '2\n');
});

test("a code interpreter's clone also asks its server to run a cell per default context, as root, after the command", async () => {
  const g = guest('2\n', [ROOT, USER]);
  await warmUpInterpreter(g.agent);
  assert.deepEqual(g.log, [
    'write 0',
    'exec /bin/bash -l -c true uid=1000 cwd=/home/user HOME=/home/user aslr=0',
    'write 2',
    `exec ${INTERPRETER_WARM_UP_ARGV.join(' ')} uid=0 cwd=/ HOME=undefined aslr=2`,
  ]);
  assert.match(INTERPRETER_WARM_UP_ARGV.at(-1) as string, /^http:\/\/127\.0\.0\.1:49999\/warm-up$/);
  // A server without that call, or no curl: the clone is pooled all the same.
  const failing = guest('2\n', [ROOT, USER]);
  const { agent } = failing;
  const exec = agent.exec.bind(agent);
  agent.exec = async (spec) => (spec.argv[0] === 'curl' ? Promise.reject(new CellaError('AGENT_ERROR', 'no curl')) : exec(spec));
  await warmUpInterpreter(failing.agent);
});
