/**
 * Network connectors: the contract's managed ones (HTTP_INGRESS,
 * SHELL_INGRESS, ALL_INGRESS, NO_INGRESS, INTERNET_EGRESS) and, beyond AWS,
 * customer egress connectors holding an allowlist of CIDRs and domain names.
 * At RunMicrovm they are resolved once into the VM's network policy, which
 * is stored with the VM: fixed for its lifetime, whatever happens to the
 * connectors later.
 */
import { isIP } from 'node:net';
import { type Arns, CellaError } from '../contract/index.js';
import type { NetworkPolicy } from '../net/index.js';
import type { ConnectorRecord, Store, Tx } from '../store/index.js';

export const INGRESS = ['ALL_INGRESS', 'HTTP_INGRESS', 'SHELL_INGRESS', 'NO_INGRESS'] as const;
export const EGRESS = ['INTERNET_EGRESS'] as const;
export const MAX_ALLOW_ENTRIES = 64;

/** `10.0.0.0/8`, `203.0.113.7` (a /32): IPv4 only, the prefix within 0–32 and no host bits set. */
export function checkCidr(cidr: string): string {
  const [addr = '', bits = '32', extra] = cidr.split('/');
  const n = Number(bits);
  if (extra !== undefined || isIP(addr) !== 4 || !/^\d{1,2}$/.test(bits) || n > 32) {
    throw new CellaError('INVALID_ARGUMENT', `egress.cidrs: ${cidr} is not an IPv4 CIDR`);
  }
  const value = addr.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  if (n < 32 && value % 2 ** (32 - n) !== 0) throw new CellaError('INVALID_ARGUMENT', `egress.cidrs: ${cidr} has host bits set`);
  return `${addr}/${n}`;
}

/** `example.com` (exactly) or `*.example.com` (its sub-domains); lower-cased. */
export function checkDomain(domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  const bare = d.startsWith('*.') ? d.slice(2) : d;
  const label = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
  if (bare.length > 253 || !bare.includes('.') || !bare.split('.').every((l) => label.test(l))) {
    throw new CellaError('INVALID_ARGUMENT', `egress.domains: ${domain} is not a domain name (wildcards: *.example.com)`);
  }
  return d;
}

export interface ConnectorInput {
  name: string;
  description?: string;
  egress: { cidrs?: string[]; domains?: string[] };
}

export class Connectors {
  constructor(
    private readonly store: Store,
    /** The server's ARNs: customer connectors are named under its account. */
    readonly arns: Arns,
  ) {}

  /** One transaction from the check of the name to the write: two creates of one name never both pass. */
  create(req: ConnectorInput): Promise<ConnectorRecord> {
    return this.store.tx(async (tx) => {
      if (await tx.getConnector(req.name)) {
        throw new CellaError('INVALID_ARGUMENT', `network connector ${req.name} already exists`, {
          details: { resourceId: req.name, resourceType: 'NetworkConnector' },
        });
      }
      const cidrs = [...new Set((req.egress.cidrs ?? []).map(checkCidr))];
      const domains = [...new Set((req.egress.domains ?? []).map(checkDomain))];
      if (cidrs.length + domains.length === 0) throw new CellaError('INVALID_ARGUMENT', 'egress needs at least one CIDR or domain');
      const rec: ConnectorRecord = {
        name: req.name,
        arn: this.arns.customerConnector(req.name),
        description: req.description ?? null,
        cidrs,
        domains,
        tags: {},
        createdAt: Date.now(),
      };
      await tx.putConnector(rec);
      return rec;
    });
  }

  /** `db`: the transaction the read belongs to, if any. */
  async require(identifier: string, db: Tx = this.store): Promise<ConnectorRecord> {
    const name = this.arns.customerConnectorName(identifier, 'connectorIdentifier') ?? identifier;
    const rec = await db.getConnector(name);
    if (!rec)
      throw new CellaError('NOT_FOUND', `network connector ${identifier} not found`, { details: { resourceId: identifier, resourceType: 'NetworkConnector' } });
    return rec;
  }

