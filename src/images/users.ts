/**
 * USER as Docker reads it: `name`, `uid`, `name:group` or `uid:gid`, looked
 * up in the image's own /etc/passwd and /etc/group (never the host's).
 */
import { BuildFailure } from '../contract/index.js';

function lookup(table: string, name: string, field: number): number | undefined {
  for (const row of table.split('\n')) {
    const cols = row.split(':');
    if (cols[0] === name && cols[field] !== undefined && /^\d+$/.test(cols[field])) return Number(cols[field]);
  }
  return undefined;
}

/** `line` names the Dockerfile line in errors (0: the final USER). */
export function resolveUser(spec: string, passwd: string, group: string, line: number): { uid: number; gid: number } {
  if (!spec) return { uid: 0, gid: 0 };
  const where = line > 0 ? `Dockerfile line ${line}: ` : '';
  const [user = '', grp] = spec.split(':', 2);
  const uid = /^\d+$/.test(user) ? Number(user) : lookup(passwd, user, 2);
  if (uid === undefined) throw new BuildFailure('CONTAINER_BUILD_FAILED', `${where}user ${user} is not in the image's /etc/passwd`);
  let gid: number | undefined;
  if (grp !== undefined && grp !== '') {
    gid = /^\d+$/.test(grp) ? Number(grp) : lookup(group, grp, 2);
    if (gid === undefined) throw new BuildFailure('CONTAINER_BUILD_FAILED', `${where}group ${grp} is not in the image's /etc/group`);
  } else {
    // The user's primary group, as in /etc/passwd; a bare uid not listed there runs with gid = uid's row or 0.
    const row = passwd.split('\n').find((r) => (/^\d+$/.test(user) ? r.split(':')[2] === user : r.split(':')[0] === user));
    const g = row?.split(':')[3];
    gid = g !== undefined && /^\d+$/.test(g) ? Number(g) : 0;
  }
  return { uid, gid };
}
