/**
 * The `e2b_sandboxes` table: what an E2B sandbox has beyond its MicroVM (the
 * `vms` row of the same id holds its state, deadline and usage). Its envd
 * access token is not kept: it is derived from the id (src/e2b).
 */
import { bool, int, json, text, type Table } from './columns.js';

export interface E2bSandboxRecord {
  /** The MicroVM's id: the sandbox id the SDK sees. */
  vmId: string;
  /** The templateID as the caller sent it (the Cella image it names). */
  templateId: string;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  /** Who envd runs processes as when the SDK names no user: `user` where the image has one (E2B templates), else root. */
  user: string;
  /** Whether traffic may wake it once paused (autoResume.enabled). */
  autoResume: boolean;
  /** As asked at create; false: no egress. */
  allowInternetAccess: boolean;
  /** false (allowPublicTraffic: false at create): its ports other than envd need its traffic access token. */
  publicTraffic: boolean;
  createdAt: number;
}

export const E2B_SANDBOXES: Table<E2bSandboxRecord> = {
  name: 'e2b_sandboxes',
  key: ['vmId'],
  // Known only once the guest runs: its default user is looked up after the row is written.
  mutable: ['user'],
  columns: {
    vmId: text('vm_id'),
    templateId: text('template_id'),
    metadata: json('metadata'),
    envVars: json('env_vars'),
    user: text('default_user'),
    autoResume: bool('auto_resume'),
    allowInternetAccess: bool('allow_internet_access'),
    publicTraffic: bool('public_traffic'),
    createdAt: int('created_at'),
  },
};
