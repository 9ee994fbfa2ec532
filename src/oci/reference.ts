import { CellaError } from '../contract/index.js';

/** An image reference split the way Docker does: `[registry/]repository[:tag][@digest]`. */
export interface ImageReference {
  /** `host[:port]`; Docker Hub is `registry-1.docker.io`. */
  registry: string;
  repository: string;
  /** `latest` when neither tag nor digest is given. */
  tag?: string;
  /** `sha256:<64 hex>`; when present it is what gets pulled. */
  digest?: string;
}

const DOCKER_HUB = 'registry-1.docker.io';
const HUB_ALIASES = new Set(['docker.io', 'index.docker.io', DOCKER_HUB]);

// The grammar of distribution's reference package.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

export function parseReference(ref: string): ImageReference {
  const invalid = (why: string) => new CellaError('INVALID_ARGUMENT', `invalid image reference "${ref}": ${why}`);
  let rest = ref.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid('the digest must be sha256:<64 lowercase hex digits>');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(`bad tag "${tag}"`);
  }
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  // Like Docker: the first component names a registry only if it looks like a host.
  const hasHost = first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost');
  let registry = hasHost ? first : DOCKER_HUB;
  let repository = hasHost ? rest.slice(slash + 1) : rest;
  if (hasHost && !HOST.test(registry)) throw invalid(`bad registry host "${registry}"`);
  if (HUB_ALIASES.has(registry)) {
    registry = DOCKER_HUB;
    if (!repository.includes('/')) repository = `library/${repository}`;
  }
  if (repository === '' || !repository.split('/').every((c) => COMPONENT.test(c))) {
    throw invalid('the repository must be lowercase path components ([a-z0-9] separated by . _ __ or -)');
  }
  if (registry.length + 1 + repository.length > 255) throw invalid('the name is longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, repository, ...(tag !== undefined && { tag }), ...(digest !== undefined && { digest }) };
}

export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}
