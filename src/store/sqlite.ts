/**
 * The embedded default: SQLite through better-sqlite3, in WAL mode with
 * synchronous=FULL, so a write is on disk before its promise resolves. Rows
 * are written and read through the tables' column maps; ./session.ts makes
 * the synchronous statements an asynchronous Store.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { TaggableType, VmState } from '../contract/index.js';
import { ACCESS_KEYS, API_KEYS, IDEMPOTENCY, SECRETS, TOKENS, type AccessKeyRecord, type TokenRecord } from './access.js';
import { decodeRow, encodePatch, encodeRow, type Row, type Table } from './columns.js';
import { CONNECTORS, type ConnectorRecord } from './connectors.js';
import { E2B_SANDBOXES, type E2bSandboxRecord } from './e2b.js';
import { BUILDS, IMAGES, VERSIONS, type BuildRecord, type ImageRecord, type ImageVersionRecord } from './images.js';
import { migrate } from './migrations.js';
import { type Backend, Session } from './session.js';
import { duplicateKey } from './store.js';
import { VMS, type VmPage, type VmPatch, type VmRecord } from './vms.js';

const DUPLICATE = new Set(['SQLITE_CONSTRAINT_PRIMARYKEY', 'SQLITE_CONSTRAINT_UNIQUE']);

class SqliteBackend implements Backend {
  private readonly db: Database.Database;
  /** Prepared once per SQL text: the set is small (the patches' column sets included). */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(file: string) {
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // FULL: a state written before an answer is on disk even if the host loses power.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
  }

  private sql(text: string): Database.Statement {
    let s = this.statements.get(text);
    if (!s) this.statements.set(text, (s = this.db.prepare(text)));
    return s;
  }

  private one<R>(t: Table<R>, where: string, ...args: unknown[]): R | undefined {
    const row = this.sql(`SELECT * FROM ${t.name} WHERE ${where}`).get(...args) as Row | undefined;
    return row && decodeRow(t, row);
  }

  private many<R>(t: Table<R>, rest: string, ...args: unknown[]): R[] {
    return (this.sql(`SELECT * FROM ${t.name} ${rest}`).all(...args) as Row[]).map((r) => decodeRow(t, r));
  }

  /** An INSERT of every column; a table with mutable fields replaces those on a taken key (an upsert). */
  private put<R>(t: Table<R>, rec: R): void {
    const row = encodeRow(t, rec);
    const cols = Object.keys(row);
    const keys = t.key.map((f) => t.columns[f].name);
    const upsert = t.mutable?.length
      ? ` ON CONFLICT (${keys.join(', ')}) DO UPDATE SET ${t.mutable.map((f) => `${t.columns[f].name} = excluded.${t.columns[f].name}`).join(', ')}`
      : '';
    try {
      this.sql(`INSERT INTO ${t.name} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})${upsert}`).run(...Object.values(row));
    } catch (err) {
      if (DUPLICATE.has((err as { code?: string }).code ?? '')) throw duplicateKey(t.name);
      throw err;
    }
  }

  begin(depth: number): void {
    // IMMEDIATE: the write lock is taken at BEGIN, so no statement of the transaction waits for it halfway.
    this.db.exec(depth === 0 ? 'BEGIN IMMEDIATE' : `SAVEPOINT s${depth}`);
  }

  commit(depth: number): void {
    this.db.exec(depth === 0 ? 'COMMIT' : `RELEASE s${depth}`);
  }

  rollback(depth: number): void {
    if (depth > 0) this.db.exec(`ROLLBACK TO s${depth}; RELEASE s${depth}`);
    // A COMMIT that failed may have ended the transaction already.
    else if (this.db.inTransaction) this.db.exec('ROLLBACK');
  }

  close(): void {
    this.db.close();
  }

  insertVm(vm: VmRecord): void {
    this.put(VMS, vm);
  }

  getVm(id: string): VmRecord | undefined {
    return this.one(VMS, 'id = ?', id);
  }

  listVms(page: VmPage): VmRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (page.after) {
      where.push('(created_at, id) > (?, ?)');
      args.push(page.after.createdAt, page.after.id);
    }
    if (page.imageName) {
      where.push('image_name = ?');
      args.push(page.imageName);
    }
    if (page.imageVersion) {
      where.push('image_version = ?');
      args.push(page.imageVersion);
    }
    return this.many(VMS, `${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`, ...args, page.limit);
  }

  liveVms(): VmRecord[] {
    return this.many(VMS, `WHERE state <> 'TERMINATED' ORDER BY created_at, id`);
  }

  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): VmRecord | undefined {
    const sets = encodePatch(VMS, patch);
    const row = this.sql(
      `UPDATE vms SET state = ?, generation = ?, state_reason = ?${sets.map(([c]) => `, ${c} = ?`).join('')} WHERE id = ? AND generation = ? RETURNING *`,
    ).get(state, generation, reason, ...sets.map(([, v]) => v), id, fromGeneration) as Row | undefined;
    return row && decodeRow(VMS, row);
  }

  patchVm(id: string, generation: number, patch: VmPatch): VmRecord | undefined {
    const sets = encodePatch(VMS, patch);
    if (sets.length === 0) return this.one(VMS, 'id = ? AND generation = ?', id, generation);
    const row = this.sql(`UPDATE vms SET ${sets.map(([c]) => `${c} = ?`).join(', ')} WHERE id = ? AND generation = ? RETURNING *`).get(
      ...sets.map(([, v]) => v),
      id,
      generation,
    ) as Row | undefined;
    return row && decodeRow(VMS, row);
  }

  findIdempotent(scope: string, clientToken: string): { hash: string; resourceId: string } | undefined {
    const r = this.one(IDEMPOTENCY, 'scope = ? AND client_token = ?', scope, clientToken);
    return r && { hash: r.hash, resourceId: r.resourceId };
  }

  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): void {
    this.put(IDEMPOTENCY, { scope, clientToken, hash, resourceId, createdAt: Date.now() });
  }

  putToken(t: TokenRecord): void {
    this.put(TOKENS, t);
  }

  getToken(jti: string): TokenRecord | undefined {
    return this.one(TOKENS, 'jti = ?', jti);
  }

  deleteTokensOf(vmId: string): number {
    return this.sql('DELETE FROM tokens WHERE vm_id = ?').run(vmId).changes;
  }

  putImage(img: ImageRecord): void {
    this.put(IMAGES, img);
  }

  getImage(name: string): ImageRecord | undefined {
    return this.one(IMAGES, 'name = ?', name);
  }

  listImages(opts: { after?: string; limit?: number } = {}): ImageRecord[] {
    return this.many(IMAGES, 'WHERE name > ? ORDER BY name LIMIT ?', opts.after ?? '', opts.limit ?? -1);
  }

  deleteImage(name: string): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM image_builds WHERE image_name = ?').run(name);
      this.sql('DELETE FROM image_versions WHERE image_name = ?').run(name);
      this.sql('DELETE FROM microvm_images WHERE name = ?').run(name);
    })();
  }

  putVersion(v: ImageVersionRecord): void {
    this.put(VERSIONS, v);
  }

  getVersion(imageName: string, version: string): ImageVersionRecord | undefined {
    return this.one(VERSIONS, 'image_name = ? AND version = ?', imageName, version);
  }

  listVersions(imageName: string): ImageVersionRecord[] {
    return this.many(VERSIONS, 'WHERE image_name = ? ORDER BY major', imageName);
  }

  deleteVersion(imageName: string, version: string): void {
    this.db.transaction(() => {
      this.sql('DELETE FROM image_builds WHERE image_name = ? AND version = ?').run(imageName, version);
      this.sql('DELETE FROM image_versions WHERE image_name = ? AND version = ?').run(imageName, version);
    })();
  }

  putBuild(b: BuildRecord): void {
    this.put(BUILDS, b);
  }

  getBuild(buildId: string): BuildRecord | undefined {
    return this.one(BUILDS, 'build_id = ?', buildId);
  }

  listBuilds(imageName: string, version?: string): BuildRecord[] {
    return version === undefined
      ? this.many(BUILDS, 'WHERE image_name = ? ORDER BY created_at', imageName)
      : this.many(BUILDS, 'WHERE image_name = ? AND version = ? ORDER BY created_at', imageName, version);
  }

  putConnector(c: ConnectorRecord): void {
    this.put(CONNECTORS, c);
  }

  getConnector(name: string): ConnectorRecord | undefined {
    return this.one(CONNECTORS, 'name = ?', name);
  }

  listConnectors(): ConnectorRecord[] {
    return this.many(CONNECTORS, 'ORDER BY name');
  }

  deleteConnector(name: string): void {
    this.sql('DELETE FROM network_connectors WHERE name = ?').run(name);
  }

  putAccessKey(k: AccessKeyRecord): void {
    this.put(ACCESS_KEYS, k);
  }

  getAccessKey(id: string): AccessKeyRecord | undefined {
    return this.one(ACCESS_KEYS, 'id = ?', id);
  }

  listAccessKeys(): AccessKeyRecord[] {
    return this.many(ACCESS_KEYS, 'ORDER BY created_at, id');
  }

  deleteAccessKey(id: string): boolean {
    return this.sql('DELETE FROM access_keys WHERE id = ?').run(id).changes > 0;
  }

  setTags(type: TaggableType, name: string, tags: Record<string, string>): boolean {
    const t = type === 'microvm-image' ? IMAGES : CONNECTORS;
    return this.sql(`UPDATE ${t.name} SET ${t.columns.tags.name} = ? WHERE ${t.columns.name.name} = ?`).run(t.columns.tags.encode(tags), name).changes > 0;
  }

  putE2bSandbox(s: E2bSandboxRecord): void {
    this.put(E2B_SANDBOXES, s);
  }

  getE2bSandbox(vmId: string): E2bSandboxRecord | undefined {
    return this.one(E2B_SANDBOXES, 'vm_id = ?', vmId);
  }

  liveE2bSandboxes(): E2bSandboxRecord[] {
    return this.many(E2B_SANDBOXES, `WHERE vm_id IN (SELECT id FROM vms WHERE state <> 'TERMINATED') ORDER BY created_at, vm_id`);
  }

  apiKeyHashes(): string[] {
    return this.many(API_KEYS, '').map((k) => k.hash);
  }

  addApiKeyHash(hash: string): void {
    this.put(API_KEYS, { hash, createdAt: Date.now() });
  }

  getSecret(name: string): Buffer | undefined {
    return this.one(SECRETS, 'name = ?', name)?.value;
  }

  putSecret(name: string, value: Buffer): void {
    this.put(SECRETS, { name, value });
  }
}

/** The store in one SQLite file (`:memory:` for a throwaway one). */
export class SqliteStore extends Session {
  constructor(file: string) {
    super(new SqliteBackend(file));
  }
}
