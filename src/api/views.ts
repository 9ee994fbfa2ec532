/**
 * The API's response views: stored records as the contract's shapes, member
 * for member as the AWS SDK's model reads them. Times go out as epoch
 * seconds (JSON numbers), restJson1's default timestamp format; an absent
 * optional member is left out, never sent as null.
 */
import type {
  BuildSummary,
  ImageVersion,
  ImageVersionStarted,
  ManagedImage,
  ManagedImageVersion,
  Microvm,
  MicrovmImage,
  MicrovmImageSummary,
  MicrovmSummary,
  NetworkConnector,
} from '../contract/index.js';
import type { LatestVersions, StartedVersion } from '../images/index.js';
import type { BuildRecord, ConnectorRecord, ImageRecord, ImageVersionRecord, VmRecord } from '../store/index.js';

/** Milliseconds since the epoch (how the store keeps time) as the wire's epoch seconds. */
export const epochSeconds = (ms: number): number => ms / 1000;

const tagsOf = (tags: Record<string, string>): { tags?: Record<string, string> } => (Object.keys(tags).length ? { tags } : {});

export function microvmView(v: VmRecord, domain: string): Microvm {
  return {
    microvmId: v.id,
    state: v.state,
    endpoint: `${v.id}.${domain}`,
    imageArn: v.imageArn,
    imageVersion: v.imageVersion,
    ...(v.spec.executionRoleArn ? { executionRoleArn: v.spec.executionRoleArn } : {}),
    ...(v.spec.idlePolicy ? { idlePolicy: v.spec.idlePolicy } : {}),
    maximumDurationInSeconds: v.spec.maximumDurationInSeconds,
    startedAt: epochSeconds(v.createdAt),
    ...(v.terminatedAt !== null ? { terminatedAt: epochSeconds(v.terminatedAt) } : {}),
    ...(v.stateReason ? { stateReason: v.stateReason } : {}),
    ingressNetworkConnectors: v.spec.ingressNetworkConnectors,
    egressNetworkConnectors: v.spec.egressNetworkConnectors,
  };
}

export function microvmSummary(v: VmRecord): MicrovmSummary {
  return { microvmId: v.id, state: v.state, imageArn: v.imageArn, imageVersion: v.imageVersion, startedAt: epochSeconds(v.createdAt) };
}

export function imageView(i: ImageRecord, latest: LatestVersions): MicrovmImage {
  return { ...imageSummary(i, latest), ...(i.updatedAt !== null ? { updatedAt: epochSeconds(i.updatedAt) } : {}), ...tagsOf(i.tags) };
}

/** What ListMicrovmImages holds per image: no tags, no updatedAt. */
export function imageSummary(i: ImageRecord, latest: LatestVersions): MicrovmImageSummary {
  return { imageArn: i.arn, name: i.name, state: i.state, ...latest, createdAt: epochSeconds(i.createdAt) };
}

/** Create/Update's answer: the image, the new version's number and its request as sent. */
export function startedView(s: StartedVersion, latest: LatestVersions): ImageVersionStarted {
  return {
    ...s.version.request,
    imageArn: s.image.arn,
    name: s.image.name,
    state: s.image.state,
    ...latest,
    imageVersion: s.version.version,
    buildId: s.build.buildId,
    createdAt: epochSeconds(s.image.createdAt),
    ...(s.image.updatedAt !== null ? { updatedAt: epochSeconds(s.image.updatedAt) } : {}),
    ...tagsOf(s.image.tags),
  };
}

export function versionView(img: ImageRecord, v: ImageVersionRecord): ImageVersion {
  return {
    ...v.request,
    imageArn: img.arn,
    imageVersion: v.version,
    state: v.state,
    status: v.status,
    createdAt: epochSeconds(v.createdAt),
    ...(v.updatedAt !== null ? { updatedAt: epochSeconds(v.updatedAt) } : {}),
    ...(v.stateReason ? { stateReason: v.stateReason } : {}),
    ...tagsOf(img.tags),
  };
}

/** `chipset` names the accelerator the build ran on (KVM, TCG): Cella's hosts are no Graviton. */
export function buildView(img: ImageRecord, b: BuildRecord, chipset: string): BuildSummary {
  return {
    imageArn: img.arn,
    imageVersion: b.version,
    buildId: b.buildId,
    buildState: b.state,
    architecture: 'X86_64',
    chipset,
    chipsetGeneration: '1',
    ...(b.stateReason ? { stateReason: b.stateReason } : {}),
    ...(b.message ? { stateReasonMessage: b.message } : {}),
    createdAt: epochSeconds(b.createdAt),
  };
}

/** A managed base as setup recorded it (its `createdAt` an ISO-8601 string). */
export interface ManagedBase {
  name: string;
  description?: string;
  createdAt: string;
}

export function managedImageView(arn: string, b: ManagedBase): ManagedImage {
  return { imageArn: arn, createdAt: epochSeconds(Date.parse(b.createdAt)), ...(b.description ? { description: b.description } : {}) };
}

export function managedVersionView(arn: string, version: string, b: ManagedBase): ManagedImageVersion {
  return { imageArn: arn, imageVersion: version, status: 'AVAILABLE', createdAt: epochSeconds(Date.parse(b.createdAt)) };
}

export function connectorView(c: ConnectorRecord): NetworkConnector {
  return {
    networkConnectorArn: c.arn,
    name: c.name,
    state: 'ACTIVE',
    ...(c.description ? { description: c.description } : {}),
    egress: { cidrs: c.cidrs, domains: c.domains },
    createdAt: epochSeconds(c.createdAt),
  };
}