  /** Idempotent. Live VMs keep the policy they were given, so deleting one in use changes nothing for them. */
  async delete(identifier: string): Promise<void> {
    const name = this.arns.customerConnectorName(identifier, 'connectorIdentifier') ?? identifier;
    await this.store.deleteConnector(name);
  }

  /**
   * Refuses an endpoint token its VM's ingress (`ingress`: the connectors it
   * was launched with) does not serve: a shell token needs SHELL_INGRESS or
   * ALL_INGRESS; an HTTP token any ingress but NO_INGRESS alone.
   */
  checkTokenIngress(vmId: string, ingress: string[], kind: 'http' | 'shell'): void {
    const names = ingress.map((arn) => this.arns.managedConnectorName(arn));
    if (kind === 'shell' && !names.includes('SHELL_INGRESS') && !names.includes('ALL_INGRESS')) {
      throw new CellaError('INVALID_ARGUMENT', `MicroVM ${vmId} was not launched with the SHELL_INGRESS connector`);
    }
    if (kind === 'http' && names.length === 1 && names[0] === 'NO_INGRESS') {
      throw new CellaError('INVALID_ARGUMENT', `MicroVM ${vmId} was launched with NO_INGRESS: it has no endpoint`);
    }
  }

  /**
   * Checks a RunMicrovm's connectors (defaults: HTTP_INGRESS, INTERNET_EGRESS,
   * as in the contract) and resolves them into the VM's network policy.
   * `hookPort` stays reachable whatever the ingress: cellad calls the app's hooks.
   * `db`: the transaction the reads belong to, if any.
   */
  async resolve(
    ingressGiven: string[] | undefined,
    egressGiven: string[] | undefined,
    hookPort: number | undefined,
    db: Tx = this.store,
  ): Promise<{ ingress: string[]; egress: string[]; policy: NetworkPolicy }> {
    const ingress = ingressGiven ?? [this.arns.managedConnector('HTTP_INGRESS')];
    const egress = egressGiven ?? [this.arns.managedConnector('INTERNET_EGRESS')];
    const ingressNames = ingress.map((arn) => {
      const name = this.arns.managedConnectorName(arn, 'ingressNetworkConnectors:');
      if (!name) throw new CellaError('INVALID_ARGUMENT', `ingressNetworkConnectors: Malformed network connector ARN ${arn}`);
      if (!(INGRESS as readonly string[]).includes(name)) {
        throw new CellaError('NOT_FOUND', `ingressNetworkConnectors: network connector ${name} does not exist`, {
          details: { resourceId: arn, resourceType: 'NetworkConnector' },
        });
      }
      return name;
    });
    let internet = false;
    const cidrs = new Set<string>();
    const domains = new Set<string>();
    for (const arn of egress) {
      const name = this.arns.managedConnectorName(arn, 'egressNetworkConnectors:');
      if (name !== undefined) {
        if (!(EGRESS as readonly string[]).includes(name)) {
          throw new CellaError('NOT_FOUND', `egressNetworkConnectors: network connector ${name} does not exist`, {
            details: { resourceId: arn, resourceType: 'NetworkConnector' },
          });
        }
        internet = true;
        continue;
      }
      if (this.arns.customerConnectorName(arn, 'egressNetworkConnectors:') === undefined)
        throw new CellaError('INVALID_ARGUMENT', `egressNetworkConnectors: Malformed network connector ARN ${arn}`);
      const c = await this.require(arn, db);
      for (const x of c.cidrs) cidrs.add(x);
      for (const x of c.domains) domains.add(x);
    }
    const httpIngress = ingressNames.some((n) => n === 'HTTP_INGRESS' || n === 'ALL_INGRESS');
    const policy: NetworkPolicy = {
      ingress: httpIngress ? 'all' : hookPort !== undefined ? [hookPort] : [],
      egress: internet ? 'internet' : cidrs.size + domains.size > 0 ? { cidrs: [...cidrs], domains: [...domains] } : 'none',
    };
    return { ingress, egress, policy };
  }
}
