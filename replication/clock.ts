// Time as a parameter. Everything in replication/ that waits for time to pass (peer timeouts,
// heartbeats, retries, a handover's deadline, a link's latency) asks a Clock, so a test can
// take a 5 s timeout in a microsecond with a ManualClock (test/support/manual-clock.ts).
// Measurements (how long a capture took, a round trip) read performance.now() directly:
// they describe real work, and a manual clock would only hide it.

/** A scheduled callback; `cancel` is safe to call more than once, or after it ran. */
export interface Timer {
  cancel(): void;
  /** Where the host has it (Node): the timer alone does not keep the process alive. */
  unref?(): void;
}

export interface Clock {
  /** Milliseconds on a monotonic clock (performance.now() for the system clock). */
  now(): number;
  /** Milliseconds since the Unix epoch with sub-millisecond precision (comparable between processes on one host). */
  wallMs(): number;
  /** Runs `callback` once after `ms`. */
  setTimeout(callback: () => void, ms: number): Timer;
  /** Runs `callback` every `ms` until cancelled. */
  setInterval(callback: () => void, ms: number): Timer;
}

/** The host's clock and timers (Node or a browser). */
export const systemClock: Clock = {
  now: () => performance.now(),
  wallMs: () => performance.timeOrigin + performance.now(),
  setTimeout(callback, ms) {
    const handle = setTimeout(callback, ms);
    return { cancel: () => clearTimeout(handle), unref: () => unrefHandle(handle) };
  },
  setInterval(callback, ms) {
    const handle = setInterval(callback, ms);
    return { cancel: () => clearInterval(handle), unref: () => unrefHandle(handle) };
  },
};

/** Node's timers have unref(); a browser's are numbers. */
function unrefHandle(handle: unknown): void {
  (handle as { unref?: () => void }).unref?.();
}

/** Resolves after `ms` on `clock`. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}
