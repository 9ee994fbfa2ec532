import assert from 'node:assert/strict';
import { test } from 'node:test';
import { baselineVcpus, guestSize, MEMORY_TIERS_MIB } from './index.js';

test("each tier gives the guest the contract's peak: 4x the memory, a vCPU per 2 GiB of it", () => {
  // Contract §3: 0.5 GB → 2 GB / 1 vCPU, 1 → 4 / 2, 2 → 8 / 4, 4 → 16 / 8, 8 → 32 / 16; 256 MiB is Cella's own tier.
  assert.deepEqual(
    MEMORY_TIERS_MIB.map((t) => [t, guestSize(t)]),
    [
      [256, { memoryMiB: 1024, vcpus: 1 }],
      [512, { memoryMiB: 2048, vcpus: 1 }],
      [1024, { memoryMiB: 4096, vcpus: 2 }],
      [2048, { memoryMiB: 8192, vcpus: 4 }],
      [4096, { memoryMiB: 16384, vcpus: 8 }],
      [8192, { memoryMiB: 32768, vcpus: 16 }],
    ],
  );
  // Compute is metered at the baseline: vCPU = GiB / 2.
  assert.deepEqual([512, 2048, 8192].map(baselineVcpus), [0.25, 1, 4]);
});
