// Transport over a real WebSocket (the `ws` package). Servers bind loopback
// unless told otherwise: replication traffic carries guest memory, so exposing
// it on a network must be a deliberate choice.
import { WebSocket, WebSocketServer, type RawData } from "ws";
import type { AddressInfo } from "node:net";
import { MAX_FRAME_BYTES } from "../protocol/limits.ts";
import { TransportBase, TransportError, type Transport } from "../transport/transport.ts";

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
/** Connections still proving the secret at once; more are turned away (each can hold a buffer). */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 4;
/** What a peer may send before it proved the secret: a handshake is well under 2 KiB. */
export const DEFAULT_MAX_UNAUTHENTICATED_BYTES = 64 * 1024;
/** A closing peer that does not answer our close within this is cut off. */
const CLOSE_GRACE_MS = 1000;

/** One ws connection as a Transport. bufferedAmount counts bytes whose send callback has not fired. */
export class WsTransport extends TransportBase {
  private pendingBytes = 0;

  constructor(
    private readonly socket: WebSocket,
    label: string,
  ) {
    super(label);
    socket.binaryType = "nodebuffer";
    socket.on("message", (data: RawData, isBinary: boolean) => {
      const buffer = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary) this.deliver({ kind: "binary", bytes: new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength) });
      else this.deliver({ kind: "text", text: buffer.toString("utf8") });
    });
    socket.on("close", (code: number, reason: Buffer) => {
      const why = reason.length > 0 ? reason.toString("utf8") : describeCloseCode(code);
      this.closed({ reason: `peer closed: ${why}`, byPeer: true, code });
    });
    // An 'error' is always followed by 'close'; keep its message for the close reason.
    socket.on("error", (error: Error) => this.closed({ reason: `connection error: ${error.message}`, byPeer: true }));
  }

  get bufferedAmount(): number {
    return this.pendingBytes;
  }

  protected transmitText(text: string): void {
    this.transmit(text, Buffer.byteLength(text));
  }

  protected transmitBinary(bytes: Uint8Array): void {
    this.transmit(bytes, bytes.length);
  }

  override pauseReceiving(): void {
    this.socket.pause();
  }

  override resumeReceiving(): void {
    this.socket.resume();
  }

  protected closeUnderlying(reason: string): void {
    // Close reasons are limited to 123 bytes by RFC 6455.
    this.socket.close(1000, truncateUtf8(reason, 123));
    // A peer that never answers the close (e.g. a refused one) must not linger.
    setTimeout(() => this.socket.terminate(), CLOSE_GRACE_MS).unref();
  }

  private transmit(data: string | Uint8Array, size: number): void {
    this.pendingBytes += size;
    this.socket.send(data, { binary: typeof data !== "string" }, () => {
      this.pendingBytes -= size;
      this.bufferDrained();
    });
  }
}

export interface ListenOptions {
  /** Default 127.0.0.1. Anything not loopback needs allowNonLoopback. */
  host?: string;
  /** Default 0: an ephemeral port (see `port` on the result). */
  port?: number;
  allowNonLoopback?: boolean;
  /** Connections proving the secret at once (default 4); more are turned away with close code 1013. */
  maxPendingHandshakes?: number;
  /** Bytes a peer may send before its handshake settles (default 64 KiB); more cuts it off. */
  maxUnauthenticatedBytes?: number;
  /** Largest message accepted (default MAX_FRAME_BYTES); a larger one closes the connection (1009). */
  maxMessageBytes?: number;
}

export interface ReplicationServer {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Listens for replication peers; each accepted connection is handed over as a Transport.
 * `onConnection` returns the handshake's promise: until it settles the connection counts as
 * pending (bounded in number and in the bytes it may send).
 */
export async function listenReplication(options: ListenOptions, onConnection: (transport: Transport) => void | Promise<unknown>): Promise<ReplicationServer> {
  const host = options.host ?? "127.0.0.1";
  if (!isLoopbackHost(host) && options.allowNonLoopback !== true) {
    throw new TransportError("config", `refusing to listen on ${host}: not a loopback address; pass allowNonLoopback to expose replication on a network`);
  }
  const server = new WebSocketServer({ host, port: options.port ?? 0, maxPayload: options.maxMessageBytes ?? MAX_FRAME_BYTES, perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", (error: Error) =>
      reject(new TransportError("listen-failed", `cannot listen on ${host}:${options.port ?? 0}: ${error.message}`, { cause: error })),
    );
  });
  const address = server.address() as AddressInfo;
  const maxPending = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
  const maxBytes = options.maxUnauthenticatedBytes ?? DEFAULT_MAX_UNAUTHENTICATED_BYTES;
  let pending = 0;
  server.on("connection", (socket, request) => {
    if (pending >= maxPending) {
      socket.close(1013, "too many connections waiting to authenticate; try again later");
      setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
      return;
    }
    pending++;
    // Count what arrives before the handshake settles, on the TCP socket itself: ws would
    // otherwise buffer a whole message (up to the frame limit) before we see any of it.
    let received = 0;
    const count = (chunk: Buffer) => {
      received += chunk.length;
      if (received > maxBytes) request.socket.destroy();
    };
    request.socket.on("data", count);
    const settled = () => {
      pending--;
      request.socket.off("data", count);
    };
    const transport = new WsTransport(socket, `ws peer ${request.socket.remoteAddress ?? "?"}:${request.socket.remotePort ?? "?"}`);
    Promise.resolve(onConnection(transport)).then(settled, settled);
  });
  const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    host: address.address,
    port: address.port,
    url: `ws://${urlHost}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of server.clients) client.terminate();
        server.close(() => resolve());
      }),
  };
}

export interface ConnectOptions {
  timeoutMs?: number;
  /** Largest message accepted (default MAX_FRAME_BYTES); a larger one closes the connection (1009). */
  maxMessageBytes?: number;
}

/** Opens a connection to a replication server, failing with a TransportError that names the URL. */
export async function connectReplication(url: string, options: ConnectOptions = {}): Promise<Transport> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  let socket: WebSocket;
  try {
    // A zero mask: masking keeps a client's chosen plaintext away from proxies' parsers, but every
    // record is AES-GCM ciphertext already, and ws then skips XOR-ing each byte on both ends.
    socket = new WebSocket(url, {
      maxPayload: options.maxMessageBytes ?? MAX_FRAME_BYTES,
      perMessageDeflate: false,
      handshakeTimeout: timeoutMs,
      generateMask: (mask) => void mask.fill(0),
    });
  } catch (error) {
    throw new TransportError("config", `cannot connect to ${url}: ${(error as Error).message}`, { cause: error });
  }
  // Listen before the socket opens: the peer may send its first message in the same
  // packet as the upgrade answer, and ws emits it right after 'open'.
  const transport = new WsTransport(socket, url);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new TransportError("connect-timeout", `cannot connect to ${url}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("open", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("error", (error: Error & { code?: string }) => {
      clearTimeout(timer);
      const detail = error.code === "ECONNREFUSED" ? "connection refused (is the peer listening?)" : error.message;
      reject(new TransportError("connect-failed", `cannot connect to ${url}: ${detail}`, { cause: error }));
    });
  });
  return transport;
}

function describeCloseCode(code: number): string {
  const names: Record<number, string> = {
    1000: "normal close",
    1001: "going away",
    1006: "connection lost",
    1009: "message too big",
  };
  return names[code] ?? `close code ${code}`;
}

function truncateUtf8(text: string, maxBytes: number): string {
  let out = text;
  while (Buffer.byteLength(out) > maxBytes) out = out.slice(0, -1);
  return out;
}
