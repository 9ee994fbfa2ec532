/**
 * The store in memory, with the SQLite store's semantics (the conformance
 * suite in ./store.test.ts runs against both): rows kept encoded through
 * the same column maps (a record read back is a copy, JSON round-tripped),
 * the same keys, upserts, orderings and generation guards, and
 * transactions through the same session (./session.ts) that roll back on
 * a throw. For tests of the control plane that boot no VM.
 */
import type { TaggableType, VmState } from '../contract/index.js';
import { ACCESS_KEYS, API_KEYS, IDEMPOTENCY, SECRETS, TOKENS, type AccessKeyRecord, type TokenRecord } from './access.js';
import { decodeRow, encodeRow, type SqlValue, type Table } from './columns.js';
import { CONNECTORS, type ConnectorRecord } from './connectors.js';
import { E2B_SANDBOXES, type E2bSandboxRecord } from './e2b.js';
import { BUILDS, IMAGES, VERSIONS, type BuildRecord, type ImageRecord, type ImageVersionRecord } from './images.js';
import { type Backend, Session } from './session.js';
import { duplicateKey } from './store.js';
import { VMS, type VmPage, type VmPatch, type VmRecord } from './vms.js';

type EncodedRow = Readonly<Record<string, SqlValue>>;

/** One table's rows by key, in insertion order. Stored rows are never changed in place, so a copy of the map is a snapshot. */
class Rows<R> {
  rows = new Map<string, EncodedRow>();

  constructor(private readonly t: Table<R>) {}

  /** The key fields of a record (or of the key alone), encoded. */
  private keyOf(rec: Partial<R>): string {
    return JSON.stringify(
      this.t.key.map((f) => {
        const v = rec[f];
        return v === undefined ? null : this.t.columns[f].encode(v);
      }),
    );
  }

  get(key: Partial<R>): R | undefined {
    const row = this.rows.get(this.keyOf(key));
    return row && decodeRow(this.t, row);
  }

  all(): R[] {
    return [...this.rows.values()].map((r) => decodeRow(this.t, r));
  }

  /** An insert; a taken key is a duplicate unless the table has mutable fields, which an upsert replaces. */
  put(rec: R): void {
    const row = encodeRow(this.t, rec);
    const key = this.keyOf(rec);
    const old = this.rows.get(key);
    if (!old) return void this.rows.set(key, row);
    if (!this.t.mutable?.length) throw duplicateKey(this.t.name);
    const next = { ...old };
    for (const f of this.t.mutable) next[this.t.columns[f].name] = row[this.t.columns[f].name] ?? null;
    this.rows.set(key, next);
  }

  /** Replaces a row whole (a guarded update). */
  replace(rec: R): void {
    this.rows.set(this.keyOf(rec), encodeRow(this.t, rec));
  }

  delete(match: (rec: R) => boolean): number {
    let n = 0;
    for (const [key, row] of this.rows) {
      if (match(decodeRow(this.t, row))) {
        this.rows.delete(key);
        n++;
      }
    }
    return n;
  }
}

const byCreation = (a: VmRecord, b: VmRecord): number => a.createdAt - b.createdAt || compare(a.id, b.id);
/** Code-unit order, as SQLite's BINARY collation orders the ASCII names and ids the store holds. */
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

class MemoryBackend implements Backend {
  private readonly vms = new Rows(VMS);
  private readonly images = new Rows(IMAGES);
  private readonly versions = new Rows(VERSIONS);
  private readonly builds = new Rows(BUILDS);
  private readonly connectors = new Rows(CONNECTORS);
  private readonly tokens = new Rows(TOKENS);
  private readonly idempotency = new Rows(IDEMPOTENCY);
  private readonly apiKeys = new Rows(API_KEYS);
  private readonly accessKeys = new Rows(ACCESS_KEYS);
  private readonly secrets = new Rows(SECRETS);
  private readonly e2b = new Rows(E2B_SANDBOXES);
  private readonly tables = [
    this.vms,
    this.images,
    this.versions,
    this.builds,
    this.connectors,
    this.tokens,
    this.idempotency,
    this.apiKeys,
    this.accessKeys,
    this.secrets,
    this.e2b,
  ];
  /** One snapshot of every table per open transaction or savepoint, innermost last. */
  private readonly snapshots: Map<string, EncodedRow>[][] = [];

  begin(): void {
    this.snapshots.push(this.tables.map((t) => new Map(t.rows)));
  }

  commit(): void {
    this.snapshots.pop();
  }

  rollback(): void {
    const saved = this.snapshots.pop();
    if (saved) this.tables.forEach((t, i) => (t.rows = saved[i] ?? new Map<string, EncodedRow>()));
  }

  close(): void {}

  insertVm(vm: VmRecord): void {
    this.vms.put(vm);
  }

  getVm(id: string): VmRecord | undefined {
    return this.vms.get({ id });
  }

  listVms(page: VmPage): VmRecord[] {
    const after = page.after;
    return this.vms
      .all()
      .filter((v) => !after || v.createdAt > after.createdAt || (v.createdAt === after.createdAt && compare(v.id, after.id) > 0))
      .filter((v) => (!page.imageName || v.imageName === page.imageName) && (!page.imageVersion || v.imageVersion === page.imageVersion))
      .sort(byCreation)
      .slice(0, page.limit);
  }

