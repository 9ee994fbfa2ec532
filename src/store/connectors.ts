/** The `network_connectors` table: customer egress connectors (Cella extension). */
import { int, json, nullable, text, type Table } from './columns.js';

/** A customer egress connector: what a VM given it may reach. */
export interface ConnectorRecord {
  name: string;
  arn: string;
  description: string | null;
  cidrs: string[];
  domains: string[];
  /** Written at creation and by setTags only. */
  tags: Record<string, string>;
  createdAt: number;
}

export const CONNECTORS: Table<ConnectorRecord> = {
  name: 'network_connectors',
  key: ['name'],
  columns: {
    name: text('name'),
    arn: text('arn'),
    description: nullable(text('description')),
    cidrs: json('cidrs'),
    domains: json('domains'),
    tags: json('tags'),
    createdAt: int('created_at'),
  },
};
