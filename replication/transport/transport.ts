// What the replication layer needs from a message pipe: ordered text and binary
// messages, a view of unsent bytes for backpressure, and one close with a reason.
// Implementations: memory-pair.ts (tests), node/ws-transport.ts, browser-ws.ts,
// message-port.ts (between two workers: the browser demo).

export type InboundMessage = { kind: "text"; text: string } | { kind: "binary"; bytes: Uint8Array };

export interface TransportCloseInfo {
  /** Human-readable: why the pipe closed, e.g. "peer closed: auth-failed" or "connection reset". */
  reason: string;
  /** True when the other end (or the network) closed it, false when we called close(). */
  byPeer: boolean;
  /** WebSocket close code, where there is one. */
  code?: number;
}

export interface Transport {
  /** Where this pipe goes, for error messages. */
  readonly label: string;
  readonly isOpen: boolean;
  /** Bytes handed to send*() and not yet written out. */
  readonly bufferedAmount: number;
  /** Queues a message; throws TransportError("closed") once the pipe is closed. */
  sendText(text: string): void;
  sendBinary(bytes: Uint8Array): void;
  /** Resolves once bufferedAmount <= lowWaterMark; rejects with TransportError("closed") if the pipe closes first. */
  whenDrained(lowWaterMark?: number): Promise<void>;
  /** The single receiver; messages that arrive while there is none are kept, in order, for the next one. */
  onMessage(handler: ((message: InboundMessage) => void) | undefined): void;
  /** Called once when the pipe closes (right away, asynchronously, if it already has). */
  onClose(handler: (info: TransportCloseInfo) => void): void;
  /** Closes; messages already queued are still delivered to the peer first. */
  close(reason?: string): void;
  /** Stop reading from the peer (backpressure while the receiver is busy); messages already read are kept. */
  pauseReceiving(): void;
  resumeReceiving(): void;
}

export type TransportErrorCode = "closed" | "config" | "connect-failed" | "connect-timeout" | "listen-failed";

export class TransportError extends Error {
  constructor(
    readonly code: TransportErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "TransportError";
  }
}

/** Handler bookkeeping, inbound queueing, close-once and drain waiting, shared by every implementation. */
export abstract class TransportBase implements Transport {
  private messageHandler: ((message: InboundMessage) => void) | undefined;
  private readonly held: InboundMessage[] = [];
  private readonly closeHandlers: Array<(info: TransportCloseInfo) => void> = [];
  private closeInfo: TransportCloseInfo | undefined;
  private drainWaiters: Array<{ lowWaterMark: number; resolve: () => void; reject: (error: Error) => void }> = [];

  constructor(readonly label: string) {}

  abstract get bufferedAmount(): number;
  protected abstract transmitText(text: string): void;
  protected abstract transmitBinary(bytes: Uint8Array): void;
  /** Starts closing the underlying pipe; the implementation calls closed() when done. */
  protected abstract closeUnderlying(reason: string): void;

  get isOpen(): boolean {
    return this.closeInfo === undefined;
  }

  sendText(text: string): void {
    this.assertOpen();
    this.transmitText(text);
  }

  sendBinary(bytes: Uint8Array): void {
    this.assertOpen();
    this.transmitBinary(bytes);
  }

  whenDrained(lowWaterMark = 0): Promise<void> {
    if (!this.isOpen) return Promise.reject(this.closedError());
    if (this.bufferedAmount <= lowWaterMark) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.drainWaiters.push({ lowWaterMark, resolve, reject });
      this.drainWaitersChanged();
    });
  }

  onMessage(handler: ((message: InboundMessage) => void) | undefined): void {
    this.messageHandler = handler;
    while (this.messageHandler !== undefined && this.held.length > 0) this.messageHandler(this.held.shift()!);
  }

  onClose(handler: (info: TransportCloseInfo) => void): void {
    const info = this.closeInfo;
    if (info !== undefined) queueMicrotask(() => handler(info));
    else this.closeHandlers.push(handler);
  }

  close(reason = "closed locally"): void {
    if (!this.isOpen) return;
    this.closeUnderlying(reason);
    this.closed({ reason, byPeer: false });
  }

  /** Implementations call this for each message from the peer. */
  protected deliver(message: InboundMessage): void {
    if (!this.isOpen) return;
    if (this.messageHandler !== undefined) this.messageHandler(message);
    else this.held.push(message);
  }

  /** Implementations call this when the pipe is gone; only the first call counts. */
  protected closed(info: TransportCloseInfo): void {
    if (this.closeInfo !== undefined) return;
    // A close reason can come from an unauthenticated peer: keep it printable and short.
    info = { ...info, reason: printable(info.reason) };
    this.closeInfo = info;
    for (const waiter of this.drainWaiters) waiter.reject(this.closedError());
    this.drainWaiters = [];
    for (const handler of this.closeHandlers.splice(0)) handler(info);
  }

  /** Implementations call this whenever bufferedAmount went down. */
  protected bufferDrained(): void {
    const amount = this.bufferedAmount;
    const ready = this.drainWaiters.filter((waiter) => amount <= waiter.lowWaterMark);
    this.drainWaiters = this.drainWaiters.filter((waiter) => amount > waiter.lowWaterMark);
    for (const waiter of ready) waiter.resolve();
  }

  /** Hook for implementations that must poll bufferedAmount (the browser). */
  protected drainWaitersChanged(): void {}

  /** Implementations that can stop reading from their socket override these; the default keeps reading. */
  pauseReceiving(): void {}
  resumeReceiving(): void {}

  protected get waitingForDrain(): boolean {
    return this.drainWaiters.length > 0;
  }

  private assertOpen(): void {
    if (!this.isOpen) throw this.closedError();
  }

  private closedError(): TransportError {
    return new TransportError("closed", `${this.label}: transport is closed (${this.closeInfo?.reason ?? "closing"})`);
  }
}

/** Printable ASCII only (no terminal escapes from a peer), at most 200 characters. */
export function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, 200);
}
