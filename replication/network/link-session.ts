// One authenticated network link after the handshake: messages sealed and sent in call
// order, records opened and decoded in arrival order, heartbeats both ways and a silence
// timeout (a peer host that vanished sends no FIN). The first bad record ends the session
// with an `error` to the peer; nothing the peer sends can throw out of here.
import { RecordType } from "../channel/record-layer.ts";
import { systemClock, type Clock, type Timer } from "../clock.ts";
import type { InboundMessage, Transport } from "../transport/transport.ts";
import type { AuthenticatedLink } from "./link-handshake.ts";
import { NetworkLinkError } from "./link-errors.ts";
import { DEFAULT_HEARTBEAT_MS, DEFAULT_SILENCE_TIMEOUT_MS, MAX_LINK_TEXT } from "./link-limits.ts";
import {
  decodeBatch,
  decodeControl,
  encodeControl,
  encodeEgressBatches,
  encodeIngressBatches,
  type FrameBatch,
  type IngressFrame,
  type LinkControl,
} from "./link-messages.ts";

/** What the session hands on: control messages other than ping/goodbye/error, and frame batches. */
export type LinkInbound = { kind: "control"; message: LinkControl } | FrameBatch;

export interface LinkCloseInfo {
  reason: string;
  byPeer: boolean;
  /** Set when the session ended over a protocol error (ours to report, or the peer's `error`). */
  error?: NetworkLinkError;
}

export interface LinkSessionOptions {
  heartbeatMs?: number;
  silenceTimeoutMs?: number;
  /** Heartbeats and the silence timeout (tests pass a manual clock). */
  clock?: Clock;
}

/** Above this many bytes queued towards the peer the session is not writable; drained below LOW it is again. */
const HIGH_WATER_BYTES = 256 * 1024;
const LOW_WATER_BYTES = 64 * 1024;
/** Records read but not yet handled: above HIGH the transport stops reading, at LOW it reads again. */
const INBOUND_HIGH_WATER = 32;
const INBOUND_LOW_WATER = 8;

export class LinkSession {
  readonly peerNodeId: string;
  readonly label: string;
  readonly #transport: Transport;
  readonly #records: AuthenticatedLink["records"];
  #outbound: Promise<void> = Promise.resolve();
  #inbound: Promise<void> = Promise.resolve();
  #sealingBytes = 0;
  #queuedInbound = 0;
  #readingPaused = false;
  #handler: ((message: LinkInbound) => void) | undefined;
  #closeHandlers: Array<(info: LinkCloseInfo) => void> = [];
  #closeInfo: LinkCloseInfo | undefined;
  #error: NetworkLinkError | undefined;
  #waitingForDrain = false;
  #writableListener: (() => void) | undefined;
  readonly #clock: Clock;
  #lastSent: number;
  #lastReceived: number;
  readonly #timer: Timer;

