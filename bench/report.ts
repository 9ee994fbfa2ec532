/**
 * The benchmarks' output: one JSON object per metric and line. `baseline` is
 * the issue's target, `ratio` is p50 / baseline, `better` says which way is good.
 */
export type Better = 'lower' | 'higher';

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number;
}

export function reporter(context: () => Record<string, unknown>) {
  const start = performance.now();
  // Ratios and other small values keep three decimals; milliseconds and rates one.
  const round = (x: number): number => (Math.abs(x) < 10 ? Math.round(x * 1000) / 1000 : Math.round(x * 10) / 10);
  return function emit(metric: string, unit: string, values: number[], baseline: number | null, better: Better, extra: Record<string, unknown> = {}): void {
    const p50 = percentile(values, 50);
    process.stdout.write(
      `${JSON.stringify({
        elapsed_s: Math.round((performance.now() - start) / 100) / 10,
        metric,
        value: round(p50),
        p50: round(p50),
        p95: round(percentile(values, 95)),
        n: values.length,
        unit,
        baseline,
        ratio: baseline ? Math.round((p50 / baseline) * 100) / 100 : null,
        better,
        ...context(),
        ...extra,
      })}\n`,
    );
  };
}
