/**
 * The MicroVM operations: run, describe, list, suspend, resume, terminate,
 * endpoint and shell tokens, application logs and usage. Each reads its
 * command and calls the lifecycle; the VM's rules (the memory quota, the
 * transitions, the ingress a token needs) are the domain's.
 */
import { randomUUID } from 'node:crypto';
import type { Static } from '@sinclair/typebox';
import {
  AUTH_HEADER,
  CellaError,
  hookPort,
  MAX_DURATION_SECONDS,
  MAX_RUN_HOOK_PAYLOAD_BYTES,
  type Microvm,
  type PortSpecification,
  type Routes,
} from '../contract/index.js';
import { admitVm, pendingVm } from '../lifecycle/index.js';
import type { Tx, VmRecord } from '../store/index.js';
import { usageOf } from '../usage/index.js';
import type { ApiContext, Operations } from './command.js';
import { keysetPage } from './cursor.js';
import { once } from './idempotency.js';
import { microvmSummary, microvmView } from './views.js';

type MicrovmOperation =
  | 'RunMicrovm'
  | 'GetMicrovm'
  | 'ListMicrovms'
  | 'SuspendMicrovm'
  | 'ResumeMicrovm'
  | 'TerminateMicrovm'
  | 'CreateMicrovmAuthToken'
  | 'CreateMicrovmShellAuthToken'
  | 'GetMicrovmLogs'
  | 'GetMicrovmUsage';

export function microvmOperations(ctx: ApiContext): Operations<MicrovmOperation> {
  return {
    RunMicrovm: async (cmd) => ({ json: await runMicrovm(ctx, cmd.body) }),
    GetMicrovm: async (cmd) => ({ json: microvmView(await ctx.lifecycle.require(cmd.params.microvmIdentifier), ctx.domain) }),
    ListMicrovms: async ({ op, query: q, after }) => {
      const limit = q.maxResults ?? 50;
      const fetched = await ctx.store.listVms({
        limit: limit + 1,
        ...(after ? { after: { createdAt: after.c, id: after.i } } : {}),
        ...(q.imageIdentifier ? { imageName: ctx.arns.imageName(q.imageIdentifier) } : {}),
        ...(q.imageVersion ? { imageVersion: q.imageVersion } : {}),
      });
      const page = keysetPage(op, limit, fetched, (last) => ({ c: last.createdAt, i: last.id }));
      return { json: { ...page, items: page.items.map(microvmSummary) } };
    },
    SuspendMicrovm: async (cmd) => {
      await ctx.lifecycle.suspend(cmd.params.microvmIdentifier);
      return { empty: true };
    },
    ResumeMicrovm: async (cmd) => {
      await ctx.lifecycle.resume(cmd.params.microvmIdentifier);
      return { empty: true };
    },
    TerminateMicrovm: async (cmd) => {
      await ctx.lifecycle.terminate(cmd.params.microvmIdentifier);
      return { empty: true };
    },
    CreateMicrovmAuthToken: async (cmd) => ({
      json: await mintToken(ctx, cmd.params.microvmIdentifier, 'http', cmd.body.allowedPorts, cmd.body.expirationInMinutes),
    }),
    CreateMicrovmShellAuthToken: async (cmd) => ({
      json: await mintToken(ctx, cmd.params.microvmIdentifier, 'shell', [{ port: 8022 }], cmd.body.expirationInMinutes),
    }),
    GetMicrovmLogs: async (cmd) => {
      const rec = await ctx.lifecycle.require(cmd.params.microvmIdentifier);
      if (rec.spec.loggingDisabled)
        throw new CellaError('INVALID_STATE', `logging is disabled for MicroVM ${rec.id}`, { details: { resourceId: rec.id, resourceType: 'Microvm' } });
      const follow = cmd.query.follow ?? false;
      return {
        text: (write, signal) =>
          ctx.logs.stream(rec.id, { follow, signal, isLive: async () => (await ctx.store.getVm(rec.id))?.state !== 'TERMINATED' }, write),
      };
    },
    GetMicrovmUsage: async (cmd) => ({ json: usageOf(await ctx.lifecycle.require(cmd.params.microvmIdentifier), Date.now()) }),
  };
}

async function runMicrovm(ctx: ApiContext, b: Static<Routes['RunMicrovm']['body']>): Promise<Microvm> {
  if (b.runHookPayload !== undefined && Buffer.byteLength(b.runHookPayload) > MAX_RUN_HOOK_PAYLOAD_BYTES) {
    throw new CellaError(
      'INVALID_ARGUMENT',
      `runHookPayload is ${Buffer.byteLength(b.runHookPayload)} bytes; at most ${MAX_RUN_HOOK_PAYLOAD_BYTES} are allowed`,
    );
  }
  const name = ctx.arns.imageName(b.imageIdentifier);
  const prepare = async (): Promise<VmRecord> => {
    const image = await ctx.images.runnable(name, b.imageVersion);
    ctx.capacity.require('RunMicrovm');
    const { ingress, egress, policy } = await ctx.connectors.resolve(
      b.ingressNetworkConnectors,
      b.egressNetworkConnectors ?? image.config.egressNetworkConnectors,
      hookPort(image.config.hooks),
    );
    return pendingVm({
      id: `mvm-${randomUUID()}`,
      image,
      now: Date.now(),
      spec: {
        ...(b.executionRoleArn ? { executionRoleArn: b.executionRoleArn } : {}),
        ...(b.idlePolicy ? { idlePolicy: b.idlePolicy } : {}),
        maximumDurationInSeconds: b.maximumDurationInSeconds ?? MAX_DURATION_SECONDS,
        ingressNetworkConnectors: ingress,
        egressNetworkConnectors: egress,
        network: policy,
        loggingDisabled: b.logging !== undefined && 'disabled' in b.logging,
      },
    });
  };
  const insert = async (tx: Tx, rec: VmRecord): Promise<VmRecord> => {
    // Again in the transaction: an image deleted since `prepare` read it has no VM made from it (its delete checks for live VMs in one).
    await ctx.images.runnable(name, b.imageVersion, tx);
    await admitVm(tx, rec, ctx.maxMemoryMiB);
    return rec;
  };
  const r = await once(ctx.store, 'RunMicrovm', b, prepare, insert, (rec) => rec.id);
  if ('replay' in r) return microvmView(await ctx.lifecycle.require(r.replay), ctx.domain);
  ctx.lifecycle.start(r.made, b.runHookPayload);
  return microvmView(r.made, ctx.domain);
}

async function mintToken(
  ctx: ApiContext,
  id: string,
  kind: 'http' | 'shell',
  ports: PortSpecification[],
  minutes: number,
): Promise<{ authToken: Record<string, string> }> {
  const rec = await ctx.lifecycle.require(id);
  if (rec.state === 'TERMINATING' || rec.state === 'TERMINATED') {
    throw new CellaError('INVALID_STATE', `MicroVM ${id} is ${rec.state}`, { details: { resourceId: id, resourceType: 'Microvm' } });
  }
  for (const p of ports) {
    if ('range' in p && p.range.startPort > p.range.endPort)
      throw new CellaError('INVALID_ARGUMENT', `port range ${p.range.startPort}-${p.range.endPort} is empty`);
  }
  ctx.connectors.checkTokenIngress(id, rec.spec.ingressNetworkConnectors, kind);
  const t = await ctx.tokens.mint(id, kind, ports, minutes);
  await ctx.store.putToken({ jti: t.jti, vmId: id, kind, ports: JSON.stringify(ports), expiresAt: t.expiresAt, createdAt: Date.now() });
  return { authToken: { [AUTH_HEADER]: t.token } };
}
