// The secondary: keeps a replica that never runs (RAM, the device state of the last
// committed sync, its own disks), applies each sync all or nothing at its commit, replays
// its disk writes from the replica's memory (I/O logging-replay) or writes the inline
// blocks, and acknowledges. It takes over when it loses the primary (the link closes, or
// the primary falls silent) — not when it refused the primary's input itself: a protocol
// error detaches loudly and leaves the decision to the operator (`promote`). A replica that
// is not consistent (an initial sync that did not finish, a disk operation that failed)
// cannot be promoted, and says why.
import { withoutUndefined } from "../../emulator/config.ts";
import { Machine } from "../../emulator/machine.ts";
import type { ChannelCloseInfo, ChannelEvent, ReplicationChannel } from "../channel/channel.ts";
import type { BinaryFrame } from "../protocol/frames.ts";
import type { ControlMessage, InitBeginMessage } from "../protocol/messages.ts";
import { chunkDigests, diskDigest } from "./disk-image.ts";
import type { ReplicaGuest } from "./guest.ts";
import { Liveness } from "./liveness.ts";
import { replicaGuestOf } from "./machine-guest.ts";
import { ReplicationMetrics, type ByteCategory } from "./metrics.ts";
import { wallClockMs, type SyncEvent } from "./primary.ts";
import { Replica } from "./replica.ts";
import { SyncAssembler } from "./sync-assembler.ts";
import { StateMachine, type TransitionTable } from "./transitions.ts";

/**
 * waiting: no replica yet. initial-sync: a copy in progress (not usable). replicating: a
 * primary attached, replica consistent as of the last commit. standby: consistent replica,
 * no primary (it left, or its input was refused): `promote` to run it. failed: the replica
 * is not consistent (see `failure`); only a new initial sync repairs it.
 */
export type SecondaryState = "waiting" | "initial-sync" | "replicating" | "standby" | "promoting" | "active" | "failed" | "closed";

const SECONDARY_TRANSITIONS: TransitionTable<SecondaryState> = {
  waiting: ["initial-sync", "closed"],
  "initial-sync": ["replicating", "waiting", "failed", "closed"],
  replicating: ["promoting", "standby", "failed", "closed"],
  standby: ["promoting", "initial-sync", "failed", "closed"],
  failed: ["initial-sync", "closed"],
  promoting: ["active", "failed", "closed"],
  active: ["closed"],
  closed: [],
};

export interface SecondaryOptions {
  /** No word from the primary for this long while replicating means it is gone. */
  peerTimeoutMs?: number;
  /** Take over by itself when the primary is lost (default true); else wait for `promote()`. */
  autoFailover?: boolean;
  log?: (line: string) => void;
}

const DEFAULT_PEER_TIMEOUT_MS = 2000;
const HEARTBEAT_MS = 250;

/** One attached primary: its channel, its liveness, the sync being assembled. */
interface Attachment {
  channel: ReplicationChannel;
  liveness: Liveness;
  heartbeat: ReturnType<typeof setInterval>;
  assembler: SyncAssembler;
  ended: boolean;
  /** The session's disk mode (from init-begin): in dirty-block-copy every write is a block copy. */
  diskMode: InitBeginMessage["diskMode"];
  /** What the sync being received has carried so far, for `onSync` (seq 0: the initial copy). */
  receiving: { bytes: Record<ByteCategory, number>; initialPages: number[] };
}

export class SecondaryEngine {
  readonly metrics = new ReplicationMetrics("secondary");
  readonly #target: Machine | undefined;
  readonly #guest: ReplicaGuest;
  readonly #replica: Replica;
  readonly #options: Required<Omit<SecondaryOptions, "log">> & Pick<SecondaryOptions, "log">;
  readonly #fsm = new StateMachine<SecondaryState>("secondary", SECONDARY_TRANSITIONS, "waiting");
  #attached: Attachment | undefined;
  #lossDetectedAt = 0;
  readonly #syncListeners = new Set<(event: SyncEvent) => void>();

