// Small statistics shared by benchmark modules.

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("median of no values");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Median and range of the finite `values`, as "m (lo–hi)" ("m" alone for one value, "–" for none). */
export function medianRange(values: readonly number[], digits = 2): string {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return "–";
  const m = median(finite);
  return finite.length > 1 ? `${m.toFixed(digits)} (${Math.min(...finite).toFixed(digits)}–${Math.max(...finite).toFixed(digits)})` : m.toFixed(digits);
}

/** Wall time of `body`, in milliseconds. */
export function timed<T>(body: () => T): { ms: number; value: T } {
  const started = performance.now();
  const value = body();
  return { ms: performance.now() - started, value };
}
