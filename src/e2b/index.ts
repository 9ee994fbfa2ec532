/**
 * E2B compatibility: the unmodified E2B SDKs drive Cella MicroVMs. This
 * door offers the REST facade mounted under `/e2b` on the API port
 * (./api.ts) and the sandboxes behind it (./sandboxes.ts), whose
 * SandboxAccess is what envd and the proxy may know of a sandbox.
 */
export { createE2bApi, E2B_PREFIX, isE2bPath, type E2bApiOptions } from './api.js';
export { Sandboxes, type GuestAgent, type Sandbox, type SandboxAccess, type SandboxesOptions } from './sandboxes.js';
export {
  createEnvdHandler,
  DEFAULT_USER,
  ENVD_PORT,
  ENVD_VERSION,
  envdAuthProblem,
  fileSignature,
  sandboxNotFound,
  type EnvdAccess,
  type EnvdAgent,
  type EnvdHandler,
  type EnvdSandboxes,
  type SandboxDefaults,
} from './envd/index.js';
