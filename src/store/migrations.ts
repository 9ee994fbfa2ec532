/** The SQLite schema, as the steps that built it; existing data directories move up through them at open. */
import type Database from 'better-sqlite3';

/**
 * `column` with the ARNs of before the contract's scheme rewritten in place
 * (as text: JSON columns hold them as plain strings): images were
 * `arn:cella:lambda:local:…`, connectors `arn:aws:lambda:local:…`; both
 * become the default region's, which the data directory then keeps.
 */
const arnsMoved = (column: string): string =>
  `replace(replace(${column}, 'arn:cella:lambda:local:', 'arn:aws:lambda:us-east-1:'), 'arn:aws:lambda:local:', 'arn:aws:lambda:us-east-1:')`;

/** Each entry moves the schema one version up; `user_version` records how far a database is. */
const MIGRATIONS: string[] = [
  `CREATE TABLE vms (
     id TEXT PRIMARY KEY,
     image_name TEXT NOT NULL,
     image_arn TEXT NOT NULL,
     image_version TEXT NOT NULL,
     state TEXT NOT NULL,
     generation INTEGER NOT NULL,
     state_reason TEXT,
     spec TEXT NOT NULL,
     memory_mib INTEGER NOT NULL,
     vcpus INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     terminated_at INTEGER,
     slot INTEGER,
     pid INTEGER,
     pid_start_time TEXT,
     idle_deadline INTEGER,
     suspended_deadline INTEGER,
     max_deadline INTEGER NOT NULL,
     state_since INTEGER NOT NULL,
     running_ms INTEGER NOT NULL DEFAULT 0,
     bytes_written INTEGER NOT NULL DEFAULT 0,
     bytes_read INTEGER NOT NULL DEFAULT 0,
     storage_byte_ms REAL NOT NULL DEFAULT 0,
     checkpoint_bytes INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX vms_order ON vms (created_at, id);
   CREATE INDEX vms_live ON vms (state) WHERE state <> 'TERMINATED';
   CREATE TABLE idempotency (
     scope TEXT NOT NULL, client_token TEXT NOT NULL, hash TEXT NOT NULL, resource_id TEXT NOT NULL, created_at INTEGER NOT NULL,
     PRIMARY KEY (scope, client_token)
   );
   CREATE TABLE tokens (
     jti TEXT PRIMARY KEY, vm_id TEXT NOT NULL, kind TEXT NOT NULL, ports TEXT NOT NULL, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL
   );
   CREATE INDEX tokens_vm ON tokens (vm_id);
   CREATE TABLE images (
     name TEXT PRIMARY KEY, arn TEXT NOT NULL, version TEXT NOT NULL, dir TEXT NOT NULL, state TEXT NOT NULL,
     state_reason TEXT, config TEXT NOT NULL, created_at INTEGER NOT NULL
   );
   CREATE TABLE api_keys (hash TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
   CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);`,
  // Images get versions and builds; a registered image becomes version 1.0 of its name.
  `CREATE TABLE microvm_images (
     name TEXT PRIMARY KEY, arn TEXT NOT NULL, state TEXT NOT NULL, tags TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER
   );
   CREATE TABLE image_versions (
     image_name TEXT NOT NULL, version TEXT NOT NULL, major INTEGER NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, state_reason TEXT,
     request TEXT NOT NULL, runtime TEXT, dir TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER,
     PRIMARY KEY (image_name, version)
   );
   CREATE TABLE image_builds (
     build_id TEXT PRIMARY KEY, image_name TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL, state_reason TEXT, message TEXT,
     snapshot_build TEXT, created_at INTEGER NOT NULL, updated_at INTEGER
   );
   CREATE INDEX image_builds_version ON image_builds (image_name, version, created_at);
   INSERT INTO microvm_images SELECT name, arn, CASE state WHEN 'CREATED' THEN 'CREATED' ELSE 'CREATE_FAILED' END, '{}', created_at, NULL FROM images;
   INSERT INTO image_versions SELECT name, version, 1, CASE state WHEN 'CREATED' THEN 'SUCCESSFUL' ELSE 'FAILED' END, 'ACTIVE', state_reason,
     '{}', CASE state WHEN 'CREATED' THEN config END, dir, created_at, NULL FROM images;
   DROP TABLE images;`,
  `CREATE TABLE network_connectors (
     name TEXT PRIMARY KEY, arn TEXT NOT NULL, description TEXT, cidrs TEXT NOT NULL, domains TEXT NOT NULL, created_at INTEGER NOT NULL
   );`,
  // SigV4 access keys: the secret sealed under a key in `secrets` (src/auth/access-keys.ts).
  `CREATE TABLE access_keys (id TEXT PRIMARY KEY, sealed_secret BLOB NOT NULL, created_at INTEGER NOT NULL);`,
  // ARNs in the contract's scheme (src/contract/arn.ts); a data directory that holds any keeps the default region and account (cellad's 'arn-home').
  `UPDATE microvm_images SET arn = ${arnsMoved('arn')};
   UPDATE vms SET image_arn = ${arnsMoved('image_arn')}, spec = ${arnsMoved('spec')};
   UPDATE image_versions SET request = ${arnsMoved('request')}, runtime = ${arnsMoved('runtime')};
   UPDATE network_connectors SET arn = ${arnsMoved('arn')};
   INSERT OR IGNORE INTO secrets (name, value) SELECT 'arn-home', CAST('us-east-1:000000000000' AS BLOB)
     WHERE EXISTS (SELECT 1 FROM microvm_images) OR EXISTS (SELECT 1 FROM vms) OR EXISTS (SELECT 1 FROM network_connectors);`,
  // Connectors take tags (TagResource), as images do.
  `ALTER TABLE network_connectors ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';`,
  // E2B sandboxes: what an E2B sandbox has beyond its MicroVM's row.
  `CREATE TABLE e2b_sandboxes (
     vm_id TEXT PRIMARY KEY, template_id TEXT NOT NULL, metadata TEXT NOT NULL, env_vars TEXT NOT NULL, default_user TEXT NOT NULL,
     auto_resume INTEGER NOT NULL, allow_internet_access INTEGER NOT NULL, created_at INTEGER NOT NULL
   );`,
  // E2B's network.allowPublicTraffic: false (the sandbox's other ports need its traffic access token).
  `ALTER TABLE e2b_sandboxes ADD COLUMN public_traffic INTEGER NOT NULL DEFAULT 1;`,
];

/**
 * Moves the database up to the newest schema (or to version `to`: tests
 * make databases as older cellads left them), one transaction per step;
 * refuses one newer than this code.
 */
export function migrate(db: Database.Database, to = MIGRATIONS.length): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(`database schema version ${current} is newer than this cellad understands (${MIGRATIONS.length})`);
  }
  for (let v = current; v < to; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v] as string);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
