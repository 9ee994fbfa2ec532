/**
 * `cella run`'s command line as a RunMicrovm request. Two spellings meet
 * here: Cella's short forms (IMAGE, --idle, --ingress NAME, ...) and the AWS
 * CLI's (`aws lambda-microvms run-microvm --image-identifier ARN
 * --idle-policy '{...}' --cli-input-json ...`), so a command written for AWS
 * runs with `cella run` in its place. As in the AWS CLI, flags override what
 * --cli-input-json holds. The server validates the request's values.
 */
import { readFileSync } from 'node:fs';
import { type RunMicrovmRequest } from '../client/index.js';
import type { Arns } from '../contract/index.js';
import { flag, int, str, strs, UsageError, type Options, type Parsed, type Values } from './args.js';

const SUSPENDED_TTL_DEFAULT = 3600;

export const RUN_HELP = `  --version V              this version of the image (default: its latest SUCCESSFUL, ACTIVE one)
  --idle SECONDS           suspend after this long without traffic (sets the idle policy)
  --suspended-ttl SECONDS  with --idle: terminate after this long suspended (default ${SUSPENDED_TTL_DEFAULT}; 0 terminates at suspend)
  --no-auto-resume         with --idle: do not resume on incoming traffic
  --max-duration SECONDS   terminate after this long, running or suspended (default 28800)
  --payload STRING         body of the app's run hook
  --client-token T         idempotency token: the same token and options return the same MicroVM
  --no-logs                do not keep the app's output
  --ingress NAME|ARN       an ingress connector: HTTP_INGRESS (default), SHELL_INGRESS, ALL_INGRESS, NO_INGRESS (repeatable)
  --egress NAME|ARN        an egress connector: INTERNET_EGRESS (the default), or a customer connector's
                           name or ARN (see /cella/v1/network-connectors) (repeatable)
  --no-egress              no egress at all
  --no-wait                return at once, while the MicroVM is PENDING
The AWS CLI's spellings of run-microvm work too (lists take the values up to the next option):
  --image-identifier ID    the image (instead of IMAGE)   --image-version V
  --idle-policy JSON       {"maxIdleDurationSeconds":N,"suspendedDurationSeconds":N,"autoResumeEnabled":B}
                           (or maxIdleDurationSeconds=N,suspendedDurationSeconds=N,autoResumeEnabled=B)
  --ingress-network-connectors ARN...   --egress-network-connectors ARN...   (or a JSON list)
  --maximum-duration-in-seconds N       --execution-role-arn ARN            --run-hook-payload STRING
  --logging JSON           {"disabled":{}} or {"cloudWatch":{...}}
  --cli-input-json JSON    the whole RunMicrovm request, as JSON or file://PATH
`;

export const RUN_OPTIONS: Options = {
  version: { type: 'string' },
  ingress: { type: 'string', multiple: true },
  egress: { type: 'string', multiple: true },
  'no-egress': { type: 'boolean' },
  idle: { type: 'string' },
  'suspended-ttl': { type: 'string' },
  'no-auto-resume': { type: 'boolean' },
  'max-duration': { type: 'string' },
  payload: { type: 'string' },
  'client-token': { type: 'string' },
  'no-logs': { type: 'boolean' },
  'no-wait': { type: 'boolean' },
  'image-identifier': { type: 'string' },
  'image-version': { type: 'string' },
  'idle-policy': { type: 'string' },
  'ingress-network-connectors': { type: 'string', multiple: true },
  'egress-network-connectors': { type: 'string', multiple: true },
  'maximum-duration-in-seconds': { type: 'string' },
  'execution-role-arn': { type: 'string' },
  'run-hook-payload': { type: 'string' },
  logging: { type: 'string' },
  'cli-input-json': { type: 'string' },
};

/** The options that, as in the AWS CLI, take every value up to the next option. */
export const RUN_LISTS = ['ingress-network-connectors', 'egress-network-connectors'];

/** `arns`: the server's, asked for only when a connector is given by name (its ARN holds the server's region). */
export async function runRequest(p: Parsed, arns: () => Promise<Arns>): Promise<RunMicrovmRequest> {
  const v = p.values;
  const input = cliInput(str(v, 'cli-input-json'));
  const image = either(v, [p.positionals[0], 'IMAGE'], 'image-identifier') ?? input.imageIdentifier;
  if (image === undefined) throw new UsageError('missing IMAGE (or --image-identifier)');
  const version = either(v, 'version', 'image-version');
  const maxDuration = either(v, [intOf(v, 'max-duration'), '--max-duration'], [intOf(v, 'maximum-duration-in-seconds'), '--maximum-duration-in-seconds']);
  const payload = either(v, 'payload', 'run-hook-payload');
  const role = str(v, 'execution-role-arn');
  const token = str(v, 'client-token');
  const idlePolicy = either(v, [shortIdle(v), '--idle'], [json(v, 'idle-policy', shorthand), '--idle-policy']);
  const logging = either(v, [flag(v, 'no-logs') ? { disabled: {} } : undefined, '--no-logs'], [json(v, 'logging'), '--logging']);
  const ingressGiven = [...strs(v, 'ingress'), ...list(v, 'ingress-network-connectors')];
  const egressGiven = [...strs(v, 'egress'), ...list(v, 'egress-network-connectors')];
  if (egressGiven.length && flag(v, 'no-egress')) throw new UsageError('--egress and --no-egress exclude each other');
  // Last: every mistake in the command line is reported before the server is asked.
  const home = [...ingressGiven, ...egressGiven].some((n) => !n.startsWith('arn:')) ? await arns() : undefined;
  const ingress = ingressGiven.map((n) => ingressArn(n, home));
  const egress = egressGiven.map((n) => egressArn(n, home));
  return {
    ...input,
    imageIdentifier: image,
    ...(version !== undefined ? { imageVersion: version } : {}),
    ...(idlePolicy !== undefined ? { idlePolicy: idlePolicy as RunMicrovmRequest['idlePolicy'] } : {}),
    ...(maxDuration !== undefined ? { maximumDurationInSeconds: maxDuration } : {}),
    ...(payload !== undefined ? { runHookPayload: payload } : {}),
    ...(role !== undefined ? { executionRoleArn: role } : {}),
    ...(token !== undefined ? { clientToken: token } : {}),
    ...(logging !== undefined ? { logging: logging as RunMicrovmRequest['logging'] } : {}),
    ...(ingress.length ? { ingressNetworkConnectors: ingress } : {}),
    ...(flag(v, 'no-egress') ? { egressNetworkConnectors: [] } : {}),
    ...(egress.length ? { egressNetworkConnectors: egress } : {}),
  };
}

