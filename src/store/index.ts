/**
 * Durable state: VMs (desired and observed), deadlines, idempotency tokens,
 * auth tokens, images, API keys, usage. SQLite by default; `Store` is the
 * interface a Postgres implementation can fill. Every write is synchronous
 * and durable (WAL, synchronous=FULL) before the caller is answered.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { BuildFailureReason, BuildState, HookSettings, ImageRequestConfig, ImageState, VersionState, VmState } from '../contract/index.js';
import type { NetworkPolicy } from '../net/index.js';

/** The Microvm's settings as the caller asked for them (desired state). */
export interface VmSpec {
  executionRoleArn?: string;
  idlePolicy?: { maxIdleDurationSeconds: number; suspendedDurationSeconds: number; autoResumeEnabled: boolean };
  maximumDurationInSeconds: number;
  ingressNetworkConnectors: string[];
  egressNetworkConnectors: string[];
  /** What the connectors resolved to at RunMicrovm; absent on VMs from before connectors were enforced (no egress). */
  network?: NetworkPolicy;
  loggingDisabled: boolean;
}

export interface VmRecord {
  id: string;
  imageName: string;
  imageArn: string;
  imageVersion: string;
  state: VmState;
  /** Bumped by every state change; timers and background jobs carry the one they were made for. */
  generation: number;
  stateReason: string | null;
  spec: VmSpec;
  memoryMiB: number;
  vcpus: number;
  createdAt: number;
  terminatedAt: number | null;
  /** Observed: where its QEMU runs, for re-adoption after a restart. */
  slot: number | null;
  pid: number | null;
  pidStartTime: string | null;
  /** Deadlines (ms since epoch); null when not armed. */
  idleDeadline: number | null;
  suspendedDeadline: number | null;
  maxDeadline: number;
  /** Usage counters; the open interval since `stateSince` is added when the state ends. */
  stateSince: number;
  runningMs: number;
  bytesWritten: number;
  bytesRead: number;
  /** Checkpoint bytes × milliseconds stored. */
  storageByteMs: number;
  checkpointBytes: number;
}

/** A new MicroVM's row as RunMicrovm writes it: PENDING, generation 1, nothing observed or metered yet. */
export function pendingVm(init: {
  id: string;
  image: Pick<RunnableImage, 'name' | 'arn' | 'version'> & { config: Pick<ImageConfig, 'memoryMiB' | 'vcpus'> };
  spec: VmSpec;
  now: number;
}): VmRecord {
  const { id, image, spec, now } = init;
  return {
    id,
    imageName: image.name,
    imageArn: image.arn,
    imageVersion: image.version,
    state: 'PENDING',
    generation: 1,
    stateReason: null,
    spec,
    memoryMiB: image.config.memoryMiB,
    vcpus: image.config.vcpus,
    createdAt: now,
    terminatedAt: null,
    slot: null,
    pid: null,
    pidStartTime: null,
    idleDeadline: null,
    suspendedDeadline: null,
    maxDeadline: now + spec.maximumDurationInSeconds * 1000,
    stateSince: now,
    runningMs: 0,
    bytesWritten: 0,
    bytesRead: 0,
    storageByteMs: 0,
    checkpointBytes: 0,
  };
}


/** A MicrovmImage: a name whose versions are built from code artifacts. */
export interface ImageRecord {
  name: string;
  arn: string;
  state: ImageState;
  tags: Record<string, string>;
  createdAt: number;
  updatedAt: number | null;
}

/** One build of an image from one request; what RunMicrovm launches. */
export interface ImageVersionRecord {
  imageName: string;
  /** `<major>.0`; major counts up from 1 per image. */
  version: string;
  major: number;
  state: VersionState;
  status: 'ACTIVE' | 'INACTIVE';
  stateReason: string | null;
  /** The ImageConfig fields of the create/update request, echoed as sent. */
  request: ImageRequestConfig;
  /** How to start the app and call it; set once the build has resolved the Dockerfile. */
  runtime: ImageConfig | null;
  /** The version's folder: rootfs.ext4 and snapshot/. */
  dir: string;
  createdAt: number;
  updatedAt: number | null;
}

export interface SnapshotBuild {
  memorySnapshotSizeInBytes?: number;
  codeInstallSizeInBytes?: number;
  diskSnapshotSizeInBytes?: number;
}

