import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeCpio } from './cpio.js';

/** A newc header written out field by field, so the expectation does not reuse the writer's code. */
function header(f: { ino: number; mode: number; nlink: number; size: number; namesize: number }): string {
  const h = (n: number) => n.toString(16).padStart(8, '0');
  const zero = '00000000';
  return `070701${h(f.ino)}${h(f.mode)}${zero}${zero}${h(f.nlink)}${zero}${h(f.size)}${zero}${zero}${zero}${zero}${h(f.namesize)}${zero}`;
}

test('writes newc records byte-exactly, with 4-byte padding and the trailer', () => {
  const archive = writeCpio([
    { path: '/d', mode: 0o040755 },
    { path: 'd/f', mode: 0o100644, data: Buffer.from('hi') },
    { path: 'l', mode: 0o120777, target: 'd/f' },
  ]);
  const expected =
    // 110 + 2 ("d\0") = 112: no name padding, empty body.
    header({ ino: 1, mode: 0x41ed, nlink: 2, size: 0, namesize: 2 }) +
    'd\0' +
    // 110 + 4 = 114: 2 bytes of name padding; body "hi" padded by 2.
    header({ ino: 2, mode: 0x81a4, nlink: 1, size: 2, namesize: 4 }) +
    'd/f\0' +
    '\0\0' +
    'hi' +
    '\0\0' +
    // Symlink target is the body: "d/f" padded by 1.
    header({ ino: 3, mode: 0xa1ff, nlink: 1, size: 3, namesize: 2 }) +
    'l\0' +
    'd/f' +
    '\0' +
    // 110 + 11 = 121: 3 bytes of name padding.
    header({ ino: 0, mode: 0, nlink: 1, size: 0, namesize: 11 }) +
    'TRAILER!!!\0' +
    '\0\0\0';
  assert.equal(archive.toString('latin1'), expected);
  assert.equal(archive.length % 4, 0);
});

test('rejects entries whose type and payload disagree', () => {
  assert.throws(() => writeCpio([{ path: 'l', mode: 0o120777 }]), /symlink l needs a target/);
  assert.throws(() => writeCpio([{ path: 'd', mode: 0o040755, data: Buffer.from('x') }]), /directory d/);
  assert.throws(() => writeCpio([{ path: 'c', mode: 0o020644 }]), /unsupported file type/);
  assert.throws(
    () =>
      writeCpio([
        { path: '/a', mode: 0o040755 },
        { path: 'a', mode: 0o040755 },
      ]),
    /duplicate path a/,
  );
});

const hasCpio = ['/usr/bin/cpio', '/bin/cpio'].some((p) => existsSync(p));

test('round-trips through GNU cpio -i', { skip: !hasCpio && 'cpio is not installed (Debian package cpio)' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'cella-cpio-'));
  try {
    // Odd sizes on purpose so every padding length (0..3) is exercised.
    const big = Buffer.alloc(70_001, 0xab);
    const archive = writeCpio([
      { path: '/init', mode: 0o100755, data: Buffer.from('#!/bin/sh\necho hi\n') },
      { path: '/cella', mode: 0o040755 },
      { path: '/cella/modules', mode: 0o040700 },
      { path: '/cella/modules/a.ko', mode: 0o100644, data: big },
      { path: '/cella/empty', mode: 0o100600 },
      { path: '/cella/link', mode: 0o120777, target: 'modules/a.ko' },
      { path: '/abs', mode: 0o120777, target: '/init' },
    ]);
    execFileSync('cpio', ['-i', '--make-directories', '--no-absolute-filenames', '--quiet'], { cwd: dir, input: archive });

    const mode = (p: string) => lstatSync(join(dir, p)).mode;
    assert.equal(readFileSync(join(dir, 'init'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(mode('init'), 0o100755);
    assert.equal(mode('cella'), 0o040755);
    assert.equal(mode('cella/modules'), 0o040700);
    assert.deepEqual(readFileSync(join(dir, 'cella/modules/a.ko')), big);
    assert.equal(mode('cella/modules/a.ko'), 0o100644);
    assert.equal(readFileSync(join(dir, 'cella/empty')).length, 0);
    assert.equal(mode('cella/empty'), 0o100600);
    assert.ok(lstatSync(join(dir, 'cella/link')).isSymbolicLink());
    assert.equal(readlinkSync(join(dir, 'cella/link')), 'modules/a.ko');
    assert.equal(readlinkSync(join(dir, 'abs')), '/init');

    const listing = execFileSync('cpio', ['-it', '--quiet'], { input: archive, encoding: 'utf8' });
    assert.deepEqual(listing.trim().split('\n'), ['init', 'cella', 'cella/modules', 'cella/modules/a.ko', 'cella/empty', 'cella/link', 'abs']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
