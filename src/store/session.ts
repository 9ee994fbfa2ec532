/**
 * How an embedded backend, whose operations run synchronously (SQLite
 * through better-sqlite3, or memory), becomes an asynchronous Store whose
 * transactions may await.
 *
 * better-sqlite3 has one connection: whatever runs on it while a
 * transaction is open runs inside that transaction. So every call goes
 * through one gate. A call that finds the gate free runs at once (a single
 * statement commits by itself, durable before its promise resolves); a
 * transaction holds the gate from BEGIN to COMMIT or ROLLBACK, and every
 * call made meanwhile waits, in order, until it ends. The transaction's own
 * statements go through the session it hands to its function, which has a
 * gate of its own for the savepoints nested in it.
 *
 * A network database does not need this: its transactions are bound to a
 * connection of their own.
 */
import { CellaError, type TaggableType, type VmState } from '../contract/index.js';
import type { AccessKeyRecord, TokenRecord } from './access.js';
import type { ConnectorRecord } from './connectors.js';
import type { E2bSandboxRecord } from './e2b.js';
import type { BuildRecord, ImageRecord, ImageVersionRecord } from './images.js';
import type { Ops, Store, Tx } from './store.js';
import type { VmPage, VmPatch, VmRecord } from './vms.js';

/** A backend keeps transactions as a stack: depth 0 is the transaction, deeper ones are savepoints in it. */
export interface Backend extends Ops {
  begin(depth: number): void;
  commit(depth: number): void;
  rollback(depth: number): void;
  close(): void;
}

/** One holder at a time, granted in the order asked; what asks while nobody holds it runs at once. */
class Gate {
  private held = false;
  private readonly waiting: Array<() => boolean> = [];

  /** Runs `f` alone: now if the gate is free, else after everything that asked before it. */
  run<T>(f: () => T): Promise<T> {
    if (!this.held) {
      try {
        return Promise.resolve(f());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise<T>((resolve, reject) => {
      this.waiting.push(() => {
        try {
          resolve(f());
        } catch (err) {
          reject(err);
        }
        return false;
      });
    });
  }

  /** Holds the gate until the returned function is called. */
  hold(): Promise<() => void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve) => {
      this.waiting.push(() => {
        resolve(this.releaser());
        return true;
      });
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // Runs the waiting calls in order until one holds the gate again (a loop: a long queue needs no deep stack).
      for (;;) {
        const next = this.waiting.shift();
        if (!next) return void (this.held = false);
        if (next()) return;
      }
    };
  }
}

export class Session implements Store {
  private readonly gate = new Gate();
  private open = true;

  constructor(
    private readonly backend: Backend,
    private readonly depth = 0,
  ) {}

  private run<T>(f: () => T): Promise<T> {
    // Checked when the call runs, not when it was made: a call queued in a transaction that ended never runs outside it.
    return this.gate.run(() => {
      this.mustBeOpen();
      return f();
    });
  }

  private mustBeOpen(): void {
    if (!this.open) throw new CellaError('INTERNAL', this.depth === 0 ? 'the store is closed' : 'a store call was made on a transaction that has ended');
  }