  /** `target`: a blank Machine (`Machine.createBlank`) with the same disks, by name and size, as the primary's; or any ReplicaGuest. */
  constructor(target: Machine | ReplicaGuest, options: SecondaryOptions = {}) {
    this.#target = target instanceof Machine ? target : undefined;
    this.#guest = target instanceof Machine ? replicaGuestOf(target) : target;
    this.#options = { peerTimeoutMs: DEFAULT_PEER_TIMEOUT_MS, autoFailover: true, ...withoutUndefined(options) };
    this.#replica = new Replica(this.#guest, (reason) => this.#replicaFailed(reason));
    this.metrics.state = this.#fsm.state;
    this.#fsm.onChange((state, reason) => {
      this.metrics.state = state;
      this.#options.log?.(`secondary: ${reason}`);
    });
  }

  get state(): SecondaryState {
    return this.#fsm.state;
  }

  /** The replica's machine (when built from one). */
  get machine(): Machine {
    if (this.#target === undefined) throw new Error("this secondary was built on a guest, not a Machine");
    return this.#target;
  }

  /** The failover epoch this node has seen (raised by its own takeover); handshakes carry it. */
  get epoch(): number {
    return this.metrics.epoch;
  }

  /** Why the replica cannot be promoted, when it cannot. */
  get failure(): string | undefined {
    return this.#replica.failure;
  }

  onStateChange(listener: (state: SecondaryState, reason: string) => void): () => void {
    return this.#fsm.onChange((state, reason) => listener(state, reason));
  }

  /** Called after each applied sync. */
  onSync(listener: (event: SyncEvent) => void): () => void {
    this.#syncListeners.add(listener);
    return () => this.#syncListeners.delete(listener);
  }

  /**
   * Serves one authenticated session with a primary; refuses a second one while busy. Never
   * rejects: a primary that goes away meanwhile (even while the disks are hashed) is a loss.
   */
  async attach(channel: ReplicationChannel): Promise<void> {
    if (this.#attached !== undefined || this.#fsm.is("active", "promoting", "closed")) {
      await channel.close(this.#fsm.is("active") ? "this node has taken over" : "a primary is already attached").catch(() => undefined);
      return;
    }
    const liveness = new Liveness({
      timeoutMs: this.#options.peerTimeoutMs,
      receivingPaused: () => channel.receivingPaused,
      onSilent: (ms) => this.#lost(attachment, `no word from the primary for ${Math.round(ms)} ms`),
    });
    // Our own heartbeats: the primary hears us even while we are busy writing a large copy.
    let heartbeatId = 0;
    const heartbeat = setInterval(
      () => void this.#send(attachment, { type: "heartbeat", epoch: channel.epoch, id: ++heartbeatId }).catch(() => undefined),
      HEARTBEAT_MS,
    );
    const attachment: Attachment = {
      channel,
      liveness,
      heartbeat,
      assembler: new SyncAssembler(),
      ended: false,
      diskMode: "io-log",
      receiving: { bytes: emptyBytes(), initialPages: [] },
    };
    this.#attached = attachment;
    channel.onActivity(() => liveness.heard());
    channel.onMessage((event) => this.#receive(attachment, event));
    channel.onClose((info) => this.#closed(attachment, info));
    liveness.start();
    // Tell the primary what our disks hold, so that equal ones are not copied.
    try {
      for (const [number, disk] of this.#guest.disks.entries()) {
        const sha256 = await diskDigest(disk.backend);
        if (attachment.ended) return;
        await this.#send(attachment, { type: "disk-digest", seq: 0, epoch: channel.epoch, disk: number, sha256 });
      }
    } catch (error) {
      this.#lost(attachment, `could not offer the disk digests: ${(error as Error).message}`);
    }
  }

  /**
   * Takes over: waits for every acknowledged sync to be on the replica's disks, loads the
   * last committed state and runs the guest. In-flight disk requests of that state are run
   * again by the disks. Refused (with the reason) unless the replica is consistent.
   */
  async promote(reason: string): Promise<void> {
    return this.#promote(reason, false);
  }

  /**
   * `handover`: the primary asked (its guest is stopped): it hears `promoted` once the guest
   * runs here, with the moment it resumed, or an error if this node cannot take over. Else the
   * old primary is fenced first, before anything else, as it may still be running.
   */
  async #promote(reason: string, handover: boolean): Promise<void> {
    if (this.#fsm.is("failed")) throw new Error(`promote: the replica is not consistent: ${this.#replica.failure ?? "failed"}`);
    if (!this.#fsm.is("replicating", "standby")) throw new Error(`promote: no consistent replica to run (state ${this.state})`);
    const started = this.#lossDetectedAt > 0 ? this.#lossDetectedAt : performance.now();
    this.#fsm.go("promoting", `taking over: ${reason}`);
    const attachment = this.#attached;
    const epoch = (attachment?.channel.epoch ?? this.metrics.epoch) + 1;
    if (attachment !== undefined) {
      this.#detach(attachment);
      // Fence the old primary: it must never acknowledge another guest write.
      if (!handover && attachment.channel.isOpen) await attachment.channel.send({ type: "promoted", epoch }).catch(() => undefined);
    }
    const finish = async (message: ControlMessage) => {
      if (attachment === undefined) return;
      if (handover && attachment.channel.isOpen) await attachment.channel.send(message).catch(() => undefined);
      await attachment.channel.close(message.type === "promoted" ? "secondary promoted" : "secondary cannot take over").catch(() => undefined);
    };
    try {
      await this.#replica.start();
    } catch (error) {
      this.#fsm.go("failed", `takeover refused: ${(error as Error).message}`);
      await finish({ type: "error", code: "cannot-take-over", message: (error as Error).message.slice(0, 500) });
      throw error;
    }
    const resumedAtMs = wallClockMs();
    this.metrics.epoch = epoch;
    this.metrics.failoverMs = performance.now() - started;
    this.#fsm.go("active", `guest running on this node (epoch ${epoch}), takeover took ${this.metrics.failoverMs.toFixed(0)} ms`);
    await finish({ type: "promoted", epoch, resumedAtMs });
  }

  /** Leaves the session on purpose (no takeover follows). */
  async close(): Promise<void> {
    const attachment = this.#attached;
    if (attachment !== undefined) this.#detach(attachment);
    if (!this.#fsm.is("closed")) this.#fsm.go("closed", "secondary shutting down");
    await attachment?.channel.close("secondary shutting down");
  }

  // ------------------------------------------------------------ inbound

  #receive(attachment: Attachment, event: ChannelEvent): void | Promise<void> {
    if (attachment.ended) return;
    if (event.channel === "frame") return this.#frame(attachment, event.frame);
    const message = event.message;
    switch (message.type) {
      case "init-begin":
        return this.#initBegin(attachment, message);
      case "disk-digest":
        return this.#replica.expectDigest(message.disk, message.sha256);
      case "init-end":
        return this.#initEnd(attachment, message.pageCount, message.stateParts, message.epoch);
      case "heartbeat":
        return; // the activity itself is what counts (see attach)
      case "goodbye":
        return this.#letGo(attachment, `the primary left deliberately (${message.reason}); not taking over`);
      case "verify-request": {
        // Taken now, as of the last applied sync; digested and answered whenever ready.
        const range =
          message.target === "ram"
            ? Promise.resolve(this.#replica.copyRam(message.offset, message.length))
            : this.#replica.readDisk(message.disk, message.offset, message.length);
        void range
          .then(async (bytes) => (bytes === undefined ? undefined : chunkDigests(bytes, message.chunkBytes)))
          .then((digests) => (digests === undefined ? undefined : this.#send(attachment, { type: "verify-digests", id: message.id, digests })))
          .catch(() => undefined);
        return;
      }
      case "handover":
        // The handler returns at once: the takeover itself ends this session.
        void this.#promote(`the primary handed over: ${message.reason}`, true).catch((error: unknown) =>
          this.#options.log?.(`secondary: handover refused: ${(error as Error).message}`),
        );
        return;
      case "error":
        return this.#letGo(attachment, `the primary reported ${message.code}: ${message.message}; not taking over`);
      default:
        return;
    }
  }

  #frame(attachment: Attachment, frame: BinaryFrame): void | Promise<void> {
    // As on the primary: in dirty-block-copy mode the log only announces the blocks.
    const category = frame.kind === "sync-commit" && attachment.diskMode === "dirty-block-copy" ? "diskBlocks" : categoryOf(frame);
    const bytes = frameBytes(frame);
    this.metrics.count(category, bytes);
    attachment.receiving.bytes[category] += bytes;
    switch (frame.kind) {
      case "memory-pages":
        if (this.#syncListeners.size > 0) attachment.receiving.initialPages.push(...frame.indices, ...frame.zeroIndices);
        return this.#replica.writeInitialPages(frame);
      case "state-parts":
        return this.#replica.setInitialState(frame.parts);
      case "disk-chunk":
        return this.#replica.writeChunk(frame.disk, frame.offset, frame.data === "zeros" ? new Uint8Array(frame.length) : frame.data);
      default: {
        const sync = attachment.assembler.add(frame);
        if (sync === undefined) return;
        const { io, ready } = this.#replica.apply(sync);
        this.metrics.syncs++;
        this.metrics.pagesSynced += sync.pages.length;
        this.metrics.writesSynced += io.filter((entry) => entry.type === "write").length;
        const copied = attachment.diskMode === "dirty-block-copy";
        this.#emitSync(
          attachment,
          sync.seq,
          Uint32Array.from(sync.pages, (p) => p.page),
          copied ? io.map((entry) => (entry.delivery === "inline" ? { ...entry, delivery: "block-copy" as const } : entry)) : io,
        );
        // Acknowledged once staged and applied; a slow disk holds the ack, and so the primary.
        return ready.then(() => this.#send(attachment, { type: "sync-ack", seq: sync.seq, epoch: attachment.channel.epoch })).catch(() => undefined);
      }
    }
  }

  #initBegin(attachment: Attachment, message: InitBeginMessage): void {
    this.#fsm.go("initial-sync", `initial sync from the primary (epoch ${message.epoch}, ${message.diskMode})`);
    this.metrics.epoch = message.epoch;
    attachment.diskMode = message.diskMode;
    const refusal = this.#replica.beginInitial(message.memoryBytes, message.disks);
    if (refusal !== undefined) this.#refuse(attachment, "mismatch", refusal);
  }

  async #initEnd(attachment: Attachment, pageCount: number, stateParts: number, epoch: number): Promise<void> {
    const problem = await this.#replica.finishInitial();
    if (attachment.ended) return;
    if (problem !== undefined) {
      this.#fsm.go("failed", `initial sync refused: ${problem}`);
      return this.#refuse(attachment, "disk-mismatch", problem);
    }
    this.#fsm.go("replicating", `initial sync complete (${pageCount} pages, ${stateParts} state parts)`);
    this.#emitSync(attachment, 0, Uint32Array.from(attachment.receiving.initialPages), []);
    await this.#send(attachment, { type: "init-ack", seq: 0, epoch });
  }

  #emitSync(attachment: Attachment, seq: number, pages: Uint32Array, io: SyncEvent["io"]): void {
    const bytes = attachment.receiving.bytes;
    attachment.receiving = { bytes: emptyBytes(), initialPages: [] };
    if (this.#syncListeners.size === 0) return;
    const event: SyncEvent = { role: "secondary", seq, pages, bytes, io, pauseMs: 0, roundTripMs: 0 };
    for (const listener of this.#syncListeners) listener(event);
  }

  // ------------------------------------------------------------ losing the primary

  #closed(attachment: Attachment, info: ChannelCloseInfo): void {
    if (info.error !== undefined) {
      // We refused its input: a healthy primary may be running on. Not a reason to take over.
      return this.#letGo(attachment, `refused the primary's input (${info.error.message}); NOT taking over: promote by hand if the primary is really gone`);
    }
    this.#lost(attachment, `replication link closed (${info.reason})`);
  }

  /** The primary is gone without a word: take over (if allowed and consistent), else hold. */
  #lost(attachment: Attachment, reason: string): void {
    if (attachment.ended) return;
    if (this.#fsm.is("replicating") && this.#options.autoFailover) {
      this.#lossDetectedAt = performance.now();
      void this.promote(`primary lost: ${reason}`).catch((error: unknown) => this.#options.log?.(`secondary: takeover failed: ${(error as Error).message}`));
      return;
    }
    this.#letGo(attachment, reason);
  }

  /** Ends the session without taking over: a consistent replica waits (standby), a partial copy is dropped. */
  #letGo(attachment: Attachment, reason: string): void {
    if (attachment.ended) return;
    this.#detach(attachment);
    void attachment.channel.close(reason.slice(0, 200)).catch(() => undefined);
    if (this.#fsm.is("initial-sync")) this.#fsm.go("waiting", `initial sync abandoned: ${reason}`);
    else if (this.#fsm.is("replicating")) this.#fsm.go("standby", `${reason}; holding the replica (promote to take over)`);
    else this.#options.log?.(`secondary: ${reason}`);
  }

  #refuse(attachment: Attachment, code: string, message: string): void {
    this.#options.log?.(`secondary: refusing the session: ${message}`);
    void this.#send(attachment, { type: "error", code, message: message.slice(0, 500) }).catch(() => undefined);
    this.#letGo(attachment, message);
  }

  #replicaFailed(reason: string): void {
    if (this.#fsm.is("initial-sync", "replicating", "standby", "promoting")) {
      this.#fsm.go("failed", `the replica is not consistent any more: ${reason}`);
    }
    const attachment = this.#attached;
    if (attachment !== undefined) this.#refuse(attachment, "replica-failed", `the secondary cannot keep a replica: ${reason}`);
  }

  #detach(attachment: Attachment): void {
    attachment.ended = true;
    attachment.liveness.stop();
    clearInterval(attachment.heartbeat);
    attachment.assembler.discard();
    if (this.#attached === attachment) this.#attached = undefined;
  }

  async #send(attachment: Attachment, message: ControlMessage): Promise<void> {
    if (attachment.ended && message.type !== "error") return;
    this.metrics.count("control", await attachment.channel.send(message));
  }
}

function categoryOf(frame: BinaryFrame): ByteCategory {
  switch (frame.kind) {
    case "memory-pages":
    case "page-updates":
      return "memoryPages";
    case "state-parts":
    case "state-changes":
      return "deviceState";
    case "disk-blocks":
      return "diskBlocks";
    case "disk-chunk":
      return "diskCopy";
    case "sync-commit":
      return "ioLog";
  }
}

/** Payload bytes of a received frame (headers and encryption not counted on this side). */
function frameBytes(frame: BinaryFrame): number {
  switch (frame.kind) {
    case "memory-pages":
      return frame.data.length;
    case "state-parts":
      return frame.parts.reduce((n, p) => n + p.length, 0);
    case "disk-blocks":
      return frame.data.length;
    case "disk-chunk":
      return frame.data === "zeros" ? 0 : frame.data.length;
    case "page-updates":
      return frame.updates.reduce((n, u) => n + u.bytes.length, 0);
    case "state-changes":
      return frame.changes.reduce((n, c) => n + c.bytes.length, 0);
    case "sync-commit":
      return frame.log.length * 20;
  }
}

function emptyBytes(): SyncEvent["bytes"] {
  return { memoryPages: 0, deviceState: 0, ioLog: 0, diskBlocks: 0, diskCopy: 0, control: 0 };
}