export interface BuildRecord {
  buildId: string;
  imageName: string;
  version: string;
  state: BuildState;
  stateReason: BuildFailureReason | null;
  /** Why, in words (Cella extension; the log has the whole story). */
  message: string | null;
  snapshotBuild: SnapshotBuild | null;
  createdAt: number;
  updatedAt: number | null;
}

/** What the lifecycle needs of a version to launch and call a VM. */
export interface RunnableImage {
  name: string;
  arn: string;
  version: string;
  /** The snapshot's folder. */
  dir: string;
  config: ImageConfig;
}

/** The app as the build resolved it from the Dockerfile and the request. */
export interface ImageConfig {
  command: string[];
  environmentVariables: Record<string, string>;
  workingDirectory: string;
  uid?: number;
  gid?: number;
  /** The endpoint's default port, and the one a build waits for without a ready hook. */
  port: number;
  memoryMiB: number;
  vcpus: number;
  hooks?: HookSettings;
  /** The image's egress connectors: a RunMicrovm that names none gets these (else the contract's default). */
  egressNetworkConnectors?: string[];
}

/** A customer egress connector (Cella extension): what a VM given it may reach. */
export interface ConnectorRecord {
  name: string;
  arn: string;
  description: string | null;
  cidrs: string[];
  domains: string[];
  createdAt: number;
}

export interface TokenRecord {
  jti: string;
  vmId: string;
  kind: 'http' | 'shell';
  ports: string;
  expiresAt: number;
  createdAt: number;
}

export type { BuildState, ImageState, VersionState };

export type VmPatch = Partial<Omit<VmRecord, 'id' | 'state' | 'generation' | 'spec' | 'imageName' | 'imageArn' | 'imageVersion'>>;

export interface Store {
  close(): void;
  /** Runs `fn` atomically. */
  tx<T>(fn: () => T): T;
  insertVm(vm: VmRecord): void;
  getVm(id: string): VmRecord | undefined;
  /** Ordered by creation, oldest first; `after` is the last id of the previous page. */
  listVms(opts: { after?: { createdAt: number; id: string }; limit: number; imageName?: string; imageVersion?: string }): VmRecord[];
  liveVms(): VmRecord[];
  /** Writes state and generation; only the lifecycle's transition() calls this. */
  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): boolean;
  /** Writes fields that are not state (deadlines, pid) if the generation still matches. */
  patchVm(id: string, generation: number, patch: VmPatch): boolean;
  findIdempotent(scope: string, clientToken: string): { hash: string; resourceId: string } | undefined;
  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): void;
  putToken(t: TokenRecord): void;
  getToken(jti: string): TokenRecord | undefined;
  deleteTokensOf(vmId: string): number;
  putImage(img: ImageRecord): void;
  getImage(name: string): ImageRecord | undefined;
  /** By name; `after` is the last name of the previous page. */
  listImages(opts?: { after?: string; limit?: number }): ImageRecord[];
  /** The image with its versions and builds. */
  deleteImage(name: string): void;
  putVersion(v: ImageVersionRecord): void;
  getVersion(imageName: string, version: string): ImageVersionRecord | undefined;
  /** Oldest first. */
  listVersions(imageName: string): ImageVersionRecord[];
  deleteVersion(imageName: string, version: string): void;
  putBuild(b: BuildRecord): void;
  getBuild(buildId: string): BuildRecord | undefined;
  /** Oldest first; every version's when `version` is omitted. */
  listBuilds(imageName: string, version?: string): BuildRecord[];
  putConnector(c: ConnectorRecord): void;
  getConnector(name: string): ConnectorRecord | undefined;
  /** By name. */
  listConnectors(): ConnectorRecord[];
  deleteConnector(name: string): void;
  apiKeyHashes(): string[];
  addApiKeyHash(hash: string): void;
  getSecret(name: string): Buffer | undefined;
  /** Inserts or replaces. */
  putSecret(name: string, value: Buffer): void;
}

