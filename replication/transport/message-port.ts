// Transport over a MessagePort (a link between two Web Workers, or two Node
// worker threads): the browser demo's network cable. Its knobs shape what the
// sender puts on the port: one-way latency, a bandwidth limit, and a cut that
// silently drops everything both ways, as a pulled cable would.
//
// A MessagePort does not tell one end that the other is gone (a terminated
// worker just stops answering), so the link watches for silence itself, like
// TCP keepalive: both ends send a small keepalive, and an end that hears nothing
// for `silenceTimeoutMs` closes as "link silent". Its watchdog discounts its
// own stalls: a background tab can freeze or throttle the whole page, workers
// included; when the watchdog's tick arrives far later than scheduled, the
// silence was ours, not the peer's, and the peer gets a fresh window. The peer's
// own stalls it cannot see: an owner whose peer may block its thread for seconds
// (restoring a snapshot) starts with a wide window and narrows it later.
import { systemClock, type Clock, type Timer } from "../clock.ts";
import { MAX_FRAME_BYTES } from "../protocol/limits.ts";
import { TransportBase } from "./transport.ts";

export interface LinkShape {
  /** One-way delay added to every message, ms. */
  latencyMs: number;
  /** Bits per second the sender may put on the link; 0 = unlimited. */
  bandwidthBitsPerSecond: number;
  /** While true, nothing crosses the link in either direction (the ends stay open). */
  cut: boolean;
}

/** The part of a MessagePort this transport uses (browser and Node ports both fit). */
export interface PortLike {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
}

export interface MessagePortTransportOptions {
  label?: string;
  shape?: Partial<LinkShape>;
  /** Close the link when the peer is silent this long (own stalls discounted); 0 = never. Default 2000. */
  silenceTimeoutMs?: number;
  /** Send a keepalive when nothing else went out for this long. Default 250. */
  keepaliveMs?: number;
  /** A watchdog tick this much later than scheduled counts as our own stall. Default 500. */
  stallThresholdMs?: number;
  /** Messages over this close the link, like ws does (default MAX_FRAME_BYTES). */
  maxMessageBytes?: number;
  /** Timers and the link's delays (tests pass a manual clock). */
  clock?: Clock;
}

/** What crosses the port: the payload messages plus the link's own keepalive and close. */
type Envelope = { t: "text"; text: string } | { t: "binary"; bytes: ArrayBuffer } | { t: "keepalive" } | { t: "close"; reason: string };

interface Queued {
  /** When the message reaches the far end (after serialization at the bandwidth, and latency). */
  deliverAt: number;
  envelope: Envelope;
  size: number;
}

export interface LinkStats {
  /** Times this end's watchdog found itself stalled (e.g. a frozen background tab). */
  ownStalls: number;
  /** The longest such stall, ms. */
  longestOwnStallMs: number;
  /** Messages dropped because the link was cut. */
  dropped: number;
}

const DEFAULTS = { silenceTimeoutMs: 2000, keepaliveMs: 250, stallThresholdMs: 500 } as const;

export class MessagePortTransport extends TransportBase {
  readonly stats: LinkStats = { ownStalls: 0, longestOwnStallMs: 0, dropped: 0 };
  #shape: LinkShape;
  readonly #port: PortLike;
  readonly #options: Required<Omit<MessagePortTransportOptions, "label" | "shape" | "silenceTimeoutMs" | "clock">>;
  readonly #clock: Clock;
  #silenceTimeoutMs: number;
  readonly #queue: Queued[] = [];
  #queuedBytes = 0;
  /** When the sender's side of the link is free again (bandwidth serialization). */
  #linkFreeAt = 0;
  #pumpTimer: Timer | undefined;
  #watchdog: Timer | undefined;
  #nextTickAt = 0;
  #lastHeard: number;
  #lastSent: number;

