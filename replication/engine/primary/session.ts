// One secondary's session, from the handshake's channel to its end: heartbeats, the peer's
// liveness, the syncs sent and not yet acknowledged, the acks that complete them, and the
// waits of the engine's staged operations (the initial copy's ack, a handover's promotion).
// It is thrown away whole on loss: `end()` hands back every sync still in flight, in order,
// and settles every wait, so nothing the guest or an operation waits for hangs with it.
import type { ChannelCloseInfo, ChannelEvent, ReplicationChannel } from "../../channel/channel.ts";
import { systemClock, type Clock, type Timer } from "../../clock.ts";
import { ioLogBytes, type BinaryFrame, type ByteCategory, type EncodeOptions } from "../../protocol/frames.ts";
import type { ControlMessage } from "../../protocol/messages.ts";
import { Liveness } from "../liveness.ts";
import type { ReplicationMetrics } from "../metrics.ts";
import type { PendingRequest } from "./pending-io.ts";
import type { EncodedSync, OutgoingFrame } from "./sync-encoder.ts";

export interface InFlightSync {
  seq: number;
  /** Guest requests the sync logs. */
  requests: PendingRequest[];
  /** When the capture was taken (performance.now()). */
  capturedAt: number;
  /** When its frames were handed to the socket (performance.now()). */
  sentAt: number | undefined;
  /** The last ingress frame the guest's NIC had taken at the capture: the secondary's copy holds everything up to it. */
  ingressWatermark: number | null;
  encoded: EncodedSync | undefined;
  bytes: Record<ByteCategory, number>;
  pauseMs: number;
  /** Control messages that must follow this sync's frames before the next sync's (consistency checks). */
  after: ControlMessage[];
}

export interface SessionEvents {
  /** Sync acknowledged (in seq order), after `track()`. */
  acknowledged(sync: InFlightSync): void;
  /** The session is gone; called once. */
  lost(reason: string): void;
  /** The secondary proved the secret and took over at `epoch` without being asked to (the engine fences itself). */
  tookOver(epoch: number): void;
}

export interface SessionOptions {
  epoch: number;
  heartbeatIntervalMs: number;
  peerTimeoutMs: number;
  /** A sync unacknowledged this long is a loss. */
  ackTimeoutMs: number;
  metrics: ReplicationMetrics;
  events: SessionEvents;
  clock?: Clock;
}

/** A wait the session settles: by the awaited message, or with `undefined` when the session ends first. */
interface Waiter<T> {
  resolve: (value: T | undefined) => void;
}

export class PrimarySession {
  readonly channel: ReplicationChannel;
  readonly #options: SessionOptions;
  readonly #clock: Clock;
  /** Syncs sent and not acknowledged, oldest first, with when they were tracked (on the session's clock). */
  readonly #inFlight: { sync: InFlightSync; since: number }[] = [];
  readonly #peerDigests = new Map<number, string>();
  /** Consistency checks waiting for the secondary's verify-digests, by id. */
  readonly #digestRequests = new Map<number, { resolve: (digests: string[]) => void; reject: (error: Error) => void }>();
  #digestWaiter: (() => void) | undefined;
  #initAck: Waiter<true> | undefined;
  #initAcked = false;
  #promotion: Waiter<{ epoch: number; resumedAtMs: number | undefined }> | undefined;
  #nextSeq = 1;
  #ended = false;
  #heartbeatId = 0;
  /** Syncs go on the wire one after another: sync N+1's frames never overtake sync N's. */
  #sending: Promise<void> = Promise.resolve();
  /** Sends in `#sending` not yet finished: `sendFramesNow` may not pass them. */
  #sendingCount = 0;
  #heartbeat: Timer | undefined;
  readonly #liveness: Liveness;
  /** The last sign the syncs move (an ack, or bytes of ours still queued for the link), on the session's clock. */
  #progressAt = -Infinity;

  constructor(channel: ReplicationChannel, options: SessionOptions) {
    this.channel = channel;
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#liveness = new Liveness({
      timeoutMs: options.peerTimeoutMs,
      receivingPaused: () => channel.receivingPaused,
      onSilent: (ms) => this.#lose(`no word from the secondary for ${Math.round(ms)} ms`),
      clock: this.#clock,
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
    return this.#inFlight.some(({ sync }) => sync.seq > 0);
  }

  /** The number the next captured sync gets. */
  takeSeq(): number {
    return this.#nextSeq++;
  }

