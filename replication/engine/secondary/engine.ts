// The secondary: keeps a replica that never runs (RAM, the device state of the last
// committed sync, its own disks), applies each sync all or nothing at its commit, replays
// its disk writes from the replica's memory (I/O logging-replay) or writes the inline
// blocks, and acknowledges. It takes over when it loses the primary (the link closes, or
// the primary falls silent) — not when it refused the primary's input itself: a protocol
// error detaches loudly and leaves the decision to the operator (`promote`). A replica that
// is not consistent (an initial sync that did not finish, a disk operation that failed)
// cannot be promoted, and says why.
//
// This file is the engine's state machine and its inbound dispatch; one primary's session is
// attachment.ts, the replica replica.ts, the takeover's steps takeover.ts.
import { withoutUndefined } from "../../../emulator/config.ts";
import { Machine } from "../../../emulator/machine.ts";
import type { ChannelCloseInfo, ChannelEvent, ReplicationChannel } from "../../channel/channel.ts";
import { systemClock, type Clock, type Timer } from "../../clock.ts";
import type { BinaryFrame, CarriedOutput } from "../../protocol/frames.ts";
import type { InitBeginMessage } from "../../protocol/messages.ts";
import { chunkDigests, diskDigest } from "../disk-image.ts";
import type { ReplicaGuest } from "../guest.ts";
import { replicaGuestOf } from "../machine-guest.ts";
import { ReplicationMetrics } from "../metrics.ts";
import type { LoggedIo, SyncEvent } from "../sync-event.ts";
import { StateMachine } from "../transitions.ts";
import { PrimaryAttachment } from "./attachment.ts";
import { CarriedOutputStore } from "./carried-output.ts";
import { Replica } from "./replica.ts";
import { SECONDARY_TRANSITIONS, type SecondaryState } from "./states.ts";
import { takeOver, type TakeoverCore } from "./takeover.ts";
import type { Witness, WitnessAnswer } from "../../arbiter/witness.ts";
import { heartbeatFor, SETUP_PEER_TIMEOUT_MS } from "../liveness.ts";

export type { SecondaryState } from "./states.ts";

export interface SecondaryOptions {
  /** No word from the primary for this long while replicating means it is gone. */
  peerTimeoutMs?: number;
  /** Take over by itself when the primary is lost (default true); else wait for `promote()`. */
  autoFailover?: boolean;
  /** Timers and timeouts (tests pass a manual clock). */
  clock?: Clock;
  /** An arbiter's witness: this node takes over only once it grants the next epoch (see arbiter/witness.ts). */
  witness?: Witness;
  /** This node's name at the witness (default "secondary"). */
  nodeName?: string;
  log?: (line: string) => void;
}

const DEFAULT_PEER_TIMEOUT_MS = 2000;
/** How soon a claim the witness did not answer is asked again. */
const CLAIM_RETRY_MS = 200;
/** How soon a claim refused for the primary's hold is asked again, at the latest. */
const HOLD_RECHECK_MS = 25;

/** The witness's answer to a takeover's claim, or why it could not be asked. */
type ClaimAnswer = WitnessAnswer | { granted: false; unreachable: string };
type ClaimRefusal = Exclude<ClaimAnswer, { granted: true }>;