/** Each entry moves the schema one version up; `user_version` records how far a database is. */
const MIGRATIONS: string[] = [
  `CREATE TABLE vms (
     id TEXT PRIMARY KEY,
     image_name TEXT NOT NULL,
     image_arn TEXT NOT NULL,
     image_version TEXT NOT NULL,
     state TEXT NOT NULL,
     generation INTEGER NOT NULL,
     state_reason TEXT,
     spec TEXT NOT NULL,
     memory_mib INTEGER NOT NULL,
     vcpus INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     terminated_at INTEGER,
     slot INTEGER,
     pid INTEGER,
     pid_start_time TEXT,
     idle_deadline INTEGER,
     suspended_deadline INTEGER,
     max_deadline INTEGER NOT NULL,
     state_since INTEGER NOT NULL,
     running_ms INTEGER NOT NULL DEFAULT 0,
     bytes_written INTEGER NOT NULL DEFAULT 0,
     bytes_read INTEGER NOT NULL DEFAULT 0,
     storage_byte_ms REAL NOT NULL DEFAULT 0,
     checkpoint_bytes INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX vms_order ON vms (created_at, id);
   CREATE INDEX vms_live ON vms (state) WHERE state <> 'TERMINATED';
   CREATE TABLE idempotency (
     scope TEXT NOT NULL, client_token TEXT NOT NULL, hash TEXT NOT NULL, resource_id TEXT NOT NULL, created_at INTEGER NOT NULL,
     PRIMARY KEY (scope, client_token)
   );
   CREATE TABLE tokens (
     jti TEXT PRIMARY KEY, vm_id TEXT NOT NULL, kind TEXT NOT NULL, ports TEXT NOT NULL, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL
   );
   CREATE INDEX tokens_vm ON tokens (vm_id);
   CREATE TABLE images (
     name TEXT PRIMARY KEY, arn TEXT NOT NULL, version TEXT NOT NULL, dir TEXT NOT NULL, state TEXT NOT NULL,
     state_reason TEXT, config TEXT NOT NULL, created_at INTEGER NOT NULL
   );
   CREATE TABLE api_keys (hash TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
   CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);`,
  // Images get versions and builds; a registered image becomes version 1.0 of its name.
  `CREATE TABLE microvm_images (
     name TEXT PRIMARY KEY, arn TEXT NOT NULL, state TEXT NOT NULL, tags TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER
   );
   CREATE TABLE image_versions (
     image_name TEXT NOT NULL, version TEXT NOT NULL, major INTEGER NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, state_reason TEXT,
     request TEXT NOT NULL, runtime TEXT, dir TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER,
     PRIMARY KEY (image_name, version)
   );
   CREATE TABLE image_builds (
     build_id TEXT PRIMARY KEY, image_name TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL, state_reason TEXT, message TEXT,
     snapshot_build TEXT, created_at INTEGER NOT NULL, updated_at INTEGER
   );
   CREATE INDEX image_builds_version ON image_builds (image_name, version, created_at);
   INSERT INTO microvm_images SELECT name, arn, CASE state WHEN 'CREATED' THEN 'CREATED' ELSE 'CREATE_FAILED' END, '{}', created_at, NULL FROM images;
   INSERT INTO image_versions SELECT name, version, 1, CASE state WHEN 'CREATED' THEN 'SUCCESSFUL' ELSE 'FAILED' END, 'ACTIVE', state_reason,
     '{}', CASE state WHEN 'CREATED' THEN config END, dir, created_at, NULL FROM images;
   DROP TABLE images;`,
  `CREATE TABLE network_connectors (
     name TEXT PRIMARY KEY, arn TEXT NOT NULL, description TEXT, cidrs TEXT NOT NULL, domains TEXT NOT NULL, created_at INTEGER NOT NULL
   );`,
];

const VM_COLUMNS: Record<keyof VmPatch, string> = {
  stateReason: 'state_reason',
  memoryMiB: 'memory_mib',
  vcpus: 'vcpus',
  createdAt: 'created_at',
  terminatedAt: 'terminated_at',
  slot: 'slot',
  pid: 'pid',
  pidStartTime: 'pid_start_time',
  idleDeadline: 'idle_deadline',
  suspendedDeadline: 'suspended_deadline',
  maxDeadline: 'max_deadline',
  stateSince: 'state_since',
  runningMs: 'running_ms',
  bytesWritten: 'bytes_written',
  bytesRead: 'bytes_read',
  storageByteMs: 'storage_byte_ms',
  checkpointBytes: 'checkpoint_bytes',
};

type Row = Record<string, unknown>;

