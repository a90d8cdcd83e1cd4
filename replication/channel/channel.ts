// An authenticated, encrypted replication session over a Transport. Outbound messages and
// frames are encoded, sealed (record-layer.ts) and sent strictly in call order; inbound
// records are opened, decoded, order-checked by SessionOrder and only then handed to the
// engine. The first bad input ends the session with an `error` to the peer, and the close
// tells the engine it was a protocol error (not the peer's death).
import { encodeControl, decodeControl } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { announcedFrameLength } from "../protocol/frame-header.ts";
import type { BinaryFrame, EncodeOptions } from "../protocol/frames.ts";
import { decodeFrame, encodeFrame, encodeFrameNow } from "../protocol/frame-codec.ts";
import { MAX_TEXT_FIELD } from "../protocol/limits.ts";
import type { ControlMessage, NodeRole } from "../protocol/messages.ts";
import type { Inbound, SessionOrder } from "../protocol/session-order.ts";
import type { InboundMessage, Transport } from "../transport/transport.ts";
import { RecordType, type RecordLayer, type RecordTypeCode } from "./record-layer.ts";

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

const utf8 = new TextEncoder();
/** Frames of one sync share a record up to this size (larger ones go alone: nothing to save). */
const BATCH_RECORD_BYTES = 1 << 20;
/** Inbound messages read but not yet handled: above HIGH the transport stops reading, at LOW it reads again. */
const INBOUND_HIGH_WATER = 16;
const INBOUND_LOW_WATER = 4;

/** A handler may return a promise: the next message waits for it (the secondary's disk is slower than the link). */
export type ChannelHandler = (event: ChannelEvent) => void | Promise<void>;

