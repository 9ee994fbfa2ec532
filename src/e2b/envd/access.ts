/** Who may reach a sandbox's envd, as the proxy asks it (SandboxAccess of src/e2b/sandboxes.ts has this shape). */
import type { SandboxDefaults } from './context.js';

/** The port the SDK addresses envd on: `49983-<id>.<domain>`. */
export const ENVD_PORT = 49983;
/** The envd version advertised: 0.5.7 has CloseStdin and octet-stream/gzip uploads; file metadata (0.6.2) is not served yet. */
export const ENVD_VERSION = '0.5.7';

export interface EnvdAccess {
  /** Whether `token` is sandbox `id`'s envdAccessToken (constant-time compare). */
  checkEnvdToken(id: string, token: string | undefined): Promise<boolean>;
  /** The sandbox's default user and env vars (from create); undefined for a MicroVM that is not an E2B sandbox. */
  defaults(id: string): Promise<SandboxDefaults | undefined>;
  /** Whether a paused sandbox may be woken by traffic (autoResume.enabled). */
  autoResume(id: string): Promise<boolean>;
}
