/**
 * What every `cella` command shares: where output goes, per-command option
 * parsing with usage errors (exit 2), typed access to flag values, and
 * plain-text tables.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export type Options = NonNullable<ParseArgsConfig['options']>;

/** Output and environment, injectable so tests can run main() in-process. */
export interface Io {
  out(text: string | Uint8Array): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
}

export const processIo: Io = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  env: process.env,
};

/** A mistake in the command line: exit 2, with the usage of the command it concerns unless `showUsage` is false. */
export class UsageError extends Error {
  /** Set by the dispatcher to the usage of the command that raised it; the top-level usage otherwise. */
  usage: string | undefined;

  constructor(
    message: string,
    readonly showUsage = true,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

export type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

export interface Parsed {
  values: Values;
  positionals: string[];
}

export interface Command {
  usage: string;
  options: Options;
  /** How many positional arguments the command takes. */
  args: { min: number; max: number; names: string };
  /** `multiple` options that, as in the AWS CLI, take every value up to the next option (`--x a b`). */
  lists?: readonly string[];
  run(p: Parsed, io: Io): Promise<number>;
}

/** -h/--help anywhere before `--` wins over every other mistake on the line. */
export function wantsHelp(argv: string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

export function parse(argv: string[], cmd: Pick<Command, 'options' | 'args' | 'lists'>): Parsed {
  let parsed: Parsed;
  try {
    parsed = parseArgs({ args: spreadLists(argv, cmd.lists ?? []), options: cmd.options, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs appends advice about `--` that does not fit most mistakes; its first sentence says it all.
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const n = parsed.positionals.length;
  if (n < cmd.args.min) throw new UsageError(`missing ${cmd.args.names}`);
  if (n > cmd.args.max) throw new UsageError(`unexpected argument "${parsed.positionals[cmd.args.max]}"`);
  return parsed;
}

/** `--x a b --y` → `--x a --x b --y` for the list options, so parseArgs sees one value per flag. */
function spreadLists(argv: string[], lists: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') return [...out, ...argv.slice(i)];
    out.push(a);
    if (!a.startsWith('--') || !lists.includes(a.slice(2))) continue;
    for (let n = 0; i + 1 < argv.length && !(argv[i + 1] as string).startsWith('-'); n++) out.push(...(n > 0 ? [a] : []), argv[++i] as string);
  }
  return out;
}

/** Runs one command: its help, its parsing, then its action. */
export async function runCommand(cmd: Command, argv: string[], io: Io): Promise<number> {
  if (wantsHelp(argv)) {
    io.out(cmd.usage);
    return 0;
  }
  return cmd.run(parse(argv, cmd), io);
}

export function str(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === 'string' ? x : undefined;
}

export function strs(v: Values, name: string): string[] {
  const x = v[name];
  return Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : typeof x === 'string' ? [x] : [];
}

export function flag(v: Values, name: string): boolean {
  return v[name] === true;
}

export function int(v: Values, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const x = str(v, name);
  return x === undefined ? undefined : toInt(x, `--${name}`, min, max);
}

export function toInt(text: string, what: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${what} must be a whole number, not "${text}"`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${what} must be between ${min} and ${max}, not ${n}`);
  return n;
}

/** Columns padded to their widest cell; the last one is left ragged. */
export function table(headers: string[], rows: string[][]): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return (
    all
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** Aligned "key  value" lines; pairs without a value are left out. */
export function keyValues(pairs: Array<[string, string | undefined]>): string {
  const shown = pairs.filter((p): p is [string, string] => p[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, val]) => `${k.padEnd(width)}  ${val}`).join('\n') + '\n';
}
