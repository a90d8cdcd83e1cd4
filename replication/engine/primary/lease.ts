// A primary without a secondary, under an arbiter: it may let its guest's writes complete and
// its output out only while it holds the witness's lease on its epoch. The lease is renewed
// every third of its length; it counts from when the renewal was asked (the witness granted
// it later, so this end's lease always ends first). Told that a higher epoch exists, the
// primary fences itself; a witness it cannot reach simply lets the lease run out (the guest's
// I/O is held from then on until a renewal gets through).
import type { Clock, Timer } from "../../clock.ts";
import type { Witness } from "../../arbiter/witness.ts";

export interface LeaseOptions {
  witness: Witness;
  /** The name this node has at the witness. */
  node: string;
  clock: Clock;
  /** The lease became valid or ran out. */
  onChange(valid: boolean): void;
  /** Another node runs the guest at a higher epoch. */
  onSuperseded(reason: string): void;
  log?: (line: string) => void;
}

export class Lease {
  readonly #options: LeaseOptions;
  #epoch = 0;
  #validUntil = -Infinity;
  #valid = false;
  #running = false;
  #timer: Timer | undefined;
  #expiry: Timer | undefined;
  #asking = false;

  constructor(options: LeaseOptions) {
    this.#options = options;
  }

  get valid(): boolean {
    return this.#valid;
  }

  /** Whether the lease is being kept (between start() and stop()). */
  get running(): boolean {
    return this.#running;
  }

  /** Keeps renewing the lease on `epoch` until stop(). */
  start(epoch: number): void {
    if (this.#running && epoch === this.#epoch) return;
    this.stop();
    this.#running = true;
    this.#epoch = epoch;
    void this.#renew();
  }

  /** No lease needed (a secondary protects the guest again) or wanted (fenced, closed). */
  stop(): void {
    this.#running = false;
    this.#timer?.cancel();
    this.#expiry?.cancel();
    this.#timer = this.#expiry = undefined;
    // Quietly: whoever stops the lease no longer depends on it.
    this.#valid = false;
  }

  async #renew(): Promise<void> {
    if (!this.#running || this.#asking) return;
    this.#asking = true;
    const askedAt = this.#options.clock.now();
    let retryMs = 100;
    try {
      const answer = await this.#options.witness.renew(this.#options.node, this.#epoch);
      if (!this.#running) return;
      if (!answer.granted) {
        if (answer.epoch > this.#epoch) return this.#options.onSuperseded(answer.reason);
        this.#options.log?.(`primary: the witness refused the lease: ${answer.reason}`);
      } else {
        this.#validUntil = askedAt + answer.leaseMs;
        this.#set(true);
        this.#expiry?.cancel();
        this.#expiry = this.#options.clock.setTimeout(
          () => this.#set(this.#options.clock.now() < this.#validUntil),
          this.#validUntil - this.#options.clock.now(),
        );
        retryMs = answer.leaseMs / 3;
      }
    } catch (error) {
      this.#options.log?.(`primary: cannot reach the witness: ${(error as Error).message}`);
    } finally {
      this.#asking = false;
    }
    if (this.#running) this.#timer = this.#options.clock.setTimeout(() => void this.#renew(), retryMs);
  }

  #set(valid: boolean): void {
    if (valid === this.#valid) return;
    this.#valid = valid;
    this.#options.onChange(valid);
  }
}
