/**
 * A parsed single-stage Dockerfile: the base image and the instructions after
 * FROM, with build-time variables already substituted (see parse.ts).
 */

export interface Dockerfile {
  from: { image: string; line: number };
  steps: Step[];
}

interface StepBase {
  /** 1-based line where the instruction starts. */
  line: number;
  /** The instruction as written, on one line, for the build log. */
  text: string;
}

export interface RunStep extends StepBase {
  kind: 'RUN';
  /** Exec form as given; shell form as `['/bin/sh', '-c', command]`, not substituted (the shell does it). */
  argv: string[];
}

export interface FileStep extends StepBase {
  kind: 'COPY' | 'ADD';
  /** Relative to the build context, normalised ('.' is the context itself); may hold wildcards. */
  sources: string[];
  /** As written: relative to the working directory, and a directory when it ends in '/'. */
  dest: string;
  /** `user`, `user:group`, `uid` or `uid:gid`. */
  chown?: string;
  /** Octal, e.g. '0755'. */
  chmod?: string;
  /**
   * ADD of local tar archives (named *.tar, *.tar.gz, *.tgz, *.tar.xz,
   * *.tar.bz2): unpack them at dest. Docker sniffs the content; Cella goes by
   * the name, and an ADD mixing archives and other files is refused, so this
   * holds for every source. Always false for COPY.
   */
  extract: boolean;
}

export interface EnvStep extends StepBase {
  kind: 'ENV';
  vars: Record<string, string>;
}

export interface ArgStep extends StepBase {
  kind: 'ARG';
  name: string;
  /** The value in force: the build argument, else the default; undefined when neither is given. */
  value?: string;
}

export interface WorkdirStep extends StepBase {
  kind: 'WORKDIR';
  /** As written; a relative path resolves against the working directory in force (applyStep does it). */
  path: string;
}

export interface UserStep extends StepBase {
  kind: 'USER';
  user: string;
}

export interface CommandStep extends StepBase {
  kind: 'ENTRYPOINT' | 'CMD';
  /** Exec form as given; shell form as `['/bin/sh', '-c', command]`. */
  argv: string[];
  shellForm: boolean;
}

export interface ExposeStep extends StepBase {
  kind: 'EXPOSE';
  /** TCP ports, ranges expanded. */
  ports: number[];
}

export interface LabelStep extends StepBase {
  kind: 'LABEL';
  labels: Record<string, string>;
}

export type Step = RunStep | FileStep | EnvStep | ArgStep | WorkdirStep | UserStep | CommandStep | ExposeStep | LabelStep;
