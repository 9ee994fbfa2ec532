/**
 * `cella keys`: the SigV4 access keys the AWS SDK signs with. Through the
 * API like every client command (the server owns its data directory, and a
 * revoked key must stop working at once), authenticated with the API key.
 */
import { table, type Command } from './args.js';
import { at, printJson, remote, time } from './remote.js';

const create = remote(
  {
    usage: 'Usage: cella keys create\n\nCreates an access key and prints it with its secret, which is shown this once.\n',
    args: { min: 0, max: 0, names: '' },
  },
  async (_p, c, io, json) => {
    const k = await c.createAccessKey();
    if (json) printJson(io, k);
    else {
      io.out(
        `A new access key. Save the secret: it is shown once.\n  export AWS_ACCESS_KEY_ID=${k.accessKeyId}\n  export AWS_SECRET_ACCESS_KEY=${k.secretAccessKey}\n`,
      );
    }
    return 0;
  },
);

const ls = remote(
  {
    usage: "Usage: cella keys ls\n\nLists the stored access keys, oldest first (not their secrets, nor a key given in the server's environment).\n",
    args: { min: 0, max: 0, names: '' },
  },
  async (_p, c, io, json) => {
    const items = [];
    for await (const k of c.listAllAccessKeys()) items.push(k);
    if (json) printJson(io, { items });
    else
      io.out(
        table(
          ['ACCESS KEY ID', 'CREATED'],
          items.map((k) => [k.accessKeyId, time(k.createdAt) ?? '']),
        ),
      );
    return 0;
  },
);

const revoke = remote(
  {
    usage: 'Usage: cella keys revoke ACCESS_KEY_ID\n\nRevokes an access key: requests signed with it are refused from then on.\n',
    args: { min: 1, max: 1, names: 'ACCESS_KEY_ID' },
  },
  async (p, c, io, json) => {
    await c.deleteAccessKey(at(p, 0));
    if (json) printJson(io, { accessKeyId: at(p, 0), revoked: true });
    else io.out(`revoked ${at(p, 0)}\n`);
    return 0;
  },
);

export const keysCommands: Record<string, Command> = { create, ls, revoke };

export const KEYS_USAGE = `Usage: cella keys <subcommand> [options]

SigV4 access keys, for the AWS SDK and CLI (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).

Subcommands:
  create                   create an access key; prints its secret once
  ls                       list the access keys
  revoke ACCESS_KEY_ID     revoke one

\`cella keys <subcommand> --help\` for its options.
`;
