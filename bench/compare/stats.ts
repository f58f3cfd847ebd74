/**
 * Summaries of repeated timings, and how the tables print them.
 */

export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly count: number;
}

export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new Error("spread of no values");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], count: sorted.length };
}

/** Milliseconds as "850 ms" or "12.30 s". */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** "355 ms (352-357)" or "1.23 s (1.10-1.40)", in the unit of the largest value. */
export function formatSpread(value: Spread): string {
  const inSeconds = value.max >= 1000;
  const number = (ms: number): string =>
    inSeconds ? (ms / 1000).toFixed(2) : String(Math.round(ms));
  const unit = inSeconds ? "s" : "ms";
  if (value.count === 1) return `${number(value.median)} ${unit}`;
  return `${number(value.median)} ${unit} (${number(value.min)}-${number(value.max)})`;
}

export function formatRatio(ratio: number): string {
  return ratio >= 10 ? `${ratio.toFixed(0)}x` : `${ratio.toFixed(2)}x`;
}
