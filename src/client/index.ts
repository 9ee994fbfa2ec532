/**
 * A typed client for the Cella HTTP API. Paths and methods come from the
 * same route table the server is built from (../api/routes.ts), and every
 * request and response type is the Static of its schema there, so the
 * client cannot drift from the contract. The requests themselves (URL,
 * auth, bodies, errors) are made in ./transport.ts.
 *
 *   const cella = CellaClient.fromEnv();
 *   const vm = await cella.runMicrovm({ imageIdentifier: 'demo' });
 *   await cella.waitForState(vm.microvmId, ['RUNNING']);
 *
 *   const { uri } = await cella.uploadCodeArtifact('app.zip');
 *   const v = await cella.createImage({ name: 'app', baseImageArn, codeArtifact: { uri } });
 *   const build = await cella.waitForBuild('app', v.imageVersion, v.buildId);
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  type AccessKey,
  Arns,
  type AuthTokenResponse,
  CellaError,
  type CreatedAccessKey,
  type CreateAuthTokenRequest,
  type CreateImageRequest,
  type CreateShellAuthTokenRequest,
  type DeleteImageResponse,
  type DeleteImageVersionResponse,
  type ImageBuild,
  type ImageVersion,
  type ImageVersionStarted,
  type ListImageBuildsResponse,
  type ListImagesResponse,
  type ListImageVersionsResponse,
  type ListManagedImagesResponse,
  type ListAccessKeysResponse,
  type ListManagedImageVersionsResponse,
  type ListMicrovmsQuery,
  type ListMicrovmsResponse,
  type Microvm,
  type MicrovmImage,
  type MicrovmSummary,
  type RunMicrovmRequest,
  type ServerInfo,
  type UpdateImageRequest,
  type UploadedArtifact,
  type Usage,
  type UsageReport,
  type VmState,
} from '../contract/index.js';
import { type Body, type Query, TABLE, Transport } from './transport.js';

export { CellaError, isCellaError, ERRORS, type ErrorCode } from '../contract/index.js';
export { AUTH_HEADER, VM_STATES } from '../contract/index.js';
export type {
  AccessKey,
  AuthTokenResponse,
  CreatedAccessKey,
  BuildSummary,
  CreateAuthTokenRequest,
  CreateImageRequest,
  CreateShellAuthTokenRequest,
  DeleteImageResponse,
  DeleteImageVersionResponse,
  HookSettings,
  IdlePolicy,
  ImageBuild,
  ImageVersion,
  ImageVersionStarted,
  ListImageBuildsResponse,
  ListImageVersionsResponse,
  ListImagesResponse,
  ListAccessKeysResponse,
  ListManagedImageVersionsResponse,
  ListManagedImagesResponse,
  ListMicrovmsQuery,
  ListMicrovmsResponse,
  Logging,
  Microvm,
  MicrovmImage,
  MicrovmSummary,
  PortSpecification,
  RunMicrovmRequest,
  UpdateImageRequest,
  UploadedArtifact,
  Usage,
  UsageReport,
  VmState,
} from '../contract/index.js';

export const DEFAULT_URL = 'http://127.0.0.1:7470';

export interface CellaClientOptions {
  /** Base URL of the server, e.g. http://127.0.0.1:7470. */
  url: string;
  apiKey: string;
  /** Replaces the global fetch (tests, proxies, custom agents). */
  fetch?: typeof fetch;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/** Build states a build ends in. */
export const BUILD_DONE = ['SUCCESSFUL', 'FAILED'] as const;

export { CellaConnectionError } from './transport.js';

export type ListImagesQuery = Query<'ListMicrovmImages'>;
/** Paging of the plain list operations (versions, managed images). */
export type ListQuery = Query<'ListMicrovmImageVersions'>;
export type ListImageBuildsQuery = Query<'ListMicrovmImageBuilds'>;
export type ImageVersionStatus = Body<'UpdateMicrovmImageVersion'>['status'];

/** A page of any list operation. */
export interface Page<T> {
  items: T[];
  nextToken?: string;
}

