/**
 * Pulls an image from a registry into a directory tree: resolves the
 * reference to one platform's manifest, reads its config, and applies its
 * layers in order. Every blob is verified before any of it reaches the tree.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { emptyConfig, type ContainerConfig } from '../dockerfile/index.js';
import { BuildFailure } from '../contract/index.js';
import { applyLayer, type Compression } from './layer.js';
import { formatReference, parseReference } from './reference.js';
import { RegistryClient, type Credentials, type Descriptor } from './registry.js';

export interface PullOptions {
  /** `host:port` of registries that may be reached over plain http; loopback ones always may. */
  insecureRegistries?: string[];
  /** Where verified blobs are kept by digest and reused by later pulls. */
  cacheDir?: string;
  log?: (line: string) => void;
  /** Keyed by registry host as `parseReference` names it (Docker Hub is `registry-1.docker.io`). */
  credentials?: Record<string, Credentials>;
  /** `os/arch[/variant]`; `linux/amd64` by default. */
  platform?: string;
  /** Upper bound on the unpacked file content, in bytes. */
  maxBytes?: number;
}

export interface PullResult {
  /** Digest of the manifest the reference resolved to (the index, for multi-platform images). */
  digest: string;
  config: ContainerConfig;
  layers: number;
  /** Bytes of file content unpacked into the tree. */
  bytes: number;
}

const MT = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;
const ACCEPT = [MT.ociIndex, MT.dockerList, MT.ociManifest, MT.dockerManifest];

const LAYER_COMPRESSION: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
};

interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
}
interface ImageIndex {
  manifests?: (Descriptor & { platform?: Platform })[];
}
interface ImageManifest {
  config?: Descriptor;
  layers?: Descriptor[];
}
interface ImageConfig {
  config?: {
    Env?: string[] | null;
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    User?: string;
    ExposedPorts?: Record<string, unknown> | null;
    Labels?: Record<string, string> | null;
  };
}

const platformName = (p: Platform | undefined) => [p?.os ?? '?', p?.architecture ?? '?', p?.variant].filter(Boolean).join('/');
const MIB = 1024 * 1024;
const shortDigest = (d: string) => d.slice(0, 'sha256:'.length + 12);

/** The subset of an OCI image config that Cella uses. */
function toContainerConfig(image: ImageConfig): ContainerConfig {
  const c = image.config ?? {};
  const config = emptyConfig();
  for (const kv of c.Env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) config.env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  config.entrypoint = c.Entrypoint ?? [];
  config.cmd = c.Cmd ?? [];
  config.workingDir = c.WorkingDir || '/';
  config.user = c.User ?? '';
  const ports = Object.keys(c.ExposedPorts ?? {})
    .map((p) => /^(\d+)(?:\/(tcp|udp|sctp))?$/.exec(p))
    .filter((m) => m !== null && (m[2] ?? 'tcp') === 'tcp')
    .map((m) => Number(m![1]));
  config.exposedPorts = [...new Set(ports)].sort((a, b) => a - b);
  config.labels = { ...(c.Labels ?? {}) };
  return config;
}

async function fileDigest(file: string): Promise<string | null> {
  const hash = createHash('sha256');
  try {
    await pipeline(createReadStream(file), hash);
  } catch {
    return null;
  }
  return `sha256:${hash.digest('hex')}`;
}

export async function pullImage(ref: string, destTree: string, opts: PullOptions = {}): Promise<PullResult> {
  const image = parseReference(ref);
  const name = formatReference(image);
  const log = opts.log ?? (() => undefined);
  const fail = (message: string) => new BuildFailure('CONTAINER_BUILD_FAILED', `pulling ${name}: ${message}`);
  const creds = opts.credentials?.[image.registry];
  const client = new RegistryClient(image, {
    ...(opts.insecureRegistries && { insecureRegistries: opts.insecureRegistries }),
    ...(creds && { credentials: creds }),
  });
  const [os, architecture, variant] = (opts.platform ?? 'linux/amd64').split('/');

  const top = await client.manifest(image.digest ?? image.tag!, ACCEPT);
  const parse = <T>(body: Buffer, what: string): T => {
    try {
      return JSON.parse(body.toString('utf8')) as T;
    } catch {
      throw fail(`${what} is not JSON`);
    }
  };
  const kind = (m: { body: Buffer; mediaType: string }) => {
    const declared = parse<{ mediaType?: string; manifests?: unknown }>(m.body, 'the manifest');
    return declared.mediaType ?? (declared.manifests ? MT.ociIndex : m.mediaType);
  };

  let manifest = top;
  const topKind = kind(top);
  if (topKind === MT.ociIndex || topKind === MT.dockerList) {
    const index = parse<ImageIndex>(top.body, 'the image index');
    const offered = index.manifests ?? [];
    const chosen = offered.find((m) => m.platform?.os === os && m.platform?.architecture === architecture && (!variant || m.platform?.variant === variant));
    if (!chosen) {
      throw fail(`no ${opts.platform ?? 'linux/amd64'} image; the index offers ${offered.map((m) => platformName(m.platform)).join(', ') || 'none'}`);
    }
    log(`${name}: ${platformName(chosen.platform)} manifest ${shortDigest(chosen.digest)}`);
    manifest = await client.manifest(chosen.digest, ACCEPT);
  }
  const mediaType = kind(manifest);
  if (mediaType !== MT.ociManifest && mediaType !== MT.dockerManifest) throw fail(`unsupported manifest type ${mediaType || '(none)'}`);
  const { config: configDesc, layers = [] } = parse<ImageManifest>(manifest.body, 'the image manifest');
  if (!configDesc) throw fail('the manifest names no config');
  const config = toContainerConfig(parse<ImageConfig>(await client.blob(configDesc), 'the image config'));
  for (const l of layers) if (!(l.mediaType in LAYER_COMPRESSION)) throw fail(`layer ${l.digest} has unsupported media type ${l.mediaType}`);

  const blobDir = opts.cacheDir ? path.join(opts.cacheDir, 'sha256') : await mkdtemp(path.join(tmpdir(), 'cella-oci-'));
  await mkdir(blobDir, { recursive: true });
  await mkdir(destTree, { recursive: true });
  let bytes = 0;
  try {
    for (const [i, layer] of layers.entries()) {
      const label = `layer ${i + 1}/${layers.length}`;
      const file = path.join(blobDir, layer.digest.replace(/^sha256:/, ''));
      if (opts.cacheDir && (await fileDigest(file)) === layer.digest) {
        log(`${label} ${shortDigest(layer.digest)} from cache`);
      } else {
        log(`pulling ${label} ${shortDigest(layer.digest)} ${(layer.size / MIB).toFixed(1)} MiB`);
        await client.download(layer, file);
      }
      bytes += await applyLayer(createReadStream(file), LAYER_COMPRESSION[layer.mediaType]!, destTree, {
        label: `${name} ${label}`,
        log,
        budget: (opts.maxBytes ?? Infinity) - bytes,
      });
      if (!opts.cacheDir) await rm(file, { force: true });
    }
  } finally {
    if (!opts.cacheDir) await rm(blobDir, { recursive: true, force: true });
  }
  log(`pulled ${name}: ${layers.length} layers, ${(bytes / MIB).toFixed(1)} MiB`);
  return { digest: top.digest, config, layers: layers.length, bytes };
}