  /** The last sync the secondary acknowledged (0: only the initial copy, or nothing yet). */
  get lastAcknowledged(): number {
    return (this.#inFlight[0]?.sync.seq ?? this.#nextSeq) - 1;
  }

  /** The secondary's digests of its own disks (sent right after the handshake), waiting up to `timeoutMs` for `count`. */
  async peerDigests(count: number, timeoutMs: number): Promise<ReadonlyMap<number, string>> {
    const deadline = this.#clock.now() + timeoutMs;
    while (this.#peerDigests.size < count && !this.#ended && this.#clock.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = this.#clock.setTimeout(resolve, Math.max(0, deadline - this.#clock.now()));
        this.#digestWaiter = () => {
          timer.cancel();
          resolve();
        };
      });
    }
    return this.#peerDigests;
  }

  /** Resolves true when the secondary acknowledges the initial copy; false if the session ends first or `timeoutMs` passes (a loss). */
  async initAcknowledged(timeoutMs: number): Promise<boolean> {
    if (this.#initAcked) return true;
    if (this.#ended) return false;
    const timer = this.#clock.setTimeout(() => this.#lose(`no init-ack within ${timeoutMs} ms`), timeoutMs);
    const acked = await new Promise<true | undefined>((resolve) => (this.#initAck = { resolve }));
    timer.cancel();
    return acked === true;
  }

  /**
   * After a handover request: resolves when the secondary says it runs the guest (with when its
   * guest resumed); rejects if the session ends first or nothing comes within `timeoutMs`.
   */
  async promotion(timeoutMs: number): Promise<{ epoch: number; resumedAtMs: number | undefined }> {
    if (this.#ended) throw new Error("the session with the secondary ended");
    let timedOut = false;
    const timer = this.#clock.setTimeout(() => {
      timedOut = true;
      this.#promotion?.resolve(undefined);
    }, timeoutMs);
    const promoted = await new Promise<{ epoch: number; resumedAtMs: number | undefined } | undefined>((resolve) => (this.#promotion = { resolve }));
    timer.cancel();
    this.#promotion = undefined;
    if (promoted !== undefined) return promoted;
    throw new Error(timedOut ? `the secondary did not take over within ${timeoutMs} ms` : "the session with the secondary ended");
  }

  /** The silence that counts as a lost secondary from now on (the initial copy has a longer one). */
  setPeerTimeout(timeoutMs: number): void {
    this.#liveness.setTimeoutMs(timeoutMs);
  }

  /** Heartbeats out, and the peer's silence watched. */
  startHeartbeat(): void {
    if (this.#ended || this.#heartbeat !== undefined) return;
    this.#liveness.start();
    this.#heartbeat = this.#clock.setInterval(() => {
      this.checkAckTimeout();
      void this.sendControl({ type: "heartbeat", epoch: this.#options.epoch, id: ++this.#heartbeatId }).catch(() => undefined);
    }, this.#options.heartbeatIntervalMs);
  }

  /** Registers a sync as in flight before any of it is sent, so a loss mid-send returns it. */
  track(sync: InFlightSync): void {
    this.#inFlight.push({ sync, since: this.#clock.now() });
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
    this.#sendingCount++;
    const sent = this.#sending.then(() => this.#sendInOrder(frames, into, options, after));
    this.#sending = sent.then(
      () => void this.#sendingCount--,
      () => void this.#sendingCount--,
    );
    return sent;
  }

  /**
   * As `sendFrames` (uncompressed, nothing to follow), on the wire before this call returns;
   * false, having sent nothing, where it cannot go at once without passing an earlier send (then
   * use `sendFrames`). For a capture inside the guest's slice: its sync need not wait for the
   * slice's end to leave.
   */
  sendFramesNow(frames: readonly OutgoingFrame[], into: Record<ByteCategory, number>): boolean {
    if (this.#ended || this.#sendingCount > 0) return false;
    const sizes = this.channel.sendFramesNow(frames.map(({ frame }) => frame));
    if (sizes === undefined) return false;
    this.#countFrames(frames, sizes, into);
    return true;
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
    this.#countFrames(frames, sizes, into);
  }

  #countFrames(frames: readonly OutgoingFrame[], sizes: readonly number[], into: Record<ByteCategory, number>): void {
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
      this.#heartbeat?.cancel();
      this.#digestWaiter?.();
      for (const request of this.#digestRequests.values()) request.reject(new Error(`the session ended: ${reason}`));
      this.#digestRequests.clear();
      this.#initAck?.resolve(undefined);
      this.#promotion?.resolve(undefined);
      void this.channel.close(reason.slice(0, 200)).catch(() => undefined);
    }
    return this.#inFlight.splice(0).map(({ sync }) => sync);
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
        // The initial copy (seq 0) was tracked at its start; SessionOrder let one init-ack through.
        if (this.#inFlight[0]?.sync.seq === 0) this.#inFlight.shift();
        this.#initAcked = true;
        return this.#initAck?.resolve(true);
      }
      case "sync-ack": {
        // SessionOrder let only the next unacknowledged seq through.
        const sync = this.#inFlight.shift()?.sync;
        if (sync === undefined || sync.seq !== message.seq) return this.#lose(`sync-ack ${message.seq} for a sync not in flight`);
        this.#progressAt = this.#clock.now();
        const arrivedAt = this.channel.arrivedAt;
        if (arrivedAt !== undefined) this.#options.metrics.stage("ack-receive", performance.now() - arrivedAt);
        return this.#options.events.acknowledged(sync);
      }
      case "promoted":
        if (this.#promotion !== undefined) return this.#promotion.resolve({ epoch: message.epoch, resumedAtMs: message.resumedAtMs });
        return this.#options.events.tookOver(message.epoch);
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
    // The engine calls end(), which takes the in-flight syncs back and settles the waits.
    this.#options.events.lost(reason);
  }

  /**
   * A sync unanswered this long means the secondary is stuck even if it answers heartbeats. The
   * wait counts from the later of the sync's capture and the last sign of progress: an ack, or
   * this side still pushing queued bytes into the link. A slow link that delivers (a burst of
   * writes over 100 Mbit/s queues seconds of syncs) is not a stuck peer; one that has everything
   * it was sent and answers nothing is.
   */
  checkAckTimeout(now = this.#clock.now()): void {
    // The initial copy (seq 0) has a timeout of its own: it is as slow as the disks are large.
    const oldest = this.#inFlight.find(({ sync }) => sync.seq > 0);
    if (oldest === undefined) return;
    if (this.channel.bufferedAmount > 0) this.#progressAt = now;
    if (now - Math.max(oldest.since, this.#progressAt) > this.#options.ackTimeoutMs) {
      this.#lose(`sync ${oldest.sync.seq} not acknowledged within ${this.#options.ackTimeoutMs} ms`);
    }
  }
}
