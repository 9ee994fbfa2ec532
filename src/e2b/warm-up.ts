/**
 * The warm-up of an E2B template's pooled clones under TCG (ADR 0010). A new
 * clone's QEMU starts with an empty translation cache, so the first
 * `commands.run` in a sandbox used to translate bash, ld.so, libc and the
 * guest kernel's exec path: 300 to 900 ms. Before a clone is paused into the
 * warm pool, this runs what a sandbox's first command runs, the same way:
 * the guest agent's requests of a create, then `/bin/bash -l -c true` as the
 * template's user, at the fixed addresses sandboxes use. The clone's QEMU
 * keeps the translations, and the sandbox made from it finds them.
 *
 * Nothing of it stays visible in the guest: randomize_va_space is set back to
 * what it read, the command writes nothing and has ended (its exit is kept
 * by cella-init for a few minutes, but envd lists live processes only), and
 * no env var or listener is set.
 */
import type { UserInfo } from '../agent/index.js';
import { CODE_INTERPRETER_PORT } from '../images/index.js';
import { commandEnvironment, DEFAULT_USER } from './envd/index.js';

/** The guest kernel's switch for address-space layout randomization (ADR 0010). */
export const RANDOMIZE_VA_SPACE = '/proc/sys/kernel/randomize_va_space';

/** What the warm-up asks of a guest agent (an AgentClient). */
export interface WarmUpAgent {
  lookupUser(user: string | number): Promise<UserInfo>;
  exec(spec: { argv: string[]; env: Record<string, string>; cwd: string; uid: number; gid: number }): Promise<{ exitCode: number | null }>;
  readonly fs: {
    write(path: string, data: string): Promise<unknown>;
    readFile(path: string): Promise<Buffer>;
  };
}

const ROOT: UserInfo = { name: 'root', uid: 0, gid: 0, home: '/', shell: '/bin/sh', groups: [0] };

/** The command the SDK's commands.run('true') starts (envd runs every command as a login bash). */
export const WARM_UP_ARGV = ['/bin/bash', '-l', '-c', 'true'];

/**
 * What `code-interpreter-v1`'s server (guest/code-interpreter/server.py) is asked to warm up: one cell in
 * each default context, counting no execution and keeping nothing (about 4 s of a first Python cell and
 * 2 s of a first JavaScript one under TCG). curl comes with E2B's base; a server that has no such call
 * (an image of the user's on the same port) just answers an error, which is ignored as a missing curl is.
 */
export const INTERPRETER_WARM_UP_ARGV = ['curl', '-sf', '--max-time', '120', '-X', 'POST', `http://127.0.0.1:${CODE_INTERPRETER_PORT}/warm-up`];

/** warmUpSandbox, then the code interpreter's cells (an image serving CODE_INTERPRETER_PORT). */
export async function warmUpInterpreter(agent: WarmUpAgent): Promise<void> {
  await warmUpSandbox(agent);
  await agent.exec({ argv: INTERPRETER_WARM_UP_ARGV, env: { PATH: '/usr/local/bin:/usr/bin:/bin' }, cwd: '/', uid: 0, gid: 0 }).catch(() => undefined);
}

/** Runs a sandbox's first command in a pooled clone, then puts back what it changed. */
export async function warmUpSandbox(agent: WarmUpAgent): Promise<void> {
  const [aslr, user] = await Promise.all([
    agent.fs.readFile(RANDOMIZE_VA_SPACE),
    // As envd's resolveUser: an image without E2B's user runs commands as uid 0 (here also when passwd has no uid 0).
    agent.lookupUser(DEFAULT_USER).catch(() => agent.lookupUser(0).catch((): UserInfo => ROOT)),
  ]);
  await agent.fs.write(RANDOMIZE_VA_SPACE, '0\n');
  try {
    await agent.exec({ argv: WARM_UP_ARGV, env: commandEnvironment(user, '', undefined, {}), cwd: user.home, uid: user.uid, gid: user.gid });
  } finally {
    await agent.fs.write(RANDOMIZE_VA_SPACE, aslr.toString());
  }
}
