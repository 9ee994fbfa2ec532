/**
 * E2B sandboxes. A sandbox IS a Cella MicroVM: the same lifecycle, store
 * rows and memory quota (`cella ls` shows it), launched from the image its
 * templateID names. What E2B adds is kept beside the VM's row (the store's
 * `e2b_sandboxes`). E2B's timeout is the VM's stored maximum-duration
 * deadline, moved by setTimeout and connect (Lifecycle.setDeadline), so a
 * restarted cellad keeps it; reaching it terminates the VM, or suspends it
 * when the sandbox was created with autoPause.
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { GuestStats, UserInfo } from '../agent/index.js';
import type { DiskCapacity } from '../capacity/index.js';
import type { Connectors } from '../connectors/index.js';
import { CellaError, hookPort, isCellaError } from '../contract/index.js';
import { CODE_INTERPRETER_PORT, type Images } from '../images/index.js';
import { admitVm, type Lifecycle, pendingVm, type RunnableImage } from '../lifecycle/index.js';
import type { E2bSandboxRecord, Store, VmRecord } from '../store/index.js';
import { RANDOMIZE_VA_SPACE, warmUpInterpreter, warmUpSandbox, type WarmUpAgent } from './warm-up.js';

/** E2B's default sandbox timeout, in seconds. */
export const DEFAULT_TIMEOUT_SECONDS = 300;
/** E2B's own ceiling (24 h, its Pro tier). */
export const MAX_TIMEOUT_SECONDS = 86_400;
/** The user E2B templates run processes as; an image without it gets root. */
export const E2B_USER = 'user';
/** How long create and connect wait for the VM to run. */
const START_TIMEOUT_MS = 120_000;
/**
 * Warm clones kept per template under TCG. Agents create sandboxes in
 * bursts, and a clone takes about 1.3 s of CPU to restore and warm up: a
 * create that finds the pool empty restores cold (bench:e2b, back to back:
 * 650-1150 ms to the first command, against about 150 from a warm clone).
 * Each costs an idle, paused QEMU holding what its warm-up touched.
 */
export const TEMPLATE_WARM_CLONES = 3;

export type SandboxState = 'running' | 'paused';

/** The seam with envd (src/e2b/envd, the proxy): what it may know of a sandbox. */
export interface SandboxAccess {
  /** Whether `token` is sandbox `id`'s envdAccessToken (constant-time compare). */
  checkEnvdToken(id: string, token: string | undefined): Promise<boolean>;
  /** The envdAccessToken of sandbox `id` (signed /files URLs are checked with it); undefined when there is no such sandbox. */
  envdToken(id: string): Promise<string | undefined>;
  /** The traffic access token its other ports need; undefined: they are public. */
  trafficToken(id: string): Promise<string | undefined>;
  /** The sandbox's default user and env vars (from create), for envd's process defaults. */
  defaults(id: string): Promise<{ user: string; envVars: Record<string, string> } | undefined>;
  /** Whether a paused sandbox may be woken by traffic (autoResume.enabled). */
  autoResume(id: string): Promise<boolean>;
}

/** A create request, its defaults applied. */
export interface NewSandbox {
  templateID: string;
  timeoutSeconds: number;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  autoPause: boolean;
  autoResume: boolean;
  /** false: no egress at all; true or absent: the image's egress (else the default connector). */
  allowInternetAccess?: boolean;
  /** false: its ports (but envd) take traffic with its traffic access token only. */
  allowPublicTraffic?: boolean;
}

/** A live sandbox: its MicroVM and its E2B extras. */
export interface Sandbox {
  vm: VmRecord;
  e2b: E2bSandboxRecord;
  state: SandboxState;
}

/** What the guest's agent answers for a sandbox (engine.get(id)?.agent). */
export interface GuestAgent {
  stats(): Promise<GuestStats>;
  lookupUser(user: string): Promise<UserInfo>;
  setEnv(env: Record<string, string>): Promise<void>;
  startEnvdListener(): Promise<void>;
  readonly fs: { write(path: string, data: string): Promise<unknown> };
}

