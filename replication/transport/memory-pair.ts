// Two connected in-memory transports for tests: asynchronous, ordered delivery
// with optional latency, the same size limit as the WebSocket, and cut() to
// simulate the network failing under both ends at once.
import { MAX_FRAME_BYTES } from "../protocol/limits.ts";
import { type InboundMessage, TransportBase, type Transport } from "./transport.ts";
import { scheduleTurn } from "../engine/next-turn.ts";
import { systemClock, type Clock, type Timer } from "../clock.ts";

export interface MemoryPairOptions {
  /** One-way delay of every message, in ms; 0 still delivers asynchronously. */
  latencyMs?: number;
  /** Messages over this are refused like ws does (close code 1009). */
  maxMessageBytes?: number;
  /** The clock latency is measured on (tests pass a manual one). */
  clock?: Clock;
}

export interface MemoryPair {
  a: Transport;
  b: Transport;
  /** Drops everything in flight and closes both ends, as a pulled cable would. */
  cut(reason?: string): void;
  /** From now on nothing crosses either way and neither end closes: a black-holed network (the peers' timeouts notice). */
  silence(): void;
}

type InFlight = { at: number; message: InboundMessage } | { at: number; closeReason: string };

class MemoryEnd extends TransportBase {
  peer!: MemoryEnd;
  private readonly outgoing: InFlight[] = [];
  private queuedBytes = 0;
  private timer: Timer | undefined;
  private immediatePending = false;
  private severed = false;
  /** Messages vanish on the way (silence()). */
  blackholed = false;

  constructor(
    label: string,
    private readonly options: Required<MemoryPairOptions>,
  ) {
    super(label);
  }

  get bufferedAmount(): number {
    return this.queuedBytes;
  }

  protected transmitText(text: string): void {
    this.enqueue({ kind: "text", text });
  }

  protected transmitBinary(bytes: Uint8Array): void {
    this.enqueue({ kind: "binary", bytes: bytes.slice() }); // a copy: the sender may reuse its buffer
  }

  protected closeUnderlying(reason: string): void {
    this.outgoing.push({ at: this.options.clock.now() + this.options.latencyMs, closeReason: reason });
    this.schedule();
  }

  /** Ends this side at once, nothing more delivered either way. */
  sever(reason: string): void {
    this.severed = true;
    this.outgoing.length = 0;
    this.queuedBytes = 0;
    this.timer?.cancel();
    this.closed({ reason, byPeer: true });
  }

  private enqueue(message: InboundMessage): void {
    const size = message.kind === "text" ? message.text.length : message.bytes.length;
    if (size > this.options.maxMessageBytes) {
      // ws closes the connection on an oversized message; so does this pair.
      this.peer.sever(`message of ${size} bytes over the ${this.options.maxMessageBytes}-byte limit`);
      this.sever(`message of ${size} bytes over the ${this.options.maxMessageBytes}-byte limit`);
      return;
    }
    this.queuedBytes += size;
    this.outgoing.push({ at: this.options.clock.now() + this.options.latencyMs, message });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer !== undefined || this.immediatePending || this.outgoing.length === 0) return;
    const delay = Math.max(0, this.outgoing[0]!.at - this.options.clock.now());
    // setTimeout(0) waits at least 1 ms in Node and 4 ms nested in browsers: a sync's
    // round trip would be mostly timer floors.
    if (delay === 0 && scheduleTurn !== undefined) {
      this.immediatePending = true;
      scheduleTurn(() => {
        this.immediatePending = false;
        if (!this.severed) this.pump();
      });
      return;
    }
    this.timer = this.options.clock.setTimeout(() => this.pump(), delay);
  }

  private pump(): void {
    this.timer = undefined;
    const now = this.options.clock.now();
    while (this.outgoing.length > 0 && this.outgoing[0]!.at <= now) {
      const item = this.outgoing.shift()!;
      if ("closeReason" in item) {
        this.peer.closedByPeer(item.closeReason);
        continue;
      }
      this.queuedBytes -= item.message.kind === "text" ? item.message.text.length : item.message.bytes.length;
      this.peer.receiveFromPeer(item.message);
    }
    this.bufferDrained();
    this.schedule();
  }

  receiveFromPeer(message: InboundMessage): void {
    if (!this.peer.blackholed) this.deliver(message);
  }

  closedByPeer(reason: string): void {
    this.closed({ reason: `peer closed: ${reason}`, byPeer: true });
  }
}

export function createMemoryPair(options: MemoryPairOptions = {}): MemoryPair {
  const resolved = { latencyMs: options.latencyMs ?? 0, maxMessageBytes: options.maxMessageBytes ?? MAX_FRAME_BYTES, clock: options.clock ?? systemClock };
  const a = new MemoryEnd("memory:a", resolved);
  const b = new MemoryEnd("memory:b", resolved);
  a.peer = b;
  b.peer = a;
  return {
    a,
    b,
    cut(reason = "network cut") {
      a.sever(reason);
      b.sever(reason);
    },
    silence() {
      a.blackholed = b.blackholed = true;
    },
  };
}
