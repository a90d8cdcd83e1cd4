// A small seeded PRNG (mulberry32) so that a campaign's choices (kill delays, cut
// kinds) can be replayed with `--seed`. Guest timing is not deterministic, so the
// same seed gives the same schedule, not the same interleaving.
export class Prng {
  #state: number;

  constructor(readonly seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }
}

/**
 * How long the workload runs before the fault. A third of the faults land within the
 * first 400 ms (the workload's first writes and syncs, often mid-flush), the rest spread
 * over a few seconds of steady writing.
 */
export function faultDelayMs(prng: Prng): number {
  const band = prng.next();
  if (band < 0.33) return prng.int(0, 400);
  if (band < 0.7) return prng.int(400, 3000);
  return prng.int(3000, 8000);
}
