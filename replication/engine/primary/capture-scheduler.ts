// When to capture. Work that someone waits on (a completion the guest waits for, a sync asked
// for) is captured at once; output to cover (console bytes, frames) a little later, so that one
// capture covers a whole burst instead of its first bytes (a shell line comes out in a dozen
// pieces: each capture pauses the guest, each pays a round trip), but no later than the guest
// going idle or a short bound; work nobody waits on yet (the speculative mode's writes, which
// completed already) at the end of a sync interval, so one capture logs many writes (Remus's
// epochs on Kemari's sync points; Remus took one every 25 ms). Either way a capture starts
// only when the engine may capture (a secondary protects the guest, the window of syncs in
// flight has room). One explicit state:
//
//   idle        nothing is asked of the guest;
//   deferred    deferred work waits for its timer (the coalescing bound or the interval);
//   due         the timer ran out while no capture could start: the next chance takes it;
//   at-boundary one capture waits for the guest's next instruction boundary.
//
// Whether there is work is not remembered here: the engine derives it from its queues each time.
import type { Clock, Timer } from "../../clock.ts";

export type CaptureSchedulerState = "idle" | "deferred" | "due" | "at-boundary";

/**
 * What waits for a capture: `now` (someone waits on it), `soon` (output: within the coalescing
 * bound, or once the guest idles), `later` (at the interval's end), or nothing.
 */
export type CaptureWant = "now" | "soon" | "later" | undefined;

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
  /** How long deferred work (`later`) may wait for a capture. */
  syncIntervalMs: number;
  /** How long output (`soon`) may wait for more of its burst while the guest runs; 0: capture it at once. */
  coalesceMs: number;
}

export class CaptureScheduler {
  #state: CaptureSchedulerState = "idle";
  #timer: Timer | undefined;
  /** While deferred: for which want, and until when. */
  #deferredFor: "soon" | "later" = "later";
  #deadline = Infinity;

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
    let want = this.host.wanted();
    if (want === undefined) return this.#become("idle");
    if (want === "soon" && this.options.coalesceMs <= 0) want = "now";
    if (want !== "now" && this.#state !== "due") {
      const delayMs = want === "soon" ? this.options.coalesceMs : this.options.syncIntervalMs;
      const deadline = this.options.clock.now() + delayMs;
      // A deferral already running keeps its timer unless this one must end sooner (output joining deferred writes).
      if (this.#state === "deferred" && deadline >= this.#deadline) return;
      this.#defer(want, delayMs, deadline);
      return;
    }
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

  /** The guest went idle: output deferred for more of its burst will get none; capture it now. */
  guestIdle(): void {
    if (this.#state !== "deferred" || this.#deferredFor !== "soon") return;
    this.#become("due");
    this.wake();
  }

  #defer(want: "soon" | "later", delayMs: number, deadline: number): void {
    this.#become("deferred");
    this.#deferredFor = want;
    this.#deadline = deadline;
    this.#timer = this.options.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#state !== "deferred") return;
      this.#state = "due";
      this.wake();
    }, delayMs);
  }

  #become(state: CaptureSchedulerState): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    if (state !== "deferred") this.#deadline = Infinity;
    this.#state = state;
  }
}
