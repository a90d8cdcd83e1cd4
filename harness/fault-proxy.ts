// A TCP proxy on loopback between the two nodes of a pair, so tests can break the
// replication link while both processes live: `cut()` ends every connection and
// refuses new ones until `heal()`; `stall()` stops the bytes without closing
// anything until `resume()`; `cutMidSync()` cuts between two WebSocket frames of
// the next large primary->secondary burst (a sync in flight). The secondary cannot
// tell a cut link from a dead primary, which is exactly the fault this exists to inject.
// It can also stand in for a slower or longer link: a rate limit, a one-way delay.
import { createServer, connect, type Server, type Socket } from "node:net";
import { Transform, type TransformCallback, type Writable } from "node:stream";
import { WsFrameBoundaries } from "./ws-frame-boundaries.ts";

/** `reset`: both ends see the connection close at once. `silent`: bytes stop flowing, nobody is told (peer timeouts must notice). */
export type CutKind = "reset" | "silent";

const LOOPBACK = "127.0.0.1";
/** A frame at least this big from the primary is bulk sync data (pages, device state), not a heartbeat. */
const DEFAULT_BURST_FRAME_BYTES = 1024;

interface Link {
  /** The primary's side (it dials the proxy). */
  client: Socket;
  /** The secondary's side. */
  upstream: Socket;
  /** Where bytes for each side are written: the socket, or a rate limit in front of it. */
  toClient: Writable;
  toUpstream: Writable;
  frames: WsFrameBoundaries;
}

export interface MidSyncCut {
  /** Resolves when the cut happened, with what was forwarded of the burst. */
  readonly done: Promise<{ frameBytes: number; opcode: number }>;
  cancel(): void;
}

export class FaultProxy {
  readonly #server: Server;
  #targetPort: number;
  #cut = false;
  #stalled = false;
  readonly #links = new Set<Link>();
  #armed: { minFrameBytes: number; fire(frameBytes: number, opcode: number): void } | undefined;
  /** Connections accepted and forwarded, over the proxy's life. */
  connections = 0;
  /** Connections refused because the link was cut. */
  refused = 0;
  /** Each direction of each connection at most this fast (undefined: as fast as loopback). */
  readonly #bitsPerSecond: number | undefined;
  /** Each direction's bytes arrive this much later (0: as soon as loopback carries them). */
  readonly #delayMs: number;