/** Every item of a paged list, page after page (pages may be empty while a nextToken continues). */
export async function* allItems<T>(page: (nextToken: string | undefined) => Promise<Page<T>>): AsyncGenerator<T> {
  let nextToken: string | undefined;
  do {
    const p = await page(nextToken);
    yield* p.items;
    nextToken = p.nextToken;
  } while (nextToken);
}

export class CellaClient {
  readonly url: string;
  private readonly http: Transport;
  private home: Promise<Arns> | undefined;

  constructor(opts: CellaClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.http = new Transport(this.url, opts.apiKey, opts.fetch ?? globalThis.fetch);
  }

  /** URL from CELLA_URL (default http://127.0.0.1:7470), key from CELLA_API_KEY. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): CellaClient {
    const apiKey = env.CELLA_API_KEY;
    if (!apiKey) throw new CellaError('UNAUTHENTICATED', 'CELLA_API_KEY is not set');
    return new CellaClient({ url: env.CELLA_URL || DEFAULT_URL, apiKey });
  }

  // MicroVMs

  runMicrovm(req: RunMicrovmRequest): Promise<Microvm> {
    return this.http.json('RunMicrovm', { body: req });
  }

  getMicrovm(id: string): Promise<Microvm> {
    return this.http.json('GetMicrovm', { params: { microvmIdentifier: id } });
  }

  listMicrovms(query: ListMicrovmsQuery = {}): Promise<ListMicrovmsResponse> {
    return this.http.json('ListMicrovms', { query });
  }

  /** Every MicroVM matching `query`, page after page. */
  listAllMicrovms(query: Omit<ListMicrovmsQuery, 'nextToken'> = {}): AsyncGenerator<MicrovmSummary> {
    return allItems((nextToken) => this.listMicrovms({ ...query, ...(nextToken ? { nextToken } : {}) }));
  }

  async suspendMicrovm(id: string): Promise<void> {
    await this.http.json('SuspendMicrovm', { params: { microvmIdentifier: id } });
  }

  /** Answers once the MicroVM runs again. */
  async resumeMicrovm(id: string): Promise<void> {
    await this.http.json('ResumeMicrovm', { params: { microvmIdentifier: id } });
  }

  /** Idempotent: terminating a TERMINATED MicroVM succeeds. */
  async terminateMicrovm(id: string): Promise<void> {
    await this.http.json('TerminateMicrovm', { params: { microvmIdentifier: id } });
  }

  createMicrovmAuthToken(id: string, req: CreateAuthTokenRequest): Promise<AuthTokenResponse> {
    return this.http.json('CreateMicrovmAuthToken', { params: { microvmIdentifier: id }, body: req });
  }

  createMicrovmShellAuthToken(id: string, req: CreateShellAuthTokenRequest): Promise<AuthTokenResponse> {
    return this.http.json('CreateMicrovmShellAuthToken', { params: { microvmIdentifier: id }, body: req });
  }

  getMicrovmUsage(id: string): Promise<Usage> {
    return this.http.json('GetMicrovmUsage', { params: { microvmIdentifier: id } });
  }

  getUsage(): Promise<UsageReport> {
    return this.http.json('GetUsage', {});
  }

  /** Where the endpoints are (domain, HTTPS port) and the CA that signs them. */
  getServerInfo(): Promise<ServerInfo> {
    return this.http.json('GetServerInfo', {});
  }

  /** The server's ARNs (its region and account, from GetServerInfo, asked once): for ARNs made from names. */
  arns(): Promise<Arns> {
    this.home ??= this.getServerInfo().then(
      (i) => new Arns(i.region, i.accountId),
      (err: unknown) => {
        this.home = undefined;
        throw err;
      },
    );
    return this.home;
  }