/** A managed ingress connector by name (any case), or any connector ARN as it is. */
function ingressArn(name: string, arns: Arns | undefined): string {
  return name.startsWith('arn:') || !arns ? name : arns.managedConnector(name.toUpperCase());
}

/** INTERNET_EGRESS as the managed connector; an ARN as is; any other name as a customer connector. */
function egressArn(name: string, arns: Arns | undefined): string {
  if (name.startsWith('arn:') || !arns) return name;
  return name.toUpperCase() === 'INTERNET_EGRESS' ? arns.managedConnector('INTERNET_EGRESS') : arns.customerConnector(name);
}

/** The short forms' idle policy: --idle with its defaults. */
function shortIdle(v: Values): RunMicrovmRequest['idlePolicy'] {
  const idle = int(v, 'idle', 1);
  const ttl = int(v, 'suspended-ttl', 0);
  if (idle === undefined) {
    if (ttl !== undefined || flag(v, 'no-auto-resume'))
      throw new UsageError('--suspended-ttl and --no-auto-resume are part of the idle policy: give --idle SECONDS too');
    return undefined;
  }
  return { maxIdleDurationSeconds: idle, suspendedDurationSeconds: ttl ?? SUSPENDED_TTL_DEFAULT, autoResumeEnabled: !flag(v, 'no-auto-resume') };
}

type Given<T> = string | [T | undefined, string];

/** The value of whichever of two spellings was given (a name, or a value and its label); both is a mistake. */
function either<T = string>(v: Values, a: Given<T>, b: Given<T>): T | undefined {
  const [x, xName] = typeof a === 'string' ? [str(v, a) as T | undefined, `--${a}`] : a;
  const [y, yName] = typeof b === 'string' ? [str(v, b) as T | undefined, `--${b}`] : b;
  if (x !== undefined && y !== undefined) throw new UsageError(`${xName} and ${yName} say the same thing: give one`);
  return x ?? y;
}

function intOf(v: Values, name: string): number | undefined {
  return int(v, name, 1);
}

/** A list option's values; a single value that is a JSON list is that list. */
function list(v: Values, name: string): string[] {
  const given = strs(v, name);
  if (given.length !== 1 || !given[0]?.trimStart().startsWith('[')) return given;
  const parsed = parseJson(given[0], `--${name}`);
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new UsageError(`--${name} must be a list of ARNs`);
  return parsed;
}

/** A JSON object option; `alt` reads the AWS CLI's shorthand when the text is not JSON. */
function json(v: Values, name: string, alt?: (text: string) => Record<string, unknown>): Record<string, unknown> | undefined {
  const text = str(v, name);
  if (text === undefined) return undefined;
  if (alt && !text.trimStart().startsWith('{')) return alt(text);
  const parsed = parseJson(text, `--${name}`);
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError(`--${name} must be a JSON object`);
  return parsed as Record<string, unknown>;
}

/** The AWS CLI's shorthand `a=1,b=true`: numbers and booleans as such. */
function shorthand(text: string): Record<string, unknown> {
  return Object.fromEntries(
    text.split(',').map((pair) => {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw new UsageError(`--idle-policy: "${pair}" is not key=value (or give JSON)`);
      const [k, raw] = [pair.slice(0, eq).trim(), pair.slice(eq + 1).trim()];
      return [k, /^\d+$/.test(raw) ? Number(raw) : raw === 'true' ? true : raw === 'false' ? false : raw];
    }),
  );
}

/** --cli-input-json: the request as JSON, inline or `file://PATH`. */
function cliInput(text: string | undefined): Partial<RunMicrovmRequest> {
  if (text === undefined) return {};
  let source = text;
  if (text.startsWith('file://')) {
    try {
      source = readFileSync(text.slice('file://'.length), 'utf8');
    } catch (err) {
      throw new UsageError(`--cli-input-json: ${(err as Error).message}`);
    }
  }
  const parsed = parseJson(source, '--cli-input-json');
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError('--cli-input-json must be a JSON object (a RunMicrovm request)');
  const request: Partial<RunMicrovmRequest> = parsed;
  return request;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}
