/**
 * The disk-full drill (issue 11, ADR 0007): cellad's data directory on a
 * small loop-mounted file system that is then filled. New work must be
 * refused with InsufficientCapacityException and change nothing; a VM whose
 * disk write meets the full disk must be paused with a reason (not frozen in
 * silence) and continue by itself once space is freed; a write the database
 * cannot make must be the same clear error, never an INTERNAL 500.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isCellaError } from '../../src/contract/index.js';
import { startServer, type CellaServer } from '../../src/server/index.js';
import { API_KEY, V, api, createImage, demoArtifact, shutdown, upload, waitState, type MicrovmBody } from '../control-helpers.js';
import { eventually } from '../helpers.js';
import { demoGet, summary } from './harness.js';

const MIB = 1024 * 1024;
const FLOOR_MIB = 300;

describe('disk-full drill', { concurrency: false }, () => {
  let root: string;
  let mnt: string;
  let server: CellaServer | undefined;
  let frozen = 0;
  let refusals = 0;

  const free = (): number => {
    const s = statfsSync(mnt);
    return s.bavail * s.bsize;
  };
  /** Leaves about `leaveMiB` free (0: nothing at all) with files of its own; returns them. */
  const fillTo = (name: string, leaveMiB: number): string[] => {
    const files: string[] = [];
    // The last blocks go in smaller pieces: a file system keeps some for its own metadata.
    for (let i = 0, bytes = free() - leaveMiB * MIB; bytes >= 4096 && i < 64; i++, bytes = Math.floor((free() - leaveMiB * MIB) / 2)) {
      const file = path.join(mnt, `${name}-${i}`);
      try {
        execFileSync('fallocate', ['-l', String(bytes), file], { stdio: 'ignore' });
        files.push(file);
      } catch {
        rmSync(file, { force: true });
      }
      if (leaveMiB > 0) break;
    }
    return files;
  };
  /** A refusal: the contract's InsufficientCapacityException, nothing else. */
  const refused = (r: { status: number; type: string | null; body: unknown; text: string }, what: string): void => {
    assert.equal(r.status, 500, `${what}: ${r.text}`);
    assert.equal(r.type, 'InsufficientCapacityException', `${what}: ${r.text}`);
    assert.equal((r.body as { code?: string }).code, 'INSUFFICIENT_CAPACITY', what);
    refusals++;
  };

  before(async () => {
    root = mkdtempSync('/tmp/cdf-');
    mnt = path.join(root, 'd');
    execFileSync('mkdir', [mnt]);
    execFileSync('truncate', ['-s', '3G', path.join(root, 'fs.img')]);
    execFileSync('mkfs.ext4', ['-q', '-F', path.join(root, 'fs.img')]);
    execFileSync('mount', ['-o', 'loop', path.join(root, 'fs.img'), mnt]);
    server = await startServer({
      dataDir: mnt,
      port: 0,
      proxyPort: 0,
      apiKey: API_KEY,
      minIdleSeconds: 1,
      resumeWindowSeconds: 0,
      minFreeDiskMiB: FLOOR_MIB,
      log: () => {},
    });
    const { build, log } = await createImage(server.url, 'demo');
    assert.equal(build.buildState, 'SUCCESSFUL', log);
  });

  after(async () => {
    if (server) await shutdown(server);
    summary(`disk-full: ${frozen} frozen VMs, ${refusals} refusals with InsufficientCapacity`);
    // Lazily: a QEMU that was just killed may still hold a file for a moment.
    execFileSync('umount', ['-l', mnt]);
    rmSync(root, { recursive: true, force: true });
    assert.equal(frozen, 0, 'no VM stays frozen');
  });

  test('a full disk refuses new work clearly, pauses the VM that meets it, and continues it when space returns', { timeout: 15 * 60_000 }, async () => {
    const s = server as CellaServer;
    const base = s.url;
    const uri = await upload(base, await demoArtifact());
    const run = async (): Promise<string> => {
      const r = await api<MicrovmBody>(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' });
      assert.equal(r.status, 200, r.text);
      return (await waitState(base, r.body.microvmId, ['RUNNING'])).microvmId;
    };
    const a = await run();
    const b = await run();
    assert.equal(await demoGet(mnt, a, '/inc'), '1');

    const filler = fillTo('filler', FLOOR_MIB / 2);
    await eventually(() => free() < FLOOR_MIB * MIB, 10_000, 'the disk to be low');
    const vmsBefore = (await s.store.liveVms()).length;
    refused(await api(base, 'POST', `${V}/microvms`, { imageIdentifier: 'demo' }), 'RunMicrovm');
    refused(await api(base, 'POST', `${V}/microvms/${b}/suspend`), 'SuspendMicrovm');
    refused(
      await api(base, 'POST', `${V}/microvm-images`, {
        name: 'other',
        baseImageArn: 'arn:aws:lambda:us-east-1:aws:microvm-image:busybox',
        codeArtifact: { uri },
      }),
      'CreateMicrovmImage',
    );
    refused(
      await api(base, 'PUT', `${V}/microvm-images/demo`, { baseImageArn: 'arn:aws:lambda:us-east-1:aws:microvm-image:busybox', codeArtifact: { uri } }),
      'UpdateMicrovmImage',
    );
    const up = await fetch(`${base}/cella/v1/code-artifacts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/zip' },
      body: new Uint8Array(await demoArtifact()),
    });
    refused({ status: up.status, type: up.headers.get('x-amzn-errortype'), body: await up.json(), text: '' }, 'UploadCodeArtifact');
    assert.equal((await s.store.liveVms()).length, vmsBefore, 'nothing was created');
    assert.equal((await api<MicrovmBody>(base, 'GET', `${V}/microvms/${b}`)).body.state, 'RUNNING', 'the refused suspend changed nothing');
    assert.equal(await s.store.getImage('other'), undefined);

    // The guest writes more than the host has left: QEMU stops it, cellad says so.
    const vm = s.engine.get(a);
    assert.ok(vm);
    const dd = vm.agent.exec({ argv: ['/bin/sh', '-c', 'dd if=/dev/zero of=/big bs=1M count=400 && sync && echo written'] });
    await eventually(async () => /disk is full/.test((await s.store.getVm(a))?.stateReason ?? ''), 120_000, 'the VM to be paused with a reason');
    assert.equal((await api<MicrovmBody>(base, 'GET', `${V}/microvms/${a}`)).body.state, 'RUNNING');
    await assert.rejects(s.lifecycle.wake(a), (e) => isCellaError(e, 'INSUFFICIENT_CAPACITY'), 'endpoint traffic is refused at once, not held');

    // Not even the database can write: still a clear error.
    const last = fillTo('last', 0);
    assert.ok(free() < MIB, 'the disk is full');
    const tok = await api(base, 'POST', `${V}/microvms/${b}/auth-token`, { expirationInMinutes: 5, allowedPorts: [{ port: 8080 }] });
    if (tok.status !== 200) refused(tok, 'CreateMicrovmAuthToken on a full disk');
    for (const f of last) rmSync(f);

    // Space returns: the VM continues by itself and its write completes.
    for (const f of filler) rmSync(f);
    const done = await Promise.race([dd, new Promise<undefined>((r) => setTimeout(r, 180_000, undefined))]);
    if (!done) frozen++;
    assert.ok(done, 'the paused VM continued once space returned');
    assert.match(done.stdout.toString(), /written/);
    await eventually(async () => ((await s.store.getVm(a))?.stateReason ?? null) === null, 10_000, 'the reason to be cleared');
    assert.equal(await demoGet(mnt, a, '/get'), '1', 'its RAM is as it was');
    // And new work is taken again.
    const c = await run();
    assert.equal(await demoGet(mnt, c, '/get'), '0');
  });
});
