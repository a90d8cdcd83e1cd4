// Checks the ORDER of what a peer sends, on the receiving side, so an engine fed through it
// never sees e.g. a sync-commit before its frames, a seq that skips, an epoch that goes
// down, or data before authentication. This file holds what both roles check (the
// handshake's steps, heartbeats, epochs, the session's phase); what a secondary checks of a
// primary is secondary-order.ts, what a primary checks of a secondary primary-order.ts.
import { ProtocolError } from "./errors.ts";
import type { BinaryFrame } from "./frames.ts";
import type { ControlMessage, NodeRole } from "./messages.ts";

export type Inbound = { channel: "control"; message: ControlMessage } | { channel: "frame"; frame: BinaryFrame };

export type SessionPhase =
  | "handshake" // only challenge, auth, welcome (or refused/error)
  | "await-init" // authenticated; secondary waits for init-begin, primary for its own init-end + init-ack
  | "initial-sync" // secondary: between init-begin and init-end
  | "replicating" // event-driven syncs
  | "fenced" // primary: the peer promoted itself; only goodbye/error/heartbeats now
  | "closed"; // after goodbye, error or refused: nothing more

/** The phases a session may move to from each (a move elsewhere is a bug here, not the peer's fault). */
const PHASE_TRANSITIONS: Record<SessionPhase, readonly SessionPhase[]> = {
  handshake: ["await-init", "closed"],
  "await-init": ["initial-sync", "replicating", "fenced", "closed"],
  "initial-sync": ["replicating", "closed"],
  replicating: ["fenced", "closed"],
  fenced: ["closed"],
  closed: [],
};

export abstract class SessionOrder {
  #phase: SessionPhase = "handshake";
  #handshakeStep: "challenge" | "auth" | "done" = "challenge";
  #epoch = 0;
  #lastPeerHeartbeat = -1;

  constructor(readonly localRole: NodeRole) {}

  get phase(): SessionPhase {
    return this.#phase;
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** Called by the handshake once the peer has proved the secret; `epoch` is the primary's. */
  authenticated(epoch: number): void {
    if (this.#phase !== "handshake" || this.#handshakeStep !== "done") {
      throw new ProtocolError("order", "authenticated() before the handshake finished");
    }
    this.#epoch = epoch;
    this.enter("await-init");
  }

  /** Accepts one inbound message or frame, or throws ProtocolError and stays unchanged. */
  receive(input: Inbound): void {
    if (this.#phase === "closed") throw orderError(`${describe(input)} after the session closed`);
    if (this.#phase === "handshake") return this.#receiveDuringHandshake(input);
    if (input.channel === "frame") return this.receiveFrame(input.frame);
    const message = input.message;
    if (message.type === "error" || message.type === "goodbye" || message.type === "refused") return this.enter("closed");
    if (message.type === "heartbeat") return this.#receiveHeartbeat(message);
    if (this.#phase === "fenced") throw orderError(`${message.type} after the peer promoted itself`);
    return this.receiveControl(message);
  }

  /** Records what we sent that the peer's replies will be checked against. */
  sent(message: ControlMessage): void {
    if (message.type === "goodbye" || message.type === "error" || message.type === "refused") this.enter("closed");
    else this.sentControl(message);
  }

  /** Records a frame we sent (a primary's sync-commits number the acks it may get). */
  abstract sentFrame(frame: BinaryFrame): void;

  /** A control message after authentication (not a heartbeat, not an end of session). */
  protected abstract receiveControl(message: ControlMessage): void;
  protected abstract receiveFrame(frame: BinaryFrame): void;
  protected sentControl(_message: ControlMessage): void {}

  /** The one place the phase changes. */
  protected enter(phase: SessionPhase): void {
    if (phase === this.#phase) return;
    if (!PHASE_TRANSITIONS[this.#phase].includes(phase)) throw new Error(`session order: ${this.#phase} -> ${phase} is not a legal phase change`);
    this.#phase = phase;
  }

  /** A promoted peer raised the epoch (primary side), or we promoted ourselves. */
  protected raiseEpoch(epoch: number): void {
    this.#epoch = epoch;
  }

  protected expectPhase(phase: SessionPhase, what: string): void {
    if (this.#phase !== phase) throw orderError(`${what} in phase ${this.#phase}, expected ${phase}`);
  }

  protected expectEpoch(epoch: number, what: string): void {
    if (epoch < this.#epoch) throw staleEpoch(epoch, this.#epoch, what);
    if (epoch > this.#epoch) throw orderError(`${what} with epoch ${epoch}, session is at ${this.#epoch} and no promoted was sent`);
  }

  #receiveDuringHandshake(input: Inbound): void {
    if (input.channel === "frame") throw new ProtocolError("unauthenticated", `${input.frame.kind} frame before authentication`);
    const type = input.message.type;
    if (type === "refused" || type === "error") return this.enter("closed");
    if (type !== this.#handshakeStep) {
      const code = ["challenge", "auth"].includes(type) ? "order" : "unauthenticated";
      throw new ProtocolError(code, `${type} during the handshake, expected ${this.#handshakeStep}`);
    }
    // The initiator's welcome travels as the first encrypted record; the handshake checks it.
    this.#handshakeStep = type === "challenge" ? "auth" : "done";
  }

  /** Both sides send heartbeats on their own clock (no answers: any record shows the peer alive). */
  #receiveHeartbeat(message: Extract<ControlMessage, { type: "heartbeat" }>): void {
    if (message.epoch < this.#epoch) throw staleEpoch(message.epoch, this.#epoch, message.type);
    if (message.id <= this.#lastPeerHeartbeat) throw orderError(`heartbeat ${message.id} after ${this.#lastPeerHeartbeat}`);
    this.#lastPeerHeartbeat = message.id;
  }
}

function describe(input: Inbound): string {
  return input.channel === "frame" ? `${input.frame.kind} frame` : input.message.type;
}

export function orderError(message: string): ProtocolError {
  return new ProtocolError("order", message);
}

export function inconsistent(message: string): ProtocolError {
  return new ProtocolError("inconsistent", message);
}

function staleEpoch(epoch: number, current: number, what: string): ProtocolError {
  return new ProtocolError("stale-epoch", `${what} with epoch ${epoch}, session is at ${current}`);
}
