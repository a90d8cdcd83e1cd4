// Small statistics shared by benchmark modules.

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError("median of no values");
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Wall time of `body`, in milliseconds. */
export function timed<T>(body: () => T): { ms: number; value: T } {
  const started = performance.now();
  const value = body();
  return { ms: performance.now() - started, value };
}