export interface SandboxesOptions {
  store: Store;
  lifecycle: Lifecycle;
  images: Pick<Images, 'runnable'>;
  connectors: Pick<Connectors, 'resolve'>;
  capacity: Pick<DiskCapacity, 'require'>;
  maxMemoryMiB: number;
  /** The agent of a VM that runs here, if it does. */
  agentOf: (id: string) => GuestAgent | undefined;
  /**
   * Guests run under TCG: sandboxes lay processes out at fixed addresses, so
   * the translations of one command serve the next (ADR 0010).
   */
  fixedAddresses?: boolean;
  /**
   * Gives the warm pool of a template's image what its clones run before they
   * are pooled (with fixedAddresses only: warm-up.ts, ADR 0010).
   */
  warmPool?: (imageDir: string, warmUp: (agent: WarmUpAgent) => Promise<void>, clones: number) => void;
  now?: () => number;
}

export function stateOf(vm: VmRecord): SandboxState {
  return vm.state === 'SUSPENDED' || vm.state === 'SUSPENDING' ? 'paused' : 'running';
}

export class Sandboxes implements SandboxAccess {
  private readonly now: () => number;
  /** Images (snapshot dirs) whose guest has E2B's user: every create clones the same guest, so one lookup answers for all. */
  private readonly users = new Map<string, string>();

  private constructor(
    private readonly opts: SandboxesOptions,
    /** Derives each sandbox's envd token, so none is stored (as E2B's own access-token generator does). */
    private readonly tokenKey: Buffer,
  ) {
    this.now = opts.now ?? Date.now;
  }

  static async open(opts: SandboxesOptions): Promise<Sandboxes> {
    // One transaction: two that open at once end with the same key.
    const key = await opts.store.tx(async (tx) => {
      const kept = await tx.getSecret('e2b-envd-token-key');
      if (kept) return kept;
      const made = randomBytes(32);
      await tx.putSecret('e2b-envd-token-key', made);
      return made;
    });
    return new Sandboxes(opts, key);
  }

  /** The token the SDK sends envd as X-Access-Token. */
  envdAccessToken(id: string): string {
    return createHmac('sha256', this.tokenKey).update(`envd:${id}`).digest('base64url');
  }

  /** The token a sandbox made with allowPublicTraffic: false takes traffic with (e2b-traffic-access-token), derived as the envd token is. */
  trafficAccessToken(id: string): string {
    return createHmac('sha256', this.tokenKey).update(`traffic:${id}`).digest('base64url');
  }

  /**
   * Readies the warm pool of a template's image for sandboxes: under TCG its
   * clones run a sandbox's first command before they are pooled (ADR 0010).
   * An image serving the code interpreter's port also runs a cell in each of
   * its default contexts. Called at each create, and by the server for its own templates.
   */
  prepareTemplate(image: Pick<RunnableImage, 'dir' | 'config'>): void {
    const warmUp = image.config.port === CODE_INTERPRETER_PORT ? warmUpInterpreter : warmUpSandbox;
    if (this.opts.fixedAddresses) this.opts.warmPool?.(image.dir, warmUp, TEMPLATE_WARM_CLONES);
  }

  /** Launches a sandbox and answers once its VM runs (its guest agent answers). */
  async create(req: NewSandbox): Promise<Sandbox> {
    const { lifecycle, store } = this.opts;
    const image = await this.template(req.templateID);
    this.prepareTemplate(image);
    this.opts.capacity.require('creating a sandbox');
    const egress = req.allowInternetAccess === false ? [] : image.config.egressNetworkConnectors;
    const { ingress, egress: egressArns, policy } = await this.opts.connectors.resolve(undefined, egress, hookPort(image.config.hooks));
    const now = this.now();
    const vm = pendingVm({
      id: `mvm-${randomUUID()}`,
      image,
      now,
      spec: {
        maximumDurationInSeconds: req.timeoutSeconds,
        timeout: { onExpiry: req.autoPause ? 'suspend' : 'terminate' },
        ingressNetworkConnectors: ingress,
        egressNetworkConnectors: egressArns,
        network: policy,
        loggingDisabled: false,
      },
    });
    const e2b: E2bSandboxRecord = {
      vmId: vm.id,
      templateId: req.templateID,
      metadata: req.metadata,
      envVars: req.envVars,
      user: this.users.get(image.dir) ?? 'root',
      autoResume: req.autoResume,
      allowInternetAccess: req.allowInternetAccess !== false,
      publicTraffic: req.allowPublicTraffic !== false,
      createdAt: now,
    };
    await store.tx(async (tx) => {
      // Again in the transaction: an image deleted since has no VM made from it.
      await this.opts.images.runnable(image.name, image.version, tx);
      await admitVm(tx, vm, this.opts.maxMemoryMiB);
      await tx.putE2bSandbox(e2b);
    });
    lifecycle.start(vm, undefined);
    try {
      await lifecycle.wake(vm.id, START_TIMEOUT_MS);
      // The agent takes requests in turn: sent together, they cost one wait instead of one each.
      await Promise.all([this.guestEnv(vm.id, e2b), this.users.has(image.dir) || this.settleUser(vm.id, image.dir, e2b)]);
    } catch (err) {
      await lifecycle.terminate(vm.id, 'the sandbox did not start').catch(() => {});
      const why = (await store.getVm(vm.id))?.stateReason ?? (err as Error).message;
      throw new CellaError('INTERNAL', `sandbox ${vm.id} did not start: ${why}`, { cause: err });
    }
    return this.require(vm.id);
  }