  constructor(link: AuthenticatedLink, options: LinkSessionOptions = {}) {
    this.#transport = link.transport;
    this.#records = link.records;
    this.peerNodeId = link.peerNodeId;
    this.label = link.transport.label;
    const heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    const silenceMs = options.silenceTimeoutMs ?? DEFAULT_SILENCE_TIMEOUT_MS;
    this.#clock = options.clock ?? systemClock;
    this.#lastSent = this.#lastReceived = this.#clock.now();
    this.#timer = this.#clock.setInterval(() => this.#tick(heartbeatMs, silenceMs), Math.max(10, Math.min(heartbeatMs, silenceMs) / 4));
    // A session alone does not keep a process alive.
    this.#timer.unref?.();
    this.#transport.onClose((info) => {
      this.#timer.cancel();
      // Let records already read reach the handler before it hears of the close.
      void this.#inbound.then(() =>
        this.#closed({ reason: this.#error?.message ?? info.reason, byPeer: info.byPeer, ...(this.#error ? { error: this.#error } : {}) }),
      );
    });
    this.#transport.onMessage((raw) => this.#receive(raw));
  }

  get isOpen(): boolean {
    return this.#transport.isOpen && this.#error === undefined;
  }

  /** Whether another batch may be queued now; false until the link drained (see onWritable). */
  get writable(): boolean {
    return this.isOpen && this.#transport.bufferedAmount + this.#sealingBytes < HIGH_WATER_BYTES;
  }

  /** Called each time the link drains after having been unwritable. */
  onWritable(listener: () => void): void {
    this.#writableListener = listener;
  }

  /** Messages from the peer, in order; the handler may throw a NetworkLinkError to end the session over it. */
  onMessage(handler: (message: LinkInbound) => void): void {
    this.#handler = handler;
  }

  onClose(handler: (info: LinkCloseInfo) => void): void {
    const info = this.#closeInfo;
    if (info !== undefined) queueMicrotask(() => handler(info));
    else this.#closeHandlers.push(handler);
  }

  sendControl(message: LinkControl): void {
    this.#send(RecordType.control, encodeControl(message));
  }

  sendIngress(frames: readonly IngressFrame[]): void {
    for (const payload of encodeIngressBatches(frames)) this.#send(RecordType.frame, payload);
  }

  sendEgress(frames: readonly Uint8Array[]): void {
    for (const payload of encodeEgressBatches(frames)) this.#send(RecordType.frame, payload);
  }

  /** Says goodbye and closes. */
  close(reason: string): void {
    if (this.isOpen) this.#trySend({ type: "goodbye", reason: reason.slice(0, MAX_LINK_TEXT) });
    this.#closeAfterQueued(reason);
  }

  /** Ends the session over a protocol error: the peer is told why, then the link closes. */
  fail(error: NetworkLinkError): void {
    if (this.#error !== undefined || !this.#transport.isOpen) return;
    this.#trySend({ type: "error", code: error.code, message: error.message.slice(0, MAX_LINK_TEXT) });
    this.#error = error;
    this.#closeAfterQueued(`protocol error: ${error.message}`);
  }

  #trySend(message: LinkControl): void {
    try {
      this.sendControl(message);
    } catch {
      // closing anyway
    }
  }

  #closeAfterQueued(reason: string): void {
    this.#timer.cancel();
    const close = () => this.#transport.close(reason);
    this.#outbound.then(close, close);
  }

  #send(type: typeof RecordType.control | typeof RecordType.frame, payload: Uint8Array): void {
    if (!this.isOpen) return; // a closed link drops what is sent: the caller hears of the close
    this.#lastSent = this.#clock.now();
    this.#sealingBytes += payload.length;
    // Records get their sequence numbers at seal(): sealing and sending stay in call order.
    this.#outbound = this.#outbound
      .then(async () => {
        const record = await this.#records.seal(type, payload);
        if (this.#transport.isOpen) this.#transport.sendBinary(record);
      })
      .catch(() => undefined)
      .finally(() => {
        this.#sealingBytes -= payload.length;
      });
    if (!this.writable) this.#awaitDrain();
  }

  #awaitDrain(): void {
    if (this.#waitingForDrain) return;
    this.#waitingForDrain = true;
    void this.#outbound
      .then(() => this.#transport.whenDrained(LOW_WATER_BYTES))
      .then(
        () => {
          this.#waitingForDrain = false;
          if (this.writable) this.#writableListener?.();
          else this.#awaitDrain();
        },
        () => undefined, // closed: the close handler says so
      );
  }

  #receive(raw: InboundMessage): void {
    this.#lastReceived = this.#clock.now();
    if (++this.#queuedInbound > INBOUND_HIGH_WATER && !this.#readingPaused) {
      this.#readingPaused = true;
      this.#transport.pauseReceiving();
    }
    this.#inbound = this.#inbound
      .then(() => this.#accept(raw))
      .finally(() => {
        if (--this.#queuedInbound <= INBOUND_LOW_WATER && this.#readingPaused) {
          this.#readingPaused = false;
          this.#transport.resumeReceiving();
        }
      });
  }

  async #accept(raw: InboundMessage): Promise<void> {
    if (this.#error !== undefined) return;
    let inbound: LinkInbound;
    try {
      if (raw.kind !== "binary") throw new NetworkLinkError("order", "a text message after the handshake (everything is sealed now)");
      let record: { type: number; payload: Uint8Array };
      try {
        record = await this.#records.open(raw.bytes);
      } catch (error) {
        throw new NetworkLinkError("auth-failed", `a record does not authenticate (tampered, replayed or not from the peer): ${(error as Error).message}`);
      }
      if (record.type === RecordType.control) inbound = { kind: "control", message: decodeControl(record.payload) };
      else if (record.type === RecordType.frame) inbound = decodeBatch(record.payload);
      else throw new NetworkLinkError("malformed", `record of type ${record.type}, which this link does not use`);
    } catch (error) {
      this.fail(asLinkError(error));
      return;
    }
    if (inbound.kind === "control") {
      const message = inbound.message;
      if (message.type === "ping") return;
      if (message.type === "goodbye") {
        this.#transport.close(`peer said goodbye: ${message.reason}`);
        return;
      }
      if (message.type === "error") {
        this.#error = new NetworkLinkError("refused", `the peer ended the link: ${message.message}`);
        this.#transport.close(this.#error.message);
        return;
      }
    }
    try {
      this.#handler?.(inbound);
    } catch (error) {
      this.fail(asLinkError(error));
    }
  }

  #tick(heartbeatMs: number, silenceMs: number): void {
    if (!this.isOpen) return;
    const now = this.#clock.now();
    // Our own backlog of unread records is not the peer's silence.
    if (now - this.#lastReceived > silenceMs && !this.#readingPaused) {
      this.#error = new NetworkLinkError("timeout", `no message from ${this.label} for ${Math.round(now - this.#lastReceived)} ms`);
      this.#closeAfterQueued(this.#error.message);
      return;
    }
    if (now - this.#lastSent >= heartbeatMs) this.#trySend({ type: "ping" });
  }

  #closed(info: LinkCloseInfo): void {
    if (this.#closeInfo !== undefined) return;
    this.#closeInfo = info;
    for (const handler of this.#closeHandlers.splice(0)) handler(info);
  }
}

function asLinkError(error: unknown): NetworkLinkError {
  return error instanceof NetworkLinkError ? error : new NetworkLinkError("malformed", (error as Error).message ?? String(error), { cause: error });
}
