// The node's end of the network link: NetworkUplink connects to the gateway, attaches with
// the guest's epoch and the last ingress frame its state has seen, hands ingress frames to
// the guest in id order, sends the egress frames the engine released, and reports what the
// secondary holds. It reconnects by itself (bounded backoff) and never makes its caller
// wait: while it is not connected, released frames are dropped and counted (the guest's
// TCP resends them), and the frames that reached the gateway meanwhile come on reconnect.
// A secondary's uplink may stand by: dialled and authenticated before its guest runs, so
// that a takeover attaches with one message instead of a connection and a handshake (which
// took 150-220 ms in a survivor whose freshly restored guest keeps its event loop busy).
// Browser-safe: the caller supplies how to dial (Node: harness/network/uplink-node.ts).
import { systemClock, type Clock, type Timer } from "../clock.ts";
import { MIN_SECRET_BYTES } from "../protocol/limits.ts";
import type { Transport } from "../transport/transport.ts";
import { checkFrame, maxFrameBytes, DEFAULT_MTU } from "./ethernet.ts";
import { NetworkLinkError } from "./link-errors.ts";
import { linkHandshake } from "./link-handshake.ts";
import { MAX_INGRESS_ID, MAX_LINK_EPOCH } from "./link-limits.ts";
import type { IngressFrame, LinkControl } from "./link-messages.ts";
import { LinkSession, type LinkCloseInfo, type LinkInbound } from "./link-session.ts";

export type UplinkState =
  | { kind: "connecting"; attempt: number }
  | { kind: "connected"; epoch: number; resumeFrom: number; replay: number }
  /** Authenticated, not attached: a takeover's attach needs no dialling. */
  | { kind: "standby" }
  /** `retryInMs` undefined: not retrying (not attached yet, closed, or taken over by a higher epoch). */
  | { kind: "down"; reason: string; retryInMs: number | undefined };

/** The link's state in words: the same in a node's log and in `twinvm status`. */
export function describeUplinkState(state: UplinkState): string {
  switch (state.kind) {
    case "connected":
      return `attached to the gateway at epoch ${state.epoch} (${state.replay} frame(s) given again)`;
    case "standby":
      return "standing by at the gateway (a takeover attaches without dialling)";
    case "down":
      return `gateway link DOWN: ${state.reason}`;
    case "connecting":
      return "connecting to the gateway";
  }
}

export interface NetworkUplinkOptions {
  /** The gateway, e.g. ws://127.0.0.1:7500. */
  url: string;
  secret: Uint8Array;
  /** Opens a transport to `url` (Node: connectReplication; a browser: connectBrowserWebSocket). */
  dial: (url: string) => Promise<Transport>;
  nodeId?: string;
  /** First retry after a failure; doubles up to maxRetryMs (defaults 100 and 2000). */
  minRetryMs?: number;
  maxRetryMs?: number;
  handshakeTimeoutMs?: number;
  heartbeatMs?: number;
  silenceTimeoutMs?: number;
  /** Retries, heartbeats and the silence timeout (tests pass a manual clock). */
  clock?: Clock;
  /** The guest NIC's MTU (default 1500): larger frames are dropped and counted either way. */
  mtu?: number;
}

export interface UplinkCounters {
  ingress: { frames: number; bytes: number; dropped: { oversized: number; malformed: number; duplicate: number; listenerError: number } };
  /** `waiting`: released frames held while the link (re)connects or drains; dropped `notConnected`: released with no attachment under way (never attached, fenced, closed); `backlog`: the wait was full. */
  egress: { frames: number; bytes: number; waiting: number; dropped: { notConnected: number; backlog: number; oversized: number; malformed: number } };
  connects: number;
  /** Id of the last ingress frame given to the guest (or attached with). */
  lastIngressId: number;
  /** Highest id reported committed. */
  committed: number;
}

/**
 * Released egress frames held while an attachment is under way (connecting after a takeover,
 * reconnecting, or the link's send buffer full): dropped, each would cost the guest's TCP a
 * retransmission timeout, and after a takeover several in a row (exponential backoff).
 */
const EGRESS_BACKLOG = { frames: 1024, bytes: 2 << 20 } as const;

export type FrameListener = (frame: Uint8Array, id: number) => void;

