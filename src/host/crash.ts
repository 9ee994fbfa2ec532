/**
 * Fault injection for the crash drill (test/chaos): `CELLA_CRASH_AT=<point>[,<point>…]`
 * in cellad's environment makes it SIGKILL itself the first time it reaches one
 * of these points, so recovery is tested at every step that creates or
 * consumes something, not only at random moments. Without the variable a
 * point costs one Set lookup.
 */
export const CRASH_POINTS = [
  // Launch: QEMU spawned, state not loaded; state loaded, guest not yet running.
  'launch:spawned',
  'launch:loaded',
  // Resume: QEMU spawned; state loaded; checkpoint consumed, guest not yet running; guest running, state not yet written.
  'resume:spawned',
  'resume:loaded',
  'resume:committed',
  'resume:running',
  // Suspend: guest stopped; checkpoint half streamed; checkpoint complete, QEMU still there.
  'suspend:stopped',
  'suspend:streaming',
  'suspend:written',
  // Terminate: QEMU killed, folder and namespace still there.
  'terminate:killed',
  // A namespace added, not yet tagged with its owner.
  'netns:added',
  // An image build: builder running.
  'build:builder',
] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

const armed = new Set((process.env.CELLA_CRASH_AT ?? '').split(',').filter(Boolean));

export function crashPoint(point: CrashPoint): void {
  if (armed.size > 0 && armed.has(point)) process.kill(process.pid, 'SIGKILL');
}