function toVm(r: Row): VmRecord {
  return {
    id: r.id as string,
    imageName: r.image_name as string,
    imageArn: r.image_arn as string,
    imageVersion: r.image_version as string,
    state: r.state as VmState,
    generation: r.generation as number,
    stateReason: (r.state_reason as string | null) ?? null,
    spec: JSON.parse(r.spec as string) as VmSpec,
    memoryMiB: r.memory_mib as number,
    vcpus: r.vcpus as number,
    createdAt: r.created_at as number,
    terminatedAt: (r.terminated_at as number | null) ?? null,
    slot: (r.slot as number | null) ?? null,
    pid: (r.pid as number | null) ?? null,
    pidStartTime: (r.pid_start_time as string | null) ?? null,
    idleDeadline: (r.idle_deadline as number | null) ?? null,
    suspendedDeadline: (r.suspended_deadline as number | null) ?? null,
    maxDeadline: r.max_deadline as number,
    stateSince: r.state_since as number,
    runningMs: r.running_ms as number,
    bytesWritten: r.bytes_written as number,
    bytesRead: r.bytes_read as number,
    storageByteMs: r.storage_byte_ms as number,
    checkpointBytes: r.checkpoint_bytes as number,
  };
}

function toImage(r: Row): ImageRecord {
  return {
    name: r.name as string,
    arn: r.arn as string,
    state: r.state as ImageState,
    tags: JSON.parse(r.tags as string) as Record<string, string>,
    createdAt: r.created_at as number,
    updatedAt: (r.updated_at as number | null) ?? null,
  };
}

function toVersion(r: Row): ImageVersionRecord {
  return {
    imageName: r.image_name as string,
    version: r.version as string,
    major: r.major as number,
    state: r.state as VersionState,
    status: r.status as ImageVersionRecord['status'],
    stateReason: (r.state_reason as string | null) ?? null,
    request: JSON.parse(r.request as string) as ImageRequestConfig,
    runtime: r.runtime === null ? null : (JSON.parse(r.runtime as string) as ImageConfig),
    dir: r.dir as string,
    createdAt: r.created_at as number,
    updatedAt: (r.updated_at as number | null) ?? null,
  };
}

function toBuild(r: Row): BuildRecord {
  return {
    buildId: r.build_id as string,
    imageName: r.image_name as string,
    version: r.version as string,
    state: r.state as BuildState,
    stateReason: (r.state_reason as BuildFailureReason | null) ?? null,
    message: (r.message as string | null) ?? null,
    snapshotBuild: r.snapshot_build === null ? null : (JSON.parse(r.snapshot_build as string) as SnapshotBuild),
    createdAt: r.created_at as number,
    updatedAt: (r.updated_at as number | null) ?? null,
  };
}

