/**
 * What a container image says about how to run it: the subset of the OCI
 * image config that Cella uses. Base images (managed or pulled) provide one;
 * the Dockerfile's instructions change it.
 */
export interface ContainerConfig {
  /** Environment, in order; later values win. */
  env: Record<string, string>;
  /** Exec form; empty when unset. */
  entrypoint: string[];
  /** Exec form; empty when unset. */
  cmd: string[];
  /** Absolute path; '/' when unset. */
  workingDir: string;
  /** `user`, `uid`, `user:group` or `uid:gid`; '' means root. */
  user: string;
  /** TCP ports from EXPOSE (`8080` or `8080/tcp`; UDP ones are dropped). */
  exposedPorts: number[];
  labels: Record<string, string>;
}

export function emptyConfig(): ContainerConfig {
  return { env: {}, entrypoint: [], cmd: [], workingDir: '/', user: '', exposedPorts: [], labels: {} };
}
