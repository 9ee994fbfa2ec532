/**
 * The operations on the server and the account as a whole: what the server
 * is (GetServerInfo), the usage of every MicroVM, and the SigV4 access keys.
 */
import { sumUsage, usageOf } from '../usage/index.js';
import type { ApiContext, Operations } from './command.js';
import { offsetPage } from './cursor.js';
import { epochSeconds } from './views.js';

type AccountOperation = 'GetServerInfo' | 'GetUsage' | 'CreateAccessKey' | 'ListAccessKeys' | 'DeleteAccessKey';

export function accountOperations(ctx: ApiContext): Operations<AccountOperation> {
  return {
    GetServerInfo: async () => ({ json: { version: ctx.version, domain: ctx.domain, accountId: ctx.arns.accountId, ...ctx.info } }),
    GetUsage: async () => {
      const now = Date.now();
      const all = (await ctx.store.listVms({ limit: Number.MAX_SAFE_INTEGER })).map((v) => usageOf(v, now));
      return { json: { total: sumUsage(all), microvms: all } };
    },
    CreateAccessKey: async () => {
      const k = await ctx.accessKeys.create();
      return { json: { accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey, createdAt: epochSeconds(k.createdAt) } };
    },
    ListAccessKeys: async ({ op, query, after }) => ({
      json: offsetPage(op, after, query.maxResults ?? 50, await ctx.accessKeys.list(), (k) => ({
        accessKeyId: k.accessKeyId,
        createdAt: epochSeconds(k.createdAt),
      })),
    }),
    DeleteAccessKey: async ({ params }) => {
      await ctx.accessKeys.revoke(params.accessKeyId);
      return { empty: true };
    },
  };
}