  /**
   * Brings a sandbox to running and moves its timeout to at least now +
   * `timeoutSeconds` (connect never shortens it). `resumed` says whether it
   * was paused.
   */
  async connect(id: string, timeoutSeconds: number): Promise<{ sandbox: Sandbox; resumed: boolean }> {
    const { lifecycle } = this.opts;
    let sbx = await this.settled(id);
    // Before the resume: a paused sandbox whose timeout has passed must not be paused again as it wakes.
    await lifecycle.setDeadline(id, this.now() + timeoutSeconds * 1000, { extendOnly: true });
    if (sbx.vm.state !== 'SUSPENDED') return { sandbox: await this.require(id), resumed: false };
    await lifecycle.resume(id).catch((err: unknown) => {
      // Another caller resumed it meanwhile: it runs, which is what was asked.
      if (!isCellaError(err, 'INVALID_STATE')) throw err;
    });
    sbx = await this.settled(id);
    if (sbx.vm.state !== 'RUNNING') throw this.conflict(id, `is ${sbx.vm.state} and could not be resumed`);
    return { sandbox: sbx, resumed: true };
  }

  /** Sets the timeout to now + `timeoutSeconds`; it may shorten it. */
  async setTimeout(id: string, timeoutSeconds: number): Promise<void> {
    await this.require(id);
    await this.opts.lifecycle.setDeadline(id, this.now() + timeoutSeconds * 1000);
  }

  /** Suspends a running sandbox and answers once it is paused; a paused one is a conflict. */
  async pause(id: string): Promise<void> {
    const sbx = await this.settled(id);
    if (sbx.state === 'paused') throw this.conflict(id, 'is already paused');
    await this.opts.lifecycle.suspend(id, 'paused through the E2B API');
    const after = await this.settled(id);
    if (after.vm.state !== 'SUSPENDED') throw new CellaError('INTERNAL', `sandbox ${id} was not paused: ${after.vm.stateReason ?? after.vm.state}`);
  }

  async kill(id: string): Promise<void> {
    await this.require(id);
    await this.opts.lifecycle.terminate(id, 'killed through the E2B API');
  }

  /** The guest's figures now, as E2B's one-sample metrics; none while it is paused or its agent cannot say. */
  async metrics(id: string): Promise<Array<GuestStats & { at: number }>> {
    const sbx = await this.require(id);
    const agent = sbx.state === 'running' ? this.opts.agentOf(id) : undefined;
    if (!agent) return [];
    try {
      return [{ ...(await agent.stats()), at: this.now() }];
    } catch {
      return [];
    }
  }

  /** Every live sandbox, oldest first. */
  async list(): Promise<Sandbox[]> {
    const rows = await this.opts.store.liveE2bSandboxes();
    const out: Sandbox[] = [];
    for (const e2b of rows) {
      const vm = await this.opts.store.getVm(e2b.vmId);
      if (vm && live(vm)) out.push({ vm, e2b, state: stateOf(vm) });
    }
    return out;
  }

  /** A live sandbox; a missing, killed or non-E2B VM is NOT_FOUND. */
  async require(id: string): Promise<Sandbox> {
    const [e2b, vm] = await Promise.all([this.opts.store.getE2bSandbox(id), this.opts.store.getVm(id)]);
    if (!e2b || !vm || !live(vm)) throw new CellaError('NOT_FOUND', `sandbox ${id} not found`, { details: { resourceId: id, resourceType: 'Sandbox' } });
    return { vm, e2b, state: stateOf(vm) };
  }

  // ---------- SandboxAccess ----------

  async checkEnvdToken(id: string, token: string | undefined): Promise<boolean> {
    if (token === undefined) return false;
    const want = Buffer.from(this.envdAccessToken(id));
    const got = Buffer.from(token);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return false;
    return (await this.opts.store.getE2bSandbox(id)) !== undefined;
  }

