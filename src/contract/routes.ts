/**
 * Every operation of the API: its method, path, input schemas and output
 * schema. The router, the validator, /openapi.json and the client are all
 * driven by this table.
 */
import type { TSchema } from '@sinclair/typebox';
import { API_VERSION } from './names.js';
import { CreateConnectorRequest, ListConnectorsResponse, NetworkConnector } from './connector-schemas.js';
import {
  CreateImageRequest,
  DeleteImageResponse,
  DeleteImageVersionResponse,
  ImageBuild,
  ImageVersion,
  ImageVersionStarted,
  ListImageBuildsQuery,
  ListImageBuildsResponse,
  ListImageVersionsResponse,
  ListImagesQuery,
  ListImagesResponse,
  ListManagedImageVersionsResponse,
  ListManagedImagesResponse,
  MicrovmImage,
  UpdateImageRequest,
  UpdateImageVersionRequest,
} from './image-schemas.js';
import {
  AuthTokenResponse,
  CreateAuthTokenRequest,
  CreateShellAuthTokenRequest,
  ListMicrovmsQuery,
  ListMicrovmsResponse,
  Microvm,
  RunMicrovmRequest,
} from './microvm-schemas.js';
import {
  CreatedAccessKey,
  ErrorBody,
  ListAccessKeysResponse,
  ListQuery,
  ListTagsResponse,
  LogsQuery,
  MAX_ARTIFACT_BYTES,
  ServerInfo,
  TagResourceRequest,
  UntagResourceQuery,
  Usage,
  UploadedArtifact,
  UsageReport,
} from './schemas.js';

export interface RouteDef {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path with `{param}` segments. */
  path: string;
  summary: string;
  body?: TSchema;
  /** The body is a raw upload of at most this many bytes (not JSON), stored before the operation runs. */
  upload?: { maxBytes: number; contentType: string };
  query?: TSchema;
  /** The success status, the SDK model's (200 unless given). */
  status?: 201 | 204;
  /** Response body; undefined = empty; 'text' = a text stream. */
  response?: TSchema | 'text';
}

const V = `/${API_VERSION}`;
/** The tag API is Lambda's own, under its API version. */
const TAGS = '/2017-03-31/tags/{Resource}';
const Empty = undefined;
const IMG = `${V}/microvm-images/{imageIdentifier}`;

