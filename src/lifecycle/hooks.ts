/**
 * Runtime hooks of the contract: POST http://<guest>:<hooks.port>/aws/lambda-microvms/runtime/v1/<name>.
 * Only 200 is success; anything else, a refused connection or the timeout is a failure with a reason.
 */
import { request } from 'node:http';
import { DEFAULT_RUNTIME_HOOK_TIMEOUT_S, HOOK_PATH, type RuntimeHook } from '../contract/index.js';
import type { ImageConfig } from '../store/index.js';

export function hookEnabled(config: ImageConfig, hook: RuntimeHook): boolean {
  return config.hooks?.microvmHooks?.[hook] === 'ENABLED';
}

export function hookTimeoutMs(config: ImageConfig, hook: RuntimeHook): number {
  return (config.hooks?.microvmHooks?.[`${hook}TimeoutInSeconds`] ?? DEFAULT_RUNTIME_HOOK_TIMEOUT_S) * 1000;
}

/** Resolves to undefined on success, or to why the hook failed. */
export function callHook(address: { host: string; port: number }, hook: RuntimeHook, timeoutMs: number, body?: unknown): Promise<string | undefined> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      req.destroy();
      resolve(`the ${hook} hook did not answer within ${timeoutMs / 1000} s`);
    }, timeoutMs);
    const done = (reason: string | undefined): void => {
      clearTimeout(timer);
      resolve(reason);
    };
    const req = request(
      {
        host: address.host,
        port: address.port,
        method: 'POST',
        path: HOOK_PATH + hook,
        agent: false,
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : { 'content-length': 0 },
      },
      (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode === 200 ? undefined : `the ${hook} hook answered HTTP ${res.statusCode}`));
        res.on('error', (err) => done(`the ${hook} hook failed: ${err.message}`));
      },
    );
    req.on('error', (err) => done(`the ${hook} hook could not be reached: ${err.message}`));
    req.end(payload);
  });
}
