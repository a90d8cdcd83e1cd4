// One secondary's session, from the handshake's channel to its end: heartbeats, the peer's
// liveness, the syncs sent and not yet acknowledged, and the acks that complete them. It is
// thrown away whole on loss: `end()` hands back every sync still in flight, in order, so
// nothing the guest is waiting for can be dropped with it.
import type { ChannelCloseInfo, ChannelEvent, ReplicationChannel } from "../channel/channel.ts";
import type { BinaryFrame, EncodeOptions } from "../protocol/frames.ts";
import type { ControlMessage } from "../protocol/messages.ts";
import { Liveness } from "./liveness.ts";
import type { ByteCategory, ReplicationMetrics } from "./metrics.ts";
import type { EncodedSync, HeldRequest, OutgoingFrame } from "./sync-encoder.ts";
import { ioLogBytes } from "./sync-encoder.ts";

export interface InFlightSync {
  seq: number;
  /** Guest requests the sync logs; completed when it is acknowledged. */
  requests: HeldRequest[];
  /** When the capture was taken (performance.now()). */
  capturedAt: number;
  encoded: EncodedSync | undefined;
  bytes: Record<ByteCategory, number>;
  pauseMs: number;
  /** Control messages that must follow this sync's frames before the next sync's (consistency checks). */
  after: ControlMessage[];
}

export interface SessionEvents {
  /** Sync acknowledged (in seq order), after `track()`. */
  acknowledged(sync: InFlightSync): void;
  /** The initial copy (seq 0) is acknowledged: the requests it covered. */
  initAcknowledged(covered: HeldRequest[]): void;
  /** The session is gone; called once. `protocolError`: we refused the peer's input. */
  lost(reason: string): void;
  /** The secondary proved the secret and took over at `epoch` (its guest resumed at `resumedAtMs`, when it says). */
  promoted(epoch: number, resumedAtMs: number | undefined): void;
}

export interface SessionOptions {
  epoch: number;
  heartbeatIntervalMs: number;
  peerTimeoutMs: number;
  metrics: ReplicationMetrics;
  events: SessionEvents;
}

export class PrimarySession {
  readonly channel: ReplicationChannel;
  readonly #options: SessionOptions;
  readonly #inFlight: InFlightSync[] = [];
  readonly #peerDigests = new Map<number, string>();
  /** Consistency checks waiting for the secondary's verify-digests, by id. */
  readonly #digestRequests = new Map<number, { resolve: (digests: string[]) => void; reject: (error: Error) => void }>();
  #digestWaiter: (() => void) | undefined;
  #nextSeq = 1;
  #ended = false;
  #heartbeatId = 0;
  /** Syncs go on the wire one after another: sync N+1's frames never overtake sync N's. */
  #sending: Promise<void> = Promise.resolve();
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  readonly #liveness: Liveness;