export function routes(minIdleSeconds: number) {
  return {
    RunMicrovm: {
      method: 'POST',
      path: `${V}/microvms`,
      summary: 'Launch a MicroVM from an image snapshot',
      body: RunMicrovmRequest(minIdleSeconds),
      response: Microvm,
    },
    ListMicrovms: { method: 'GET', path: `${V}/microvms`, summary: 'List MicroVMs, oldest first', query: ListMicrovmsQuery, response: ListMicrovmsResponse },
    GetMicrovm: { method: 'GET', path: `${V}/microvms/{microvmIdentifier}`, summary: 'Describe a MicroVM', response: Microvm },
    SuspendMicrovm: { method: 'POST', path: `${V}/microvms/{microvmIdentifier}/suspend`, summary: 'Suspend a RUNNING MicroVM to disk', response: Empty },
    ResumeMicrovm: {
      method: 'POST',
      path: `${V}/microvms/{microvmIdentifier}/resume`,
      summary: 'Resume a SUSPENDED MicroVM; answers once it runs',
      response: Empty,
    },
    TerminateMicrovm: { method: 'DELETE', path: `${V}/microvms/{microvmIdentifier}`, summary: 'Terminate a MicroVM (idempotent)', response: Empty },
    CreateMicrovmAuthToken: {
      method: 'POST',
      path: `${V}/microvms/{microvmIdentifier}/auth-token`,
      summary: "Mint a token for the MicroVM's endpoint, scoped to ports",
      body: CreateAuthTokenRequest,
      response: AuthTokenResponse,
    },
    CreateMicrovmShellAuthToken: {
      method: 'POST',
      path: `${V}/microvms/{microvmIdentifier}/shell-auth-token`,
      summary: "Mint a token for the MicroVM's shell endpoint",
      body: CreateShellAuthTokenRequest,
      response: AuthTokenResponse,
    },
    GetMicrovmLogs: {
      method: 'GET',
      path: '/cella/v1/microvms/{microvmIdentifier}/logs',
      summary: "The app's stdout and stderr; follow=true streams until the MicroVM terminates",
      query: LogsQuery,
      response: 'text',
    },
    GetServerInfo: {
      method: 'GET',
      path: '/cella/v1/info',
      summary: "The server's version, endpoint domain and port, accelerator and endpoint CA",
      response: ServerInfo,
    },
    GetMicrovmUsage: { method: 'GET', path: '/cella/v1/microvms/{microvmIdentifier}/usage', summary: "A MicroVM's metered usage", response: Usage },
    GetUsage: { method: 'GET', path: '/cella/v1/usage', summary: 'Metered usage of every MicroVM and in total', response: UsageReport },
    CreateMicrovmImage: {
      method: 'POST',
      path: `${V}/microvm-images`,
      summary: 'Create an image: build version 1.0 from a zip with a Dockerfile (in the background)',
      body: CreateImageRequest,
      status: 201,
      response: ImageVersionStarted,
    },
    ListMicrovmImages: { method: 'GET', path: `${V}/microvm-images`, summary: 'List images by name', query: ListImagesQuery, response: ListImagesResponse },
    GetMicrovmImage: { method: 'GET', path: `${IMG}`, summary: 'Describe an image', response: MicrovmImage },
    UpdateMicrovmImage: {
      method: 'PUT',
      path: `${IMG}`,
      summary: 'Build a new version of an image from a new request (in the background)',
      body: UpdateImageRequest,
      response: ImageVersionStarted,
    },
    DeleteMicrovmImage: { method: 'DELETE', path: `${IMG}`, summary: 'Delete an image and its versions (idempotent)', response: DeleteImageResponse },
    ListMicrovmImageVersions: {
      method: 'GET',
      path: `${IMG}/versions`,
      summary: "List an image's versions",
      query: ListQuery,
      response: ListImageVersionsResponse,
    },
    GetMicrovmImageVersion: { method: 'GET', path: `${IMG}/versions/{imageVersion}`, summary: 'Describe an image version', response: ImageVersion },
    UpdateMicrovmImageVersion: {
      method: 'PATCH',
      path: `${IMG}/versions/{imageVersion}`,
      summary: 'Mark a version ACTIVE or INACTIVE (RunMicrovm takes the latest ACTIVE one)',
      body: UpdateImageVersionRequest,
      response: ImageVersion,
    },
    DeleteMicrovmImageVersion: {
      method: 'DELETE',
      path: `${IMG}/versions/{imageVersion}`,
      summary: 'Delete a version that is not the last one (idempotent)',
      response: DeleteImageVersionResponse,
    },
    ListMicrovmImageBuilds: {
      method: 'GET',
      path: `${IMG}/versions/{imageVersion}/builds`,
      summary: "List a version's builds",
      query: ListImageBuildsQuery,
      response: ListImageBuildsResponse,
    },
    GetMicrovmImageBuild: { method: 'GET', path: `${IMG}/versions/{imageVersion}/builds/{buildId}`, summary: 'Describe a build', response: ImageBuild },
    ListManagedMicrovmImages: {
      method: 'GET',
      path: `${V}/managed-microvm-images`,
      summary: 'List the managed base images (usable in FROM)',
      query: ListQuery,
      response: ListManagedImagesResponse,
    },
    ListManagedMicrovmImageVersions: {
      method: 'GET',
      path: `${V}/managed-microvm-images/{imageIdentifier}/versions`,
      summary: "List a managed base image's versions",
      query: ListQuery,
      response: ListManagedImageVersionsResponse,
    },
    TagResource: {
      method: 'POST',
      path: TAGS,
      summary: 'Add or replace tags of an image or network connector',
      body: TagResourceRequest,
      status: 204,
      response: Empty,
    },
    UntagResource: {
      method: 'DELETE',
      path: TAGS,
      summary: 'Remove tags of an image or network connector (unknown keys are no error)',
      query: UntagResourceQuery,
      status: 204,
      response: Empty,
    },
    ListTags: { method: 'GET', path: TAGS, summary: 'The tags of an image or network connector', response: ListTagsResponse },
    CreateNetworkConnector: {
      method: 'POST',
      path: '/cella/v1/network-connectors',
      summary: 'Create an egress connector: an allowlist of CIDRs and domain names for RunMicrovm egressNetworkConnectors',
      body: CreateConnectorRequest,
      response: NetworkConnector,
    },
    ListNetworkConnectors: {
      method: 'GET',
      path: '/cella/v1/network-connectors',
      summary: 'List egress connectors',
      query: ListQuery,
      response: ListConnectorsResponse,
    },
    GetNetworkConnector: {
      method: 'GET',
      path: '/cella/v1/network-connectors/{connectorIdentifier}',
      summary: 'Describe an egress connector',
      response: NetworkConnector,
    },
    DeleteNetworkConnector: {
      method: 'DELETE',
      path: '/cella/v1/network-connectors/{connectorIdentifier}',
      summary: 'Delete an egress connector (idempotent; VMs launched with it keep their policy)',
      response: Empty,
    },
    UploadCodeArtifact: {
      method: 'POST',
      path: '/cella/v1/code-artifacts',
      summary: 'Upload a zip (the raw request body); answers the URI to use as codeArtifact.uri',
      upload: { maxBytes: MAX_ARTIFACT_BYTES, contentType: 'application/zip' },
      response: UploadedArtifact,
    },
    CreateAccessKey: {
      method: 'POST',
      path: '/cella/v1/access-keys',
      summary: 'Create a SigV4 access key (for the AWS SDK); its secret is in this answer only',
      response: CreatedAccessKey,
    },
    ListAccessKeys: {
      method: 'GET',
      path: '/cella/v1/access-keys',
      summary: 'List the stored access keys, oldest first (never their secrets)',
      query: ListQuery,
      response: ListAccessKeysResponse,
    },
    DeleteAccessKey: {
      method: 'DELETE',
      path: '/cella/v1/access-keys/{accessKeyId}',
      summary: 'Revoke an access key: requests signed with it are refused from then on',
      response: Empty,
    },
    GetMicrovmImageBuildLog: {
      method: 'GET',
      path: '/cella/v1/microvm-images/{imageIdentifier}/versions/{imageVersion}/builds/{buildId}/logs',
      summary: "A build's log (Dockerfile steps, their output, app start, hooks); follow=true streams until the build ends",
      query: LogsQuery,
      response: 'text',
    },
  } as const satisfies Record<string, RouteDef>;
}

