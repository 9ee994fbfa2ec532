/**
 * Every operation of the API: its method, path, input schemas and output
 * schema. The router, the validator, /openapi.json and the client are all
 * driven by this table.
 */
import type { TSchema } from '@sinclair/typebox';
import {
  API_VERSION,
  AuthTokenResponse,
  CreateAuthTokenRequest,
  CreateShellAuthTokenRequest,
  ErrorBody,
  Image,
  ListImagesResponse,
  ListMicrovmsQuery,
  ListMicrovmsResponse,
  LogsQuery,
  Microvm,
  RegisterImageRequest,
  RunMicrovmRequest,
  ServerInfo,
  Usage,
  UsageReport,
} from './schemas.js';

export interface RouteDef {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path with `{param}` segments. */
  path: string;
  summary: string;
  body?: TSchema;
  query?: TSchema;
  /** Response body; undefined = empty; 'text' = a text stream. */
  response?: TSchema | 'text';
}

const V = `/${API_VERSION}`;
const Empty = undefined;

export function routes(minIdleSeconds: number) {
  return {
    RunMicrovm: { method: 'POST', path: `${V}/microvms`, summary: 'Launch a MicroVM from an image snapshot', body: RunMicrovmRequest(minIdleSeconds), response: Microvm },
    ListMicrovms: { method: 'GET', path: `${V}/microvms`, summary: 'List MicroVMs, oldest first', query: ListMicrovmsQuery, response: ListMicrovmsResponse },
    GetMicrovm: { method: 'GET', path: `${V}/microvms/{microvmIdentifier}`, summary: 'Describe a MicroVM', response: Microvm },
    SuspendMicrovm: { method: 'POST', path: `${V}/microvms/{microvmIdentifier}/suspend`, summary: 'Suspend a RUNNING MicroVM to disk', response: Empty },
    ResumeMicrovm: { method: 'POST', path: `${V}/microvms/{microvmIdentifier}/resume`, summary: 'Resume a SUSPENDED MicroVM; answers once it runs', response: Empty },
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
    GetServerInfo: { method: 'GET', path: '/cella/v1/info', summary: "The server's version, endpoint domain and port, accelerator and endpoint CA", response: ServerInfo },
    GetMicrovmUsage: { method: 'GET', path: '/cella/v1/microvms/{microvmIdentifier}/usage', summary: "A MicroVM's metered usage", response: Usage },
    GetUsage: { method: 'GET', path: '/cella/v1/usage', summary: 'Metered usage of every MicroVM and in total', response: UsageReport },
    RegisterImage: {
      method: 'POST',
      path: '/cella/v1/images',
      summary: 'Register an image from a local root filesystem folder and a start command (built in the background)',
      body: RegisterImageRequest,
      response: Image,
    },
    ListImages: { method: 'GET', path: '/cella/v1/images', summary: 'List registered images', response: ListImagesResponse },
    GetImage: { method: 'GET', path: '/cella/v1/images/{imageIdentifier}', summary: 'Describe an image', response: Image },
    DeleteImage: { method: 'DELETE', path: '/cella/v1/images/{imageIdentifier}', summary: 'Delete an image with no live MicroVMs (idempotent)', response: Empty },
    GetImageLogs: {
      method: 'GET',
      path: '/cella/v1/images/{imageIdentifier}/logs',
      summary: "An image's build log",
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
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string', minLength: 1, maxLength: 256 } }));
    const query = r.query as { properties?: Record<string, TSchema>; required?: string[] } | undefined;
    for (const [name, schema] of Object.entries(query?.properties ?? {})) {
      params.push({ name, in: 'query', required: query?.required?.includes(name) ?? false, schema: plain(schema) as never });
    }
    const ok =
      r.response === undefined
        ? { description: 'Done (empty body)' }
        : r.response === 'text'
          ? { description: 'Text stream', content: { 'text/plain': { schema: { type: 'string' } } } }
          : { description: 'OK', content: { 'application/json': { schema: plain(r.response) } } };
    (paths[r.path] ??= {})[r.method.toLowerCase()] = {
      operationId,
      summary: r.summary,
      parameters: params,
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: plain(r.body) } } } } : {}),
      responses: { '200': ok, '400': errorResponse, '401': errorResponse, '404': errorResponse, '409': errorResponse, '500': errorResponse },
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