  constructor(port: PortLike, options: MessagePortTransportOptions = {}) {
    super(options.label ?? "message-port");
    this.#port = port;
    this.#clock = options.clock ?? systemClock;
    this.#lastHeard = this.#lastSent = this.#clock.now();
    this.#shape = { latencyMs: 0, bandwidthBitsPerSecond: 0, cut: false };
    this.#silenceTimeoutMs = checkedSilence(options.silenceTimeoutMs ?? DEFAULTS.silenceTimeoutMs);
    this.#options = {
      keepaliveMs: options.keepaliveMs ?? DEFAULTS.keepaliveMs,
      stallThresholdMs: options.stallThresholdMs ?? DEFAULTS.stallThresholdMs,
      maxMessageBytes: options.maxMessageBytes ?? MAX_FRAME_BYTES,
    };
    this.setShape(options.shape ?? {});
    port.onmessage = (event) => this.#receive(event.data);
    this.#startWatchdog();
  }

  get shape(): LinkShape {
    return { ...this.#shape };
  }

  /** Changes the link from now on; cutting drops what is queued on this end. */
  setShape(shape: Partial<LinkShape>): void {
    const next = { ...this.#shape, ...shape };
    if (!Number.isFinite(next.latencyMs) || next.latencyMs < 0) throw new RangeError(`link latency: expected ms >= 0, got ${next.latencyMs}`);
    if (!Number.isFinite(next.bandwidthBitsPerSecond) || next.bandwidthBitsPerSecond < 0) {
      throw new RangeError(`link bandwidth: expected bits/s >= 0 (0 = unlimited), got ${next.bandwidthBitsPerSecond}`);
    }
    this.#shape = next;
    if (next.cut) {
      this.#dropQueue();
      this.bufferDrained(); // the bytes are gone, into the void
    }
    // A link restored after a cut owes the peer no old silence.
    else if (shape.cut === false) this.#lastHeard = this.#clock.now();
  }

  get silenceTimeoutMs(): number {
    return this.#silenceTimeoutMs;
  }

  /** Changes how long a silent peer is waited for (0 = forever), counting from the last word heard. */
  setSilenceTimeout(ms: number): void {
    if (checkedSilence(ms) === this.#silenceTimeoutMs) return;
    this.#silenceTimeoutMs = ms;
    // The watchdog's tick follows the window (a narrow window is checked more often).
    if (this.#watchdog !== undefined) {
      this.#stopWatchdog();
      this.#startWatchdog();
    }
  }

  get bufferedAmount(): number {
    return this.#queuedBytes;
  }

  protected transmitText(text: string): void {
    this.#enqueue({ t: "text", text }, text.length);
  }

  protected transmitBinary(bytes: Uint8Array): void {
    // A copy: the sender may reuse its buffer (often a view into guest memory), and the copy can be transferred.
    this.#enqueue({ t: "binary", bytes: bytes.slice().buffer }, bytes.length);
  }

  protected closeUnderlying(reason: string): void {
    this.#stopWatchdog();
    this.#enqueue({ t: "close", reason }, 0);
  }

  #enqueue(envelope: Envelope, size: number): void {
    if (size > this.#options.maxMessageBytes) {
      const reason = `message of ${size} bytes over the ${this.#options.maxMessageBytes}-byte limit`;
      this.#post({ t: "close", reason });
      this.#end(reason, false);
      return;
    }
    this.#lastSent = this.#clock.now();
    if (this.#shape.cut) {
      this.stats.dropped++;
      if (envelope.t === "close") this.#closePort();
      return;
    }
    const now = this.#clock.now();
    const { bandwidthBitsPerSecond, latencyMs } = this.#shape;
    const start = Math.max(now, this.#linkFreeAt);
    this.#linkFreeAt = bandwidthBitsPerSecond > 0 ? start + (size * 8 * 1000) / bandwidthBitsPerSecond : start;
    this.#queue.push({ deliverAt: this.#linkFreeAt + latencyMs, envelope, size });
    this.#queuedBytes += size;
    this.#schedulePump();
  }

  #schedulePump(): void {
    if (this.#pumpTimer !== undefined || this.#queue.length === 0) return;
    const delay = Math.max(0, this.#queue[0]!.deliverAt - this.#clock.now());
    this.#pumpTimer = this.#clock.setTimeout(() => this.#pump(), delay);
  }

  #pump(): void {
    this.#pumpTimer = undefined;
    const now = this.#clock.now();
    while (this.#queue.length > 0 && this.#queue[0]!.deliverAt <= now) {
      const item = this.#queue.shift()!;
      this.#queuedBytes -= item.size;
      this.#post(item.envelope);
      if (item.envelope.t === "close") this.#closePort();
    }
    this.bufferDrained();
    this.#schedulePump();
  }

  #post(envelope: Envelope): void {
    try {
      if (envelope.t === "binary") this.#port.postMessage(envelope, [envelope.bytes]);
      else this.#port.postMessage(envelope);
    } catch {
      // A port whose other end is gone may throw in some engines; silence detection covers it.
    }
  }

  #receive(data: unknown): void {
    if (this.#shape.cut || !this.isOpen) return;
    this.#lastHeard = this.#clock.now();
    const envelope = asEnvelope(data);
    if (envelope === undefined) {
      this.#post({ t: "close", reason: "malformed link message" });
      this.#end("peer sent a malformed link message", true);
      return;
    }
    switch (envelope.t) {
      case "text":
        this.deliver({ kind: "text", text: envelope.text });
        return;
      case "binary":
        this.deliver({ kind: "binary", bytes: new Uint8Array(envelope.bytes) });
        return;
      case "keepalive":
        return;
      case "close":
        this.#end(`peer closed: ${envelope.reason}`, true);
        return;
    }
  }

  #startWatchdog(): void {
    const tickMs = Math.max(10, Math.min(100, this.#options.keepaliveMs, this.#silenceTimeoutMs > 0 ? this.#silenceTimeoutMs / 8 : 100));
    this.#nextTickAt = this.#clock.now() + tickMs;
    this.#watchdog = this.#clock.setInterval(() => {
      const now = this.#clock.now();
      const late = now - this.#nextTickAt;
      this.#nextTickAt = now + tickMs;
      if (late > this.#options.stallThresholdMs) {
        // We did not run for `late` ms: whatever the peer sent waits in our port's queue. Not its fault.
        this.stats.ownStalls++;
        this.stats.longestOwnStallMs = Math.max(this.stats.longestOwnStallMs, late);
        this.#lastHeard = now;
        this.#keepalive(now, true);
        return;
      }
      this.#keepalive(now, false);
      const silent = now - this.#lastHeard;
      if (this.#silenceTimeoutMs > 0 && silent > this.#silenceTimeoutMs) {
        const reason = `link silent: no word from the peer for ${Math.round(silent)} ms`;
        // A peer that is only slow (its messages late, not lost) then learns why, instead of timing out itself.
        if (!this.#shape.cut) this.#post({ t: "close", reason });
        this.#end(reason, true);
      }
    }, tickMs);
  }

  #keepalive(now: number, force: boolean): void {
    if (this.#shape.cut || (!force && now - this.#lastSent < this.#options.keepaliveMs)) return;
    this.#enqueue({ t: "keepalive" }, 0);
  }

  #stopWatchdog(): void {
    this.#watchdog?.cancel();
    this.#watchdog = undefined;
  }

  #dropQueue(): void {
    this.stats.dropped += this.#queue.length;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#pumpTimer?.cancel();
    this.#pumpTimer = undefined;
    this.#linkFreeAt = 0;
  }

  #end(reason: string, byPeer: boolean): void {
    this.#stopWatchdog();
    this.#dropQueue();
    this.#closePort();
    this.closed({ reason, byPeer });
  }

  #closePort(): void {
    this.#stopWatchdog();
    this.#port.onmessage = null;
    this.#port.close();
  }
}

function asEnvelope(data: unknown): Envelope | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const value = data as { t?: unknown; text?: unknown; bytes?: unknown; reason?: unknown };
  switch (value.t) {
    case "text":
      return typeof value.text === "string" ? { t: "text", text: value.text } : undefined;
    case "binary":
      return value.bytes instanceof ArrayBuffer ? { t: "binary", bytes: value.bytes } : undefined;
    case "keepalive":
      return { t: "keepalive" };
    case "close":
      return typeof value.reason === "string" ? { t: "close", reason: value.reason.slice(0, 200) } : undefined;
    default:
      return undefined;
  }
}

function checkedSilence(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`link silence timeout: expected ms >= 0 (0 = never), got ${ms}`);
  return ms;
}
