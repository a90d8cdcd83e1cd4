// An authenticated replication session over a Transport: outbound messages and
// frames are encoded and sent strictly in call order; inbound ones are decoded,
// order-checked by SessionOrder and only then handed to the engine. The first
// bad input ends the session with an `error` message to the peer.
import { encodeControl, decodeControl } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { decodeFrame, encodeFrame, type BinaryFrame, type EncodeOptions } from "../protocol/frames.ts";
import { MAX_TEXT_FIELD } from "../protocol/limits.ts";
import type { ControlMessage, NodeRole } from "../protocol/messages.ts";
import type { Inbound, SessionOrder } from "../protocol/session-order.ts";
import type { InboundMessage, Transport } from "../transport/transport.ts";

export type ChannelEvent = Inbound;

export interface ChannelCloseInfo {
  reason: string;
  byPeer: boolean;
  /** Set when we ended the session because the peer broke the protocol. */
  error?: ProtocolError;
}

export interface SessionFacts {
  version: number;
  localRole: NodeRole;
  peerRole: NodeRole;
  peerNodeId: string;
  order: SessionOrder;
}

export class ReplicationChannel {
  readonly version: number;
  readonly localRole: NodeRole;
  readonly peerRole: NodeRole;
  readonly peerNodeId: string;
  private readonly order: SessionOrder;
  private inbound: Promise<void> = Promise.resolve();
  private outbound: Promise<void> = Promise.resolve();
  private protocolError: ProtocolError | undefined;

  constructor(
    private readonly transport: Transport,
    facts: SessionFacts,
  ) {
    this.version = facts.version;
    this.localRole = facts.localRole;
    this.peerRole = facts.peerRole;
    this.peerNodeId = facts.peerNodeId;
    this.order = facts.order;
  }

  /** The session's failover epoch (the primary's; raised by `promoted`). */
  get epoch(): number {
    return this.order.epoch;
  }

  get isOpen(): boolean {
    return this.transport.isOpen;
  }

  get bufferedAmount(): number {
    return this.transport.bufferedAmount;
  }

  whenDrained(lowWaterMark?: number): Promise<void> {
    return this.transport.whenDrained(lowWaterMark);
  }

  /** Starts delivery; messages that arrived before this call are delivered first, in order. */
  onMessage(handler: (event: ChannelEvent) => void): void {
    this.transport.onMessage((raw) => {
      this.inbound = this.inbound.then(() => this.accept(raw, handler));
    });
  }

  onClose(handler: (info: ChannelCloseInfo) => void): void {
    this.transport.onClose((info) => {
      // Let inbound messages already accepted reach the engine before it hears of the close.
      void this.inbound.then(() => handler(this.protocolError === undefined ? info : { ...info, error: this.protocolError }));
    });
  }

  /** Resolves with the bytes put on the wire (for metrics). */
  send(message: ControlMessage): Promise<number> {
    return this.enqueueOutbound(async () => {
      const text = encodeControl(message);
      this.order.sent(message);
      this.transport.sendText(text);
      return utf8Length(text);
    });
  }

  /** Encoding (and compression) happens in the send queue, so frames never overtake earlier sends. */
  sendFrame(frame: BinaryFrame, options?: EncodeOptions): Promise<number> {
    return this.enqueueOutbound(async () => {
      const bytes = await encodeFrame(frame, options);
      this.transport.sendBinary(bytes);
      return bytes.length;
    });
  }

  /** Says goodbye (if still open) and closes. */
  async close(reason = "closing"): Promise<void> {
    if (this.transport.isOpen && this.order.phase !== "closed") {
      await this.send({ type: "goodbye", reason: reason.slice(0, MAX_TEXT_FIELD) }).catch(() => undefined);
    }
    this.transport.close(reason);
  }

  private enqueueOutbound<T>(work: () => Promise<T>): Promise<T> {
    const step = this.outbound.then(work);
    this.outbound = step.then(
      () => undefined,
      () => undefined,
    );
    return step;
  }

  private async accept(raw: InboundMessage, handler: (event: ChannelEvent) => void): Promise<void> {
    // Not gated on isOpen: what the peer sent before closing (e.g. its goodbye) still counts.
    if (this.protocolError !== undefined) return;
    let event: ChannelEvent;
    try {
      event = raw.kind === "text" ? { channel: "control", message: decodeControl(raw.text) } : { channel: "frame", frame: await decodeFrame(raw.bytes) };
      this.order.receive(event);
    } catch (error) {
      this.reject(error instanceof ProtocolError ? error : new ProtocolError("malformed", "undecodable input", { cause: error }));
      return;
    }
    handler(event);
  }

  private reject(error: ProtocolError): void {
    this.protocolError = error;
    try {
      this.transport.sendText(encodeControl({ type: "error", code: error.code, message: error.message.slice(0, MAX_TEXT_FIELD) }));
    } catch {
      // the pipe is already gone; closing below is all that is left
    }
    this.transport.close(`protocol violation: ${error.message}`);
  }
}

function utf8Length(text: string): number {
  let bytes = text.length;
  // Control messages are ASCII but for free-text fields; count the rest exactly.
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) bytes += code >= 0x800 && (code < 0xd800 || code > 0xdfff) ? 2 : 1;
  }
  return bytes;
}