export class SecondaryEngine {
  readonly metrics = new ReplicationMetrics("secondary");
  readonly #target: Machine | undefined;
  readonly #guest: ReplicaGuest;
  readonly #replica: Replica;
  readonly #options: {
    peerTimeoutMs: number;
    autoFailover: boolean;
    clock: Clock;
    witness: Witness | undefined;
    nodeName: string;
    log: ((line: string) => void) | undefined;
  };
  /** Claims retried while the witness cannot be reached and no primary is attached. */
  #claimRetry: Timer | undefined;
  readonly #fsm = new StateMachine<SecondaryState>("secondary", SECONDARY_TRANSITIONS, "waiting");
  #attached: PrimaryAttachment | undefined;
  /** When the loss that triggered a takeover was noticed, for the failover time. */
  #lossDetectedAt: number | undefined;
  readonly #syncListeners = new Set<(event: SyncEvent) => void>();
  /** The output of applied syncs that the primary may not have let out yet. */
  readonly #carried = new CarriedOutputStore();

  /** `target`: a blank Machine (`Machine.createBlank`) with the same disks, by name and size, as the primary's; or any ReplicaGuest. */
  constructor(target: Machine | ReplicaGuest, options: SecondaryOptions = {}) {
    this.#target = target instanceof Machine ? target : undefined;
    this.#guest = target instanceof Machine ? replicaGuestOf(target) : target;
    this.#options = {
      peerTimeoutMs: DEFAULT_PEER_TIMEOUT_MS,
      autoFailover: true,
      clock: systemClock,
      witness: undefined,
      nodeName: "secondary",
      log: undefined,
      ...withoutUndefined(options),
    };
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

  /**
   * Once this node runs the guest (active): the console bytes and frames the guest produced
   * before the state it resumed from that the old primary may never have let out, in order,
   * once (later calls return nothing). Let them out before anything the guest produces now:
   * call it from the "active" state listener. At least once: some may have been let out already.
   */
  takeCarriedOutput(): CarriedOutput[] {
    if (!this.#fsm.is("active")) return [];
    const outputs = this.#carried.take();
    if (outputs.length > 0) this.#options.log?.(`secondary: letting out ${outputs.length} output(s) the old primary held for acknowledged syncs`);
    return outputs;
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
    const attachment: PrimaryAttachment = new PrimaryAttachment(channel, {
      // Until the initial copy is done both sides are busy (disks hashed and written): a longer window.
      peerTimeoutMs: Math.max(this.#options.peerTimeoutMs, SETUP_PEER_TIMEOUT_MS),
      heartbeatMs: heartbeatFor(this.#options.peerTimeoutMs),
      clock: this.#options.clock,
      metrics: this.metrics,
      onSilent: (reason) => this.#lost(attachment, reason),
    });
    this.#attached = attachment;
    channel.onMessage((event) => this.#receive(attachment, event));
    channel.onClose((info) => this.#closed(attachment, info));
    // Tell the primary what our disks hold, so that equal ones are not copied.
    try {
      for (const [number, disk] of this.#guest.disks.entries()) {
        const sha256 = await diskDigest(disk.backend);
        if (attachment.ended) return;
        await attachment.send({ type: "disk-digest", seq: 0, epoch: channel.epoch, disk: number, sha256 });
      }
    } catch (error) {
      this.#lost(attachment, `could not offer the disk digests: ${(error as Error).message}`);
    }
  }

  /**
   * Takes over (takeover.ts): waits for every acknowledged sync to be on the replica's disks,
   * loads the last committed state and runs the guest. Refused (with the reason) unless the
   * replica is consistent.
   */
  async promote(reason: string): Promise<void> {
    if (this.#options.witness !== undefined) {
      // The witness (if any) grants the epoch a takeover runs at.
      const answer = await this.#askClaim((this.#attached?.channel.epoch ?? this.metrics.epoch) + 1);
      if (!answer.granted) throw new Error(`promote: ${this.#refusal(answer)}`);
    }
    return takeOver(this.#takeoverCore(), reason, { handover: false, detectedAt: this.#lossDetectedAt });
  }

  /** Leaves the session on purpose (no takeover follows). */
  async close(): Promise<void> {
    this.#claimRetry?.cancel();
    const attachment = this.#attached;
    if (attachment !== undefined) this.#detach(attachment);
    if (!this.#fsm.is("closed")) this.#fsm.go("closed", "secondary shutting down");
    await attachment?.channel.close("secondary shutting down");
  }

  // ------------------------------------------------------------ inbound

  #receive(attachment: PrimaryAttachment, event: ChannelEvent): void | Promise<void> {
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
        return; // the activity itself is what counts (see PrimaryAttachment)
      case "goodbye":
        // The primary lives on and lets out what it holds itself: nothing here is for a later promotion.
        this.#carried.reset();
        return this.#letGo(attachment, `the primary left deliberately (${message.reason}); not taking over`);
      case "verify-request": {
        // Taken now, as of the last applied sync; digested and answered whenever ready.
        const range =
          message.target === "ram"
            ? Promise.resolve(this.#replica.copyRam(message.offset, message.length))
            : this.#replica.readDisk(message.disk, message.offset, message.length);
        void range
          .then(async (bytes) => (bytes === undefined ? undefined : chunkDigests(bytes, message.chunkBytes)))
          .then((digests) => (digests === undefined ? undefined : attachment.send({ type: "verify-digests", id: message.id, digests })))
          .catch(() => undefined);
        return;
      }
      case "handover":
        // A primary hands over after its last sync's ack, which let out everything it held.
        this.#carried.reset();
        // The handler returns at once: the takeover itself ends this session.
        void takeOver(this.#takeoverCore(), `the primary handed over: ${message.reason}`, { handover: true, detectedAt: undefined }).catch((error: unknown) =>
          this.#options.log?.(`secondary: handover refused: ${(error as Error).message}`),
        );
        return;
      case "error":
        this.#carried.reset();
        return this.#letGo(attachment, `the primary reported ${message.code}: ${message.message}; not taking over`);
      default:
        return;
    }
  }

  #frame(attachment: PrimaryAttachment, frame: BinaryFrame): void | Promise<void> {
    attachment.count(frame);
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
        const applying = performance.now();
        const arrivedAt = attachment.channel.arrivedAt;
        if (arrivedAt !== undefined) this.metrics.stage("receive", applying - arrivedAt);
        const { io, replayed } = this.#replica.apply(sync);
        this.#carried.add(sync.output);
        const applied = performance.now();
        this.metrics.stage("apply", applied - applying);
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
        // Acknowledged once checked and held (its pages in the replica's RAM, its disk operations
        // queued, replayed before any takeover runs the guest): the reads of the log and the disk
        // writes need not have finished. A disk backlog over its bound holds the ack, and so the
        // primary. The next sync waits for this one's reads (its pages must not land before them).
        const acked = this.#replica
          .belowBacklog()
          .then(() => attachment.send({ type: "sync-ack", seq: sync.seq, epoch: attachment.channel.epoch }))
          .then(() => this.metrics.stage("ack", performance.now() - applied));
        return Promise.all([acked, replayed]).then(
          () => undefined,
          () => undefined,
        );
      }
    }
  }

  #initBegin(attachment: PrimaryAttachment, message: InitBeginMessage): void {
    this.#fsm.go("initial-sync", `initial sync from the primary (epoch ${message.epoch}, ${message.diskMode})`);
    this.metrics.epoch = message.epoch;
    attachment.diskMode = message.diskMode;
    this.#carried.reset();
    const refusal = this.#replica.beginInitial(message.memoryBytes, message.disks);
    if (refusal !== undefined) this.#refuse(attachment, "mismatch", refusal);
  }

  async #initEnd(attachment: PrimaryAttachment, pageCount: number, stateParts: number, epoch: number): Promise<void> {
    const problem = await this.#replica.finishInitial();
    if (attachment.ended) return;
    if (problem !== undefined) {
      this.#fsm.go("failed", `initial sync refused: ${problem}`);
      return this.#refuse(attachment, "disk-mismatch", problem);
    }
    this.#fsm.go("replicating", `initial sync complete (${pageCount} pages, ${stateParts} state parts)`);
    attachment.setPeerTimeout(this.#options.peerTimeoutMs);
    this.#emitSync(attachment, 0, Uint32Array.from(attachment.receiving.initialPages), []);
    await attachment.send({ type: "init-ack", seq: 0, epoch });
  }

  #emitSync(attachment: PrimaryAttachment, seq: number, pages: Uint32Array, io: readonly LoggedIo[]): void {
    const { bytes } = attachment.takeReceived();
    if (this.#syncListeners.size === 0) return;
    const released = { frames: 0, frameBytes: 0, consoleBytes: 0 };
    const event: SyncEvent = { role: "secondary", seq, pages, bytes, io, pauseMs: 0, roundTripMs: 0, released };
    for (const listener of this.#syncListeners) listener(event);
  }

  // ------------------------------------------------------------ losing the primary

  #closed(attachment: PrimaryAttachment, info: ChannelCloseInfo): void {
    if (info.error !== undefined) {
      // We refused its input: a healthy primary may be running on. Not a reason to take over,
      // and what it holds it lets out itself.
      this.#carried.reset();
      return this.#letGo(attachment, `refused the primary's input (${info.error.message}); NOT taking over: promote by hand if the primary is really gone`);
    }
    this.#lost(attachment, `replication link closed (${info.reason})`);
  }

  /** The primary is gone without a word: take over (if allowed and consistent), else hold. */
  #lost(attachment: PrimaryAttachment, reason: string): void {
    if (attachment.ended) return;
    if (this.#fsm.is("replicating") && this.#options.autoFailover) {
      this.#lossDetectedAt = performance.now();
      if (this.#options.witness !== undefined) return void this.#claimThenTakeOver(attachment, reason);
      void this.promote(`primary lost: ${reason}`).catch((error: unknown) => this.#options.log?.(`secondary: takeover failed: ${(error as Error).message}`));
      return;
    }
    this.#letGo(attachment, reason);
  }

  /**
   * Under an arbiter: take over only if the witness grants the next epoch. Refused while the
   * primary's hold lasts (it said it is alive and protected), this node holds its replica
   * (standby) and asks again when the hold ends: by then a primary that is alive has taken its
   * lease and the answer is final, a frozen one has not. Refused for good (the primary holds its
   * lease: it is alive and keeps the guest), it waits for the primary to come back; the witness
   * unreachable, it keeps asking while no primary attaches.
   */
  async #claimThenTakeOver(attachment: PrimaryAttachment, reason: string): Promise<void> {
    const epoch = attachment.channel.epoch + 1;
    const answer = await this.#askClaim(epoch);
    if (answer.granted) return this.#takeOverGranted(reason, epoch);
    this.#letGo(attachment, `${reason}; NOT taking over: ${this.#refusal(answer)}`);
    this.#afterRefusal(answer, reason, epoch);
  }

  async #askClaim(epoch: number): Promise<ClaimAnswer> {
    try {
      return await this.#options.witness!.claim(this.#options.nodeName, epoch);
    } catch (error) {
      return { granted: false, unreachable: (error as Error).message };
    }
  }

  #refusal(answer: ClaimRefusal): string {
    return "unreachable" in answer ? `the witness cannot be reached (${answer.unreachable})` : `the witness refused: ${answer.reason}`;
  }

  #afterRefusal(answer: ClaimRefusal, reason: string, epoch: number): void {
    if ("unreachable" in answer) return this.#retryClaim(reason, epoch, CLAIM_RETRY_MS);
    // Asked again before the hold ends too: a crashed primary's hold ends when its connection to the witness closes.
    if (answer.retryInMs !== undefined) return this.#retryClaim(reason, epoch, Math.min(answer.retryInMs + 1, HOLD_RECHECK_MS));
    // Refused for good: the primary runs on and lets out what it holds.
    this.#carried.reset();
  }

  #retryClaim(reason: string, epoch: number, afterMs: number): void {
    this.#claimRetry?.cancel();
    this.#claimRetry = this.#options.clock.setTimeout(() => {
      if (!this.#fsm.is("standby") || this.#attached !== undefined) return;
      void this.#askClaim(epoch).then((answer) => {
        if (!this.#fsm.is("standby") || this.#attached !== undefined) return;
        if (answer.granted) return this.#takeOverGranted(reason, epoch);
        // The refusals while the hold lasts are one decision: say only how it ends.
        if ("unreachable" in answer || answer.retryInMs === undefined) this.#options.log?.(`secondary: ${this.#refusal(answer)}; holding the replica`);
        this.#afterRefusal(answer, reason, epoch);
      });
    }, afterMs);
  }

  #takeOverGranted(reason: string, epoch: number): Promise<void> {
    return takeOver(this.#takeoverCore(), `primary lost: ${reason} (the witness granted epoch ${epoch})`, {
      handover: false,
      detectedAt: this.#lossDetectedAt,
    }).catch((error: unknown) => this.#options.log?.(`secondary: takeover failed: ${(error as Error).message}`));
  }

  /** Ends the session without taking over: a consistent replica waits (standby), a partial copy is dropped. */
  #letGo(attachment: PrimaryAttachment, reason: string): void {
    if (attachment.ended) return;
    this.#detach(attachment);
    void attachment.channel.close(reason.slice(0, 200)).catch(() => undefined);
    if (this.#fsm.is("initial-sync")) this.#fsm.go("waiting", `initial sync abandoned: ${reason}`);
    else if (this.#fsm.is("replicating")) this.#fsm.go("standby", `${reason}; holding the replica (promote to take over)`);
    else this.#options.log?.(`secondary: ${reason}`);
  }

  #refuse(attachment: PrimaryAttachment, code: string, message: string): void {
    this.#options.log?.(`secondary: refusing the session: ${message}`);
    this.#carried.reset();
    void attachment.send({ type: "error", code, message: message.slice(0, 500) }).catch(() => undefined);
    this.#letGo(attachment, message);
  }

  #replicaFailed(reason: string): void {
    if (this.#fsm.is("initial-sync", "replicating", "standby", "promoting")) {
      this.#fsm.go("failed", `the replica is not consistent any more: ${reason}`);
    }
    const attachment = this.#attached;
    if (attachment !== undefined) this.#refuse(attachment, "replica-failed", `the secondary cannot keep a replica: ${reason}`);
  }

  #detach(attachment: PrimaryAttachment): void {
    attachment.end();
    if (this.#attached === attachment) this.#attached = undefined;
  }

  #takeoverCore(): TakeoverCore {
    return {
      fsm: this.#fsm,
      replica: this.#replica,
      metrics: this.metrics,
      clock: this.#options.clock,
      attached: this.#attached,
      detach: (attachment) => this.#detach(attachment),
    };
  }
}
