// What a primary under an arbiter keeps at the witness.
//
// Protected by a secondary, it holds (`hold`): it says it is alive a few times per hold, so a
// link cut with both nodes alive leaves the guest here instead of restarting it on the
// secondary; a frozen primary stops holding, and its hold has run out by the time its
// secondary notices the silence. Its output needs nothing from the witness meanwhile: it waits
// for the secondary's acknowledgements.
//
// Without a secondary it may let its guest's writes complete and its output out only while it
// holds the witness's lease on its epoch (`start`). The lease is renewed every third of its
// length; it counts from when the renewal was asked (the witness granted it later, so this
// end's lease always ends first). Told that a higher epoch exists, the primary fences itself;
// a witness it cannot reach simply lets the lease run out (the guest's I/O is held from then
// on until a renewal gets through).
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

type Keeping = { kind: "lease"; epoch: number } | { kind: "hold"; epoch: number; holdMs: number };

/** How soon a renewal refused or unanswered is asked again. */
const RETRY_MS = 100;

export class Lease {
  readonly #options: LeaseOptions;
  #keeping: Keeping | undefined;
  // Each start, hold or stop begins a new generation: answers to an older one are stale.
  #generation = 0;
  #validUntil = -Infinity;
  #valid = false;
  #timer: Timer | undefined;
  #expiry: Timer | undefined;

  constructor(options: LeaseOptions) {
    this.#options = options;
  }

  get valid(): boolean {
    return this.#valid;
  }

  /** Whether the lease is being kept (between start() and stop() or hold()). */
  get running(): boolean {
    return this.#keeping?.kind === "lease";
  }

  /** Keeps renewing the lease on `epoch` until stop() or hold(). */
  start(epoch: number): void {
    if (this.#keeping?.kind === "lease" && this.#keeping.epoch === epoch) return;
    this.#keep({ kind: "lease", epoch });
  }

  /** A secondary protects the guest: no lease is needed, but takeovers wait while this node says it is alive. */
  hold(epoch: number, holdMs: number): void {
    if (this.#keeping?.kind === "hold" && this.#keeping.epoch === epoch && this.#keeping.holdMs === holdMs) return;
    this.#keep({ kind: "hold", epoch, holdMs });
  }

  /** Stops holding and gives the hold back at once (a hold of 0 ms): the guest goes to the secondary. */
  release(): void {
    const keeping = this.#keeping;
    if (keeping?.kind !== "hold") return;
    this.stop();
    void this.#options.witness.hold(this.#options.node, keeping.epoch, 0).catch(() => undefined);
  }

  /** Nothing to keep (fenced, closed, or a secondary protects the guest under the `stall` policy). */
  stop(): void {
    this.#generation++;
    this.#keeping = undefined;
    this.#timer?.cancel();
    this.#expiry?.cancel();
    this.#timer = this.#expiry = undefined;
    // Quietly: whoever stops the lease no longer depends on it.
    this.#valid = false;
  }

  #keep(keeping: Keeping): void {
    this.stop();
    this.#keeping = keeping;
    void this.#ask(this.#generation, keeping);
  }

  async #ask(generation: number, keeping: Keeping): Promise<void> {
    const { witness, node, clock } = this.#options;
    const askedAt = clock.now();
    let nextMs = keeping.kind === "hold" ? keeping.holdMs / 3 : RETRY_MS;
    try {
      const answer = keeping.kind === "hold" ? await witness.hold(node, keeping.epoch, keeping.holdMs) : await witness.renew(node, keeping.epoch);
      if (generation !== this.#generation) return;
      if (!answer.granted) {
        if (answer.epoch > keeping.epoch) return this.#options.onSuperseded(answer.reason);
        // A hold refused at this epoch (another node holds it, as after a handover) changes nothing here.
        if (keeping.kind === "lease") {
          this.#options.log?.(`primary: the witness refused the lease: ${answer.reason}`);
          if (answer.retryInMs !== undefined) nextMs = answer.retryInMs;
        }
      } else if (keeping.kind === "lease") {
        this.#validUntil = askedAt + answer.leaseMs;
        this.#set(true);
        this.#expiry?.cancel();
        this.#expiry = clock.setTimeout(() => this.#set(clock.now() < this.#validUntil), this.#validUntil - clock.now());
        nextMs = answer.leaseMs / 3;
      }
    } catch (error) {
      if (generation !== this.#generation) return;
      if (keeping.kind === "lease") this.#options.log?.(`primary: cannot reach the witness: ${(error as Error).message}`);
    }
    if (generation === this.#generation) this.#timer = clock.setTimeout(() => void this.#ask(generation, keeping), nextMs);
  }

  #set(valid: boolean): void {
    if (valid === this.#valid) return;
    this.#valid = valid;
    this.#options.onChange(valid);
  }
}
