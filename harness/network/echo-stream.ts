// A host client that streams bytes through an echo service in the guest (`nc -ll -p 7 -e
// cat`) and checks that every byte comes back, in order, while the pair is broken under it:
// the failover campaign's network check and the takeover benchmark's probe. The bytes are
// seeded pseudo-random, so a hole, a duplicate or a reordering is a mismatch at a known
// offset, not a coincidence. It records when data was outstanding and nothing came back
// (the stalls a client sees), and how the connection ended (a reset, a close, a timeout).
import type { Socket } from "node:net";
import { connectWithin } from "./connect.ts";

export interface EchoStreamOptions {
  port: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Offer this many bytes a second, in pieces every 50 ms; undefined: as fast as the connection takes them. */
  bytesPerSecond?: number;
  /** Bytes sent but not yet echoed, at most (default 1 MiB): the stream waits for echoes beyond it. */
  maxOutstandingBytes?: number;
  /** Seed of the byte sequence (default 1). */
  seed?: number;
  /** Gaps shorter than this are not kept in the list (the longest is always known). Default 20 ms. */
  keepGapsOverMs?: number;
  /** Give up connecting after this long (default 10 s). */
  connectTimeoutMs?: number;
}

/** An interval (performance.now() times) during which bytes were outstanding and none came back. */
export interface Gap {
  startMs: number;
  endMs: number;
}

export type EchoStreamOutcome =
  /** Every byte sent came back, in order, and the connection closed cleanly. */
  | "complete"
  /** A byte came back different from the one sent at its offset (lost, duplicated or reordered data). */
  | "mismatch"
  /** The connection failed (a reset, a refused connect, ...). */
  | "error"
  /** The connection closed before every byte came back. */
  | "closed-early"
  /** Bytes were still outstanding when the wait ran out. */
  | "timeout";

export interface EchoStreamReport {
  outcome: EchoStreamOutcome;
  /** Bytes written to the socket. */
  sent: number;
  /** Bytes that came back equal to what was sent at their offset (a prefix of the stream). */
  verified: number;
  /** The offset of the first byte that came back different, if one did. */
  mismatchAt: number | undefined;
  /** The socket's error, or why the wait ended. */
  error: string | undefined;
  longestGapMs: number;
  gaps: Gap[];
  /** From connect to the report. */
  durationMs: number;
}

const PACE_MS = 50;
/** A stall a fault causes starts at most this long after it: the client writes its next piece up to one pace later. */
export const FAULT_SLACK_MS = 2 * PACE_MS;

/**
 * The stall a fault at `faultAt` caused: of the gaps that overlap the fault or start within
 * FAULT_SLACK_MS after it, the one that ended last; its end is when the service answered
 * again. Undefined: no stall came.
 */
export function stallAfter(gaps: readonly Gap[], faultAt: number, slackMs = FAULT_SLACK_MS): Gap | undefined {
  return gaps.filter((gap) => gap.endMs >= faultAt && gap.startMs <= faultAt + slackMs).sort((a, b) => b.endMs - a.endMs)[0];
}

const CHUNK_BYTES = 16 << 10;

