// A TCP proxy on loopback between the two nodes of a pair, so a campaign can break
// the replication link while both processes live: `cut()` ends every connection and
// refuses new ones until `heal()`. The secondary cannot tell a cut link from a dead
// primary, which is exactly the fault this exists to inject.
import { createServer, connect, type Server, type Socket } from "node:net";
import { Transform, type TransformCallback } from "node:stream";

/** `reset`: both ends see the connection close at once. `silent`: bytes stop flowing, nobody is told (peer timeouts must notice). */
export type CutKind = "reset" | "silent";

const LOOPBACK = "127.0.0.1";

export class FaultProxy {
  readonly #server: Server;
  #targetPort: number;
  #cut = false;
  readonly #links = new Set<{ client: Socket; upstream: Socket }>();
  /** Connections accepted and forwarded, over the proxy's life. */
  connections = 0;
  /** Connections refused because the link was cut. */
  refused = 0;
  /** Each direction of each connection at most this fast (undefined: as fast as loopback). */
  readonly #bitsPerSecond: number | undefined;

  private constructor(server: Server, targetPort: number, bitsPerSecond: number | undefined) {
    this.#server = server;
    this.#targetPort = targetPort;
    this.#bitsPerSecond = bitsPerSecond;
    server.on("connection", (client) => this.#accept(client));
  }

  /**
   * Listens on 127.0.0.1 (ephemeral port) and forwards to 127.0.0.1:`targetPort`, each
   * direction limited to `bitsPerSecond` when given (a link-speed stand-in where the
   * kernel's traffic shaping is not available).
   */
  static async start(targetPort: number, options: { bitsPerSecond?: number } = {}): Promise<FaultProxy> {
    const server = createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, LOOPBACK, () => resolve());
    });
    return new FaultProxy(server, targetPort, options.bitsPerSecond);
  }

  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === "string") throw new Error("fault proxy is not listening");
    return address.port;
  }

  get isCut(): boolean {
    return this.#cut;
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
    for (const link of this.#links) {
      if (kind === "reset") {
        link.client.destroy();
        link.upstream.destroy();
      } else {
        // Stop forwarding without telling either end; destroy later, on heal or close.
        link.client.unpipe(link.upstream);
        link.upstream.unpipe(link.client);
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
  }

  async close(): Promise<void> {
    this.#cut = true;
    this.#dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
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
    const link = { client, upstream };
    this.#links.add(link);
    const drop = () => {
      this.#links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    if (this.#bitsPerSecond === undefined) {
      client.pipe(upstream);
      upstream.pipe(client);
    } else {
      client.pipe(new RateLimit(this.#bitsPerSecond)).pipe(upstream);
      upstream.pipe(new RateLimit(this.#bitsPerSecond)).pipe(client);
    }
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
