/**
 * Durable state: VMs (desired and observed), deadlines, idempotency tokens,
 * auth tokens, images, API keys, SigV4 access keys, usage. SQLite by default (./sqlite.ts);
 * `Store` (./store.ts) is the asynchronous interface another database
 * (Postgres) can fill; ./session.ts gives the embedded backends
 * transactions that may await.
 *
 * One file per table family (./vms.ts, ./images.ts, ./connectors.ts,
 * ./access.ts, ./e2b.ts), each with its row types and one column map per table
 * (./columns.ts) that every backend writes and reads rows through.
 *
 * Which types live here: the rows the store persists, and the shapes kept
 * inside them as JSON (`VmSpec` in `vms.spec`, `ImageConfig` in
 * `image_versions.runtime`): moving those to their domains would make the
 * store import upward. What is not persisted lives with its domain:
 * `RunnableImage` (what a VM is launched from) and `pendingVm` (a new
 * VM's first row) in src/lifecycle, which src/images sits above.
 */
export type { AccessKeyRecord, TokenRecord } from './access.js';
export type { ConnectorRecord } from './connectors.js';
export type { E2bSandboxRecord } from './e2b.js';
export type { BuildRecord, ImageConfig, ImageRecord, ImageVersionRecord, SnapshotBuild } from './images.js';
export { MemoryStore } from './memory.js';
export { SqliteStore } from './sqlite.js';
export type { Store, Tx } from './store.js';
export type { VmPage, VmPatch, VmRecord, VmSpec } from './vms.js';
