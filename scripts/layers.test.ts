import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// The layer map lives in .dependency-cruiser.cjs (enforced by npm run lint:layers) and, in words, in
// docs/design.md's "Map of the code". This keeps the words true: same folders, same tiers, and the
// "Imports today" column equal to what each folder's shipped files import.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SRC = path.join(ROOT, 'src');
const { TIERS } = createRequire(import.meta.url)('../.dependency-cruiser.cjs') as { TIERS: string[][] };

interface Row {
  tier: number;
  folder: string;
  imports: string[];
}

function mapRows(): Row[] {
  const design = readFileSync(path.join(ROOT, 'docs/design.md'), 'utf8');
  const section = design.split('\n## ').find((s) => s.startsWith('Map of the code'));
  assert.ok(section, 'docs/design.md has a "## Map of the code" section');
  return [...section.matchAll(/^\| (\d+) \| `([a-z0-9-]+)` \| [^|]+ \| ([^|]+) \|$/gm)].map(([, tier, folder, imports]) => ({
    tier: Number(tier),
    folder: folder!,
    imports: imports!.trim() === '—' ? [] : [...imports!.matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1]!),
  }));
}

/** The other src/ folders a folder's shipped (non-test) files import, its subfolders' included, sorted. */
function importsOf(folder: string): string[] {
  const found = new Set<string>();
  const walk = (dir: string, depth: number): void => {
    // From src/<folder>/<depth subfolders>/, another src/ folder is depth + 1 levels up.
    const up = new RegExp(`(?:from|import)\\s*\\(?\\s*'(?:\\.\\./){${depth + 1}}([a-z0-9-]+)/`, 'g');
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(path.join(dir, entry.name), depth + 1);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) {
        for (const m of readFileSync(path.join(dir, entry.name), 'utf8').matchAll(up)) found.add(m[1]!);
      }
    }
  };
  walk(path.join(SRC, folder), 0);
  return [...found].sort();
}

const folders = readdirSync(SRC, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

test('every folder under src/ has exactly one tier, and every tier names real folders', () => {
  const tiered = TIERS.flat();
  assert.equal(new Set(tiered).size, tiered.length, 'a folder is in two tiers');
  assert.deepEqual([...tiered].sort(), folders);
});

test("docs/design.md's map lists every folder once, at its tier, with what it imports today", () => {
  const rows = mapRows();
  assert.deepEqual(rows.map((r) => r.folder).sort(), folders);
  for (const row of rows) {
    const tier = TIERS.findIndex((t) => t.includes(row.folder));
    assert.equal(row.tier, tier, `${row.folder}: tier in docs/design.md vs .dependency-cruiser.cjs`);
    assert.deepEqual(row.imports, importsOf(row.folder), `${row.folder}: "Imports today" in docs/design.md (sorted)`);
  }
});