export class ReplicationChannel {
  readonly version: number;
  readonly localRole: NodeRole;
  readonly peerRole: NodeRole;
  readonly peerNodeId: string;
  private readonly order: SessionOrder;
  private inbound: Promise<void> = Promise.resolve();
  private outbound: Promise<void> = Promise.resolve();
  /** Sends being encoded or queued in `outbound`, not yet on the transport: `sendFramesNow` may not pass them. */
  private outboundPending = 0;
  private protocolError: ProtocolError | undefined;
  private queuedInbound = 0;
  private readingPaused = false;
  private activityListener: (() => void) | undefined;
  #arrivedAt: number | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly records: RecordLayer,
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
    return this.transport.isOpen && this.protocolError === undefined;
  }

  /**
   * When the record whose messages are being delivered now reached this side (performance.now()):
   * a handler's measure of how long the message took from the transport to it (the timeline).
   */
  get arrivedAt(): number | undefined {
    return this.#arrivedAt;
  }

  /** Whether we stopped reading from the peer (our handler is behind): silence now is ours, not the peer's. */
  get receivingPaused(): boolean {
    return this.readingPaused;
  }

  get bufferedAmount(): number {
    return this.transport.bufferedAmount;
  }

  whenDrained(lowWaterMark?: number): Promise<void> {
    return this.transport.whenDrained(lowWaterMark);
  }

  /**
   * Called as each message arrives, before it is opened and decoded: the peer is alive even
   * when a large frame ahead of its heartbeat takes a while to process.
   */
  onActivity(listener: () => void): void {
    this.activityListener = listener;
  }

  /** Starts delivery; messages that arrived before this call are delivered first, in order. */
  onMessage(handler: ChannelHandler): void {
    this.transport.onMessage((raw) => {
      const arrivedAt = performance.now();
      this.activityListener?.();
      if (++this.queuedInbound > INBOUND_HIGH_WATER && !this.readingPaused) {
        this.readingPaused = true;
        this.transport.pauseReceiving();
      }
      this.inbound = this.inbound
        .then(() => this.accept(raw, handler, arrivedAt))
        .finally(() => {
          if (--this.queuedInbound <= INBOUND_LOW_WATER && this.readingPaused) {
            this.readingPaused = false;
            this.transport.resumeReceiving();
          }
        });
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
    return this.enqueueOutbound(() => {
      const text = encodeControl(message);
      this.order.sent(message);
      return this.seal(RecordType.control, utf8.encode(text));
    });
  }

  /**
   * Encodes (and compresses) the frame first, then takes its place in the send queue: a
   * heartbeat sent meanwhile is not stuck behind a large frame's compression. A caller that
   * needs frames in order awaits each sendFrame before sending the next.
   */
  async sendFrame(frame: BinaryFrame, options?: EncodeOptions): Promise<number> {
    const bytes = await this.encoded(encodeFrame(frame, options));
    return this.enqueueOutbound(() => {
      this.order.sentFrame(frame);
      return this.seal(RecordType.frame, bytes);
    }, true);
  }

  /**
   * Sends frames in order as few records as the batch size allows (one sync's small frames:
   * one seal, one message, one write). Resolves with each frame's share of the bytes put on
   * the wire; a record's overhead counts to its first frame.
   */
  async sendFrames(frames: readonly BinaryFrame[], options?: EncodeOptions): Promise<number[]> {
    const encoded = await this.encoded(Promise.all(frames.map((frame) => encodeFrame(frame, options))));
    return this.enqueueOutbound(async () => {
      const sizes: number[] = [];
      for (const batch of this.batches(frames, encoded)) sizes.push(...batch.sizes(await this.seal(batch.type, ...batch.payloads)));
      return sizes;
    }, true);
  }

  /**
   * As `sendFrames` without compression, on the transport before this call returns, so that a
   * sync taken inside the guest's slice leaves before the slice ends (each `await` would wait
   * for it). Returns undefined, having sent nothing, where that cannot keep the order or the
   * record layer seals asynchronously (WebCrypto): send with `sendFrames` then.
   */
  sendFramesNow(frames: readonly BinaryFrame[]): number[] | undefined {
    if (this.outboundPending > 0 || !this.records.sealsNow || !this.isOpen) return undefined;
    const encoded = frames.map((frame) => encodeFrameNow(frame));
    const sizes: number[] = [];
    for (const batch of this.batches(frames, encoded)) {
      const record = this.records.sealNow(batch.type, ...batch.payloads);
      this.transport.sendBinary(record);
      sizes.push(...batch.sizes(record.length));
    }
    return sizes;
  }

  /**
   * Encoded frames grouped into as few records as the batch size allows (one sync's small
   * frames: one seal, one message, one write), each frame's place in the session taken as its
   * record is formed; `sizes` gives each frame's share of its record's bytes on the wire (the
   * record's overhead counts to its first frame).
   */
  private *batches(
    frames: readonly BinaryFrame[],
    encoded: readonly Uint8Array[],
  ): Generator<{ type: RecordTypeCode; payloads: Uint8Array[]; sizes(recordBytes: number): number[] }> {
    for (let start = 0; start < frames.length;) {
      let end = start + 1;
      let bytes = encoded[start]!.length;
      while (end < frames.length && bytes + encoded[end]!.length <= BATCH_RECORD_BYTES) bytes += encoded[end++]!.length;
      for (let i = start; i < end; i++) this.order.sentFrame(frames[i]!);
      const payloads = encoded.slice(start, end);
      yield {
        type: payloads.length === 1 ? RecordType.frame : RecordType.frames,
        payloads,
        sizes: (recordBytes) => [payloads[0]!.length + recordBytes - bytes, ...payloads.slice(1).map((frame) => frame.length)],
      };
      start = end;
    }
  }

  /** Says goodbye (if still open) and closes. */
  async close(reason = "closing"): Promise<void> {
    if (this.transport.isOpen && this.order.phase !== "closed" && this.protocolError === undefined) {
      await this.send({ type: "goodbye", reason: reason.slice(0, MAX_TEXT_FIELD) }).catch(() => undefined);
    }
    this.transport.close(reason);
  }

  private async seal(type: RecordTypeCode, ...payloads: Uint8Array[]): Promise<number> {
    const record = await this.records.seal(type, ...payloads);
    this.transport.sendBinary(record);
    return record.length;
  }

  /**
   * Awaits a send's encoding with the send counted as pending from the start; the count stays
   * until the caller's enqueueOutbound(work, true) takes it over, so `sendFramesNow` never sees
   * the queue idle while an earlier send is still on its way into it.
   */
  private async encoded<T>(encoding: Promise<T>): Promise<T> {
    this.outboundPending++;
    try {
      return await encoding;
    } catch (error) {
      this.outboundPending--;
      throw error;
    }
  }

  /** `counted`: `encoded` already counted this send as pending. */
  private enqueueOutbound<T>(work: () => Promise<T>, counted = false): Promise<T> {
    if (!counted) this.outboundPending++;
    const step = this.outbound.then(work);
    this.outbound = step.then(
      () => void this.outboundPending--,
      () => void this.outboundPending--,
    );
    return step;
  }

  private async accept(raw: InboundMessage, handler: ChannelHandler, arrivedAt: number): Promise<void> {
    // Not gated on isOpen: what the peer sent before closing (e.g. its goodbye) still counts.
    if (this.protocolError !== undefined) return;
    this.#arrivedAt = arrivedAt;
    let record: { type: RecordTypeCode; payload: Uint8Array };
    try {
      if (raw.kind !== "binary") throw new ProtocolError("unauthenticated", "a text message after the handshake (everything is encrypted now)");
      record = await this.records.open(raw.bytes);
    } catch (error) {
      this.reject(error instanceof ProtocolError ? error : new ProtocolError("malformed", "undecodable input", { cause: error }));
      return;
    }
    const { type, payload } = record;
    if (type !== RecordType.frames) return this.deliver(payload, type === RecordType.control ? "control" : "frame", handler);
    // Frames back to back, each as long as its header says; each is checked and handled in turn.
    for (let at = 0; at < payload.length && this.protocolError === undefined;) {
      const length = announcedFrameLength(payload.subarray(at));
      if (length === undefined)
        return this.reject(new ProtocolError("truncated", `a batched record ends inside a frame header (${payload.length - at} bytes left)`));
      await this.deliver(payload.subarray(at, at + length), "frame", handler);
      at += length;
    }
  }

  /** Decodes one message, checks its place in the session, and hands it to the engine. */
  private async deliver(payload: Uint8Array, kind: "control" | "frame", handler: ChannelHandler): Promise<void> {
    if (this.protocolError !== undefined) return;
    let event: ChannelEvent;
    try {
      event =
        kind === "control"
          ? { channel: "control", message: decodeControl(new TextDecoder("utf-8", { fatal: true }).decode(payload)) }
          : { channel: "frame", frame: await decodeFrame(payload) };
      this.order.receive(event);
    } catch (error) {
      this.reject(error instanceof ProtocolError ? error : new ProtocolError("malformed", "undecodable input", { cause: error }));
      return;
    }
    try {
      await handler(event);
    } catch (error) {
      // The engine found the input unusable (e.g. a delta that does not fit its replica).
      this.reject(error instanceof ProtocolError ? error : new ProtocolError("inconsistent", (error as Error).message, { cause: error }));
    }
  }

  private reject(error: ProtocolError): void {
    this.protocolError = error;
    const message: ControlMessage = { type: "error", code: error.code, message: error.message.slice(0, MAX_TEXT_FIELD) };
    // Our direction is intact whatever the peer sent: tell it why, sealed, then close.
    void this.enqueueOutbound(() => this.seal(RecordType.control, utf8.encode(encodeControl(message))))
      .catch(() => undefined)
      .finally(() => this.transport.close(`protocol violation: ${error.message}`));
  }
}