/** mulberry32: the same bytes for the same seed, on both sides of the comparison. */
class ByteSource {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(bytes: number): Buffer {
    const out = Buffer.allocUnsafe(bytes);
    for (let i = 0; i < bytes; i += 4) {
      this.#state = (this.#state + 0x6d2b79f5) >>> 0;
      let t = this.#state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      const word = (t ^ (t >>> 14)) >>> 0;
      for (let j = 0; j < 4 && i + j < bytes; j++) out[i + j] = (word >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

export class EchoStream {
  readonly #socket: Socket;
  readonly #source: ByteSource;
  readonly #options: Required<Omit<EchoStreamOptions, "bytesPerSecond" | "host" | "connectTimeoutMs">> & { bytesPerSecond: number | undefined };
  /** Sent pieces not yet fully echoed, oldest first; `#headOffset` bytes of the first are verified. */
  readonly #unverified: Buffer[] = [];
  #headOffset = 0;
  #sent = 0;
  #verified = 0;
  #mismatchAt: number | undefined;
  #error: string | undefined;
  #closed = false;
  #writing = true;
  /** When bytes last became outstanding with none coming back (undefined: nothing outstanding). */
  #waitingSince: number | undefined;
  #longestGapMs = 0;
  readonly #gaps: Gap[] = [];
  readonly #openedAt = performance.now();
  #pacer: ReturnType<typeof setInterval> | undefined;
  /** Called whenever something changes (data, close): the waits. */
  readonly #waiters = new Set<() => void>();

  private constructor(socket: Socket, options: EchoStreamOptions) {
    this.#socket = socket;
    this.#options = {
      port: options.port,
      bytesPerSecond: options.bytesPerSecond,
      maxOutstandingBytes: options.maxOutstandingBytes ?? 1 << 20,
      seed: options.seed ?? 1,
      keepGapsOverMs: options.keepGapsOverMs ?? 20,
    };
    this.#source = new ByteSource(this.#options.seed);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.#receive(chunk));
    socket.on("error", (error) => (this.#error ??= error.message));
    socket.on("close", () => {
      this.#closed = true;
      this.#stopPacing();
      this.#wakeAll();
    });
    socket.on("drain", () => this.#fill());
  }

  /** Connects and starts streaming. */
  static async open(options: EchoStreamOptions): Promise<EchoStream> {
    const socket = await connectWithin(options.port, options.connectTimeoutMs ?? 10_000, options.host ?? "127.0.0.1");
    const stream = new EchoStream(socket, options);
    stream.#start();
    return stream;
  }

  get sent(): number {
    return this.#sent;
  }

  get verified(): number {
    return this.#verified;
  }

  /** The connection failed or closed, or a byte came back wrong: the stream cannot go on. */
  get broken(): boolean {
    return this.#closed || this.#error !== undefined || this.#mismatchAt !== undefined;
  }

  /** Gaps (kept ones, and the one going on now) that overlap [fromMs, toMs]. */
  gapsBetween(fromMs: number, toMs: number): Gap[] {
    const gaps = [...this.#gaps];
    if (this.#waitingSince !== undefined) gaps.push({ startMs: this.#waitingSince, endMs: performance.now() });
    return gaps.filter((gap) => gap.endMs >= fromMs && gap.startMs <= toMs);
  }

  /** Resolves once `bytes` more bytes came back than when called (false: the stream broke or the wait ran out). */
  async progress(bytes: number, timeoutMs: number): Promise<boolean> {
    const target = this.#verified + bytes;
    return this.#until(() => this.#verified >= target, timeoutMs);
  }

  /**
   * Stops sending, waits (up to `timeoutMs`) until everything sent came back, closes, and
   * reports. Safe to call once.
   */
  async finish(timeoutMs: number): Promise<EchoStreamReport> {
    this.#writing = false;
    this.#stopPacing();
    const complete = await this.#until(() => this.#verified === this.#sent, timeoutMs);
    const outcome: EchoStreamOutcome =
      this.#mismatchAt !== undefined ? "mismatch" : this.#error !== undefined ? "error" : complete ? "complete" : this.#closed ? "closed-early" : "timeout";
    if (outcome === "timeout") this.#error = `${this.#sent - this.#verified} bytes still outstanding after ${timeoutMs} ms`;
    if (outcome === "closed-early") this.#error = `the connection closed with ${this.#sent - this.#verified} bytes outstanding`;
    // The gap going on at the end counts: a stream that never resumed stalled until now.
    if (this.#waitingSince !== undefined) this.#endGap(performance.now());
    this.#socket.destroy();
    return {
      outcome,
      sent: this.#sent,
      verified: this.#verified,
      mismatchAt: this.#mismatchAt,
      error: this.#error,
      longestGapMs: this.#longestGapMs,
      gaps: [...this.#gaps],
      durationMs: performance.now() - this.#openedAt,
    };
  }

  /** Closes at once (cleanup after a failure elsewhere). */
  destroy(): void {
    this.#writing = false;
    this.#stopPacing();
    this.#socket.destroy();
  }

  #start(): void {
    if (this.#options.bytesPerSecond === undefined) return this.#fill();
    const perTick = Math.max(1, Math.round((this.#options.bytesPerSecond * PACE_MS) / 1000));
    this.#pacer = setInterval(() => this.#send(perTick), PACE_MS);
  }

  #stopPacing(): void {
    if (this.#pacer !== undefined) clearInterval(this.#pacer);
    this.#pacer = undefined;
  }

  /** Unpaced: sends pieces while the socket takes them and the outstanding bytes allow. */
  #fill(): void {
    if (this.#options.bytesPerSecond !== undefined) return;
    while (this.#writing && !this.broken && this.#sent - this.#verified < this.#options.maxOutstandingBytes) {
      if (!this.#send(CHUNK_BYTES)) return;
    }
  }

  /** Sends up to `bytes` (bounded by the outstanding limit); false if the socket asks to wait. */
  #send(bytes: number): boolean {
    const room = this.#options.maxOutstandingBytes - (this.#sent - this.#verified);
    const size = Math.min(bytes, room);
    if (!this.#writing || this.broken || size <= 0) return false;
    const piece = this.#source.next(size);
    this.#unverified.push(piece);
    if (this.#waitingSince === undefined) this.#waitingSince = performance.now();
    this.#sent += size;
    return this.#socket.write(piece);
  }

  #receive(chunk: Buffer): void {
    const now = performance.now();
    if (this.#waitingSince !== undefined) this.#endGap(now);
    let at = 0;
    while (at < chunk.length && this.#mismatchAt === undefined) {
      const head = this.#unverified[0];
      if (head === undefined) {
        // More came back than was sent.
        this.#mismatchAt = this.#verified;
        break;
      }
      const n = Math.min(head.length - this.#headOffset, chunk.length - at);
      if (!chunk.subarray(at, at + n).equals(head.subarray(this.#headOffset, this.#headOffset + n))) {
        let i = 0;
        while (chunk[at + i] === head[this.#headOffset + i]) i++;
        this.#verified += i;
        this.#mismatchAt = this.#verified;
        break;
      }
      at += n;
      this.#verified += n;
      this.#headOffset += n;
      if (this.#headOffset === head.length) {
        this.#unverified.shift();
        this.#headOffset = 0;
      }
    }
    if (this.#mismatchAt !== undefined) this.#socket.destroy();
    // Still outstanding: the next gap starts now.
    if (this.#sent > this.#verified) this.#waitingSince = now;
    this.#fill();
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  #endGap(now: number): void {
    const gap = { startMs: this.#waitingSince!, endMs: now };
    this.#waitingSince = undefined;
    const ms = gap.endMs - gap.startMs;
    this.#longestGapMs = Math.max(this.#longestGapMs, ms);
    if (ms >= this.#options.keepGapsOverMs) this.#gaps.push(gap);
  }

  /** Resolves true once `condition` holds, false if the stream broke first or `timeoutMs` passed. */
  #until(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(value);
      };
      const timer = setTimeout(() => done(condition()), timeoutMs);
      const check = () => {
        if (condition()) done(true);
        else if (this.broken) done(false);
      };
      this.#waiters.add(check);
      check();
    });
  }
}
