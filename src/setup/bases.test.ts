import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listBases } from './artifacts.js';
import { DEBIAN_BASES, debianInputsSha256, mirrorLines, mmdebstrapArgs } from './bases.js';

const DEBIAN_SOURCES = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main contrib
`;

test('mirror lines follow the host deb822 sources, suite by suite', () => {
  assert.deepEqual(mirrorLines([{ name: '/etc/apt/sources.list.d/debian.sources', text: DEBIAN_SOURCES }]), [
    'deb http://mirror.example/debian bookworm main',
    'deb http://mirror.example/debian bookworm-updates main',
    'deb http://mirror.example/debian-security bookworm-security main',
  ]);
});

test('mirror lines read one-line sources, skipping options, comments, deb-src and disabled paragraphs', () => {
  const list =
    '# deb http://old.example/debian bookworm main\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n';
  const disabled = 'Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm-updates\nComponents: main\n';
  assert.deepEqual(
    mirrorLines([
      { name: '/etc/apt/sources.list', text: list },
      { name: 'x.sources', text: disabled },
    ]),
    ['deb http://one.example/debian bookworm main'],
  );
});

test('mirror lines fall back to deb.debian.org when the host has no bookworm sources', () => {
  const trixie = 'Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main\n';
  assert.deepEqual(mirrorLines([{ name: 'debian.sources', text: trixie }]), [
    'deb http://deb.debian.org/debian bookworm main',
    'deb http://deb.debian.org/debian bookworm-updates main',
    'deb http://deb.debian.org/debian-security bookworm-security main',
  ]);
});

test('mmdebstrap gets the suite, the target and then the mirrors last', () => {
  const [, python] = DEBIAN_BASES;
  assert.ok(python);
  const args = mmdebstrapArgs(python, ['deb http://m/debian bookworm main'], '/t');
  assert.deepEqual(args.slice(-3), ['bookworm', '/t', 'deb http://m/debian bookworm main']);
  assert.ok(args.includes('--include=python3,python3-venv,ca-certificates'));
  assert.ok(args.includes('--variant=minbase'));
});

test('the inputs hash changes with packages, mirrors and mmdebstrap, and with nothing else', () => {
  const [plain, python] = DEBIAN_BASES;
  assert.ok(plain && python);
  const mirrors = ['deb http://m/debian bookworm main'];
  const hash = debianInputsSha256(plain, mirrors, 'mmdebstrap 1.3.5');
  assert.equal(debianInputsSha256({ ...plain, description: 'other words' }, [...mirrors], 'mmdebstrap 1.3.5'), hash);
  assert.notEqual(debianInputsSha256(python, mirrors, 'mmdebstrap 1.3.5'), hash);
  assert.notEqual(debianInputsSha256(plain, ['deb http://n/debian bookworm main'], 'mmdebstrap 1.3.5'), hash);
  assert.notEqual(debianInputsSha256(plain, mirrors, 'mmdebstrap 1.4.0'), hash);
});

test('listBases lists only bases with a tree and a well-formed base.json under their own name', () => {
  const guest = mkdtempSync(join(tmpdir(), 'cella-bases-'));
  try {
    const base = (name: string, info: unknown, tree = true) => {
      mkdirSync(join(guest, 'bases', name, ...(tree ? ['tree'] : [])), { recursive: true });
      writeFileSync(join(guest, 'bases', name, 'base.json'), JSON.stringify(info));
    };
    const info = (name: string) => ({ name, description: 'd', env: { PATH: '/bin' }, createdAt: '2025-01-01T00:00:00.000Z', sizeBytes: 1, inputsSha256: 'x' });
    base('debian-12', { ...info('debian-12'), packages: [] });
    base('busybox', info('busybox'));
    base('no-tree', info('no-tree'), false);
    base('old-shape', { name: 'old-shape', description: 'd', env: { PATH: '/bin' } });
    base('renamed', info('other'));
    assert.deepEqual(
      listBases(guest).map((b) => b.name),
      ['busybox', 'debian-12'],
    );
    assert.deepEqual(listBases(join(guest, 'missing')), []);
  } finally {
    rmSync(guest, { recursive: true, force: true });
  }
});
