// When to capture. Work that someone waits on (output to cover, a completion the guest waits
// for, a sync asked for) is captured at once; work nobody waits on yet (the speculative mode's
// writes, which completed already) is captured at the end of a sync interval, so one capture
// logs many writes (Remus's epochs on Kemari's sync points; Remus took one every 25 ms).
// Either way a capture starts only when the engine may capture (a secondary protects the
// guest, the window of syncs in flight has room). One explicit state:
//
//   idle        nothing is asked of the guest;
//   deferred    deferred work waits for the interval's timer;
//   due         the interval ran out while no capture could start: the next chance takes it;
//   at-boundary one capture waits for the guest's next instruction boundary.
//
// Whether there is work is not remembered here: the engine derives it from its queues each time.
import type { Clock, Timer } from "../../clock.ts";

export type CaptureSchedulerState = "idle" | "deferred" | "due" | "at-boundary";

/** What waits for a capture: `now` (someone waits on it), `later` (at the interval's end), or nothing. */
export type CaptureWant = "now" | "later" | undefined;

export interface CaptureSchedulerHost {
  wanted(): CaptureWant;
  /** A capture may start now (protected, room in the window). */
  allowed(): boolean;
  /** Runs one capture at the guest's next instruction boundary and sends it; settles when the capture is taken. */
  capture(): Promise<void>;
  /** The capture failed: the engine loses its secondary. */
  failed(error: Error): void;
}

export interface CaptureSchedulerOptions {
  clock: Clock;
  /** How long deferred work may wait for a capture. */
  syncIntervalMs: number;
}

export class CaptureScheduler {
  #state: CaptureSchedulerState = "idle";
  #timer: Timer | undefined;

  constructor(
    private readonly host: CaptureSchedulerHost,
    private readonly options: CaptureSchedulerOptions,
  ) {}

  get state(): CaptureSchedulerState {
    return this.#state;
  }

  /** Looks at the work and the room again. Call whenever either may have changed. */
  wake(): void {
    if (this.#state === "at-boundary") return;
    const want = this.host.wanted();
    if (want === undefined) return this.#become("idle");
    if (want === "later" && this.#state === "idle") {
      this.#become("deferred");
      this.#timer = this.options.clock.setTimeout(() => {
        this.#timer = undefined;
        if (this.#state !== "deferred") return;
        this.#state = "due";
        this.wake();
      }, this.options.syncIntervalMs);
      return;
    }
    if (want === "later" && this.#state === "deferred") return;
    if (!this.host.allowed()) return;
    this.#become("at-boundary");
    this.host.capture().then(
      () => {
        this.#state = "idle";
        this.wake();
      },
      (error: unknown) => {
        this.#state = "idle";
        this.host.failed(error as Error);
      },
    );
  }

  #become(state: CaptureSchedulerState): void {
    if (state !== "deferred") {
      this.#timer?.cancel();
      this.#timer = undefined;
    }
    this.#state = state;
  }
}
