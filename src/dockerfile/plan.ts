/**
 * What the steps do to the image config, and the state each step runs in:
 * the builder walks planSteps() to run RUN/COPY/ADD and key its layer cache,
 * and records resolveConfig() as the image's config.
 */
import { posix } from 'node:path';
import type { ContainerConfig } from './config.js';
import type { Dockerfile, Step } from './steps.js';

/** A step with the state in force when it executes. */
export interface PlannedStep {
  step: Step;
  /** Base env + ENV so far + ARGs in scope (ENV wins over an ARG of the same name, as in Docker). */
  env: Record<string, string>;
  /** Absolute. */
  workingDir: string;
  /** '' means root. */
  user: string;
}

/**
 * The config after one step. `cmdSetHere` says whether a CMD came earlier in
 * this Dockerfile: ENTRYPOINT clears an inherited CMD but keeps one set in the
 * same Dockerfile (Docker's rule); resolveConfig tracks it.
 */
export function applyStep(config: ContainerConfig, step: Step, cmdSetHere = false): ContainerConfig {
  switch (step.kind) {
    case 'ENV':
      return { ...config, env: { ...config.env, ...step.vars } };
    case 'WORKDIR':
      return { ...config, workingDir: posix.resolve(config.workingDir || '/', step.path) };
    case 'USER':
      return { ...config, user: step.user };
    case 'ENTRYPOINT':
      return { ...config, entrypoint: [...step.argv], cmd: cmdSetHere ? config.cmd : [] };
    case 'CMD':
      return { ...config, cmd: [...step.argv] };
    case 'EXPOSE':
      return { ...config, exposedPorts: [...new Set([...config.exposedPorts, ...step.ports])] };
    case 'LABEL':
      return { ...config, labels: { ...config.labels, ...step.labels } };
    case 'RUN':
    case 'COPY':
    case 'ADD':
    case 'ARG':
      return config;
  }
}

/** The image config after all steps, from the base image's. */
export function resolveConfig(base: ContainerConfig, steps: Step[]): ContainerConfig {
  let config = base;
  let cmdSetHere = false;
  for (const step of steps) {
    config = applyStep(config, step, cmdSetHere);
    if (step.kind === 'CMD') cmdSetHere = true;
  }
  return config;
}

/** Each step with the env, working directory and user it runs with. */
export function planSteps(base: ContainerConfig, dockerfile: Dockerfile): PlannedStep[] {
  const planned: PlannedStep[] = [];
  let config = base;
  let cmdSetHere = false;
  let args: Record<string, string> = {};
  for (const step of dockerfile.steps) {
    planned.push({ step, env: { ...args, ...config.env }, workingDir: config.workingDir || '/', user: config.user });
    config = applyStep(config, step, cmdSetHere);
    if (step.kind === 'CMD') cmdSetHere = true;
    if (step.kind === 'ARG' && step.value !== undefined) args = { ...args, [step.name]: step.value };
  }
  return planned;
}

/** The command the image runs: entrypoint followed by cmd. */
export function commandOf(config: ContainerConfig): string[] {
  return [...config.entrypoint, ...config.cmd];
}

/**
 * A stable key for the layer cache: the step's kind and fields (not its line
 * or text, so moving or reformatting it keeps the cache), and for a planned
 * step also the env, working directory and user it runs with. COPY/ADD keys
 * name the sources, not their content: the builder adds the content's hash.
 */
export function cacheKeyOf(item: Step | PlannedStep): string {
  if ('step' in item) {
    const { step, ...state } = item;
    return `${cacheKeyOf(step)} ${canonicalJson(state)}`;
  }
  const { kind, line: _line, text: _text, ...fields } = item;
  return `${kind} ${canonicalJson(fields)}`;
}

/** JSON with object keys sorted at every level. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