  async envdToken(id: string): Promise<string | undefined> {
    return (await this.opts.store.getE2bSandbox(id)) ? this.envdAccessToken(id) : undefined;
  }

  async trafficToken(id: string): Promise<string | undefined> {
    const e2b = await this.opts.store.getE2bSandbox(id);
    return e2b && !e2b.publicTraffic ? this.trafficAccessToken(id) : undefined;
  }

  async defaults(id: string): Promise<{ user: string; envVars: Record<string, string> } | undefined> {
    const e2b = await this.opts.store.getE2bSandbox(id);
    return e2b && { user: e2b.user, envVars: e2b.envVars };
  }

  async autoResume(id: string): Promise<boolean> {
    return (await this.opts.store.getE2bSandbox(id))?.autoResume ?? false;
  }

  // ---------- helpers ----------

  /** The image a templateID names (its latest active version); a clear NOT_FOUND naming it otherwise. */
  private async template(templateID: string): Promise<RunnableImage> {
    const name = templateID;
    if (!/^[a-zA-Z0-9_-]{1,64}$/.test(name))
      throw new CellaError('INVALID_ARGUMENT', `templateID "${templateID}" is not a Cella image name (letters, digits, "-" and "_")`);
    try {
      return await this.opts.images.runnable(name);
    } catch (err) {
      if (!isCellaError(err, 'NOT_FOUND')) throw err;
      throw new CellaError(
        'NOT_FOUND',
        `template ${templateID} not found: E2B templates are Cella images, and image "${name}" has no active version (${err.message})`,
        {
          details: { resourceId: templateID, resourceType: 'Template' },
        },
      );
    }
  }

  /**
   * The sandbox's env vars in the guest, served on 127.0.0.1:49983/envs: code-interpreter's
   * server reads them there (envd itself is on the host, and sets them per process).
   */
  private async guestEnv(id: string, e2b: E2bSandboxRecord): Promise<void> {
    const agent = this.opts.agentOf(id);
    if (!agent) return;
    await Promise.all([
      agent.setEnv({ E2B_SANDBOX: 'true', E2B_SANDBOX_ID: id, E2B_TEMPLATE_ID: e2b.templateId, ...e2b.envVars }),
      agent.startEnvdListener(),
      this.opts.fixedAddresses && agent.fs.write(RANDOMIZE_VA_SPACE, '0\n'),
    ]);
  }

  /** Records `user` as the default user if the guest has that account (E2B templates do), else root stays. */
  private async settleUser(id: string, imageDir: string, e2b: E2bSandboxRecord): Promise<void> {
    const agent = this.opts.agentOf(id);
    if (!agent) return;
    const found = await agent.lookupUser(E2B_USER).then(
      () => true,
      () => false,
    );
    // Only a found user is kept: a failed lookup may be the agent's, not the image's.
    if (!found) return;
    this.users.set(imageDir, E2B_USER);
    await this.opts.store.putE2bSandbox({ ...e2b, user: E2B_USER });
  }

  /** The sandbox once it is no longer on its way in or out (PENDING, SUSPENDING). */
  private async settled(id: string): Promise<Sandbox> {
    const deadline = this.now() + START_TIMEOUT_MS;
    for (;;) {
      const sbx = await this.require(id);
      if (sbx.vm.state !== 'PENDING' && sbx.vm.state !== 'SUSPENDING') return sbx;
      if (this.now() > deadline) throw this.conflict(id, `did not leave ${sbx.vm.state} in time`);
      await this.nextState(id, sbx.vm.generation, deadline);
    }
  }

  /** Resolves when the VM's generation moves past `generation` (or at `deadline`). */
  private nextState(id: string, generation: number, deadline: number): Promise<void> {
    const { lifecycle } = this.opts;
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        lifecycle.removeListener('state', onState);
        resolve();
      };
      const onState = (r: VmRecord): void => {
        if (r.id === id && r.generation > generation) done();
      };
      const timer = setTimeout(done, Math.max(0, deadline - this.now()));
      lifecycle.on('state', onState);
      // It may have moved on before the listener was in place.
      void this.opts.store.getVm(id).then((r) => r && onState(r), done);
    });
  }

  private conflict(id: string, what: string): CellaError {
    return new CellaError('INVALID_STATE', `sandbox ${id} ${what}`, { details: { resourceId: id, resourceType: 'Sandbox' } });
  }
}

function live(vm: VmRecord): boolean {
  return vm.state !== 'TERMINATING' && vm.state !== 'TERMINATED';
}
