// A Clock that only moves when a test says so: `advance(ms)` runs every timer due by then, in
// time order, letting promises settle between them, so a 5 s peer timeout takes microseconds
// and happens exactly when the test decides.
import type { Clock, Timer } from "../../replication/clock.ts";

interface Scheduled {
  id: number;
  at: number;
  every: number | undefined;
  callback: () => void;
}

export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  readonly #timers = new Map<number, Scheduled>();

  constructor(startMs = 1_000_000) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  wallMs(): number {
    return 1_700_000_000_000 + this.#now;
  }

  setTimeout(callback: () => void, ms: number): Timer {
    return this.#schedule(callback, ms, undefined);
  }

  setInterval(callback: () => void, ms: number): Timer {
    return this.#schedule(callback, ms, Math.max(1, ms));
  }

  /** Timers scheduled and not yet run or cancelled. */
  get pending(): number {
    return this.#timers.size;
  }

  /**
   * Moves time forward by `ms`, running each timer due on the way at its own time (intervals
   * repeatedly), and lets microtasks and I/O callbacks already queued run after each one.
   */
  async advance(ms: number): Promise<void> {
    const until = this.#now + ms;
    for (;;) {
      const next = this.#nextDue(until);
      if (next === undefined) break;
      this.#now = next.at;
      if (next.every === undefined) this.#timers.delete(next.id);
      else next.at += next.every;
      next.callback();
      await settle();
    }
    this.#now = until;
    await settle();
  }

  /**
   * Moves time forward by `ms` at once, as a process that stalled (a blocked event loop, a
   * suspended machine) sees it: every timer that came due runs once, late, and intervals go on
   * from now (they do not catch up).
   */
  async jump(ms: number): Promise<void> {
    this.#now += ms;
    const due = [...this.#timers.values()].filter((timer) => timer.at <= this.#now).sort((a, b) => a.at - b.at || a.id - b.id);
    for (const timer of due) {
      if (!this.#timers.has(timer.id)) continue;
      if (timer.every === undefined) this.#timers.delete(timer.id);
      else timer.at = this.#now + timer.every;
      timer.callback();
      await settle();
    }
    await settle();
  }

  #schedule(callback: () => void, ms: number, every: number | undefined): Timer {
    const id = this.#nextId++;
    this.#timers.set(id, { id, at: this.#now + Math.max(0, ms), every, callback });
    return { cancel: () => void this.#timers.delete(id) };
  }

  #nextDue(until: number): Scheduled | undefined {
    let next: Scheduled | undefined;
    for (const timer of this.#timers.values())
      if (timer.at <= until && (next === undefined || timer.at < next.at || (timer.at === next.at && timer.id < next.id))) next = timer;
    return next;
  }
}

/** Lets queued microtasks and immediate callbacks run (a few turns of the event loop). */
export async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}
