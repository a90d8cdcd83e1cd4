// The arbiter: a witness both nodes can reach decides which one may run the guest, so a
// link cut with both nodes alive never leaves two guests running (split brain). Its rules
// (VMware FT's test-and-set on shared storage, as a lease):
//
//   - a node runs the guest at an epoch only once the witness granted it that epoch; a
//     takeover asks for the last epoch + 1 (`claim`), and is refused while the holder's lease
//     is valid: a primary that is alive and says so keeps the guest;
//   - a primary that lost its secondary releases output (and lets writes complete) only while
//     it holds a valid lease (`renew`); told that a higher epoch exists, it fences itself;
//   - a primary protected by a secondary needs no lease: its output waits for the secondary's
//     acknowledgements, which a secondary that took over no longer sends.
//
// A node that cannot reach the witness cannot be granted anything: a takeover waits, an
// unprotected primary holds its guest's writes and output. Without a witness configured,
// none of this applies (README: what each choice risks).
import { systemClock, type Clock } from "../clock.ts";

export type WitnessAnswer =
  /** The asker holds `epoch` for `leaseMs` from the witness's answer (so, safely, from when it asked). */
  { granted: true; epoch: number; leaseMs: number } | { granted: false; epoch: number; holder: string | undefined; reason: string };

/** What a node asks of the witness (over IPC to a pair's parent, or a network link to `twinvm witness`). */
export interface Witness {
  /** Run the guest at `epoch` (a first primary: 1; a takeover: the last epoch + 1). */
  claim(node: string, epoch: number): Promise<WitnessAnswer>;
  /** The holder of `epoch` renews its lease. */
  renew(node: string, epoch: number): Promise<WitnessAnswer>;
}

export const DEFAULT_LEASE_MS = 600;

/** The witness's rules and state: pure, on a clock. */
export class WitnessCore implements Witness {
  readonly #clock: Clock;
  readonly #leaseMs: number;
  #epoch = 0;
  #holder: string | undefined;
  #leaseUntil = -Infinity;

  constructor(options: { leaseMs?: number; clock?: Clock } = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  }

  get epoch(): number {
    return this.#epoch;
  }

  get holder(): string | undefined {
    return this.#holder;
  }

  claim(node: string, epoch: number): Promise<WitnessAnswer> {
    return Promise.resolve(this.claimNow(node, epoch));
  }

  renew(node: string, epoch: number): Promise<WitnessAnswer> {
    return Promise.resolve(this.renewNow(node, epoch));
  }

  claimNow(node: string, epoch: number): WitnessAnswer {
    const now = this.#clock.now();
    if (epoch === this.#epoch && node === this.#holder) return this.#grant(now);
    if (epoch <= this.#epoch) return this.#deny(`epoch ${epoch} is not above ${this.#epoch}`);
    if (now < this.#leaseUntil && node !== this.#holder) {
      return this.#deny(`${this.#holder ?? "the holder"} holds a lease on epoch ${this.#epoch} for ${Math.ceil(this.#leaseUntil - now)} ms more: it is alive`);
    }
    this.#epoch = epoch;
    this.#holder = node;
    return this.#grant(now);
  }

  renewNow(node: string, epoch: number): WitnessAnswer {
    const now = this.#clock.now();
    if (epoch < this.#epoch)
      return this.#deny(`epoch ${this.#epoch} runs the guest now (${this.#holder ?? "unknown node"}); ${node} at epoch ${epoch} is superseded`);
    if (epoch > this.#epoch) return this.claimNow(node, epoch);
    if (node !== this.#holder) return this.#deny(`${this.#holder ?? "another node"} holds epoch ${epoch}`);
    return this.#grant(now);
  }

  #grant(now: number): WitnessAnswer {
    this.#leaseUntil = now + this.#leaseMs;
    return { granted: true, epoch: this.#epoch, leaseMs: this.#leaseMs };
  }

  #deny(reason: string): WitnessAnswer {
    return { granted: false, epoch: this.#epoch, holder: this.#holder, reason };
  }
}
