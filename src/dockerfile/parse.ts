/**
 * Dockerfile text → a single-stage Dockerfile of typed steps. dockerfile-ast
 * splits the text into instructions (line continuations, the escape
 * directive, flags, key=value pairs); this module checks each against what
 * Cella's builder can do and substitutes variables the way Docker does.
 *
 * Variables: ARGs declared before FROM serve FROM only (and the value of a
 * later bare `ARG NAME`); after FROM, ENV and then the base image's env win
 * over ARGs of the same name, as in Docker. Build arguments override ARG
 * defaults; Docker's predefined proxy ARGs are not provided.
 */
import { posix } from 'node:path';
import { Copy, DockerfileParser, Keyword, ModifiableInstruction, PropertyInstruction, Run, type Instruction, type Property } from 'dockerfile-ast';
import { BuildFailure } from '../contract/index.js';
import { ExpandError, expandWord, type Lookup } from './expand.js';
import type { CommandStep, Dockerfile, FileStep, Step } from './steps.js';

/** Why an instruction is refused, in the words that follow its keyword. */
const UNSUPPORTED: Partial<Record<string, string>> = {
  SHELL: 'is not supported (RUN, CMD and ENTRYPOINT use /bin/sh -c; call another shell explicitly, e.g. RUN ["bash", "-c", "…"])',
  HEALTHCHECK: 'is not supported (remove it)',
  ONBUILD: 'is not supported (triggers for images built on this one are not kept)',
  STOPSIGNAL: 'is not supported (remove it)',
  VOLUME: 'is not supported (remove it)',
};
const KEYWORDS = new Set<string>(Object.values(Keyword));
/** Enough to fix a broken file in one go without flooding the build log. */
const MAX_ERRORS = 10;
const MAX_TEXT = 160;
/** EXPOSE 8000-8002 is expanded; a range wider than this is a mistake, not a plan. */
const MAX_PORT_RANGE = 1000;
const TAR_ARCHIVE = /\.(tar|tar\.gz|tgz|tar\.xz|tar\.bz2)$/i;
const REMOTE_SOURCE = /^([a-z][a-z0-9+.-]*:\/\/|git@)/i;
/** An exec form: `[` followed by a string or `]`; anything else starting with `[` is shell, as in `RUN [ -f x ] && …`. */
const EXEC_FORM = /^\[\s*["\]]/;

/** An instruction Cella cannot build; the message follows the keyword. */
class Invalid extends Error {}

/**
 * Parses a Dockerfile. `buildArgs` override ARG defaults. `baseEnv` is the
 * base image's environment, used for substitution after FROM (e.g.
 * `ENV PATH=/venv/bin:$PATH`); a builder that does not know the base yet
 * parses once for `from`, which does not depend on it, and again with it.
 * Throws BuildFailure('CONTAINER_BUILD_FAILED') naming the line and
 * instruction of each problem (up to MAX_ERRORS).
 */
export function parseDockerfile(text: string, buildArgs: Record<string, string> = {}, baseEnv: Record<string, string> = {}): Dockerfile {
  const ast = DockerfileParser.parse(text);
  const instructions = ast.getInstructions();
  if (instructions.length === 0) throw new BuildFailure('CONTAINER_BUILD_FAILED', 'the Dockerfile has no instructions');
  const parser = new Parser(ast.getEscapeCharacter(), buildArgs, baseEnv);
  const errors: string[] = [];
  for (const instruction of instructions) {
    try {
      parser.add(instruction);
    } catch (err) {
      if (!(err instanceof Invalid || err instanceof ExpandError)) throw err;
      const reason = err instanceof Invalid ? err.message : `has a bad variable substitution: ${err.message}`;
      errors.push(`Dockerfile line ${lineOf(instruction)}: ${instruction.getKeyword()} ${reason}`);
    }
  }
  if (errors.length === 0 && parser.from === undefined) {
    throw new BuildFailure('CONTAINER_BUILD_FAILED', 'the Dockerfile has no FROM');
  }
  if (errors.length > 0) {
    const shown = errors.slice(0, MAX_ERRORS);
    if (errors.length > MAX_ERRORS) shown.push(`… and ${errors.length - MAX_ERRORS} more`);
    throw new BuildFailure('CONTAINER_BUILD_FAILED', shown.join('\n'));
  }
  return { from: parser.from!, steps: parser.steps };
}

class Parser {
  from: Dockerfile['from'] | undefined;
  readonly steps: Step[] = [];
  private seenFrom = false;
  /** ARGs before FROM; undefined when declared without a value. */
  private readonly metaArgs = new Map<string, string | undefined>();
  /** ARGs after FROM that have a value. */
  private readonly args = new Map<string, string>();
  /** ENV so far. */
  private readonly env = new Map<string, string>();
  private readonly lookup: Lookup = (name) => this.env.get(name) ?? ownValue(this.baseEnv, name) ?? this.args.get(name);

  constructor(
    private readonly escapeChar: string,
    private readonly buildArgs: Record<string, string>,
    private readonly baseEnv: Record<string, string>,
  ) {}

  add(instruction: Instruction): void {
    const keyword = instruction.getKeyword();
    if (!this.seenFrom) {
      if (keyword === 'ARG') return this.metaArg(instruction);
      if (keyword !== 'FROM') throw new Invalid('comes before FROM (only ARG may)');
      this.seenFrom = true;
      this.from = this.parseFrom(instruction);
      return;
    }
    this.steps.push(...this.stepsOf(keyword, instruction));
  }

  private stepsOf(keyword: string, instruction: Instruction): Step[] {
    const base = { line: lineOf(instruction), text: oneLine(instruction.getTextContent(), this.escapeChar) };
    const content = (instruction.getArgumentsContent() ?? '').trim();
    switch (keyword) {
      case 'FROM':
        throw new Invalid('is a second FROM: multi-stage builds are not supported');
      case 'RUN':
        return [{ ...base, kind: 'RUN', argv: this.runArgv(instruction, content) }];
      case 'CMD':
      case 'ENTRYPOINT':
        return [{ ...base, kind: keyword, ...commandForm(content, true) }];
      case 'COPY':
      case 'ADD':
        return [{ ...base, ...this.fileStep(keyword, instruction) }];
      case 'ENV': {
        // All values of one ENV see the variables from before it, as in Docker.
        const vars = this.properties(instruction);
        for (const [name, value] of Object.entries(vars)) this.env.set(name, value);
        return [{ ...base, kind: 'ENV', vars }];
      }
      case 'ARG':
        return this.stageArgs(instruction, base);
      case 'WORKDIR':
        return [{ ...base, kind: 'WORKDIR', path: this.required(content, 'a path') }];
      case 'USER':
        return [{ ...base, kind: 'USER', user: this.required(content, 'a user') }];
      case 'EXPOSE':
        return [{ ...base, kind: 'EXPOSE', ports: this.ports(instruction) }];
      case 'LABEL':
        return [{ ...base, kind: 'LABEL', labels: this.properties(instruction) }];
      case 'MAINTAINER':
        // Deprecated; Docker's own advice is LABEL maintainer=…, which is what it becomes.
        return [{ ...base, kind: 'LABEL', labels: { maintainer: this.required(content, 'a name', false) } }];
    }
    const unsupported = UNSUPPORTED[keyword];
    if (unsupported !== undefined) throw new Invalid(unsupported);
    throw new Invalid(KEYWORDS.has(keyword) ? 'is not supported' : 'is not a Dockerfile instruction');
  }

  private metaArg(instruction: Instruction): void {
    const lookup: Lookup = (name) => this.metaArgs.get(name);
    for (const property of propertiesOf(instruction)) {
      const name = property.getName();
      const raw = property.getUnescapedValue();
      this.metaArgs.set(name, ownValue(this.buildArgs, name) ?? (raw === null ? undefined : expandWord(raw, lookup, this.escapeChar)));
    }
  }

  private parseFrom(instruction: Instruction): Dockerfile['from'] {
    rejectFlags(instruction, []);
    const args = instruction.getArguments().map((a) => a.getValue());
    const named = args.length === 3 && args[1]!.toLowerCase() === 'as';
    if (args.length !== 1 && !named) throw new Invalid('takes an image and an optional AS name');
    const image = expandWord(args[0]!, (name) => this.metaArgs.get(name), this.escapeChar);
    if (image === '') throw new Invalid(`names no image (${args[0]} is empty)`);
    return { image, line: lineOf(instruction) };
  }

  private stageArgs(instruction: Instruction, base: { line: number; text: string }): Step[] {
    return propertiesOf(instruction).map((property): Step => {
      const name = property.getName();
      const raw = property.getUnescapedValue();
      // A bare `ARG NAME` after FROM takes the value of the ARG of that name before FROM.
      const fallback = raw === null ? this.metaArgs.get(name) : expandWord(raw, this.lookup, this.escapeChar);
      const value = ownValue(this.buildArgs, name) ?? fallback;
      if (value === undefined) return { ...base, kind: 'ARG', name };
      this.args.set(name, value);
      return { ...base, kind: 'ARG', name, value };
    });
  }

  private runArgv(instruction: Instruction, content: string): string[] {
    rejectFlags(instruction, []);
    if (instruction instanceof Run && instruction.getHeredocs().length > 0)
      throw new Invalid('heredocs are not supported (write the commands inline or COPY a script)');
    return commandForm(content, false).argv;
  }

  private fileStep(kind: 'COPY' | 'ADD', instruction: Instruction): Omit<FileStep, 'line' | 'text'> {
    const flags = rejectFlags(instruction, ['chown', 'chmod', 'link']);
    const words = instruction.getArguments().map((a) => a.getValue());
    const heredoc = instruction instanceof Copy ? instruction.getHeredocs().length > 0 : words.some((w) => w.startsWith('<<'));
    if (heredoc) throw new Invalid('heredocs are not supported (put the file in the build context)');
    const content = (instruction.getArgumentsContent() ?? '').trim();
    const expanded = (EXEC_FORM.test(content) ? jsonStrings(content) : words).map((w) => expandWord(w, this.lookup, this.escapeChar));
    if (expanded.length < 2) throw new Invalid('needs at least one source and a destination');
    const dest = expanded.pop()!;
    if (dest === '') throw new Invalid('has an empty destination');
    if (expanded.length > 1 && !dest.endsWith('/')) throw new Invalid(`copies several sources, so its destination must end in '/' (${dest})`);
    const sources = expanded.map(contextPath);
    const archives = kind === 'ADD' ? sources.filter((s) => TAR_ARCHIVE.test(s)).length : 0;
    if (archives > 0 && archives < sources.length) {
      throw new Invalid('mixes tar archives (which ADD unpacks) with other files; use one ADD for the archives and COPY for the rest');
    }
    const step: Omit<FileStep, 'line' | 'text'> = { kind, sources, dest, extract: archives > 0 };
    const chown = flags.get('chown');
    if (chown !== undefined) step.chown = this.required(chown, 'a user in --chown');
    const chmod = flags.get('chmod');
    if (chmod !== undefined) {
      if (!/^[0-7]{3,4}$/.test(chmod)) throw new Invalid(`--chmod=${chmod} is not supported (only octal modes such as 0755)`);
      step.chmod = chmod;
    }
    return step;
  }

  private ports(instruction: Instruction): number[] {
    const words = instruction.getArguments().map((a) => expandWord(a.getValue(), this.lookup, this.escapeChar));
    if (words.length === 0) throw new Invalid('needs a port');
    const ports: number[] = [];
    for (const word of words) {
      const match = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(word);
      if (match === null) throw new Invalid(`has an invalid port '${word}' (expected 8080, 8080/tcp or 8000-8002)`);
      const first = Number(match[1]);
      const last = match[2] === undefined ? first : Number(match[2]);
      if (first < 1 || last > 65535 || last < first) throw new Invalid(`has an invalid port range '${word}'`);
      if (last - first >= MAX_PORT_RANGE) throw new Invalid(`has a port range wider than ${MAX_PORT_RANGE} ('${word}')`);
      // Only TCP ports mean anything to Cella's proxy; UDP and SCTP ones are dropped.
      if (match[3] !== undefined && match[3].toLowerCase() !== 'tcp') continue;
      for (let port = first; port <= last; port++) ports.push(port);
    }
    return ports;
  }

  /** `key=value` pairs (and the legacy `key value`), values substituted. */
  private properties(instruction: Instruction): Record<string, string> {
    const properties = propertiesOf(instruction);
    if (properties.length === 0) throw new Invalid('needs key=value');
    const entries = properties.map((property): [string, string] => {
      const raw = property.getUnescapedValue();
      if (raw === null) throw new Invalid(`needs a value for ${property.getName()} (write ${property.getName()}=value)`);
      return [property.getName(), expandWord(raw, this.lookup, this.escapeChar)];
    });
    return Object.fromEntries(entries);
  }

  /** The instruction's whole argument as one word, substituted unless `expand` is false. */
  private required(content: string, what: string, expand = true): string {
    const value = expand ? expandWord(content, this.lookup, this.escapeChar) : content;
    if (value === '') throw new Invalid(`needs ${what}`);
    return value;
  }
}

/** Shell form → `/bin/sh -c`; exec form parsed as the JSON array of strings it must be. */
function commandForm(content: string, emptyExecAllowed: boolean): Pick<CommandStep, 'argv' | 'shellForm'> {
  if (!EXEC_FORM.test(content)) {
    if (content === '') throw new Invalid('needs a command');
    return { argv: ['/bin/sh', '-c', content], shellForm: true };
  }
  const argv = jsonStrings(content);
  if (argv.length === 0 && !emptyExecAllowed) throw new Invalid('needs a command');
  return { argv, shellForm: false };
}

function jsonStrings(content: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === 'string')) {
    throw new Invalid('has a malformed exec form (expected a JSON array of strings in double quotes, e.g. ["python", "app.py"])');
  }
  return parsed;
}

