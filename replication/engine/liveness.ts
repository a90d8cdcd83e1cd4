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

/**
 * How long a protected primary's word to the witness that it is alive keeps takeovers off: it
 * asks three times per hold, and a hold asked just before it froze has run out by the time its
 * secondary notices the silence (a peer timeout later, give or take a quarter for delays).
 */
export function holdFor(peerTimeoutMs: number): number {
  return Math.floor((peerTimeoutMs * 3) / 4);
}

export interface LivenessOptions {
  timeoutMs: number;
  /** True while we stopped reading from the peer ourselves (backpressure): its silence is ours. */
  receivingPaused?: () => boolean;
  onSilent: (silentMs: number) => void;
  clock?: Clock;
}

/**
 * One timer, set for the moment the silence would reach the timeout (not a periodic check:
 * that found a dead peer up to a check interval late). When it comes due it moves itself to
 * the new deadline if the peer was heard meanwhile; when it runs late, the lateness was this
 * process standing still and is discounted; and a verdict of silence waits one more turn of
 * the event loop, so that messages which arrived while this process was busy are read first
 * (timers run before the loop polls its sockets).
 */
export class Liveness {
  readonly #clock: Clock;
  #lastHeard: number;
  #timer: Timer | undefined;
  /** When the pending timer was meant to run. */
  #dueAt = 0;
  #active = false;
  /** Total time discounted as our own stalls (for metrics and tests). */
  stalledMs = 0;

  private readonly options: LivenessOptions;

  constructor(options: LivenessOptions) {
    this.options = { ...options };
    this.#clock = options.clock ?? systemClock;
    this.#lastHeard = this.#clock.now();
  }

  /** A timer this much behind its time means this process stood still (not the peer). */
  get stallAllowanceMs(): number {
    return Math.max(10, this.options.timeoutMs / 4);
  }

  /** A new silence window from now on (e.g. a short one once an initial copy is done). */
  setTimeoutMs(timeoutMs: number): void {
    if (timeoutMs === this.options.timeoutMs) return;
    this.options.timeoutMs = timeoutMs;
    if (this.#active) this.#arm(this.#lastHeard + timeoutMs, false);
  }

  heard(): void {
    this.#lastHeard = this.#clock.now();
  }

  start(): void {
    this.#lastHeard = this.#clock.now();
    this.#active = true;
    this.#arm(this.#lastHeard + this.options.timeoutMs, false);
  }

  stop(): void {
    this.#active = false;
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  #arm(at: number, confirming: boolean): void {
    this.#timer?.cancel();
    const now = this.#clock.now();
    this.#dueAt = Math.max(at, now);
    this.#timer = this.#clock.setTimeout(() => this.#due(confirming), this.#dueAt - now);
  }

  #due(confirming: boolean): void {
    this.#timer = undefined;
    if (!this.#active) return;
    const now = this.#clock.now();
    const late = now - this.#dueAt;
    if (late > this.stallAllowanceMs) {
      this.#lastHeard += late;
      this.stalledMs += late;
    }
    if (this.options.receivingPaused?.() === true) this.#lastHeard = now;
    const silent = now - this.#lastHeard;
    if (silent < this.options.timeoutMs) return this.#arm(this.#lastHeard + this.options.timeoutMs, false);
    if (!confirming) return this.#arm(now, true);
    this.stop();
    this.options.onSilent(silent);
  }
}
