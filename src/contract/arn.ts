/**
 * Every ARN Cella issues or accepts, built and parsed in one place: images
 * (customer and managed), network connectors (managed and customer).
 */
import { CellaError } from './errors.js';

const IMAGE_PREFIX = 'arn:cella:lambda:local:000000000000:microvm-image:';
const MANAGED_IMAGE_PREFIX = 'arn:cella:lambda:local:aws:microvm-image:';
const IMAGE = /^arn:[a-z-]+:lambda:[^:]*:[^:]*:microvm-image:([a-zA-Z0-9_-]+)$/;
const MANAGED_IMAGE = /^arn:[a-z-]+:lambda:[^:]*:aws:microvm-image:([a-zA-Z0-9_-]+)$/;
const MANAGED_CONNECTOR = /^arn:[a-z-]+:lambda:[^:]*:aws:network-connector:aws-network-connector:([A-Z_]+)$/;
const CUSTOMER_CONNECTOR = /^arn:[a-z-]+:lambda:[^:]*:[0-9]{12}:network-connector:([a-zA-Z0-9_-]{1,64})$/;

export function imageArn(name: string): string {
  return IMAGE_PREFIX + name;
}

export function managedImageArn(name: string): string {
  return MANAGED_IMAGE_PREFIX + name;
}

/** Accepts an image name or its ARN; returns the name. */
export function imageNameOf(identifier: string): string {
  const m = IMAGE.exec(identifier);
  if (m) return m[1] as string;
  if (/^[a-zA-Z0-9_-]{1,64}$/.test(identifier)) return identifier;
  throw new CellaError('INVALID_ARGUMENT', `imageIdentifier "${identifier}" is neither an image name nor an image ARN`);
}

/** The name in a managed image's ARN (`arn:…:aws:microvm-image:NAME`), or undefined for anything else. */
export function managedImageNameOf(identifier: string): string | undefined {
  return MANAGED_IMAGE.exec(identifier)?.[1];
}

/** The ARN of a platform-managed connector (HTTP_INGRESS, SHELL_INGRESS, ALL_INGRESS, NO_INGRESS, INTERNET_EGRESS). */
export function managedConnectorArn(name: string): string {
  return `arn:aws:lambda:local:aws:network-connector:aws-network-connector:${name}`;
}

/** The ARN of a customer egress connector (a Cella extension). */
export function customerConnectorArn(name: string): string {
  return `arn:aws:lambda:local:000000000000:network-connector:${name}`;
}

/** The name of a managed connector's ARN, or undefined. */
export function managedConnectorNameOf(arn: string): string | undefined {
  return MANAGED_CONNECTOR.exec(arn)?.[1];
}

/** The name of a customer connector's ARN, or undefined. */
export function customerConnectorNameOf(arn: string): string | undefined {
  return CUSTOMER_CONNECTOR.exec(arn)?.[1];
}

/** The resource's own name, the last field of an ARN (a name that is no ARN is returned as it is): for display. */
export function arnName(arn: string): string {
  return arn.startsWith('arn:') ? arn.slice(arn.lastIndexOf(':') + 1) : arn;
}
