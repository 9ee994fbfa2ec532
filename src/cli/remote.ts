/**
 * The MicroVM commands, and what every command that talks to a running
 * `cella server` through CellaClient shares (the image ones are in images.ts).
 * Tables by default; --json prints the API's response for scripts.
 * Progress goes to stderr so stdout carries only the result.
 */
import {
  AUTH_HEADER,
  CellaClient,
  DEFAULT_URL,
  type AuthTokenResponse,
  type Microvm,
  type MicrovmSummary,
  type PortSpecification,
  type Usage,
} from '../client/index.js';
import { DEFAULT_ENDPOINT_PORT, arnName } from '../contract/index.js';
import { interactiveShell } from './shell.js';
import { RUN_HELP, RUN_LISTS, RUN_OPTIONS, runRequest } from './run-request.js';
import { flag, int, keyValues, str, strs, table, toInt, UsageError, type Command, type Io, type Options, type Parsed, type Values } from './args.js';

const CONNECTION = `  --url URL                the Cella server (default ${DEFAULT_URL}, env CELLA_URL)
  --api-key KEY            its API key (env CELLA_API_KEY)
`;
const JSON_HELP = '  --json                   print the API response as JSON\n';
const HELP = '  -h, --help               this help\n';

const connectionOptions: Options = { url: { type: 'string' }, 'api-key': { type: 'string' } };
const jsonOption: Options = { json: { type: 'boolean' } };

const TOKEN_MINUTES_DEFAULT = 15;

function client(v: Values, io: Io): CellaClient {
  const apiKey = str(v, 'api-key') ?? io.env.CELLA_API_KEY;
  if (!apiKey) {
    throw new UsageError('no API key: pass --api-key KEY or set CELLA_API_KEY (the first `cella server` start prints one)', false);
  }
  return new CellaClient({ url: str(v, 'url') ?? (io.env.CELLA_URL || DEFAULT_URL), apiKey });
}

export function printJson(io: Io, value: unknown): void {
  io.out(`${JSON.stringify(value, null, 2)}\n`);
}

/** A client command: connection flags (and --json unless `noJson`) come with every one. */
export function remote(
  spec: { usage: string; flags?: string; options?: Options; lists?: string[]; args: Command['args']; noJson?: boolean },
  run: (p: Parsed, c: CellaClient, io: Io, json: boolean) => Promise<number>,
): Command {
  return {
    usage: `${spec.usage}\nOptions:\n${spec.flags ?? ''}${spec.noJson ? '' : JSON_HELP}${CONNECTION}${HELP}`,
    options: { ...spec.options, ...connectionOptions, ...(spec.noJson ? {} : jsonOption) },
    args: spec.args,
    ...(spec.lists ? { lists: spec.lists } : {}),
    run: (p, io) => run(p, client(p.values, io), io, flag(p.values, 'json')),
  };
}

export const at = (p: Parsed, i: number): string => p.positionals[i] as string;

