// Paces the guest's duplicate ACKs on their way to passt. passt (Debian's 2023 version) takes
// a repeated pure ACK as a loss and sends its whole window again from the acknowledged byte
// (go-back-N). The guest then receives every in-flight segment twice and answers each copy
// with another duplicate ACK, and each of those brings the window again: a flood the guest,
// which takes a few hundred frames a second, never digs out of (traced: 10,000 frames/s of
// retransmissions for 20 s after two identical ACKs). Letting one duplicate through per
// interval keeps passt's fast recovery of a real loss and ends the feedback.
import { isPureAck, tcpHeader } from "./tcp-segment.ts";

export const DUPLICATE_ACK_INTERVAL_MS = 250;
/** Flows remembered at most (the oldest is forgotten first). */
const MAX_FLOWS = 4096;

interface LastAck {
  ack: number;
  window: number;
  passedAt: number;
}

export class DuplicateAckPacer {
  readonly #intervalMs: number;
  readonly #flows = new Map<string, LastAck>();
  #withheld = 0;

  constructor(options: { intervalMs?: number } = {}) {
    this.#intervalMs = options.intervalMs ?? DUPLICATE_ACK_INTERVAL_MS;
  }

  /** Duplicate ACKs withheld so far. */
  get withheld(): number {
    return this.#withheld;
  }

  /** Whether the guest's frame goes on to the stack now (false: a duplicate ACK sent again too soon). */
  pass(frame: Uint8Array, nowMs: number): boolean {
    const ack = tcpHeader(frame);
    if (ack === undefined || !isPureAck(ack)) return true;
    const last = this.#flows.get(ack.flow);
    if (last !== undefined && last.ack === ack.ack && last.window === ack.window && nowMs - last.passedAt < this.#intervalMs) {
      this.#withheld++;
      return false;
    }
    this.#flows.delete(ack.flow); // re-inserted last: the Map's order is the age order
    this.#flows.set(ack.flow, { ack: ack.ack, window: ack.window, passedAt: nowMs });
    if (this.#flows.size > MAX_FLOWS) this.#flows.delete(this.#flows.keys().next().value!);
    return true;
  }
}