  async tx<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const release = await this.gate.hold();
    const inner = new Session(this.backend, this.depth + 1);
    try {
      this.mustBeOpen();
      this.backend.begin(this.depth);
      try {
        const result = await fn(inner);
        inner.open = false;
        this.backend.commit(this.depth);
        return result;
      } catch (err) {
        inner.open = false;
        this.backend.rollback(this.depth);
        throw err;
      }
    } finally {
      inner.open = false;
      release();
    }
  }

  /** Idempotent. */
  close(): Promise<void> {
    return this.gate.run(() => {
      if (!this.open) return;
      this.open = false;
      this.backend.close();
    });
  }

  insertVm(vm: VmRecord): Promise<void> {
    return this.run(() => this.backend.insertVm(vm));
  }
  getVm(id: string): Promise<VmRecord | undefined> {
    return this.run(() => this.backend.getVm(id));
  }
  listVms(page: VmPage): Promise<VmRecord[]> {
    return this.run(() => this.backend.listVms(page));
  }
  liveVms(): Promise<VmRecord[]> {
    return this.run(() => this.backend.liveVms());
  }
  writeState(id: string, fromGeneration: number, state: VmState, generation: number, reason: string | null, patch: VmPatch): Promise<VmRecord | undefined> {
    return this.run(() => this.backend.writeState(id, fromGeneration, state, generation, reason, patch));
  }
  patchVm(id: string, generation: number, patch: VmPatch): Promise<VmRecord | undefined> {
    return this.run(() => this.backend.patchVm(id, generation, patch));
  }
  findIdempotent(scope: string, clientToken: string): Promise<{ hash: string; resourceId: string } | undefined> {
    return this.run(() => this.backend.findIdempotent(scope, clientToken));
  }
  putIdempotent(scope: string, clientToken: string, hash: string, resourceId: string): Promise<void> {
    return this.run(() => this.backend.putIdempotent(scope, clientToken, hash, resourceId));
  }
  putToken(t: TokenRecord): Promise<void> {
    return this.run(() => this.backend.putToken(t));
  }
  getToken(jti: string): Promise<TokenRecord | undefined> {
    return this.run(() => this.backend.getToken(jti));
  }
  deleteTokensOf(vmId: string): Promise<number> {
    return this.run(() => this.backend.deleteTokensOf(vmId));
  }
  putImage(img: ImageRecord): Promise<void> {
    return this.run(() => this.backend.putImage(img));
  }
  getImage(name: string): Promise<ImageRecord | undefined> {
    return this.run(() => this.backend.getImage(name));
  }
  listImages(opts?: { after?: string; limit?: number }): Promise<ImageRecord[]> {
    return this.run(() => this.backend.listImages(opts));
  }
  deleteImage(name: string): Promise<void> {
    return this.run(() => this.backend.deleteImage(name));
  }
  putVersion(v: ImageVersionRecord): Promise<void> {
    return this.run(() => this.backend.putVersion(v));
  }
  getVersion(imageName: string, version: string): Promise<ImageVersionRecord | undefined> {
    return this.run(() => this.backend.getVersion(imageName, version));
  }
  listVersions(imageName: string): Promise<ImageVersionRecord[]> {
    return this.run(() => this.backend.listVersions(imageName));
  }
  deleteVersion(imageName: string, version: string): Promise<void> {
    return this.run(() => this.backend.deleteVersion(imageName, version));
  }
  putBuild(b: BuildRecord): Promise<void> {
    return this.run(() => this.backend.putBuild(b));
  }
  getBuild(buildId: string): Promise<BuildRecord | undefined> {
    return this.run(() => this.backend.getBuild(buildId));
  }
  listBuilds(imageName: string, version?: string): Promise<BuildRecord[]> {
    return this.run(() => this.backend.listBuilds(imageName, version));
  }
  putConnector(c: ConnectorRecord): Promise<void> {
    return this.run(() => this.backend.putConnector(c));
  }
  getConnector(name: string): Promise<ConnectorRecord | undefined> {
    return this.run(() => this.backend.getConnector(name));
  }
  listConnectors(): Promise<ConnectorRecord[]> {
    return this.run(() => this.backend.listConnectors());
  }
  deleteConnector(name: string): Promise<void> {
    return this.run(() => this.backend.deleteConnector(name));
  }
  putAccessKey(k: AccessKeyRecord): Promise<void> {
    return this.run(() => this.backend.putAccessKey(k));
  }
  getAccessKey(id: string): Promise<AccessKeyRecord | undefined> {
    return this.run(() => this.backend.getAccessKey(id));
  }
  listAccessKeys(): Promise<AccessKeyRecord[]> {
    return this.run(() => this.backend.listAccessKeys());
  }
  deleteAccessKey(id: string): Promise<boolean> {
    return this.run(() => this.backend.deleteAccessKey(id));
  }
  setTags(type: TaggableType, name: string, tags: Record<string, string>): Promise<boolean> {
    return this.run(() => this.backend.setTags(type, name, tags));
  }
  putE2bSandbox(s: E2bSandboxRecord): Promise<void> {
    return this.run(() => this.backend.putE2bSandbox(s));
  }
  getE2bSandbox(vmId: string): Promise<E2bSandboxRecord | undefined> {
    return this.run(() => this.backend.getE2bSandbox(vmId));
  }
  liveE2bSandboxes(): Promise<E2bSandboxRecord[]> {
    return this.run(() => this.backend.liveE2bSandboxes());
  }
  apiKeyHashes(): Promise<string[]> {
    return this.run(() => this.backend.apiKeyHashes());
  }
  addApiKeyHash(hash: string): Promise<void> {
    return this.run(() => this.backend.addApiKeyHash(hash));
  }
  getSecret(name: string): Promise<Buffer | undefined> {
    return this.run(() => this.backend.getSecret(name));
  }
  putSecret(name: string, value: Buffer): Promise<void> {
    return this.run(() => this.backend.putSecret(name, value));
  }
}
