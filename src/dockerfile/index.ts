/**
 * Dockerfiles for Cella's image builder: parse a single-stage Dockerfile into
 * typed steps, plan the state each runs in, and resolve the image config.
 */
export { emptyConfig, type ContainerConfig } from './config.js';
export { parseDockerfile } from './parse.js';
export { applyStep, cacheKeyOf, commandOf, planSteps, resolveConfig, type PlannedStep } from './plan.js';
export type { ArgStep, CommandStep, Dockerfile, EnvStep, ExposeStep, FileStep, LabelStep, RunStep, Step, UserStep, WorkdirStep } from './steps.js';
