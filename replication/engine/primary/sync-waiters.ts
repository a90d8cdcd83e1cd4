// Callers of syncNow(): each waits for the first capture taken after it asked, and is
// answered when that sync is acknowledged (or told why never).

interface Waiter {
  /** The capture that covers the caller; undefined until one is taken. */
  seq: number | undefined;
  requestedAt: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class SyncWaiters {
  #waiters: Waiter[] = [];

  /** Resolves once a capture taken from now on is acknowledged. */
  add(requestedAt: number): Promise<void> {
    return new Promise((resolve, reject) => this.#waiters.push({ seq: undefined, requestedAt, resolve, reject }));
  }

  /** Whether a caller waits for a capture to be taken. */
  get wantCapture(): boolean {
    return this.#waiters.some((waiter) => waiter.seq === undefined);
  }

  /** Since when the oldest caller waits for a capture. */
  get waitingSince(): number | undefined {
    return this.#waiters.find((waiter) => waiter.seq === undefined)?.requestedAt;
  }

  /** Capture `seq` was taken: it covers every caller still without one. */
  captured(seq: number): void {
    for (const waiter of this.#waiters) waiter.seq ??= seq;
  }

  /** Sync `seq` is acknowledged: the callers it (or an earlier one) covers are answered. */
  acknowledged(seq: number): void {
    this.#waiters = this.#waiters.filter((waiter) => {
      if (waiter.seq === undefined || waiter.seq > seq) return true;
      waiter.resolve();
      return false;
    });
  }

  rejectAll(error: Error): void {
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }
}