/** The wire's epoch seconds as ISO-8601 to the second, for tables. */
export const time = (epochSeconds: number | undefined): string | undefined =>
  epochSeconds === undefined ? undefined : new Date(epochSeconds * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
export const mib = (bytes: number): string => `${(bytes / 1048576).toFixed(1)} MiB`;

function describeVm(vm: Microvm): string {
  const p = vm.idlePolicy;
  return keyValues([
    ['id', vm.microvmId],
    ['state', vm.state],
    ['reason', vm.stateReason],
    ['image', `${arnName(vm.imageArn)} (version ${vm.imageVersion})`],
    ['endpoint', `https://${vm.endpoint}`],
    ['started', time(vm.startedAt)],
    ['terminated', time(vm.terminatedAt)],
    [
      'idle policy',
      p
        ? `suspend after ${p.maxIdleDurationSeconds} s idle; terminate after ${p.suspendedDurationSeconds} s suspended; auto-resume ${p.autoResumeEnabled ? 'on' : 'off'}`
        : 'none (never suspended for idleness)',
    ],
    ['max duration', `${vm.maximumDurationInSeconds} s`],
    ['ingress', vm.ingressNetworkConnectors.map(arnName).join(', ') || 'none'],
    ['egress', vm.egressNetworkConnectors.map(arnName).join(', ') || 'none'],
  ]);
}

/** Runs `fn` with a signal that Ctrl-C aborts: following a stream ends quietly instead of killing the process mid-line. */
export async function untilInterrupted(fn: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  try {
    await fn(abort.signal);
  } finally {
    process.off('SIGINT', stop);
  }
}

/** A wait that ended at TERMINATED instead of the wanted state is a failure. */
function failedTo(vm: Microvm, what: string, io: Io): number {
  io.err(`cella: MicroVM ${vm.microvmId} TERMINATED before it ${what}${vm.stateReason ? `: ${vm.stateReason}` : ''}\n`);
  return 1;
}

// MicroVMs

const run = remote(
  {
    usage: `Usage: cella run IMAGE [options]

Launches a MicroVM from an image's snapshot and waits until it is RUNNING.
`,
    flags: RUN_HELP,
    options: RUN_OPTIONS,
    lists: RUN_LISTS,
    args: { min: 0, max: 1, names: 'IMAGE' },
  },
  async (p, c, io, json) => {
    let vm = await c.runMicrovm(await runRequest(p, () => c.arns()));
    if (!flag(p.values, 'no-wait')) vm = await c.waitForState(vm.microvmId, ['RUNNING']);
    if (json) printJson(io, vm);
    else
      io.out(
        keyValues([
          ['id', vm.microvmId],
          ['state', vm.state],
          ['endpoint', `https://${vm.endpoint}`],
        ]),
      );
    return vm.state === 'TERMINATED' ? failedTo(vm, 'ran', io) : 0;
  },
);

const ls = remote(
  {
    usage: 'Usage: cella ls [options]\n\nLists MicroVMs, oldest first.\n',
    flags: '  --image NAME             only those of this image\n  --all                    include TERMINATED ones\n',
    options: { image: { type: 'string' }, all: { type: 'boolean' } },
    args: { min: 0, max: 0, names: '' },
  },
  async (p, c, io, json) => {
    const image = str(p.values, 'image');
    const items: MicrovmSummary[] = [];
    for await (const s of c.listAllMicrovms(image ? { imageIdentifier: image } : {})) {
      if (flag(p.values, 'all') || s.state !== 'TERMINATED') items.push(s);
    }
    if (json) printJson(io, { items });
    else
      io.out(
        table(
          ['ID', 'STATE', 'IMAGE', 'STARTED'],
          items.map((s) => [s.microvmId, s.state, arnName(s.imageArn), time(s.startedAt) ?? '']),
        ),
      );
    return 0;
  },
);

const get = remote({ usage: 'Usage: cella get VM\n\nDescribes a MicroVM.\n', args: { min: 1, max: 1, names: 'VM' } }, async (p, c, io, json) => {
  const vm = await c.getMicrovm(at(p, 0));
  if (json) printJson(io, vm);
  else io.out(describeVm(vm));
  return 0;
});

/** Suspend and terminate: ask, then (unless --no-wait) wait for the state the request leads to. */
function transition(target: 'SUSPENDED' | 'TERMINATED', usage: string, act: (c: CellaClient, id: string) => Promise<void>): Command {
  return remote(
    {
      usage,
      flags: `  --no-wait                return once the request is accepted, before the MicroVM is ${target}\n`,
      options: { 'no-wait': { type: 'boolean' } },
      args: { min: 1, max: 1, names: 'VM' },
    },
    async (p, c, io, json) => {
      const id = at(p, 0);
      await act(c, id);
      const vm = flag(p.values, 'no-wait') ? await c.getMicrovm(id) : await c.waitForState(id, [target]);
      if (json) printJson(io, vm);
      else io.out(`${vm.microvmId} ${vm.state}\n`);
      return vm.state === 'TERMINATED' && target !== 'TERMINATED' ? failedTo(vm, `was ${target}`, io) : 0;
    },
  );
}

const suspend = transition('SUSPENDED', 'Usage: cella suspend VM [options]\n\nSuspends a RUNNING MicroVM to disk and waits until it is SUSPENDED.\n', (c, id) =>
  c.suspendMicrovm(id),
);

const terminate = transition(
  'TERMINATED',
  'Usage: cella terminate VM [options]\n\nTerminates a MicroVM and waits until it is TERMINATED. Terminating a TERMINATED MicroVM succeeds.\n',
  (c, id) => c.terminateMicrovm(id),
);

const resume = remote(
  { usage: 'Usage: cella resume VM\n\nResumes a SUSPENDED MicroVM; returns once it runs.\n', args: { min: 1, max: 1, names: 'VM' } },
  async (p, c, io, json) => {
    await c.resumeMicrovm(at(p, 0));
    const vm = await c.getMicrovm(at(p, 0));
    if (json) printJson(io, vm);
    else io.out(`${vm.microvmId} ${vm.state}\n`);
    return 0;
  },
);

const logs = remote(
  {
    usage: "Usage: cella logs [-f] VM\n\nPrints a MicroVM's output (stdout and stderr).\n",
    flags: '  -f, --follow             keep streaming until the MicroVM terminates or Ctrl-C\n',
    options: { follow: { type: 'boolean', short: 'f' } },
    args: { min: 1, max: 1, names: 'VM' },
    noJson: true,
  },
  async (p, c, io) => {
    await untilInterrupted(async (signal) => {
      for await (const chunk of c.streamLogs(at(p, 0), { follow: flag(p.values, 'follow'), signal })) io.out(chunk);
    });
    return 0;
  },
);

const token = remote(
  {
    usage: `Usage: cella token VM [options]

Mints a token for the MicroVM's endpoint and prints the header that carries it.
Without a port option the token covers port ${DEFAULT_ENDPOINT_PORT} (the endpoint's default port).
`,
    flags: `  --port N                 allow this port (repeatable)
  --ports A-B              allow this range of ports (repeatable)
  --all-ports              allow every port
  --minutes M              lifetime, 1 to 60 (default ${TOKEN_MINUTES_DEFAULT})
  --shell                  a token for the shell endpoint instead (no port options)
`,
    options: {
      port: { type: 'string', multiple: true },
      ports: { type: 'string', multiple: true },
      'all-ports': { type: 'boolean' },
      minutes: { type: 'string' },
      shell: { type: 'boolean' },
    },
    args: { min: 1, max: 1, names: 'VM' },
  },
  async (p, c, io, json) => {
    const v = p.values;
    const id = at(p, 0);
    const expirationInMinutes = int(v, 'minutes', 1, 60) ?? TOKEN_MINUTES_DEFAULT;
    const ports: PortSpecification[] = [
      ...strs(v, 'port').map((s) => ({ port: toInt(s, '--port', 1, 65535) })),
      ...strs(v, 'ports').map(portRange),
      ...(flag(v, 'all-ports') ? [{ allPorts: {} }] : []),
    ];
    let res: AuthTokenResponse;
    if (flag(v, 'shell')) {
      if (ports.length > 0) throw new UsageError('--shell takes no port options');
      res = await c.createMicrovmShellAuthToken(id, { expirationInMinutes });
    } else {
      if (ports.length === 0) ports.push({ port: DEFAULT_ENDPOINT_PORT });
      res = await c.createMicrovmAuthToken(id, { expirationInMinutes, allowedPorts: ports });
    }
    if (json) printJson(io, res);
    else for (const [header, value] of Object.entries(res.authToken)) io.out(`${header}: ${value}\n`);
    if (!json && !(AUTH_HEADER in res.authToken)) io.err(`cella: note: the server answered without the ${AUTH_HEADER} header\n`);
    return 0;
  },
);

function portRange(text: string): PortSpecification {
  const m = /^(\d+)-(\d+)$/.exec(text);
  if (!m) throw new UsageError(`--ports takes A-B, not "${text}"`);
  const startPort = toInt(m[1] as string, '--ports start', 1, 65535);
  const endPort = toInt(m[2] as string, '--ports end', 1, 65535);
  if (startPort > endPort) throw new UsageError(`--ports ${text} is empty`);
  return { range: { startPort, endPort } };
}

const usage = remote(
  { usage: 'Usage: cella usage [VM]\n\nMetered usage of one MicroVM, or of every MicroVM and in total.\n', args: { min: 0, max: 1, names: 'VM' } },
  async (p, c, io, json) => {
    const id = p.positionals[0];
    const headers = ['MICROVM', 'RUNNING-S', 'VCPU-S', 'GIB-S', 'SNAPSHOT-WRITTEN', 'SNAPSHOT-READ', 'SNAPSHOT-GIB-H'];
    const row = (label: string, u: Usage): string[] => [
      label,
      u.runningSeconds.toFixed(1),
      u.vcpuSeconds.toFixed(1),
      u.gibSeconds.toFixed(1),
      mib(u.snapshotBytesWritten),
      mib(u.snapshotBytesRead),
      u.snapshotStorageGibHours.toFixed(4),
    ];
    if (id !== undefined) {
      const u = await c.getMicrovmUsage(id);
      if (json) printJson(io, u);
      else io.out(table(headers, [row(u.microvmId ?? id, u)]));
      return 0;
    }
    const report = await c.getUsage();
    if (json) printJson(io, report);
    else io.out(table(headers, [...report.microvms.map((u) => row(u.microvmId ?? '?', u)), row('TOTAL', report.total)]));
    return 0;
  },
);

const shell = remote(
  {
    usage:
      'Usage: cella shell VM\n\nOpens an interactive shell in the MicroVM through its endpoint (it needs the SHELL_INGRESS connector). Leave with `exit`.\n',
    args: { min: 1, max: 1, names: 'VM' },
    noJson: true,
  },
  async (p, c) => {
    const id = at(p, 0);
    const [info, vm, res] = await Promise.all([c.getServerInfo(), c.getMicrovm(id), c.createMicrovmShellAuthToken(id, { expirationInMinutes: 60 })]);
    return interactiveShell({
      host: vm.endpoint,
      port: info.proxyPort,
      token: res.authToken[AUTH_HEADER] as string,
      ...(info.caCertificate ? { ca: info.caCertificate } : {}),
    });
  },
);

export const vmCommands: Record<string, Command> = { run, ls, get, suspend, resume, terminate, logs, token, usage, shell };
