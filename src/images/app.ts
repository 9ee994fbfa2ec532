/** The built root file system made ready to run: its resolver, the app's runtime config, and the image hooks that gate the snapshot. */
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { commandOf, type ContainerConfig } from '../dockerfile/index.js';
import { BuildFailure, guestSize, HOOK_PATH } from '../contract/index.js';
import { run } from '../host/index.js';
import { GUEST } from '../net/index.js';
import type { ImageConfig } from '../store/index.js';
import { DEFAULT_PATH, type BuildInput, type Say } from './build-spec.js';
import { resolveUser } from './users.js';

/**
 * The guest's resolver is Cella's DNS forwarder at its gateway (the only
 * name service a connector lets it use), as Docker manages resolv.conf.
 * Written with debugfs: the host edits the image file without mounting it.
 */
export async function setResolver(rootfs: string, work: string): Promise<void> {
  const conf = path.join(work, 'resolv.conf');
  writeFileSync(conf, `# written by Cella: DNS goes through the VM's network connectors\nnameserver ${GUEST.gateway}\n`);
  const script = path.join(work, 'resolv.debugfs');
  writeFileSync(script, `rm /etc/resolv.conf\nwrite ${conf} /etc/resolv.conf\n`);
  // debugfs reports a missing /etc/resolv.conf (or /etc) on stderr and goes on; its exit code says nothing useful.
  await run('debugfs', ['-w', '-f', script, rootfs]).catch(() => {});
}

// ---------- the app ----------

export async function runtimeConfig(config: ContainerConfig, input: BuildInput, rootfs: string): Promise<ImageConfig> {
  const req = input.version.request;
  const command = commandOf(config);
  if (command.length === 0) throw new BuildFailure('CONTAINER_BUILD_FAILED', 'the Dockerfile has no ENTRYPOINT or CMD: nothing to start');
  let ids: { uid: number; gid: number } | undefined;
  if (config.user) {
    const read = async (f: string): Promise<string> => {
      try {
        return await run('debugfs', ['-R', `cat ${f}`, rootfs]);
      } catch {
        return '';
      }
    };
    ids = resolveUser(config.user, await read('/etc/passwd'), await read('/etc/group'), 0);
  }
  return {
    command,
    environmentVariables: {
      PATH: DEFAULT_PATH,
      ...config.env,
      ...req.environmentVariables,
      AWS_LAMBDA_MICROVM_IMAGE_ARN: input.imageArn,
      AWS_LAMBDA_MICROVM_IMAGE_NAME: input.imageName,
      AWS_LAMBDA_MICROVM_IMAGE_VERSION: input.version.version,
    },
    workingDirectory: config.workingDir || '/',
    ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
    port: config.exposedPorts[0] ?? 8080,
    memoryMiB: input.memoryMiB,
    vcpus: guestSize(input.memoryMiB).vcpus,
    ...(req.hooks ? { hooks: req.hooks } : {}),
    ...(req.egressNetworkConnectors ? { egressNetworkConnectors: req.egressNetworkConnectors } : {}),
  };
}

/**
 * The image hooks: POST until 200 (snapshot now / passed); 503 or a refused
 * connection means not yet; anything else, or the timeout, fails the build.
 */
export async function pollImageHook(
  address: { host: string; port: number },
  hook: 'ready' | 'validate',
  timeoutS: number,
  check: () => void,
  say: Say,
): Promise<void> {
  const deadline = Date.now() + timeoutS * 1000;
  let last = '';
  for (;;) {
    check();
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new BuildFailure(
        'CONTAINER_BUILD_FAILED',
        `${hook === 'ready' ? 'Ready' : 'Validate'} hook invocation timed out after PT${timeoutS}S${last ? ` (last: ${last})` : ''}`,
      );
    }
    const status = await postHook(address, hook, left);
    if (status === 200) {
      say(`${hook} hook answered 200`);
      return;
    }
    if (typeof status === 'number' && status !== 503) throw new BuildFailure('CONTAINER_BUILD_FAILED', `the ${hook} hook answered HTTP ${status}`);
    const now = status === 503 ? 'HTTP 503 (not ready yet)' : status;
    if (now !== last) say(`${hook} hook: ${now}`);
    last = now;
    await sleep(100);
  }
}

/** The status, or why there was none (a string). */
function postHook(address: { host: string; port: number }, hook: string, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ ...address, method: 'POST', path: HOOK_PATH + hook, agent: false, headers: { 'content-length': 0 } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', (err) => resolve(err.message));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('no answer in time')));
    req.on('error', (err) => resolve(`not answering (${err.message})`));
    req.end();
  });
}