function toConnector(r: Row): ConnectorRecord {
  return {
    name: r.name as string,
    arn: r.arn as string,
    description: (r.description as string | null) ?? null,
    cidrs: JSON.parse(r.cidrs as string) as string[],
    domains: JSON.parse(r.domains as string) as string[],
    createdAt: r.created_at as number,
  };
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;

  constructor(file: string) {
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // FULL: a state written before an answer is on disk even if the host loses power.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new Error(`database schema version ${current} is newer than this cellad understands (${MIGRATIONS.length})`);
    }
    for (let v = current; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v] as string);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  close(): void {
    this.db.close();
  }

  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  insertVm(vm: VmRecord): void {
    this.db
      .prepare(
        `INSERT INTO vms (id, image_name, image_arn, image_version, state, generation, state_reason, spec, memory_mib, vcpus, created_at,
           terminated_at, slot, pid, pid_start_time, idle_deadline, suspended_deadline, max_deadline, state_since, running_ms, bytes_written,
           bytes_read, storage_byte_ms, checkpoint_bytes)
         VALUES (@id, @imageName, @imageArn, @imageVersion, @state, @generation, @stateReason, @spec, @memoryMiB, @vcpus, @createdAt,
           @terminatedAt, @slot, @pid, @pidStartTime, @idleDeadline, @suspendedDeadline, @maxDeadline, @stateSince, @runningMs, @bytesWritten,
           @bytesRead, @storageByteMs, @checkpointBytes)`,
      )
      .run({ ...vm, spec: JSON.stringify(vm.spec) });
  }

  getVm(id: string): VmRecord | undefined {
    const r = this.db.prepare('SELECT * FROM vms WHERE id = ?').get(id) as Row | undefined;
    return r && toVm(r);
  }

  listVms(opts: { after?: { createdAt: number; id: string }; limit: number; imageName?: string; imageVersion?: string }): VmRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.after) {
      where.push('(created_at, id) > (?, ?)');
      args.push(opts.after.createdAt, opts.after.id);
    }
    if (opts.imageName) {
      where.push('image_name = ?');
      args.push(opts.imageName);
    }
    if (opts.imageVersion) {
      where.push('image_version = ?');
      args.push(opts.imageVersion);
    }
    const sql = `SELECT * FROM vms ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`;
    return (this.db.prepare(sql).all(...args, opts.limit) as Row[]).map(toVm);
  }

  liveVms(): VmRecord[] {
    return (this.db.prepare(`SELECT * FROM vms WHERE state <> 'TERMINATED' ORDER BY created_at, id`).all() as Row[]).map(toVm);
  }

  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): boolean {
    const { sets, values } = patchSql(patch);
    const res = this.db
      .prepare(`UPDATE vms SET state = ?, generation = ?, state_reason = ?${sets} WHERE id = ? AND generation = ?`)
      .run(state, generation, reason, ...values, id, fromGeneration);
    return res.changes === 1;
  }

  patchVm(id: string, generation: number, patch: VmPatch): boolean {
    const { sets, values } = patchSql(patch);
    if (!sets) return true;
    return this.db.prepare(`UPDATE vms SET ${sets.slice(2)} WHERE id = ? AND generation = ?`).run(...values, id, generation).changes === 1;
  }

  findIdempotent(scope: string, clientToken: string): { hash: string; resourceId: string } | undefined {
    const r = this.db.prepare('SELECT hash, resource_id FROM idempotency WHERE scope = ? AND client_token = ?').get(scope, clientToken) as Row | undefined;
    return r && { hash: r.hash as string, resourceId: r.resource_id as string };
  }

  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): void {
    this.db.prepare('INSERT INTO idempotency (scope, client_token, hash, resource_id, created_at) VALUES (?, ?, ?, ?, ?)').run(scope, clientToken, hash, resourceId, Date.now());
  }

  putToken(t: TokenRecord): void {
    this.db
      .prepare('INSERT INTO tokens (jti, vm_id, kind, ports, expires_at, created_at) VALUES (@jti, @vmId, @kind, @ports, @expiresAt, @createdAt)')
      .run(t);
  }

  getToken(jti: string): TokenRecord | undefined {
    const r = this.db.prepare('SELECT * FROM tokens WHERE jti = ?').get(jti) as Row | undefined;
    return (
      r && {
        jti: r.jti as string,
        vmId: r.vm_id as string,
        kind: r.kind as TokenRecord['kind'],
        ports: r.ports as string,
        expiresAt: r.expires_at as number,
        createdAt: r.created_at as number,
      }
    );
  }

  deleteTokensOf(vmId: string): number {
    return this.db.prepare('DELETE FROM tokens WHERE vm_id = ?').run(vmId).changes;
  }

  putImage(img: ImageRecord): void {
    this.db
      .prepare(
        `INSERT INTO microvm_images (name, arn, state, tags, created_at, updated_at) VALUES (@name, @arn, @state, @tags, @createdAt, @updatedAt)
         ON CONFLICT (name) DO UPDATE SET arn = excluded.arn, state = excluded.state, tags = excluded.tags, updated_at = excluded.updated_at`,
      )
      .run({ ...img, tags: JSON.stringify(img.tags) });
  }

  getImage(name: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM microvm_images WHERE name = ?').get(name) as Row | undefined;
    return r && toImage(r);
  }

  listImages(opts: { after?: string; limit?: number } = {}): ImageRecord[] {
    return (
      this.db.prepare('SELECT * FROM microvm_images WHERE name > ? ORDER BY name LIMIT ?').all(opts.after ?? '', opts.limit ?? -1) as Row[]
    ).map(toImage);
  }

  deleteImage(name: string): void {
    this.tx(() => {
      this.db.prepare('DELETE FROM image_builds WHERE image_name = ?').run(name);
      this.db.prepare('DELETE FROM image_versions WHERE image_name = ?').run(name);
      this.db.prepare('DELETE FROM microvm_images WHERE name = ?').run(name);
    });
  }

  putVersion(v: ImageVersionRecord): void {
    this.db
      .prepare(
        `INSERT INTO image_versions (image_name, version, major, state, status, state_reason, request, runtime, dir, created_at, updated_at)
         VALUES (@imageName, @version, @major, @state, @status, @stateReason, @request, @runtime, @dir, @createdAt, @updatedAt)
         ON CONFLICT (image_name, version) DO UPDATE SET state = excluded.state, status = excluded.status, state_reason = excluded.state_reason,
           runtime = excluded.runtime, updated_at = excluded.updated_at`,
      )
      .run({ ...v, request: JSON.stringify(v.request), runtime: v.runtime === null ? null : JSON.stringify(v.runtime) });
  }

  getVersion(imageName: string, version: string): ImageVersionRecord | undefined {
    const r = this.db.prepare('SELECT * FROM image_versions WHERE image_name = ? AND version = ?').get(imageName, version) as Row | undefined;
    return r && toVersion(r);
  }

  listVersions(imageName: string): ImageVersionRecord[] {
    return (this.db.prepare('SELECT * FROM image_versions WHERE image_name = ? ORDER BY major').all(imageName) as Row[]).map(toVersion);
  }

  deleteVersion(imageName: string, version: string): void {
    this.tx(() => {
      this.db.prepare('DELETE FROM image_builds WHERE image_name = ? AND version = ?').run(imageName, version);
      this.db.prepare('DELETE FROM image_versions WHERE image_name = ? AND version = ?').run(imageName, version);
    });
  }

  putBuild(b: BuildRecord): void {
    this.db
      .prepare(
        `INSERT INTO image_builds (build_id, image_name, version, state, state_reason, message, snapshot_build, created_at, updated_at)
         VALUES (@buildId, @imageName, @version, @state, @stateReason, @message, @snapshotBuild, @createdAt, @updatedAt)
         ON CONFLICT (build_id) DO UPDATE SET state = excluded.state, state_reason = excluded.state_reason, message = excluded.message,
           snapshot_build = excluded.snapshot_build, updated_at = excluded.updated_at`,
      )
      .run({ ...b, snapshotBuild: b.snapshotBuild === null ? null : JSON.stringify(b.snapshotBuild) });
  }

  getBuild(buildId: string): BuildRecord | undefined {
    const r = this.db.prepare('SELECT * FROM image_builds WHERE build_id = ?').get(buildId) as Row | undefined;
    return r && toBuild(r);
  }

  listBuilds(imageName: string, version?: string): BuildRecord[] {
    const rows =
      version === undefined
        ? this.db.prepare('SELECT * FROM image_builds WHERE image_name = ? ORDER BY created_at').all(imageName)
        : this.db.prepare('SELECT * FROM image_builds WHERE image_name = ? AND version = ? ORDER BY created_at').all(imageName, version);
    return (rows as Row[]).map(toBuild);
  }

  putConnector(c: ConnectorRecord): void {
    this.db
      .prepare('INSERT INTO network_connectors (name, arn, description, cidrs, domains, created_at) VALUES (@name, @arn, @description, @cidrs, @domains, @createdAt)')
      .run({ ...c, cidrs: JSON.stringify(c.cidrs), domains: JSON.stringify(c.domains) });
  }

  getConnector(name: string): ConnectorRecord | undefined {
    const r = this.db.prepare('SELECT * FROM network_connectors WHERE name = ?').get(name) as Row | undefined;
    return r && toConnector(r);
  }

  listConnectors(): ConnectorRecord[] {
    return (this.db.prepare('SELECT * FROM network_connectors ORDER BY name').all() as Row[]).map(toConnector);
  }

  deleteConnector(name: string): void {
    this.db.prepare('DELETE FROM network_connectors WHERE name = ?').run(name);
  }

  apiKeyHashes(): string[] {
    return (this.db.prepare('SELECT hash FROM api_keys').all() as Row[]).map((r) => r.hash as string);
  }

  addApiKeyHash(hash: string): void {
    this.db.prepare('INSERT INTO api_keys (hash, created_at) VALUES (?, ?)').run(hash, Date.now());
  }

  getSecret(name: string): Buffer | undefined {
    const r = this.db.prepare('SELECT value FROM secrets WHERE name = ?').get(name) as Row | undefined;
    return r && (r.value as Buffer);
  }

  putSecret(name: string, value: Buffer): void {
    this.db.prepare('INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value').run(name, value);
  }
}

function patchSql(patch: VmPatch): { sets: string; values: unknown[] } {
  let sets = '';
  const values: unknown[] = [];
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    sets += `, ${VM_COLUMNS[k as keyof VmPatch]} = ?`;
    values.push(v);
  }
  return { sets, values };
}
