/**
 * Every ARN Cella issues or accepts, built and parsed in one place, in the
 * contract's one scheme: `arn:aws:lambda:<region>:<account>:<resource>`.
 * Customer images and connectors are under the server's account, managed
 * images and connectors under `aws`. Region and account are server settings
 * (`Arns`); an ARN of another region or account names nothing here and is
 * refused as invalid, never looked up under another name.
 */
import { CellaError } from './errors.js';

export const DEFAULT_REGION = 'us-east-1';
export const DEFAULT_ACCOUNT_ID = '000000000000';
/** The account of what the platform manages: base images and the managed connectors. */
export const MANAGED_ACCOUNT = 'aws';

const REGION = /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/;
const ACCOUNT = /^\d{12}$/;
const NAME = /^[a-zA-Z0-9_-]{1,64}$/;
/** Any Lambda ARN: partition, region, account, and the resource (`type:name`, the name may hold colons). */
const LAMBDA_ARN = /^arn:([^:]+):lambda:([^:]*):([^:]*):([^:]+):(.+)$/;

/** What an ARN names: a resource type and its name under an account. */
export interface ParsedArn {
  account: string;
  type: string;
  name: string;
}

/** The kinds of resource that take tags (the contract: not MicroVMs). */
export type TaggableType = 'microvm-image' | 'network-connector';

export class Arns {
  constructor(
    readonly region: string = DEFAULT_REGION,
    readonly accountId: string = DEFAULT_ACCOUNT_ID,
  ) {
    if (!REGION.test(region)) throw new CellaError('INVALID_ARGUMENT', `region "${region}" is not a region name such as ${DEFAULT_REGION}`);
    if (!ACCOUNT.test(accountId)) throw new CellaError('INVALID_ARGUMENT', `account id "${accountId}" is not 12 digits`);
  }

  /** What every ARN of this server starts with, for `account`. */
  prefix(account: string = this.accountId): string {
    return `arn:aws:lambda:${this.region}:${account}:`;
  }

  image(name: string): string {
    return `${this.prefix()}microvm-image:${name}`;
  }

  managedImage(name: string): string {
    return `${this.prefix(MANAGED_ACCOUNT)}microvm-image:${name}`;
  }

  /** A platform-managed connector (HTTP_INGRESS, SHELL_INGRESS, ALL_INGRESS, NO_INGRESS, INTERNET_EGRESS). */
  managedConnector(name: string): string {
    return `${this.prefix(MANAGED_ACCOUNT)}network-connector:aws-network-connector:${name}`;
  }

  /** A customer egress connector (a Cella extension). */
  customerConnector(name: string): string {
    return `${this.prefix()}network-connector:${name}`;
  }

  /**
   * A Lambda ARN of this server's region, under its account or the managed
   * one; undefined for a string that is no Lambda ARN. A Lambda ARN of
   * another partition, region or account is refused: `what` names the field.
   */
  parse(arn: string, what: string): ParsedArn | undefined {
    const m = LAMBDA_ARN.exec(arn);
    if (!m) return undefined;
    const [, partition, region, account, type, name] = m as unknown as [string, string, string, string, string, string];
    if (partition !== 'aws' || region !== this.region || (account !== this.accountId && account !== MANAGED_ACCOUNT)) {
      throw new CellaError(
        'INVALID_ARGUMENT',
        `${what} ${arn} is not of this server: its ARNs are arn:aws:lambda:${this.region}:${this.accountId}:... (and ...:aws:... for managed resources)`,
      );
    }
    return { account, type, name };
  }

  /** Accepts an image name or its ARN; returns the name. */
  imageName(identifier: string): string {
    const arn = this.parse(identifier, 'imageIdentifier');
    if (arn?.type === 'microvm-image' && arn.account === this.accountId && NAME.test(arn.name)) return arn.name;
    if (!arn && NAME.test(identifier)) return identifier;
    throw new CellaError('INVALID_ARGUMENT', `imageIdentifier "${identifier}" is neither an image name nor an image ARN`);
  }

  /** The name in a managed image's ARN, or undefined for anything else (another region's or account's is refused). */
  managedImageName(identifier: string, what = 'imageIdentifier'): string | undefined {
    const arn = this.parse(identifier, what);
    return arn?.type === 'microvm-image' && arn.account === MANAGED_ACCOUNT ? arn.name : undefined;
  }

  /** The name of a managed connector's ARN, or undefined. */
  managedConnectorName(arn: string, what = 'network connector'): string | undefined {
    const a = this.parse(arn, what);
    const m = a?.type === 'network-connector' && a.account === MANAGED_ACCOUNT ? /^aws-network-connector:([A-Z_]+)$/.exec(a.name) : null;
    return m?.[1];
  }

  /** The name of a customer connector's ARN, or undefined. */
  customerConnectorName(arn: string, what = 'network connector'): string | undefined {
    const a = this.parse(arn, what);
    return a?.type === 'network-connector' && a.account === this.accountId && NAME.test(a.name) ? a.name : undefined;
  }

  /** A tag API's `Resource`: an image or connector ARN of this account; anything else is refused. */
  taggable(arn: string): { type: TaggableType; name: string } {
    const a = this.parse(arn, 'Resource');
    if (a && a.account === this.accountId && (a.type === 'microvm-image' || a.type === 'network-connector') && NAME.test(a.name))
      return { type: a.type, name: a.name };
    throw new CellaError(
      'INVALID_ARGUMENT',
      `Resource ${arn} is not the ARN of a taggable resource (a MicroVM image or network connector of account ${this.accountId})`,
    );
  }
}

/** The resource's own name, the last field of an ARN (a name that is no ARN is returned as it is): for display. */
export function arnName(arn: string): string {
  return arn.startsWith('arn:') ? arn.slice(arn.lastIndexOf(':') + 1) : arn;
}