  constructor(channel: ReplicationChannel, options: SessionOptions) {
    this.channel = channel;
    this.#options = options;
    this.#liveness = new Liveness({
      timeoutMs: options.peerTimeoutMs,
      receivingPaused: () => channel.receivingPaused,
      onSilent: (ms) => this.#lose(`no word from the secondary for ${Math.round(ms)} ms`),
    });
    channel.onActivity(() => this.#liveness.heard());
    channel.onMessage((event) => this.#receive(event));
    channel.onClose((info) => this.#closed(info));
  }

  get ended(): boolean {
    return this.#ended;
  }

  get inFlightCount(): number {
    return this.#inFlight.length;
  }

  /** Whether an event-driven sync (not the initial copy) waits for its acknowledgement. */
  get awaitingSyncAck(): boolean {
    return this.#inFlight.some((sync) => sync.seq > 0);
  }

  /** The number the next captured sync gets. */
  takeSeq(): number {
    return this.#nextSeq++;
  }

  /** The secondary's digests of its own disks (sent right after the handshake), waiting up to `timeoutMs` for `count`. */
  async peerDigests(count: number, timeoutMs: number): Promise<ReadonlyMap<number, string>> {
    const deadline = performance.now() + timeoutMs;
    while (this.#peerDigests.size < count && !this.#ended && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.#digestWaiter = resolve;
        setTimeout(resolve, Math.max(0, Math.min(100, deadline - performance.now())));
      });
    }
    return this.#peerDigests;
  }

  /** Heartbeats out, and the peer's silence watched. */
  startHeartbeat(): void {
    if (this.#ended || this.#heartbeat !== undefined) return;
    this.#liveness.start();
    this.#heartbeat = setInterval(() => {
      this.checkAckTimeout();
      void this.sendControl({ type: "heartbeat", epoch: this.#options.epoch, id: ++this.#heartbeatId }).catch(() => undefined);
    }, this.#options.heartbeatIntervalMs);
  }

  /** Registers a sync as in flight before any of it is sent, so a loss mid-send returns it. */
  track(sync: InFlightSync): void {
    this.#inFlight.push(sync);
  }

  /**
   * Sends one sync's frames, then `after` (its consistency checks), after any sync sent before;
   * counts bytes into the sync and the metrics. Rejects when the link fails.
   */
  sendFrames(
    frames: readonly OutgoingFrame[],
    into: Record<ByteCategory, number>,
    options?: EncodeOptions,
    after: readonly ControlMessage[] = [],
  ): Promise<void> {
    const sent = this.#sending.then(() => this.#sendInOrder(frames, into, options, after));
    this.#sending = sent.catch(() => undefined);
    return sent;
  }

  /** Resolves with the secondary's digests for consistency check `id` (rejects if the session ends first). */
  digestsFor(id: number): Promise<string[]> {
    return new Promise((resolve, reject) => {
      if (this.#ended) return reject(new Error("the session ended"));
      this.#digestRequests.set(id, { resolve, reject });
    });
  }

  async #sendInOrder(
    frames: readonly OutgoingFrame[],
    into: Record<ByteCategory, number>,
    options: EncodeOptions | undefined,
    after: readonly ControlMessage[],
  ): Promise<void> {
    await this.#sendFramesOnly(frames, into, options);
    for (const message of after) await this.sendControl(message);
  }

  async #sendFramesOnly(frames: readonly OutgoingFrame[], into: Record<ByteCategory, number>, options?: EncodeOptions): Promise<void> {
    const sizes = await this.channel.sendFrames(
      frames.map(({ frame }) => frame),
      options,
    );
    for (const [i, { frame, category }] of frames.entries()) {
      const bytes = sizes[i]!;
      if (frame.kind === "sync-commit") {
        // The commit frame is the I/O log (in its category) plus a fixed header, which counts as control.
        const log = Math.min(bytes, ioLogBytes(frame.log));
        this.#count(into, category, log);
        this.#count(into, "control", bytes - log);
      } else {
        this.#count(into, category, bytes);
      }
    }
  }

  async sendFrame(frame: BinaryFrame, category: ByteCategory, options?: EncodeOptions): Promise<void> {
    this.#options.metrics.count(category, await this.channel.sendFrame(frame, options));
  }

  async sendControl(message: ControlMessage): Promise<void> {
    this.#options.metrics.count("control", await this.channel.send(message));
  }

  /** Ends the session with a goodbye (idempotent) and returns the syncs it still had in flight, oldest first. */
  end(reason: string): InFlightSync[] {
    if (!this.#ended) {
      this.#ended = true;
      this.#liveness.stop();
      clearInterval(this.#heartbeat);
      this.#digestWaiter?.();
      for (const request of this.#digestRequests.values()) request.reject(new Error(`the session ended: ${reason}`));
      this.#digestRequests.clear();
      void this.channel.close(reason.slice(0, 200)).catch(() => undefined);
    }
    return this.#inFlight.splice(0);
  }

  #count(into: Record<ByteCategory, number>, category: ByteCategory, bytes: number): void {
    into[category] += bytes;
    this.#options.metrics.count(category, bytes);
  }

  #receive(event: ChannelEvent): void {
    if (this.#ended) return;
    if (event.channel !== "control") return;
    const message = event.message;
    switch (message.type) {
      case "disk-digest":
        this.#peerDigests.set(message.disk, message.sha256);
        this.#digestWaiter?.();
        return;
      case "init-ack": {
        const initial = this.#inFlight[0]?.seq === 0 ? this.#inFlight.shift() : undefined;
        return this.#options.events.initAcknowledged(initial?.requests ?? []);
      }
      case "sync-ack": {
        // SessionOrder let only the next unacknowledged seq through.
        const sync = this.#inFlight.shift();
        if (sync === undefined || sync.seq !== message.seq) return this.#lose(`sync-ack ${message.seq} for a sync not in flight`);
        return this.#options.events.acknowledged(sync);
      }
      case "promoted":
        return this.#options.events.promoted(message.epoch, message.resumedAtMs);
      case "verify-digests": {
        const request = this.#digestRequests.get(message.id);
        this.#digestRequests.delete(message.id);
        return request?.resolve(message.digests);
      }
      case "error":
        return this.#lose(`the secondary reported ${message.code}: ${message.message}`);
      case "goodbye":
        return this.#lose(`the secondary left: ${message.reason}`);
      default:
        return;
    }
  }

  #closed(info: ChannelCloseInfo): void {
    const why = info.error !== undefined ? `we refused its input: ${info.error.message}` : info.reason;
    this.#lose(`replication link closed (${why})`);
  }

  #lose(reason: string): void {
    if (this.#ended) return;
    // The engine calls end(), which takes the in-flight syncs back.
    this.#options.events.lost(reason);
  }

  /** A sync unanswered this long means the secondary is stuck even if it answers heartbeats. */
  checkAckTimeout(now = performance.now()): void {
    // The initial copy (seq 0) has a timeout of its own: it is as slow as the disks are large.
    const oldest = this.#inFlight.find((sync) => sync.seq > 0);
    if (oldest !== undefined && now - oldest.capturedAt > this.#options.peerTimeoutMs) {
      this.#lose(`sync ${oldest.seq} not acknowledged within ${this.#options.peerTimeoutMs} ms`);
    }
  }
}
