/** Cella extension: the egress connector operations' shapes. */
import { Type, type Static } from '@sinclair/typebox';
import { Closed, Str } from './schema-parts.js';
import { Time } from './schemas.js';

/** Cella extension: a customer egress connector, an allowlist of CIDRs and domain names (`*.example.com` for sub-domains). */
export const CreateConnectorRequest = Type.Object(
  {
    name: Str(1, 64, { pattern: '^[a-zA-Z0-9_-]+$' }),
    description: Type.Optional(Str(0, 256)),
    egress: Type.Object(
      {
        cidrs: Type.Optional(Type.Array(Str(7, 18), { maxItems: 64 })),
        domains: Type.Optional(Type.Array(Str(1, 255), { maxItems: 64 })),
      },
      Closed,
    ),
  },
  Closed,
);
export type CreateConnectorRequest = Static<typeof CreateConnectorRequest>;
export const NetworkConnector = Type.Object({
  networkConnectorArn: Type.String(),
  name: Type.String(),
  state: Type.Literal('ACTIVE'),
  description: Type.Optional(Type.String()),
  egress: Type.Object({ cidrs: Type.Array(Type.String()), domains: Type.Array(Type.String()) }),
  createdAt: Time,
});
export type NetworkConnector = Static<typeof NetworkConnector>;
export const ListConnectorsResponse = Type.Object({ items: Type.Array(NetworkConnector), nextToken: Type.Optional(Type.String()) });
