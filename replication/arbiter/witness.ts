// The arbiter: a witness both nodes can reach decides which one may run the guest, so a
// link cut with both nodes alive never leaves two guests running (split brain). Its rules
// (VMware FT's test-and-set on shared storage, as a lease):
//
//   - a node runs the guest at an epoch only once the witness granted it that epoch; a
//     takeover asks for the last epoch + 1 (`claim`), and is refused while the holder's lease
//     is valid: a primary that is alive and says so keeps the guest;
//   - a primary protected by a secondary says it is alive (`hold`) a few times per peer
//     timeout: while its hold lasts a takeover is refused, to be asked again when it ends. So a
//     link cut with both nodes alive leaves the guest where it runs (no restart, nothing the
//     guest did since the last acknowledged sync rolled back), and a frozen or cut-off primary
//     is taken over once its hold ran out, which is before its secondary noticed the silence;
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
  | { granted: true; epoch: number; leaseMs: number }
  /** `retryInMs`: the holder's hold ends then (it was alive and protected): ask again. Absent: final. */
  | { granted: false; epoch: number; holder: string | undefined; reason: string; retryInMs?: number };

/** What a node asks of the witness (over IPC to a pair's parent, or a network link to `twinvm witness`). */
export interface Witness {
  /** Run the guest at `epoch` (a first primary: 1; a takeover: the last epoch + 1). */
  claim(node: string, epoch: number): Promise<WitnessAnswer>;
  /** The holder of `epoch` renews its lease. */
  renew(node: string, epoch: number): Promise<WitnessAnswer>;
  /** The holder of `epoch`, protected by a secondary, is alive: refuse takeovers for `holdMs`. */
  hold(node: string, epoch: number, holdMs: number): Promise<WitnessAnswer>;
}

export const DEFAULT_LEASE_MS = 600;

/** The witness's rules and state: pure, on a clock. */
export class WitnessCore implements Witness {
  readonly #clock: Clock;
  readonly #leaseMs: number;
  #epoch = 0;
  #holder: string | undefined;
  #leaseUntil = -Infinity;
  #heldAt = -Infinity;
  #heldUntil = -Infinity;

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

  /** Whether the holder runs on a lease (unprotected) now, which no takeover can end. */
  get leased(): boolean {
    return this.#clock.now() < this.#leaseUntil;
  }

  claim(node: string, epoch: number): Promise<WitnessAnswer> {
    return Promise.resolve(this.claimNow(node, epoch));
  }

  renew(node: string, epoch: number): Promise<WitnessAnswer> {
    return Promise.resolve(this.renewNow(node, epoch));
  }

  hold(node: string, epoch: number, holdMs: number): Promise<WitnessAnswer> {
    return Promise.resolve(this.holdNow(node, epoch, holdMs));
  }

  claimNow(node: string, epoch: number): WitnessAnswer {
    const now = this.#clock.now();
    if (epoch === this.#epoch && node === this.#holder) return this.#grant(now);
    return this.#take(node, epoch, now) ?? this.#grant(now);
  }

  renewNow(node: string, epoch: number): WitnessAnswer {
    const now = this.#clock.now();
    if (epoch < this.#epoch)
      return this.#deny(`epoch ${this.#epoch} runs the guest now (${this.#holder ?? "unknown node"}); ${node} at epoch ${epoch} is superseded`);
    if (epoch > this.#epoch) return this.claimNow(node, epoch);
    if (node !== this.#holder) return this.#deny(`${this.#holder ?? "another node"} holds epoch ${epoch}`);
    return this.#grant(now);
  }

  holdNow(node: string, epoch: number, holdMs: number): WitnessAnswer {
    const now = this.#clock.now();
    if (epoch < this.#epoch)
      return this.#deny(`epoch ${this.#epoch} runs the guest now (${this.#holder ?? "unknown node"}); ${node} at epoch ${epoch} is superseded`);
    if (epoch > this.#epoch) {
      const refusal = this.#take(node, epoch, now);
      if (refusal !== undefined) return refusal;
    } else if (node !== this.#holder) return this.#deny(`${this.#holder ?? "another node"} holds epoch ${epoch}`);
    // Protected again: the holder no longer relies on its lease, so a takeover waits only for the hold.
    this.#leaseUntil = -Infinity;
    // A hold never outlasts a lease: a node cannot keep others off longer by asking for more.
    const heldMs = Math.max(0, Math.min(holdMs, this.#leaseMs));
    this.#heldAt = now;
    this.#heldUntil = now + heldMs;
    return { granted: true, epoch: this.#epoch, leaseMs: heldMs };
  }

  /**
   * `node`'s connection to the witness closed (its process exited, or its link to a remote
   * witness dropped): its hold ends now, so the takeover after a crash does not wait it out. A
   * lease stays: the node may be alive and relying on it until it runs out.
   */
  gone(node: string): void {
    if (node === this.#holder) this.#heldUntil = -Infinity;
  }

  /** Makes `node` the holder of `epoch`, or says why not (undefined: done). */
  #take(node: string, epoch: number, now: number): WitnessAnswer | undefined {
    if (epoch <= this.#epoch) return this.#deny(`epoch ${epoch} is not above ${this.#epoch}`);
    if (node !== this.#holder) {
      const holder = this.#holder ?? "the holder";
      if (now < this.#leaseUntil)
        return this.#deny(`${holder} holds a lease on epoch ${this.#epoch} for ${Math.ceil(this.#leaseUntil - now)} ms more: it is alive`);
      if (now < this.#heldUntil) {
        const retryInMs = Math.ceil(this.#heldUntil - now);
        const reason = `${holder} said ${Math.round(now - this.#heldAt)} ms ago that it is alive and protected at epoch ${this.#epoch}; ask again in ${retryInMs} ms`;
        return this.#deny(reason, retryInMs);
      }
    }
    this.#epoch = epoch;
    this.#holder = node;
    this.#heldUntil = -Infinity;
    return undefined;
  }

  #grant(now: number): WitnessAnswer {
    this.#leaseUntil = now + this.#leaseMs;
    return { granted: true, epoch: this.#epoch, leaseMs: this.#leaseMs };
  }

  #deny(reason: string, retryInMs?: number): WitnessAnswer {
    return { granted: false, epoch: this.#epoch, holder: this.#holder, reason, ...(retryInMs !== undefined && { retryInMs }) };
  }
}

/** Answers one question (from the IPC channel or the network link) with the witness's rules. */
export function askWitness(witness: WitnessCore, node: string, ask: { op: "claim" | "renew" | "hold"; epoch: number; holdMs: number }): WitnessAnswer {
  switch (ask.op) {
    case "claim":
      return witness.claimNow(node, ask.epoch);
    case "renew":
      return witness.renewNow(node, ask.epoch);
    case "hold":
      return witness.holdNow(node, ask.epoch, ask.holdMs);
  }
}