export class NetworkUplink {
  readonly #options: NetworkUplinkOptions;
  readonly #maxFrame: number;
  #state: UplinkState = { kind: "down", reason: "not attached yet", retryInMs: undefined };
  readonly #stateListeners = new Set<(state: UplinkState) => void>();
  #frameListener: FrameListener | undefined;
  #epoch: number | undefined;
  #lastIngressId = 0;
  #committed = 0;
  #committedSent = 0;
  #session: LinkSession | undefined;
  #attempt = 0;
  #retryMs: number;
  #retryTimer: Timer | undefined;
  /** Released egress frames waiting for the link, oldest first (EGRESS_BACKLOG). */
  readonly #backlog: Uint8Array[] = [];
  #backlogBytes = 0;
  /** Set when a higher epoch holds the gateway: no more attempts at this epoch. */
  #fencedBy: number | undefined;
  /** standby() was called and attach() not yet: the link is kept open without an epoch. */
  #standingBy = false;
  #closed = false;
  readonly #counts = {
    inFrames: 0,
    inBytes: 0,
    inOversized: 0,
    inMalformed: 0,
    duplicate: 0,
    listenerError: 0,
    outFrames: 0,
    outBytes: 0,
    notConnected: 0,
    backlog: 0,
    outOversized: 0,
    outMalformed: 0,
    connects: 0,
  };

  constructor(options: NetworkUplinkOptions) {
    if (options.secret.length < MIN_SECRET_BYTES)
      throw new RangeError(`the secret is ${options.secret.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
    this.#options = options;
    this.#maxFrame = maxFrameBytes(options.mtu ?? DEFAULT_MTU);
    this.#retryMs = options.minRetryMs ?? 100;
  }

  get state(): UplinkState {
    return this.#state;
  }

  onState(listener: (state: UplinkState) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /** Ingress frames in id order. The listener takes the frame into the guest (or drops it) before it returns. */
  onFrame(listener: FrameListener): void {
    this.#frameListener = listener;
  }

  /**
   * Dials and authenticates now, and keeps the link open (reconnecting as needed) until
   * `attach` uses it. For a secondary, whose guest may run here later. No-op once attached.
   */
  standby(): void {
    if (this.#closed) throw new NetworkLinkError("closed", "the uplink is closed");
    if (this.#epoch !== undefined || this.#standingBy) return;
    this.#standingBy = true;
    void this.#connect();
  }

  /**
   * The guest runs here at `epoch`, its state having seen ingress frames up to
   * `lastIngressId` (0: none). Connects (or reconnects, when the epoch changed); a link
   * standing by is attached as it is.
   */
  attach(epoch: number, lastIngressId: number): void {
    if (this.#closed) throw new NetworkLinkError("closed", "the uplink is closed");
    if (!Number.isInteger(epoch) || epoch < 0 || epoch > MAX_LINK_EPOCH)
      throw new RangeError(`epoch must be an integer from 0 to ${MAX_LINK_EPOCH}, got ${epoch}`);
    if (!Number.isSafeInteger(lastIngressId) || lastIngressId < 0 || lastIngressId > MAX_INGRESS_ID)
      throw new RangeError(`lastIngressId must be a non-negative safe integer, got ${lastIngressId}`);
    if (this.#epoch !== undefined && epoch < this.#epoch) throw new RangeError(`epoch ${epoch} is below the epoch ${this.#epoch} this uplink attached with`);
    this.#epoch = epoch;
    this.#lastIngressId = lastIngressId;
    this.#committed = this.#committedSent = 0;
    this.#fencedBy = undefined;
    this.#retryTimer?.cancel();
    this.#retryMs = this.#options.minRetryMs ?? 100;
    const previous = this.#session;
    const wasStandingBy = this.#standingBy;
    this.#standingBy = false;
    if (previous !== undefined && this.#state.kind === "standby") return void previous.sendControl({ type: "attach", epoch, lastIngressId });
    // A standby still dialling: that attempt sees the epoch and attaches when it is through.
    if (previous === undefined && wasStandingBy && this.#state.kind === "connecting") return;
    this.#session = undefined;
    previous?.close(`re-attaching at epoch ${epoch}`);
    void this.#connect();
  }

  /**
   * Egress frames the engine released, in order. Never waits: while an attachment is under
   * way they are held (bounded) and sent once the link takes them; otherwise dropped and counted.
   */
  send(frames: readonly Uint8Array[]): void {
    for (const frame of frames) {
      const verdict = checkFrame(frame, this.#maxFrame);
      if (verdict === "oversized") this.#counts.outOversized++;
      else if (verdict === "malformed") this.#counts.outMalformed++;
      else if (!this.#attaching) this.#counts.notConnected++;
      else if (this.#backlog.length >= EGRESS_BACKLOG.frames || this.#backlogBytes + frame.length > EGRESS_BACKLOG.bytes) this.#counts.backlog++;
      else {
        this.#backlog.push(frame);
        this.#backlogBytes += frame.length;
      }
    }
    this.#flush();
  }

  /** Whether frames released now will go out once the link is up: attached or attaching, not fenced or closed. */
  get #attaching(): boolean {
    return !this.#closed && this.#epoch !== undefined && this.#fencedBy === undefined;
  }

  /** Sends the held frames the link takes now, in order. */
  #flush(): void {
    const session = this.#state.kind === "connected" ? this.#session : undefined;
    if (session === undefined || this.#backlog.length === 0) return;
    let count = 0;
    let bytes = 0;
    // One batch per call, cut where the link stops being writable (its high-water mark is in bytes queued).
    while (count < this.#backlog.length && session.writable) {
      const batchEnd = Math.min(this.#backlog.length, count + 64);
      const batch = this.#backlog.slice(count, batchEnd);
      session.sendEgress(batch);
      for (const frame of batch) bytes += frame.length;
      count = batchEnd;
    }
    this.#backlog.splice(0, count);
    this.#backlogBytes -= bytes;
    this.#counts.outFrames += count;
    this.#counts.outBytes += bytes;
  }

  #dropBacklog(): void {
    this.#counts.notConnected += this.#backlog.length;
    this.#backlog.length = 0;
    this.#backlogBytes = 0;
  }

  /** Everything up to `lastIngressId` is in the secondary's copy (call after each acknowledged sync). */
  committed(lastIngressId: number): void {
    if (!Number.isSafeInteger(lastIngressId) || lastIngressId < 0)
      throw new RangeError(`lastIngressId must be a non-negative safe integer, got ${lastIngressId}`);
    // Never more than the guest was given: the gateway would refuse it.
    this.#committed = Math.max(this.#committed, Math.min(lastIngressId, this.#lastIngressId));
    this.#sendCommitted();
  }

  counters(): UplinkCounters {
    const c = this.#counts;
    return {
      ingress: {
        frames: c.inFrames,
        bytes: c.inBytes,
        dropped: { oversized: c.inOversized, malformed: c.inMalformed, duplicate: c.duplicate, listenerError: c.listenerError },
      },
      egress: {
        frames: c.outFrames,
        bytes: c.outBytes,
        waiting: this.#backlog.length,
        dropped: { notConnected: c.notConnected, backlog: c.backlog, oversized: c.outOversized, malformed: c.outMalformed },
      },
      connects: c.connects,
      lastIngressId: this.#lastIngressId,
      committed: this.#committed,
    };
  }

  /** Says goodbye to the gateway and stops reconnecting. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropBacklog();
    this.#retryTimer?.cancel();
    this.#session?.close("the node is closing its uplink");
    this.#session = undefined;
    this.#setState({ kind: "down", reason: "closed", retryInMs: undefined });
  }

  async #connect(): Promise<void> {
    const attempt = ++this.#attempt;
    this.#setState({ kind: "connecting", attempt });
    let session: LinkSession;
    try {
      const transport = await this.#options.dial(this.#options.url);
      if (attempt !== this.#attempt || this.#closed) return transport.close("superseded attempt");
      const link = await linkHandshake(transport, "node", this.#options.secret, {
        nodeId: this.#options.nodeId ?? "node",
        ...(this.#options.handshakeTimeoutMs !== undefined ? { timeoutMs: this.#options.handshakeTimeoutMs } : {}),
      });
      if (attempt !== this.#attempt || this.#closed) return link.transport.close("superseded attempt");
      session = new LinkSession(link, {
        ...(this.#options.heartbeatMs !== undefined ? { heartbeatMs: this.#options.heartbeatMs } : {}),
        ...(this.#options.silenceTimeoutMs !== undefined ? { silenceTimeoutMs: this.#options.silenceTimeoutMs } : {}),
        ...(this.#options.clock !== undefined ? { clock: this.#options.clock } : {}),
      });
    } catch (error) {
      if (attempt === this.#attempt && !this.#closed) this.#retry(`cannot reach the gateway at ${this.#options.url}: ${(error as Error).message}`);
      return;
    }
    this.#session = session;
    session.onWritable(() => this.#flush());
    session.onMessage((message) => this.#onMessage(session, message));
    session.onClose((info) => this.#onClosed(session, info));
    // The epoch is read now, not at the dial: attach() may have come while this attempt dialled.
    if (this.#epoch === undefined) {
      session.sendControl({ type: "standby" });
      this.#retryMs = this.#options.minRetryMs ?? 100;
      return this.#setState({ kind: "standby" });
    }
    session.sendControl({ type: "attach", epoch: this.#epoch, lastIngressId: this.#lastIngressId });
  }

  #onMessage(session: LinkSession, inbound: LinkInbound): void {
    if (session !== this.#session) return;
    const epoch = this.#epoch;
    if (inbound.kind === "ingress") return this.#deliver(inbound.frames);
    if (inbound.kind === "egress") throw new NetworkLinkError("order", "the gateway sent egress frames");
    const message: LinkControl = inbound.message;
    switch (message.type) {
      case "attached":
        if (this.#state.kind === "connected") throw new NetworkLinkError("order", "attached twice");
        if (epoch === undefined) throw new NetworkLinkError("order", "attached while standing by");
        if (message.epoch !== epoch) throw new NetworkLinkError("order", `attached at epoch ${message.epoch}, we asked for ${epoch}`);
        // The gateway says where the stream continues (below ours only when our ids came from another gateway).
        this.#lastIngressId = message.resumeFrom - 1;
        this.#committedSent = Math.min(this.#committedSent, this.#lastIngressId);
        this.#counts.connects++;
        this.#retryMs = this.#options.minRetryMs ?? 100;
        this.#setState({ kind: "connected", epoch, resumeFrom: message.resumeFrom, replay: message.replay });
        this.#sendCommitted();
        this.#flush();
        return;
      case "stale-epoch":
        this.#fence(message.epoch, `taken over: ${message.message}`);
        return;
      case "superseded":
        // The same epoch: our own newer connection, or a double; a higher one: we were taken over.
        if (epoch !== undefined && message.epoch > epoch) this.#fence(message.epoch, `taken over: a node at epoch ${message.epoch} attached to the gateway`);
        return;
      default:
        throw new NetworkLinkError("order", `${message.type} from the gateway`);
    }
  }

  #deliver(frames: readonly IngressFrame[]): void {
    if (this.#state.kind !== "connected") throw new NetworkLinkError("order", "ingress frames before attached");
    for (const { id, frame } of frames) {
      if (id <= this.#lastIngressId) {
        this.#counts.duplicate++;
        continue;
      }
      // Its id is spent either way: a frame dropped here is a frame the guest lost.
      this.#lastIngressId = id;
      const verdict = checkFrame(frame, this.#maxFrame);
      if (verdict !== "ok") {
        if (verdict === "oversized") this.#counts.inOversized++;
        else this.#counts.inMalformed++;
        continue;
      }
      this.#counts.inFrames++;
      this.#counts.inBytes += frame.length;
      try {
        this.#frameListener?.(frame, id);
      } catch {
        // The guest side refused this frame; the link and the frames after it are not at fault.
        this.#counts.listenerError++;
      }
    }
  }

  #sendCommitted(): void {
    if (this.#state.kind !== "connected" || this.#committed <= this.#committedSent) return;
    this.#session?.sendControl({ type: "committed", lastIngressId: this.#committed });
    this.#committedSent = this.#committed;
  }

  #fence(epoch: number, reason: string): void {
    this.#fencedBy = epoch;
    // A higher epoch runs the guest: what this one said must not reach anyone.
    this.#dropBacklog();
    this.#setState({ kind: "down", reason, retryInMs: undefined });
  }

  #onClosed(session: LinkSession, info: LinkCloseInfo): void {
    if (session !== this.#session) return;
    this.#session = undefined;
    if (this.#closed) return;
    if (this.#fencedBy !== undefined) {
      if (this.#state.kind !== "down") this.#fence(this.#fencedBy, `taken over by epoch ${this.#fencedBy}`);
      return;
    }
    this.#retry(`link to the gateway lost: ${info.reason}`);
  }

  #retry(reason: string): void {
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, this.#options.maxRetryMs ?? 2000);
    this.#setState({ kind: "down", reason, retryInMs: delay });
    this.#retryTimer?.cancel();
    this.#retryTimer = (this.#options.clock ?? systemClock).setTimeout(() => {
      if (!this.#closed && this.#fencedBy === undefined) void this.#connect();
    }, delay);
    // Retrying must not keep a Node process alive by itself.
    this.#retryTimer.unref?.();
  }

  #setState(state: UplinkState): void {
    this.#state = state;
    for (const listener of this.#stateListeners) listener(state);
  }
}
