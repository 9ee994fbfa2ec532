/**
 * The base trees images are built FROM, each in bases/<name>/{tree/, base.json}:
 * `busybox` from Debian's busybox-static, and Debian 12 minbase trees made by
 * mmdebstrap from the host's apt sources. A tree is built next to its target
 * and swapped in; base.json, written last, records a hash of the build's inputs
 * so a rerun skips every base whose inputs did not change.
 */

import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CellaError, SETUP_COMMAND, setupMissing } from '../contract/index.js';
import { run } from '../host/index.js';
import { readBaseInfo, type BaseInfo } from './artifacts.js';
import { fileSha256, replaceDir, requireTools, sha256, writeAtomic } from './util.js';

const BASE_PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BUSYBOX = '/bin/busybox';
const HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost\n';

/** Bump when a change to the code around a build changes what ends up in a tree, so existing trees get rebuilt. */
const RECIPE = 1;

export interface DebianBase {
  name: string;
  description: string;
  /** Packages installed on top of minbase (mmdebstrap --include). */
  include: string[];
}

export const DEBIAN_SUITE = 'bookworm';

export const DEBIAN_BASES: readonly DebianBase[] = [
  { name: 'debian-12', description: 'Debian 12 (bookworm) minbase, made by mmdebstrap', include: [] },
  {
    name: 'debian-12-python',
    description: 'Debian 12 (bookworm) minbase with python3 (3.11), python3-venv and ca-certificates',
    // python3-venv costs about 4 MiB and is how Debian's python installs from PyPI (PEP 668 blocks a system-wide pip).
    include: ['python3', 'python3-venv', 'ca-certificates'],
  },
  {
    name: 'debian-12-e2b',
    description: 'Debian 12 (bookworm) minbase with what E2B templates expect: sudo, python3 as python, nodejs (18), git, curl, procps, ca-certificates',
    // The E2B images `base` and `code-interpreter-v1` (src/images/templates.ts) add their `user` on top; E2B's SDK tests run sudo, python and git.
    // nodejs: E2B's base template has Node.js, and code-interpreter-v1's JavaScript contexts run on it.
    include: ['sudo', 'python3', 'python-is-python3', 'nodejs', 'git', 'curl', 'procps', 'ca-certificates'],
  },
];

/** The suites a Debian base is built from, with the archive to use when the host's sources name none. */
const SUITES: readonly (readonly [suite: string, defaultUri: string])[] = [
  [DEBIAN_SUITE, 'http://deb.debian.org/debian'],
  [`${DEBIAN_SUITE}-updates`, 'http://deb.debian.org/debian'],
  [`${DEBIAN_SUITE}-security`, 'http://deb.debian.org/debian-security'],
];

/** Sets up merged /usr with symlinks instead of installing usrmerge, which pulls in perl (about 50 MiB). */
const MERGED_USR_HOOKS = '/usr/share/mmdebstrap/hooks/merged-usr';

/** dpkg filters; mmdebstrap keeps them in the tree (/etc/dpkg/dpkg.cfg.d/99mmdebstrap), so packages an image adds stay small too. */
const DPKG_FILTERS = [
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/lintian/*',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
];

const MMDEBSTRAP_TIMEOUT_MS = 20 * 60_000;

export interface HostSourceFile {
  /** The file's name, whose suffix tells the format: `.sources` is deb822, anything else one-line. */
  name: string;
  text: string;
}

interface AptSource {
  types: string[];
  uris: string[];
  suites: string[];
  components: string[];
}

function parseOneLine(text: string): AptSource[] {
  return text.split('\n').flatMap((line) => {
    const [type, uri, suite, ...components] = line
      .replace(/#.*/, '')
      .replace(/\[[^\]]*\]/, ' ')
      .trim()
      .split(/\s+/);
    return type && uri && suite ? [{ types: [type], uris: [uri], suites: [suite], components }] : [];
  });
}