/** The flags an instruction may carry, by name; any other flag is refused. */
function rejectFlags(instruction: Instruction, allowed: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  if (!(instruction instanceof ModifiableInstruction)) return flags;
  for (const flag of instruction.getFlags()) {
    const name = flag.getName();
    if (name === 'from') throw new Invalid('--from is not supported (multi-stage builds are not supported)');
    if (!allowed.includes(name)) throw new Invalid(`--${name} is not supported`);
    // A bare flag (`--link`) has no value.
    flags.set(name, flag.getValue() ?? '');
  }
  return flags;
}

/** A source as a path inside the build context ('/x' means the context's x, as in Docker). */
function contextPath(source: string): string {
  if (REMOTE_SOURCE.test(source))
    throw new Invalid(`of a URL or git repository is not supported (${source}); fetch it with RUN, or put it in the build context`);
  const relative = posix.normalize(source.replace(/^\/+/, '') || '.');
  if (relative === '..' || relative.startsWith('../')) throw new Invalid(`source ${source} is outside the build context`);
  return relative.replace(/\/$/, '') || '.';
}

function propertiesOf(instruction: Instruction): Property[] {
  return instruction instanceof PropertyInstruction ? instruction.getProperties() : [];
}

function ownValue(record: Record<string, string>, name: string): string | undefined {
  return Object.hasOwn(record, name) ? record[name] : undefined;
}

function lineOf(instruction: Instruction): number {
  return instruction.getRange().start.line + 1;
}

/** The instruction on one line: continuations joined, whitespace collapsed, long ones cut. */
function oneLine(text: string, escapeChar: string): string {
  const escape = escapeChar.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
  const joined = text
    .replace(new RegExp(`${escape}[ \\t]*\\r?\\n`, 'g'), ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return joined.length > MAX_TEXT ? `${joined.slice(0, MAX_TEXT - 1)}…` : joined;
}