export type Routes = ReturnType<typeof routes>;
export type Operation = keyof Routes;

/** The OpenAPI 3.1 document, generated from the same schemas the server validates with. */
export function openApiDocument(table: Record<string, RouteDef>, version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const plain = (s: TSchema): unknown => JSON.parse(JSON.stringify(s));
  const errorResponse = { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  for (const [operationId, r] of Object.entries(table)) {
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string', minLength: 1, maxLength: 256 },
    }));
    const query = r.query as { properties?: Record<string, TSchema>; required?: string[] } | undefined;
    for (const [name, schema] of Object.entries(query?.properties ?? {})) {
      params.push({ name, in: 'query', required: query?.required?.includes(name) ?? false, schema: plain(schema) as never });
    }
    const ok =
      r.status === 204
        ? { description: 'Done (no content)' }
        : r.response === undefined
          ? { description: 'Done (empty body)' }
          : r.response === 'text'
            ? { description: 'Text stream', content: { 'text/plain': { schema: { type: 'string' } } } }
            : { description: 'OK', content: { 'application/json': { schema: plain(r.response) } } };
    (paths[r.path] ??= {})[r.method.toLowerCase()] = {
      operationId,
      summary: r.summary,
      parameters: params,
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: plain(r.body) } } } } : {}),
      ...(r.upload ? { requestBody: { required: true, content: { [r.upload.contentType]: { schema: { type: 'string', format: 'binary' } } } } } : {}),
      responses: {
        [String(r.status ?? 200)]: ok,
        '400': errorResponse,
        '401': errorResponse,
        '404': errorResponse,
        '409': errorResponse,
        '500': errorResponse,
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Cella API (AWS Lambda MicroVMs contract 2025-09-09 + Cella extensions)', version },
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: plain(ErrorBody) },
    },
  };
}