  liveVms(): VmRecord[] {
    return this.vms
      .all()
      .filter((v) => v.state !== 'TERMINATED')
      .sort(byCreation);
  }

  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): VmRecord | undefined {
    const cur = this.vms.get({ id });
    if (cur?.generation !== fromGeneration) return undefined;
    // As in SQL's SET, the patch's stateReason (if any) is assigned after `reason`, and wins.
    this.vms.replace({ ...cur, stateReason: reason, ...defined(patch), state, generation });
    return this.vms.get({ id });
  }

  patchVm(id: string, generation: number, patch: VmPatch): VmRecord | undefined {
    const cur = this.vms.get({ id });
    if (cur?.generation !== generation) return undefined;
    this.vms.replace({ ...cur, ...defined(patch) });
    return this.vms.get({ id });
  }

  findIdempotent(scope: string, clientToken: string): { hash: string; resourceId: string } | undefined {
    const r = this.idempotency.get({ scope, clientToken });
    return r && { hash: r.hash, resourceId: r.resourceId };
  }

  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): void {
    this.idempotency.put({ scope, clientToken, hash, resourceId, createdAt: Date.now() });
  }

  putToken(t: TokenRecord): void {
    this.tokens.put(t);
  }

  getToken(jti: string): TokenRecord | undefined {
    return this.tokens.get({ jti });
  }

  deleteTokensOf(vmId: string): number {
    return this.tokens.delete((t) => t.vmId === vmId);
  }

  putImage(img: ImageRecord): void {
    this.images.put(img);
  }

  getImage(name: string): ImageRecord | undefined {
    return this.images.get({ name });
  }

  listImages(opts: { after?: string; limit?: number } = {}): ImageRecord[] {
    const all = this.images
      .all()
      .filter((i) => compare(i.name, opts.after ?? '') > 0)
      .sort((a, b) => compare(a.name, b.name));
    return opts.limit === undefined ? all : all.slice(0, opts.limit);
  }

  deleteImage(name: string): void {
    this.builds.delete((b) => b.imageName === name);
    this.versions.delete((v) => v.imageName === name);
    this.images.delete((i) => i.name === name);
  }

  putVersion(v: ImageVersionRecord): void {
    this.versions.put(v);
  }

  getVersion(imageName: string, version: string): ImageVersionRecord | undefined {
    return this.versions.get({ imageName, version });
  }

  listVersions(imageName: string): ImageVersionRecord[] {
    return this.versions
      .all()
      .filter((v) => v.imageName === imageName)
      .sort((a, b) => a.major - b.major);
  }

  deleteVersion(imageName: string, version: string): void {
    this.builds.delete((b) => b.imageName === imageName && b.version === version);
    this.versions.delete((v) => v.imageName === imageName && v.version === version);
  }

  putBuild(b: BuildRecord): void {
    this.builds.put(b);
  }

  getBuild(buildId: string): BuildRecord | undefined {
    return this.builds.get({ buildId });
  }

  listBuilds(imageName: string, version?: string): BuildRecord[] {
    return this.builds
      .all()
      .filter((b) => b.imageName === imageName && (version === undefined || b.version === version))
      .sort((a, b) => a.createdAt - b.createdAt);
  }

  putConnector(c: ConnectorRecord): void {
    this.connectors.put(c);
  }

  getConnector(name: string): ConnectorRecord | undefined {
    return this.connectors.get({ name });
  }

  listConnectors(): ConnectorRecord[] {
    return this.connectors.all().sort((a, b) => compare(a.name, b.name));
  }

  deleteConnector(name: string): void {
    this.connectors.delete((c) => c.name === name);
  }

  putAccessKey(k: AccessKeyRecord): void {
    this.accessKeys.put(k);
  }

  getAccessKey(id: string): AccessKeyRecord | undefined {
    return this.accessKeys.get({ id });
  }

  listAccessKeys(): AccessKeyRecord[] {
    return this.accessKeys.all().sort((a, b) => a.createdAt - b.createdAt || compare(a.id, b.id));
  }

  deleteAccessKey(id: string): boolean {
    return this.accessKeys.delete((k) => k.id === id) > 0;
  }

  setTags(type: TaggableType, name: string, tags: Record<string, string>): boolean {
    const set = <R extends { tags: Record<string, string> }>(rows: Rows<R>, key: Partial<R>): boolean => {
      const cur = rows.get(key);
      if (cur) rows.replace({ ...cur, tags });
      return cur !== undefined;
    };
    return type === 'microvm-image' ? set(this.images, { name }) : set(this.connectors, { name });
  }

  putE2bSandbox(s: E2bSandboxRecord): void {
    this.e2b.put(s);
  }

  getE2bSandbox(vmId: string): E2bSandboxRecord | undefined {
    return this.e2b.get({ vmId });
  }

  liveE2bSandboxes(): E2bSandboxRecord[] {
    return this.e2b
      .all()
      .filter((s) => {
        const state = this.vms.get({ id: s.vmId })?.state;
        return state !== undefined && state !== 'TERMINATED';
      })
      .sort((a, b) => a.createdAt - b.createdAt || compare(a.vmId, b.vmId));
  }

  apiKeyHashes(): string[] {
    return this.apiKeys.all().map((k) => k.hash);
  }

  addApiKeyHash(hash: string): void {
    this.apiKeys.put({ hash, createdAt: Date.now() });
  }

  getSecret(name: string): Buffer | undefined {
    return this.secrets.get({ name })?.value;
  }

  putSecret(name: string, value: Buffer): void {
    this.secrets.put({ name, value });
  }
}

/** The patch's fields that are set: an undefined one leaves its column as it is, as in SQLite's update. */
function defined(patch: VmPatch): VmPatch {
  return Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined));
}

/** A fresh, empty store that lives as long as the process. */
export class MemoryStore extends Session {
  constructor() {
    super(new MemoryBackend());
  }
}
