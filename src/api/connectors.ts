/** The network connector operations: customer egress connectors, created, listed, described and deleted through Connectors. */
import type { ApiContext, Operations } from './command.js';
import { offsetPage } from './cursor.js';
import { connectorView } from './views.js';

type ConnectorOperation = 'CreateNetworkConnector' | 'ListNetworkConnectors' | 'GetNetworkConnector' | 'DeleteNetworkConnector';

export function connectorOperations(ctx: ApiContext): Operations<ConnectorOperation> {
  return {
    CreateNetworkConnector: async ({ body }) => ({ json: connectorView(await ctx.connectors.create(body)) }),
    ListNetworkConnectors: async ({ op, query, after }) => ({
      json: offsetPage(op, after, query.maxResults ?? 50, await ctx.store.listConnectors(), connectorView),
    }),
    GetNetworkConnector: async ({ params }) => ({ json: connectorView(await ctx.connectors.require(params.connectorIdentifier)) }),
    DeleteNetworkConnector: async ({ params }) => {
      await ctx.connectors.delete(params.connectorIdentifier);
      return { empty: true };
    },
  };
}
