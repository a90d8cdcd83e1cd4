// One attached primary, from the handshake's channel to the end of its session: our
// heartbeats, its liveness, the sync being assembled from its frames, and what the sync being
// received has carried so far (for sync events). Ended once, by the engine.
import type { ReplicationChannel } from "../../channel/channel.ts";
import type { Clock, Timer } from "../../clock.ts";
import { byteCategoryOf, payloadBytes, type BinaryFrame, type ByteCategory } from "../../protocol/frames.ts";
import type { ControlMessage, InitBeginMessage } from "../../protocol/messages.ts";
import { Liveness } from "../liveness.ts";
import type { ReplicationMetrics } from "../metrics.ts";
import { emptyByteCounts } from "../sync-event.ts";
import { SyncAssembler } from "./sync-assembler.ts";

export interface AttachmentOptions {
  peerTimeoutMs: number;
  heartbeatMs: number;
  clock: Clock;
  metrics: ReplicationMetrics;
  /** No word from the primary for peerTimeoutMs. */
  onSilent(reason: string): void;
}

export class PrimaryAttachment {
  readonly channel: ReplicationChannel;
  readonly assembler = new SyncAssembler();
  /** The session's disk mode (from init-begin): in dirty-block-copy every write is a block copy. */
  diskMode: InitBeginMessage["diskMode"] = "io-log";
  /** What the sync being received has carried so far (seq 0: the initial copy's pages too). */
  receiving = { bytes: emptyByteCounts(), initialPages: [] as number[] };
  readonly #options: AttachmentOptions;
  readonly #liveness: Liveness;
  readonly #heartbeat: Timer;
  #ended = false;

  constructor(channel: ReplicationChannel, options: AttachmentOptions) {
    this.channel = channel;
    this.#options = options;
    this.#liveness = new Liveness({
      timeoutMs: options.peerTimeoutMs,
      receivingPaused: () => channel.receivingPaused,
      onSilent: (ms) => options.onSilent(`no word from the primary for ${Math.round(ms)} ms`),
      clock: options.clock,
    });
    // Our own heartbeats: the primary hears us even while we are busy writing a large copy.
    let heartbeatId = 0;
    this.#heartbeat = options.clock.setInterval(
      () => void this.send({ type: "heartbeat", epoch: channel.epoch, id: ++heartbeatId }).catch(() => undefined),
      options.heartbeatMs,
    );
    channel.onActivity(() => this.#liveness.heard());
    this.#liveness.start();
  }

  /** The silence that counts as a lost primary from now on (the initial copy has a longer one). */
  setPeerTimeout(timeoutMs: number): void {
    this.#liveness.setTimeoutMs(timeoutMs);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Counts a received frame's bytes into the metrics and the sync being received. */
  count(frame: BinaryFrame): void {
    const category: ByteCategory = byteCategoryOf(frame, this.diskMode);
    const bytes = payloadBytes(frame);
    this.#options.metrics.count(category, bytes);
    this.receiving.bytes[category] += bytes;
  }

  /** What the sync just completed carried; the next one counts from zero. */
  takeReceived(): { bytes: Record<ByteCategory, number>; initialPages: number[] } {
    const received = this.receiving;
    this.receiving = { bytes: emptyByteCounts(), initialPages: [] };
    return received;
  }

  async send(message: ControlMessage): Promise<void> {
    if (this.#ended && message.type !== "error") return;
    this.#options.metrics.count("control", await this.channel.send(message));
  }

  /** Stops heartbeats and the liveness watch and drops a half-received sync (idempotent). */
  end(): void {
    this.#ended = true;
    this.#liveness.stop();
    this.#heartbeat.cancel();
    this.assembler.discard();
  }
}
