/**
 * The app's hook interface (contract section 5): `POST http://<guest>:<hooks.port>/aws/lambda-microvms/runtime/v1/<hook>`.
 */
export const HOOK_PATH = '/aws/lambda-microvms/runtime/v1/';
/** Called by the lifecycle of a MicroVM. */
export type RuntimeHook = 'run' | 'resume' | 'suspend' | 'terminate';
/** Called by an image build. */
export type ImageHook = 'ready' | 'validate';
/** The contract's default timeout of a runtime hook. */
export const DEFAULT_RUNTIME_HOOK_TIMEOUT_S = 1;
/** The contract's convention for `hooks.port` (optional in its model): where hooks are called when a request leaves it out. */
export const DEFAULT_HOOK_PORT = 9000;

/** The port an image's hooks are called on, or undefined if it has no hook settings. */
export function hookPort(hooks: { port?: number } | undefined): number | undefined {
  return hooks ? (hooks.port ?? DEFAULT_HOOK_PORT) : undefined;
}