function parseDeb822(text: string): AptSource[] {
  return text.split(/\n\s*\n/).flatMap((paragraph) => {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of paragraph.split('\n')) {
      if (line.startsWith('#')) continue;
      if (/^\s/.test(line) && last !== undefined) {
        fields.set(last, `${fields.get(last) ?? ''} ${line.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m?.[1] !== undefined) {
        last = m[1].toLowerCase();
        fields.set(last, m[2] ?? '');
      }
    }
    if (fields.get('enabled')?.trim().toLowerCase() === 'no') return [];
    const words = (key: string): string[] => (fields.get(key) ?? '').split(/\s+/).filter(Boolean);
    return [{ types: words('types'), uris: words('uris'), suites: words('suites'), components: words('components') }];
  });
}

/**
 * The one-line apt sources a Debian base is built from: for each bookworm suite the
 * host's archive for it (so a local mirror is used), or deb.debian.org for all of
 * them when the host has no bookworm sources. Only `main`, so a base is free software.
 */
export function mirrorLines(files: readonly HostSourceFile[]): string[] {
  const sources = files
    .flatMap((f) => (f.name.endsWith('.sources') ? parseDeb822(f.text) : parseOneLine(f.text)))
    .filter((s) => s.types.includes('deb') && s.components.includes('main'));
  const hostUri = (suite: string): string | undefined => sources.find((s) => s.suites.includes(suite))?.uris[0];
  if (hostUri(DEBIAN_SUITE) === undefined) return SUITES.map(([suite, uri]) => `deb ${uri} ${suite} main`);
  return SUITES.flatMap(([suite]) => {
    const uri = hostUri(suite);
    return uri === undefined ? [] : [`deb ${uri} ${suite} main`];
  });
}

export function mmdebstrapArgs(base: DebianBase, mirrors: readonly string[], target: string): string[] {
  return [
    '--mode=root',
    '--format=directory',
    '--variant=minbase',
    `--hook-dir=${MERGED_USR_HOOKS}`,
    // Translations of package descriptions are never read in a guest.
    '--aptopt=Acquire::Languages "none"',
    ...DPKG_FILTERS.map((f) => `--dpkgopt=${f}`),
    ...(base.include.length > 0 ? [`--include=${base.include.join(',')}`] : []),
    DEBIAN_SUITE,
    target,
    ...mirrors,
  ];
}

/** What a Debian base's tree depends on, short of the archive's content: `--force` picks up newer packages. */
export function debianInputsSha256(base: DebianBase, mirrors: readonly string[], mmdebstrapVersion: string): string {
  return sha256(JSON.stringify({ recipe: RECIPE, mmdebstrap: mmdebstrapVersion, args: mmdebstrapArgs(base, mirrors, '<target>') }));
}

async function readHostSources(): Promise<HostSourceFile[]> {
  const dir = '/etc/apt/sources.list.d';
  const names = existsSync(dir) ? (await readdir(dir)).filter((n) => n.endsWith('.list') || n.endsWith('.sources')).sort() : [];
  const paths = ['/etc/apt/sources.list', ...names.map((n) => join(dir, n))].filter((p) => existsSync(p));
  return Promise.all(paths.map(async (name) => ({ name, text: await readFile(name, 'utf8') })));
}

/** Mount points at or below `dir`, as the kernel reports them (octal escapes decoded). */
async function mountsUnder(dir: string): Promise<string[]> {
  const real = await realpath(dir);
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  return mountinfo
    .split('\n')
    .flatMap((line) => {
      const point = line.split(' ')[4];
      return point === undefined ? [] : [point.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)))];
    })
    .filter((p) => p === real || p.startsWith(`${real}/`));
}

/** Deletes a tree unless something is mounted in it: mmdebstrap mounts /proc, /sys and /dev while it runs, and a delete must never reach the host's through them. */
async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  const mounts = await mountsUnder(dir);
  if (mounts.length > 0) {
    throw new CellaError('COMMAND_FAILED', `not removing ${dir}: ${mounts.join(', ')} still mounted in it; unmount and rerun \`${SETUP_COMMAND}\``, {
      details: { dir, mounts },
    });
  }
  await rm(dir, { recursive: true, force: true });
}

type Log = (line: string) => void;

interface BaseRecipe {
  name: string;
  description: string;
  env: Record<string, string>;
  packages?: string[];
  inputsSha256: string;
  /** Fills `dir`, an empty directory, with the tree. */
  build(dir: string): Promise<void>;
}

async function diskUsage(dir: string): Promise<number> {
  const out = await run('du', ['-s', '--block-size=1', dir], { timeoutMs: 5 * 60_000 });
  return Number.parseInt(out, 10);
}

/** Builds a base unless its base.json records the same inputs; a failed build leaves the previous tree in place. */
async function ensureBase(basesDir: string, recipe: BaseRecipe, force: boolean, log: Log): Promise<void> {
  const baseDir = join(basesDir, recipe.name);
  const tree = join(baseDir, 'tree');
  if (!force && readBaseInfo(baseDir)?.inputsSha256 === recipe.inputsSha256 && existsSync(tree)) {
    log(`base ${recipe.name}: up to date`);
    return;
  }
  log(`base ${recipe.name}: building`);
  await mkdir(baseDir, { recursive: true });
  // Trees left by a setup that was killed mid-build or mid-swap.
  for (const name of await readdir(baseDir)) {
    if (/^tree\.(tmp|old)-/.test(name)) await removeTree(join(baseDir, name));
  }
  const started = Date.now();
  const tmp = await mkdtemp(join(baseDir, 'tree.tmp-'));
  try {
    await chmod(tmp, 0o755); // mkdtemp makes it 0700, and it becomes the guest's /
    await recipe.build(tmp);
    // The old base.json must not describe the new tree, even for the moment between the two writes.
    await rm(join(baseDir, 'base.json'), { force: true });
    await replaceDir(tree, tmp);
  } catch (err) {
    await removeTree(tmp).catch((cleanup: unknown) => log(`base ${recipe.name}: ${(cleanup as Error).message}`));
    throw err;
  }
  const info: BaseInfo = {
    name: recipe.name,
    description: recipe.description,
    env: recipe.env,
    ...(recipe.packages ? { packages: recipe.packages } : {}),
    createdAt: new Date().toISOString(),
    sizeBytes: await diskUsage(tree),
    inputsSha256: recipe.inputsSha256,
  };
  await writeAtomic(join(baseDir, 'base.json'), `${JSON.stringify(info, null, 2)}\n`);
  log(`base ${recipe.name}: built ${tree} in ${((Date.now() - started) / 1000).toFixed(0)} s (${(info.sizeBytes / 2 ** 20).toFixed(0)} MiB)`);
}

async function busyboxApplets(): Promise<string[]> {
  const out = await run(BUSYBOX, ['--list']);
  // Applet names are plain words plus '[' and '[['; anything else is not a safe file name.
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^[A-Za-z0-9._[\]-]+$/.test(l) && l !== '.' && l !== '..');
}

async function buildBusyboxTree(dir: string): Promise<void> {
  const dirs: [string, number][] = [
    ['bin', 0o755],
    ['etc', 0o755],
    ['proc', 0o555],
    ['sys', 0o555],
    ['dev', 0o755],
    ['tmp', 0o1777],
    ['var', 0o755],
    ['root', 0o700],
    ['usr', 0o755],
    ['usr/bin', 0o755],
    ['usr/sbin', 0o755],
    ['sbin', 0o755],
    ['run', 0o755],
    ['home', 0o755],
  ];
  for (const [d, mode] of dirs) {
    await mkdir(join(dir, d));
    await chmod(join(dir, d), mode); // explicit: mkdir's mode is filtered by the umask and drops the sticky bit
  }
  await copyFile(BUSYBOX, join(dir, 'bin', 'busybox'));
  await chmod(join(dir, 'bin', 'busybox'), 0o755);
  const taken = new Set(['busybox']);
  for (const applet of await busyboxApplets()) {
    if (taken.has(applet)) continue;
    taken.add(applet);
    await symlink('busybox', join(dir, 'bin', applet));
  }
  const etc: [string, string][] = [
    ['passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'],
    ['group', 'root:x:0:\nnogroup:x:65534:\n'],
    ['hostname', 'cella\n'],
    ['hosts', HOSTS],
  ];
  for (const [name, text] of etc) {
    await writeFile(join(dir, 'etc', name), text);
    await chmod(join(dir, 'etc', name), 0o644);
  }
}

/** Fixes what mmdebstrap takes from the host or leaves for a booted system, so the tree runs under cella-init. */
async function finishDebianTree(dir: string): Promise<void> {
  const mounts = await mountsUnder(dir);
  if (mounts.length > 0) throw new CellaError('COMMAND_FAILED', `mmdebstrap left ${mounts.join(', ')} mounted`, { details: { dir, mounts } });
  // cella-init mounts devtmpfs on /dev; device nodes in the tree would only trip up copies of it (a copy of /dev/zero never ends).
  for (const entry of await readdir(join(dir, 'dev'))) await rm(join(dir, 'dev', entry), { recursive: true, force: true });
  // mmdebstrap copies the host's hostname and resolv.conf.
  const etc: [string, string][] = [
    ['hostname', 'cella\n'],
    ['hosts', HOSTS],
    ['resolv.conf', '# No resolver configured by Cella.\n'],
  ];
  for (const [name, text] of etc) {
    const path = join(dir, 'etc', name);
    await rm(path, { force: true }); // an absolute symlink here would point into the host
    await writeFile(path, text);
    await chmod(path, 0o644);
  }
  for (const [d, mode] of [
    ['tmp', 0o1777],
    ['run', 0o755],
  ] as const) {
    await mkdir(join(dir, d), { recursive: true });
    await chmod(join(dir, d), mode);
  }
  const users = (await readFile(join(dir, 'etc', 'passwd'), 'utf8')).split('\n').map((l) => l.split(':')[0]);
  for (const user of ['root', 'nobody']) {
    if (!users.includes(user)) throw new CellaError('COMMAND_FAILED', `the tree built by mmdebstrap has no ${user} in /etc/passwd`, { details: { dir } });
  }
}

async function debianRecipes(): Promise<BaseRecipe[]> {
  await requireTools([
    ['mmdebstrap', 'mmdebstrap'],
    ['du', 'coreutils'],
  ]);
  if (!existsSync(MERGED_USR_HOOKS)) throw setupMissing('the merged-usr hooks of mmdebstrap', MERGED_USR_HOOKS);
  const version = (await run('mmdebstrap', ['--version'])).trim();
  const mirrors = mirrorLines(await readHostSources());
  return DEBIAN_BASES.map((base) => ({
    name: base.name,
    description: base.description,
    env: { PATH: BASE_PATH_ENV, LANG: 'C.UTF-8' },
    packages: base.include,
    inputsSha256: debianInputsSha256(base, mirrors, version),
    build: async (dir: string) => {
      if (process.getuid?.() !== 0) {
        throw new CellaError('SETUP_MISSING', `base ${base.name} is built by mmdebstrap --mode=root: run \`${SETUP_COMMAND}\` as root`);
      }
      await run('mmdebstrap', mmdebstrapArgs(base, mirrors, dir), { timeoutMs: MMDEBSTRAP_TIMEOUT_MS });
      await finishDebianTree(dir);
    },
  }));
}

/** Brings every base under `basesDir` up to date: busybox first, then the Debian bases (about a minute each when built). */
export async function setupBases(basesDir: string, opts: { force: boolean; log: Log }): Promise<void> {
  const busyboxSha = await fileSha256(BUSYBOX);
  if (busyboxSha === undefined) throw setupMissing('busybox (Debian package busybox-static)', BUSYBOX);
  const busybox: BaseRecipe = {
    name: 'busybox',
    description: "BusyBox from Debian's busybox-static with a minimal /etc",
    env: { PATH: BASE_PATH_ENV },
    inputsSha256: sha256(JSON.stringify({ recipe: RECIPE, busybox: busyboxSha })),
    build: buildBusyboxTree,
  };
  for (const recipe of [busybox, ...(await debianRecipes())]) await ensureBase(basesDir, recipe, opts.force, opts.log);
}
