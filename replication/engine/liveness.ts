// "No word from the peer for too long" that does not blame the peer for our own stalls:
// when this process's timers ran late (a blocked event loop, a throttled background tab,
// a suspended machine), the peer's messages could not be read either, so the silence
// clock is moved forward by the lateness instead of declaring the peer dead.
import { systemClock, type Clock, type Timer } from "../clock.ts";

/** The silence allowed during a new secondary's initial copy, however short the peer timeout. */
export const SETUP_PEER_TIMEOUT_MS = 5000;

/** Heartbeats often enough that a few can be lost inside one peer timeout. */
export function heartbeatFor(peerTimeoutMs: number): number {
  return Math.min(250, Math.max(20, Math.floor(peerTimeoutMs / 6)));
}

export interface LivenessOptions {
  timeoutMs: number;
  /** True while we stopped reading from the peer ourselves (backpressure): its silence is ours. */
  receivingPaused?: () => boolean;
  /** How often to check; default timeoutMs / 8 (at least 25 ms). */
  checkEveryMs?: number;
  onSilent: (silentMs: number) => void;
  clock?: Clock;
}

export class Liveness {
  readonly #clock: Clock;
  #lastHeard: number;
  #lastCheck: number;
  #timer: Timer | undefined;
  #active = false;
  /** Total time discounted as our own stalls (for metrics and tests). */
  stalledMs = 0;

  private readonly options: LivenessOptions;

  constructor(options: LivenessOptions) {
    this.options = { ...options };
    this.#clock = options.clock ?? systemClock;
    this.#lastHeard = this.#lastCheck = this.#clock.now();
  }

  /** How often `check` runs. */
  get checkEveryMs(): number {
    return this.options.checkEveryMs ?? Math.max(10, this.options.timeoutMs / 8);
  }

  /** A new silence window from now on (e.g. a short one once an initial copy is done); checks follow its pace. */
  setTimeoutMs(timeoutMs: number): void {
    if (timeoutMs === this.options.timeoutMs) return;
    this.options.timeoutMs = timeoutMs;
    if (this.#active) {
      const lastHeard = this.#lastHeard;
      this.start();
      this.#lastHeard = lastHeard;
    }
  }

  heard(): void {
    this.#lastHeard = this.#clock.now();
  }

  start(): void {
    const every = this.checkEveryMs;
    this.#lastHeard = this.#lastCheck = this.#clock.now();
    this.#active = true;
    this.#timer?.cancel();
    this.#timer = this.#clock.setInterval(() => this.check(every), every);
  }

  stop(): void {
    this.#active = false;
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  /** One check; `every` is the interval it was scheduled at. Exposed for tests. */
  check(every: number, now = this.#clock.now()): void {
    const late = now - this.#lastCheck - every;
    this.#lastCheck = now;
    // Lateness beyond a few intervals is our stall, not the peer's silence.
    if (late > every * 2) {
      this.#lastHeard += late;
      this.stalledMs += late;
    }
    if (this.options.receivingPaused?.() === true) this.#lastHeard = now;
    const silent = now - this.#lastHeard;
    if (silent > this.options.timeoutMs && this.#active) {
      this.stop();
      this.options.onSilent(silent);
    }
  }
}