  private constructor(server: Server, targetPort: number, options: { bitsPerSecond?: number; delayMs?: number }) {
    this.#server = server;
    this.#targetPort = targetPort;
    this.#bitsPerSecond = options.bitsPerSecond;
    this.#delayMs = options.delayMs ?? 0;
    server.on("connection", (client) => this.#accept(client));
  }

  /**
   * Listens on 127.0.0.1 (ephemeral port) and forwards to 127.0.0.1:`targetPort`, each
   * direction limited to `bitsPerSecond` and delayed by `delayMs` when given (stand-ins
   * for a link's speed and length where the kernel's traffic shaping is not available).
   */
  static async start(targetPort: number, options: { bitsPerSecond?: number; delayMs?: number } = {}): Promise<FaultProxy> {
    if (options.delayMs !== undefined && !(Number.isFinite(options.delayMs) && options.delayMs >= 0))
      throw new RangeError(`delayMs must be a non-negative number, got ${options.delayMs}`);
    const server = createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, LOOPBACK, () => resolve());
    });
    return new FaultProxy(server, targetPort, options);
  }

  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === "string") throw new Error("fault proxy is not listening");
    return address.port;
  }

  get url(): string {
    return `ws://${LOOPBACK}:${this.port}`;
  }

  get isCut(): boolean {
    return this.#cut;
  }

  get isStalled(): boolean {
    return this.#stalled;
  }

  /** `url` (the secondary's ws:// URL) with its port replaced by the proxy's. */
  urlFor(url: string): string {
    const proxied = new URL(url);
    if (proxied.hostname !== LOOPBACK) throw new Error(`fault proxy only forwards to ${LOOPBACK}, not ${proxied.hostname}`);
    proxied.port = String(this.port);
    return proxied.toString();
  }

  /** New connections go to this port from now on (a replacement secondary). */
  retarget(port: number): void {
    this.#targetPort = port;
  }

  cut(kind: CutKind = "reset"): void {
    this.#cut = true;
    this.#armed = undefined;
    for (const link of this.#links) {
      if (kind === "reset") {
        link.client.destroy();
        link.upstream.destroy();
      } else {
        // Stop forwarding without telling either end; destroy later, on heal or close.
        link.client.pause();
        link.upstream.pause();
      }
    }
    if (kind === "reset") this.#links.clear();
  }

  /** Accepts connections again; connections silenced by a cut stay dead (they are closed now). */
  heal(): void {
    this.#dropAll();
    this.#cut = false;
    this.#stalled = false;
  }

  /** Bytes stop moving both ways and nobody is told; `resume()` delivers what waited. New connections wait too. */
  stall(): void {
    this.#stalled = true;
    for (const link of this.#links) {
      link.client.pause();
      link.upstream.pause();
    }
  }

  resume(): void {
    this.#stalled = false;
    if (this.#cut) return;
    for (const link of this.#links) {
      link.client.resume();
      link.upstream.resume();
    }
  }

  /**
   * Arms a cut (reset) right after the next primary->secondary WebSocket frame of at
   * least `minFrameBytes` has been forwarded: the first frame of a sync burst (memory
   * pages) reaches the secondary, the rest of the burst and its commit do not.
   */
  cutMidSync(minFrameBytes = DEFAULT_BURST_FRAME_BYTES): MidSyncCut {
    let resolve!: (value: { frameBytes: number; opcode: number }) => void;
    const done = new Promise<{ frameBytes: number; opcode: number }>((r) => (resolve = r));
    const armed = {
      minFrameBytes,
      fire: (frameBytes: number, opcode: number) => {
        this.cut("reset");
        resolve({ frameBytes, opcode });
      },
    };
    this.#armed = armed;
    return {
      done,
      cancel: () => {
        if (this.#armed === armed) this.#armed = undefined;
      },
    };
  }

  async close(): Promise<void> {
    this.#cut = true;
    this.#armed = undefined;
    this.#dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  get #flowing(): boolean {
    return !this.#stalled && !this.#cut;
  }

  #dropAll(): void {
    for (const link of this.#links) {
      link.client.destroy();
      link.upstream.destroy();
    }
    this.#links.clear();
  }

  #accept(client: Socket): void {
    if (this.#cut) {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    this.connections++;
    const upstream = connect({ host: LOOPBACK, port: this.#targetPort, noDelay: true });
    const limited = (socket: Socket): Writable => {
      let into: Writable = socket;
      if (this.#bitsPerSecond !== undefined) {
        const limit = new RateLimit(this.#bitsPerSecond);
        limit.pipe(into);
        into = limit;
      }
      if (this.#delayMs > 0) {
        const delay = new Delay(this.#delayMs);
        delay.pipe(into);
        into = delay;
      }
      return into;
    };
    const link: Link = { client, upstream, toClient: limited(client), toUpstream: limited(upstream), frames: new WsFrameBoundaries() };
    this.#links.add(link);
    const drop = () => {
      this.#links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    // Forwarded by hand (not pipe) so that a mid-sync cut can stop at a frame boundary inside a chunk.
    client.on("data", (chunk: Buffer) => this.#forward(link, chunk));
    upstream.on("data", (chunk: Buffer) => {
      if (!link.toClient.write(chunk)) upstream.pause();
    });
    link.toClient.on("drain", () => this.#flowing && upstream.resume());
    link.toUpstream.on("drain", () => this.#flowing && client.resume());
    if (this.#stalled) {
      client.pause();
      upstream.pause();
    }
  }

  /** Primary -> secondary bytes: forwarded, unless an armed mid-sync cut falls inside this chunk. */
  #forward(link: Link, chunk: Buffer): void {
    const ends = link.frames.push(chunk);
    const armed = this.#armed;
    const target =
      armed && ends.find((frame) => frame.payloadBytes >= armed.minFrameBytes && frame.opcode !== 0x8 && frame.opcode !== 0x9 && frame.opcode !== 0xa);
    if (armed && target) {
      this.#armed = undefined;
      // The frame goes out whole; the cut follows once it was written to the secondary's socket.
      link.toUpstream.write(chunk.subarray(0, target.end), () => armed.fire(target.payloadBytes, target.opcode));
      link.client.pause();
      return;
    }
    if (!link.toUpstream.write(chunk)) link.client.pause();
  }
}

/** Passes each chunk on `delayMs` after it came, in order: a link's propagation delay. */
class Delay extends Transform {
  readonly #due: { at: number; chunk: Buffer }[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly delayMs: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#due.push({ at: performance.now() + this.delayMs, chunk });
    this.#schedule();
    done();
  }

  override _flush(done: TransformCallback): void {
    clearTimeout(this.#timer);
    for (const { chunk } of this.#due.splice(0)) this.push(chunk);
    done();
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#due.length === 0) return;
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        const now = performance.now();
        while (this.#due.length > 0 && this.#due[0]!.at <= now + 0.5) this.push(this.#due.shift()!.chunk);
        this.#schedule();
      },
      Math.max(0, this.#due[0]!.at - performance.now()),
    );
  }
}

/** Passes bytes on no faster than a rate: each chunk leaves when the link would have carried it. */
class RateLimit extends Transform {
  #freeAt = 0;

  constructor(private readonly bitsPerSecond: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const now = performance.now();
    const start = Math.max(now, this.#freeAt);
    this.#freeAt = start + (chunk.length * 8 * 1000) / this.bitsPerSecond;
    const wait = this.#freeAt - now;
    if (wait < 1) done(null, chunk);
    else setTimeout(() => done(null, chunk), wait);
  }
}