  /**
   * The app's stdout and stderr as raw chunks. With `follow` the stream
   * stays open until the MicroVM terminates. Aborting `signal` ends the
   * iteration quietly: stopping is what the caller asked for.
   */
  streamLogs(id: string, opts: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<Buffer> {
    return this.http.stream('GetMicrovmLogs', { params: { microvmIdentifier: id }, query: opts.follow ? { follow: true } : {} }, opts.signal);
  }

  // Images

  /** Starts building version 1.0 in the background; follow it with buildLog or waitForBuild. */
  createImage(req: CreateImageRequest): Promise<ImageVersionStarted> {
    return this.http.json('CreateMicrovmImage', { body: req });
  }

  /** Starts building a new version from a whole new request (PUT semantics). */
  updateImage(id: string, req: UpdateImageRequest): Promise<ImageVersionStarted> {
    return this.http.json('UpdateMicrovmImage', { params: { imageIdentifier: id }, body: req });
  }

  /** By name or image ARN. */
  getImage(id: string): Promise<MicrovmImage> {
    return this.http.json('GetMicrovmImage', { params: { imageIdentifier: id } });
  }

  listImages(query: ListImagesQuery = {}): Promise<ListImagesResponse> {
    return this.http.json('ListMicrovmImages', { query });
  }

  /** Idempotent; refused (INVALID_STATE) while live MicroVMs use the image. */
  deleteImage(id: string): Promise<DeleteImageResponse> {
    return this.http.json('DeleteMicrovmImage', { params: { imageIdentifier: id } });
  }

  /** Oldest first. */
  listImageVersions(id: string, query: ListQuery = {}): Promise<ListImageVersionsResponse> {
    return this.http.json('ListMicrovmImageVersions', { params: { imageIdentifier: id }, query });
  }

  getImageVersion(id: string, version: string): Promise<ImageVersion> {
    return this.http.json('GetMicrovmImageVersion', { params: { imageIdentifier: id, imageVersion: version } });
  }

  /** RunMicrovm without a version takes the latest SUCCESSFUL version that is ACTIVE. */
  updateImageVersion(id: string, version: string, status: ImageVersionStatus): Promise<ImageVersion> {
    return this.http.json('UpdateMicrovmImageVersion', { params: { imageIdentifier: id, imageVersion: version }, body: { status } });
  }

  /** Idempotent; the last remaining version cannot be deleted. */
  deleteImageVersion(id: string, version: string): Promise<DeleteImageVersionResponse> {
    return this.http.json('DeleteMicrovmImageVersion', { params: { imageIdentifier: id, imageVersion: version } });
  }

  /** Oldest first. */
  listImageBuilds(id: string, version: string, query: ListImageBuildsQuery = {}): Promise<ListImageBuildsResponse> {
    return this.http.json('ListMicrovmImageBuilds', { params: { imageIdentifier: id, imageVersion: version }, query });
  }

  getImageBuild(id: string, version: string, buildId: string): Promise<ImageBuild> {
    return this.http.json('GetMicrovmImageBuild', { params: { imageIdentifier: id, imageVersion: version, buildId } });
  }

  /** The bases an image can start from (baseImageArn, and FROM in its Dockerfile). */
  listManagedImages(query: ListQuery = {}): Promise<ListManagedImagesResponse> {
    return this.http.json('ListManagedMicrovmImages', { query });
  }

  listManagedImageVersions(id: string, query: ListQuery = {}): Promise<ListManagedImageVersionsResponse> {
    return this.http.json('ListManagedMicrovmImageVersions', { params: { imageIdentifier: id }, query });
  }

  /**
   * Uploads a zip (its bytes, or a file streamed from its path) and answers
   * the URI to pass as codeArtifact.uri. Sizes over the server's limit are
   * refused before anything is sent.
   */
  async uploadCodeArtifact(zip: Buffer | string): Promise<UploadedArtifact> {
    const upload =
      typeof zip === 'string'
        ? { data: Readable.toWeb(createReadStream(zip)) as ReadableStream<Uint8Array>, size: (await stat(zip)).size }
        : { data: zip, size: zip.length };
    const max = TABLE.UploadCodeArtifact.upload.maxBytes;
    if (upload.size > max) {
      if (!Buffer.isBuffer(upload.data)) await upload.data.cancel();
      throw new CellaError('PAYLOAD_TOO_LARGE', `the code artifact is ${upload.size} bytes; the server takes at most ${max}`);
    }
    return this.http.json('UploadCodeArtifact', { upload });
  }

  /**
   * A build's log: Dockerfile steps and their output, the app's start, the
   * hooks. With `follow` it streams until the build ends; `onChunk` sees
   * each piece as it comes. Resolves with the whole text; aborting `signal`
   * resolves with what came so far.
   */
  async buildLog(
    id: string,
    version: string,
    buildId: string,
    opts: { follow?: boolean; signal?: AbortSignal; onChunk?: (chunk: Buffer) => void } = {},
  ): Promise<string> {
    const chunks: Buffer[] = [];
    const call = { params: { imageIdentifier: id, imageVersion: version, buildId }, query: opts.follow ? { follow: true } : {} };
    for await (const chunk of this.http.stream('GetMicrovmImageBuildLog', call, opts.signal)) {
      chunks.push(chunk);
      opts.onChunk?.(chunk);
    }
    return Buffer.concat(chunks).toString();
  }

  // SigV4 access keys (for the AWS SDK)

  /** A new access key; its secret is in this answer only. */
  createAccessKey(): Promise<CreatedAccessKey> {
    return this.http.json('CreateAccessKey', {});
  }

  /** Oldest first; never the secrets. */
  listAccessKeys(query: ListQuery = {}): Promise<ListAccessKeysResponse> {
    return this.http.json('ListAccessKeys', { query });
  }

  /** Every stored access key, page after page. */
  listAllAccessKeys(): AsyncGenerator<AccessKey> {
    return allItems((nextToken) => this.listAccessKeys(nextToken ? { nextToken } : {}));
  }

  /** Requests signed with it are refused from then on; an unknown id is NOT_FOUND. */
  async deleteAccessKey(accessKeyId: string): Promise<void> {
    await this.http.json('DeleteAccessKey', { params: { accessKeyId } });
  }

  // Waiting

  /**
   * Polls GetMicrovm until the MicroVM is in one of `states`, or TERMINATED:
   * that state is final, so waiting longer could never succeed; callers
   * check `.state` (and `.stateReason`). Throws INVALID_STATE on timeout.
   */
  async waitForState(id: string, states: readonly VmState[], opts: WaitOptions = {}): Promise<Microvm> {
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    for (;;) {
      const vm = await this.getMicrovm(id);
      if (states.includes(vm.state) || vm.state === 'TERMINATED') return vm;
      if (Date.now() >= deadline) {
        throw new CellaError('INVALID_STATE', `MicroVM ${id} is still ${vm.state} after ${opts.timeoutMs ?? 120_000} ms (waited for ${states.join(' or ')})`, {
          details: { resourceId: id, resourceType: 'Microvm' },
        });
      }
      await sleep(opts.intervalMs ?? 250);
    }
  }

  /**
   * Polls GetMicrovmImageBuild until the build ends (SUCCESSFUL or FAILED;
   * check `.buildState` and `.stateReason`). `onPoll` sees every answer,
   * for progress output. Throws INVALID_STATE on timeout.
   */
  async waitForBuild(id: string, version: string, buildId: string, opts: WaitOptions & { onPoll?: (build: ImageBuild) => void } = {}): Promise<ImageBuild> {
    const timeoutMs = opts.timeoutMs ?? 1_800_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const build = await this.getImageBuild(id, version, buildId);
      opts.onPoll?.(build);
      if ((BUILD_DONE as readonly string[]).includes(build.buildState)) return build;
      if (Date.now() >= deadline) {
        throw new CellaError('INVALID_STATE', `build ${buildId} of image ${id} version ${version} is still ${build.buildState} after ${timeoutMs} ms`, {
          details: { resourceId: buildId, resourceType: 'MicrovmImageBuild' },
        });
      }
      await sleep(opts.intervalMs ?? 500);
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
