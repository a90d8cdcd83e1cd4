// What a primary checks of its secondary's messages: its disks' digests only before the
// initial copy ends, one init-ack after init-end, sync-acks one at a time for commits sent,
// and `promoted`, which fences the session.
import { ProtocolError } from "./errors.ts";
import type { BinaryFrame } from "./frames.ts";
import type { ControlMessage } from "./messages.ts";
import { orderError, SessionOrder } from "./session-order.ts";

export class PrimarySessionOrder extends SessionOrder {
  #initEndSent = false;
  #initAcked = false;
  #lastCommitSent = 0;
  #lastAcked = 0;

  constructor() {
    super("primary");
  }

  /** The highest sync the peer acknowledged. */
  get acknowledged(): number {
    return this.#lastAcked;
  }

  override sentFrame(frame: BinaryFrame): void {
    if (frame.kind !== "sync-commit") return;
    if (frame.seq !== this.#lastCommitSent + 1) throw orderError(`sending sync-commit ${frame.seq} after ${this.#lastCommitSent}`);
    this.#lastCommitSent = frame.seq;
  }

  protected override sentControl(message: ControlMessage): void {
    if (message.type === "init-end") this.#initEndSent = true;
  }

  protected override receiveFrame(frame: BinaryFrame): void {
    throw orderError(`${frame.kind} frame from a secondary`);
  }

  protected override receiveControl(message: ControlMessage): void {
    switch (message.type) {
      case "disk-digest":
        // The secondary tells what its own disks hold, so the primary can skip copying equal ones.
        this.expectPhase("await-init", message.type);
        this.expectEpoch(message.epoch, message.type);
        if (this.#initEndSent) throw orderError("disk-digest from the secondary after init-end");
        return;
      case "init-ack":
        if (!this.#initEndSent || this.#initAcked) throw orderError(this.#initAcked ? "second init-ack" : "init-ack before init-end was sent");
        this.expectEpoch(message.epoch, message.type);
        this.#initAcked = true;
        return this.enter("replicating");
      case "verify-digests":
        this.expectPhase("replicating", message.type);
        return;
      case "sync-ack":
        this.expectEpoch(message.epoch, message.type);
        if (!this.#initAcked) throw orderError("sync-ack before init-ack");
        if (message.seq !== this.#lastAcked + 1) throw orderError(`sync-ack ${message.seq}, expected ${this.#lastAcked + 1}`);
        if (message.seq > this.#lastCommitSent) throw orderError(`sync-ack ${message.seq} for a sync-commit not sent (last sent ${this.#lastCommitSent})`);
        this.#lastAcked = message.seq;
        return;
      case "promoted":
        if (message.epoch <= this.epoch) throw new ProtocolError("stale-epoch", `promoted to epoch ${message.epoch}, session is already at ${this.epoch}`);
        this.raiseEpoch(message.epoch);
        return this.enter("fenced");
      default:
        throw orderError(`a primary does not accept ${message.type}`);
    }
  }
}
