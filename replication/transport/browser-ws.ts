// Transport over the browser's WebSocket. The constructor is injectable so the
// Node tests can drive this adapter with the `ws` package's WebSocket class,
// which implements the same event-target API.
import { TransportBase, TransportError, type Transport } from "./transport.ts";

/** The part of the WHATWG WebSocket this adapter uses. */
export interface BrowserWebSocketLike {
  binaryType: string;
  readonly bufferedAmount: number;
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type BrowserWebSocketConstructor = new (url: string) => BrowserWebSocketLike;

/** Browsers give no drain event, so a waiting whenDrained() polls at this interval. */
const DRAIN_POLL_MS = 10;

export class BrowserWsTransport extends TransportBase {
  private pollTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly socket: BrowserWebSocketLike,
    label: string,
  ) {
    super(label);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => {
      if (typeof event.data === "string") this.deliver({ kind: "text", text: event.data });
      else if (event.data instanceof ArrayBuffer) this.deliver({ kind: "binary", bytes: new Uint8Array(event.data) });
    };
    socket.onclose = (event) => {
      this.stopPolling();
      this.closed({ reason: `peer closed: ${event.reason !== "" ? event.reason : `close code ${event.code}`}`, byPeer: true, code: event.code });
    };
  }

  get bufferedAmount(): number {
    return this.socket.bufferedAmount;
  }

  protected transmitText(text: string): void {
    this.socket.send(text);
  }

  protected transmitBinary(bytes: Uint8Array): void {
    this.socket.send(bytes);
  }

  protected closeUnderlying(reason: string): void {
    this.stopPolling();
    this.socket.close(1000, reason.slice(0, 100));
  }

  protected override drainWaitersChanged(): void {
    if (this.pollTimer !== undefined) return;
    this.pollTimer = setInterval(() => {
      this.bufferDrained();
      if (!this.waitingForDrain) this.stopPolling();
    }, DRAIN_POLL_MS);
  }

  private stopPolling(): void {
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }
}

export interface BrowserConnectOptions {
  timeoutMs?: number;
  /** Defaults to globalThis.WebSocket. */
  WebSocket?: BrowserWebSocketConstructor;
}

export async function connectBrowserWebSocket(url: string, options: BrowserConnectOptions = {}): Promise<Transport> {
  const Impl = options.WebSocket ?? (globalThis as { WebSocket?: BrowserWebSocketConstructor }).WebSocket;
  if (Impl === undefined) throw new TransportError("config", "no WebSocket implementation in this environment");
  const timeoutMs = options.timeoutMs ?? 5000;
  const socket = new Impl(url);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new TransportError("connect-timeout", `cannot connect to ${url}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.onopen = () => {
      clearTimeout(timer);
      resolve();
    };
    // Browsers hide the cause of a failed connection; the URL is all we can name.
    socket.onerror = () => {
      clearTimeout(timer);
      reject(new TransportError("connect-failed", `cannot connect to ${url}`));
    };
  });
  socket.onerror = null;
  return new BrowserWsTransport(socket, url);
}
