/**
 * The images cellad builds by itself at its first start, like any user
 * image from a Dockerfile: `demo` (guest/demo on busybox) and the two E2B
 * templates the SDKs name by default. `base` and `code-interpreter-v1` are
 * built FROM the managed base `debian-12-e2b` (sudo, python, nodejs, git,
 * curl, procps, made at setup) and add E2B's `user` with passwordless sudo, as
 * E2B's own template finalizer does. An image needs an app on a port to be
 * snapshotted: `base` runs the demo app (E2B's base runs envd only, which
 * Cella serves on the host), `code-interpreter-v1` runs Cella's stand-in for
 * E2B's Jupyter server (guest/code-interpreter/server.py, Python stdlib only,
 * with js-kernel.cjs on Node for JavaScript contexts).
 */
import { fileURLToPath } from 'node:url';
import type { MEMORY_TIERS_MIB } from '../contract/index.js';
import { DEMO_PORT } from '../setup/index.js';
import { DEMO_DOCKERFILE, contextRevision, zipContext, type ContextFiles } from './context.js';

/** The managed base the E2B templates are built FROM (src/setup/bases.ts). */
export const E2B_BASE = 'debian-12-e2b';
/** The port code-interpreter's SDK addresses: `49999-<id>.<domain>`. */
export const CODE_INTERPRETER_PORT = 49999;
/** E2B's default sandbox size. */
const E2B_MEMORY_MIB = 512;

type MemoryTier = (typeof MEMORY_TIERS_MIB)[number];

const CODE_INTERPRETER_FILES: ContextFiles = {
  'server.py': fileURLToPath(new URL('../../guest/code-interpreter/server.py', import.meta.url)),
  'js-kernel.cjs': fileURLToPath(new URL('../../guest/code-interpreter/js-kernel.cjs', import.meta.url)),
};

export interface ManagedImage {
  name: string;
  /** A managed base's name. */
  base: string;
  memoryMiB: MemoryTier;
  /** Writes the image's build context zipped into `zipFile`; returns its path. */
  zip(zipFile: string): Promise<string>;
  /** A digest of that context (Dockerfile and files): a new one means the template changed and is built again. */
  revision: string;
}

/**
 * E2B's `user` (home /home/user, bash) with passwordless sudo. The SDK runs
 * every command as `bash -l -c`, and Debian's /etc/profile asks `$(id -u)`
 * for the PATH it picks: a fork and exec per command, about a third of a
 * command's time under TCG. Bash knows its EUID; other shells still ask `id`.
 */
const ADD_USER = [
  'RUN useradd -m -s /bin/bash user \\',
  "  && printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/user \\",
  '  && chmod 0440 /etc/sudoers.d/user \\',
  `  && sed -i 's/"$(id -u)"/"\${EUID:-$(id -u)}"/' /etc/profile \\`,
  '  && grep -q EUID /etc/profile',
];

/** An image whose build context is `dockerfile` and `files` (name in the context → path here). */
function managed(name: string, base: string, memoryMiB: MemoryTier, files: ContextFiles, dockerfile: readonly string[]): ManagedImage {
  return { name, base, memoryMiB, zip: (f) => zipContext(f, files, dockerfile), revision: contextRevision(files, dockerfile) };
}

/** The Dockerfile of `base`. */
export function baseDockerfile(): string[] {
  return [
    `FROM ${E2B_BASE}`,
    ...ADD_USER,
    'COPY cella-demo /usr/local/bin/cella-demo',
    `EXPOSE ${DEMO_PORT}`,
    `CMD ["/usr/local/bin/cella-demo", "${DEMO_PORT}"]`,
  ];
}

/** The Dockerfile of `code-interpreter-v1`: the server runs as root, as E2B's kernels do, in /home/user. */
export function codeInterpreterDockerfile(): string[] {
  return [
    `FROM ${E2B_BASE}`,
    ...ADD_USER,
    'COPY server.py /opt/cella/code-interpreter/server.py',
    'COPY js-kernel.cjs /opt/cella/code-interpreter/js-kernel.cjs',
    'WORKDIR /home/user',
    `EXPOSE ${CODE_INTERPRETER_PORT}`,
    `CMD ["python3", "/opt/cella/code-interpreter/server.py", "--port", "${CODE_INTERPRETER_PORT}"]`,
  ];
}

/** Every image cellad builds at its first start, in that order. */
export function managedImages(demoApp: string): ManagedImage[] {
  return [
    managed('demo', 'busybox', 256, { 'cella-demo': demoApp }, DEMO_DOCKERFILE),
    managed('base', E2B_BASE, E2B_MEMORY_MIB, { 'cella-demo': demoApp }, baseDockerfile()),
    managed('code-interpreter-v1', E2B_BASE, E2B_MEMORY_MIB, CODE_INTERPRETER_FILES, codeInterpreterDockerfile()),
  ];
}
