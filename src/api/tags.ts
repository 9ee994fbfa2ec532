/**
 * TagResource, UntagResource and ListTags on what takes tags: images and
 * network connectors of the server's account (the contract: not MicroVMs).
 * Each reads and writes a resource's tags in one transaction, so two
 * requests at once never lose one another's tags.
 */
import { type Arns, CellaError, checkTagKey, checkTags, type TaggableType } from '../contract/index.js';
import type { Store, Tx } from '../store/index.js';
import type { Operations } from './command.js';

const RESOURCE_TYPE: Record<TaggableType, string> = { 'microvm-image': 'MicrovmImage', 'network-connector': 'NetworkConnector' };

export class Tags {
  constructor(
    private readonly store: Store,
    private readonly arns: Arns,
  ) {}

  async list(arn: string): Promise<Record<string, string>> {
    return this.current(this.store, arn, this.arns.taggable(arn));
  }

  /** Adds `tags`, replacing the values of keys it has already. */
  async tag(arn: string, tags: Record<string, string>): Promise<void> {
    const resource = this.arns.taggable(arn);
    checkTags(tags, 'Tags');
    await this.store.tx(async (tx) => {
      const next = { ...(await this.current(tx, arn, resource)), ...tags };
      checkTags(next, `Resource ${arn}`);
      await tx.setTags(resource.type, resource.name, next);
    });
  }

  /** Removes the tags of `keys`; a key the resource does not have is no error. */
  async untag(arn: string, keys: string[]): Promise<void> {
    const resource = this.arns.taggable(arn);
    for (const k of keys) checkTagKey(k, 'tagKeys');
    await this.store.tx(async (tx) => {
      const next = { ...(await this.current(tx, arn, resource)) };
      for (const k of keys) delete next[k];
      await tx.setTags(resource.type, resource.name, next);
    });
  }

  private async current(db: Tx, arn: string, r: { type: TaggableType; name: string }): Promise<Record<string, string>> {
    const rec = r.type === 'microvm-image' ? await db.getImage(r.name) : await db.getConnector(r.name);
    if (!rec) throw new CellaError('NOT_FOUND', `${arn} not found`, { details: { resourceId: arn, resourceType: RESOURCE_TYPE[r.type] } });
    return rec.tags;
  }
}

export function tagOperations(tags: Tags): Operations<'TagResource' | 'UntagResource' | 'ListTags'> {
  return {
    TagResource: async ({ params, body }) => {
      await tags.tag(params.Resource, body.Tags);
      return { empty: true };
    },
    UntagResource: async ({ params, query }) => {
      await tags.untag(params.Resource, query.tagKeys);
      return { empty: true };
    },
    ListTags: async ({ params }) => ({ json: { Tags: await tags.list(params.Resource) } }),
  };
}
