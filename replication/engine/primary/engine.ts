// The primary's sync engine (Kemari, event-driven): the guest runs; when it submits disk
// writes or prints, the engine captures, at the guest's next instruction boundary and without
// stopping it, the pages changed since the last capture and the device-state parts that
// changed, takes the requests to log, and sends them as sync N: page deltas, state changes
// and an I/O log (logging-replay) or the written blocks (dirty-block-copy). What the guest and
// the outside world would see (a write's completion, console bytes) is held in the
// output-commit queue and released when the secondary acknowledges sync N; up to `syncWindow`
// syncs may be in flight. In the speculative mode a write completes at once and waits,
// unlogged, for the next capture: one that output asks for, or the one at the end of the sync
// interval. A flush completes at once (it covers only completed writes, which the secondary
// holds or the same sync logs before it) and rides in the next sync's log so the secondary
// makes its copy durable too.
//
// This file is the engine's state machine and its wiring: guest events go through the I/O
// policy table (io-policy.ts) into the pending I/O (pending-io.ts) and the output-commit
// queue (output-commit.ts); the capture scheduler (capture-scheduler.ts) runs captures
// (capture.ts); the staged operations are protect.ts, handover.ts and migrate.ts.
import type { BlockHook, BlockIoEvent } from "../../../emulator/block/hook.ts";
import { withoutUndefined } from "../../../emulator/config.ts";
import { Machine } from "../../../emulator/machine.ts";
import type { ReplicationChannel } from "../../channel/channel.ts";
import { systemClock, type Clock } from "../../clock.ts";
import { verify as verifyReplica, type VerifyOptions, type VerifyReport } from "../consistency-check.ts";
import type { PrimaryGuest } from "../guest.ts";
import { primaryGuestOf } from "../machine-guest.ts";
import { ReplicationMetrics } from "../metrics.ts";
import type { SyncEvent } from "../sync-event.ts";
import { StateMachine } from "../transitions.ts";
import { heartbeatFor, holdFor, SETUP_PEER_TIMEOUT_MS } from "../liveness.ts";
import { captureSync } from "./capture.ts";
import { CaptureScheduler, type CaptureWant } from "./capture-scheduler.ts";
import { CheckSupport } from "./check-support.ts";
import type { PrimaryCore, ResolvedPrimaryOptions } from "./core.ts";
import { handOver } from "./handover.ts";
import { ioPolicy, type IoPolicy } from "./io-policy.ts";
import { migrate, type MigrationReport } from "./migrate.ts";
import { OutputCommitQueue, type HeldOutput } from "./output-commit.ts";
import { PendingIo } from "./pending-io.ts";
import { protect } from "./protect.ts";
import { PrimarySession, type InFlightSync } from "./session.ts";
import {
  DEFAULT_OUTPUT_COALESCE_MS,
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_SYNC_MODE,
  PRIMARY_TRANSITIONS,
  type PrimaryState,
  type SecondaryLossPolicy,
  type SyncMode,
} from "./states.ts";
import type { DiskMode } from "./sync-encoder.ts";
import { SyncWaiters } from "./sync-waiters.ts";
import { Lease } from "./lease.ts";
import type { Witness } from "../../arbiter/witness.ts";

export type { DiskMode } from "./sync-encoder.ts";
export {
  DEFAULT_OUTPUT_COALESCE_MS,
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_SYNC_MODE,
  type PrimaryState,
  type SecondaryLossPolicy,
  type SyncMode,
} from "./states.ts";
export type { MigrationReport } from "./migrate.ts";
export type { SyncEvent } from "../sync-event.ts";

export interface PrimaryOptions {
  mode: DiskMode;
  /** The hook the machine's disks were built with (needed when a Machine is given). */
  hook?: BlockHook;
  epoch?: number;
  /** Default: a sixth of peerTimeoutMs, at most 250 ms. */
  heartbeatIntervalMs?: number;
  /** Silence from the secondary this long, once it protects the guest, means it is gone (during the initial copy: at least SETUP_PEER_TIMEOUT_MS). */
  peerTimeoutMs?: number;
  /**
   * A sync unacknowledged this long, once nothing of this side's waits for the link, means the
   * secondary is stuck even if it answers heartbeats (default: peerTimeoutMs, at least
   * MIN_DEFAULT_ACK_TIMEOUT_MS).
   */
  ackTimeoutMs?: number;
  onSecondaryLoss?: SecondaryLossPolicy;
  /** When the guest sees a write complete: at its sync's capture (speculative) or its acknowledgement (synchronous). */
  syncMode?: SyncMode;
  /** The secondary writes and hashes whole disks before its init-ack: allow for that. */
  initialSyncTimeoutMs?: number;
  /** Syncs in flight at once (a guest with several requests outstanding overlaps their round trips). */
  syncWindow?: number;
  /**
   * Speculative mode: how long a completed write may wait for the capture that logs it when
   * nothing the outside sees asks for one sooner (Remus's epoch; output is captured sooner, see outputCoalesceMs).
   * Longer intervals log more writes per capture; a takeover resumes up to this much earlier.
   */
  syncIntervalMs?: number;
  /**
   * How long the guest's output (console bytes, frames) may wait for the rest of its burst
   * before a capture covers it, while the guest runs on; a guest that goes idle is captured at
   * once. 0: every piece of output is captured at once.
   */
  outputCoalesceMs?: number;
  /** Deflate sync frames (pays only on slow links; see benchmarks/results/talk.md). */
  compressSyncs?: boolean;
  /** Read-replay: pages a disk read filled travel as a log entry the secondary replays from its own disk (default on). */
  readReplay?: boolean;
  /** Timers and timeouts (tests pass a manual clock). */
  clock?: Clock;
  /**
   * An arbiter's witness: without a secondary, this primary lets its guest's writes complete
   * and output out only while the witness confirms it still holds its epoch (see arbiter/witness.ts).
   */
  witness?: Witness;
  /** This node's name at the witness (default "primary"). */
  nodeName?: string;
  log?: (line: string) => void;
}

/**
 * A short peer timeout finds a silent peer fast, but a sync's acknowledgement may take longer
 * with nothing wrong: the last megabytes of a burst sit in the kernel's send buffer, out of the
 * channel's count of what waits for the link, for a third of a second at 100 Mbit/s.
 */
export const MIN_DEFAULT_ACK_TIMEOUT_MS = 5000;

const DEFAULTS = {
  epoch: 1,
  peerTimeoutMs: 5000,
  onSecondaryLoss: "continue" as SecondaryLossPolicy,
  syncMode: DEFAULT_SYNC_MODE,
  initialSyncTimeoutMs: 300_000,
  syncWindow: 4,
  syncIntervalMs: DEFAULT_SYNC_INTERVAL_MS,
  outputCoalesceMs: DEFAULT_OUTPUT_COALESCE_MS,
  compressSyncs: false,
  readReplay: true,
};

/**
 * Speculative writes that may wait unlogged at once: beyond either bound a write completes at
 * the capture that logs it (the guest runs ahead by a bounded amount, and a sync stays within
 * the wire's limits).
 */
export const MAX_DEFERRED_WRITES = 512;
export const MAX_DEFERRED_WRITE_BYTES = 16 << 20;

export class PrimaryEngine {
  readonly metrics = new ReplicationMetrics("primary");
  /** What waits for the secondary's acknowledgement; listen to released console bytes with `outputs.onRelease("console", ...)`. */
  readonly outputs = new OutputCommitQueue({ released: (kind, heldAt) => this.metrics.outputHold[kind].add(performance.now() - heldAt) });
  readonly #guest: PrimaryGuest;
  readonly #options: ResolvedPrimaryOptions;
  readonly #fsm = new StateMachine<PrimaryState>("primary", PRIMARY_TRANSITIONS, "idle");
  readonly #pending = new PendingIo();
  readonly #waiters = new SyncWaiters();
  readonly #checks: CheckSupport;
  readonly #scheduler: CaptureScheduler;
  readonly #core: PrimaryCore;
  #session: PrimarySession | undefined;
  /** When the last ack released what it covered, until the guest's next disk request (the timeline's last stage). */
  #ackedAt: number | undefined;
  /** The witness's lease, when an arbiter is configured: held while no secondary protects the guest. */
  readonly #lease: Lease | undefined;
  /** A new secondary's copy runs and has not taken its last boundary (the guest's output may go out). */
  #copying = false;
  /** A handover started by a failed disk: later failures wait for the same outcome. */
  #diskFailover: Promise<boolean> | undefined;
  readonly #unsubscribe: (() => void)[] = [];
  readonly #syncListeners = new Set<(event: SyncEvent) => void>();
  readonly #ingressListeners = new Set<(id: number) => void>();

  /** `target`: a booted Machine (give `options.hook`) or any PrimaryGuest. */
  constructor(target: Machine | PrimaryGuest, options: PrimaryOptions) {
    const { hook: _, ...rest } = withoutUndefined(options);
    const peerTimeoutMs = options.peerTimeoutMs ?? DEFAULTS.peerTimeoutMs;
    this.#options = {
      ...DEFAULTS,
      heartbeatIntervalMs: heartbeatFor(peerTimeoutMs),
      ackTimeoutMs: Math.max(peerTimeoutMs, MIN_DEFAULT_ACK_TIMEOUT_MS),
      clock: systemClock,
      log: undefined,
      witness: undefined,
      nodeName: "primary",
      ...rest,
      mode: options.mode,
    };
    this.#lease =
      this.#options.witness === undefined
        ? undefined
        : new Lease({
            witness: this.#options.witness,
            node: this.#options.nodeName,
            clock: this.#options.clock,
            onChange: (valid) => this.#leaseChanged(valid),
            onSuperseded: (reason) => this.fence(`the witness says another node runs the guest: ${reason}`),
            ...(this.#options.log && { log: this.#options.log }),
          });
    if (target instanceof Machine) {
      if (options.hook === undefined) throw new Error("PrimaryEngine: give the BlockHook the machine's disks were built with");
      this.#guest = primaryGuestOf(target, options.hook);
    } else {
      this.#guest = target;
    }
    this.#core = this.#makeCore();
    this.#checks = new CheckSupport({
      guest: this.#guest,
      pending: this.#pending,
      unprotectedReason: () => (this.#fsm.is("protected") ? undefined : this.state),
      session: () => this.#session,
      wake: () => this.#scheduler.wake(),
    });
    this.#scheduler = new CaptureScheduler(
      {
        wanted: () => this.#captureWanted(),
        allowed: () => this.#session !== undefined && this.#policy().capture && this.#session.inFlightCount < this.#options.syncWindow,
        capture: () => this.#capture(),
        failed: (error) => this.#options.log?.(`primary: capture scheduling failed: ${error.message}`),
      },
      { clock: this.#options.clock, syncIntervalMs: this.#options.syncIntervalMs, coalesceMs: this.#options.outputCoalesceMs },
    );
    this.metrics.epoch = this.#options.epoch;
    this.metrics.state = this.#fsm.state;
    this.metrics.outputCounts = () => ({
      console: this.outputs.counters("console"),
      frame: this.outputs.counters("frame"),
      completion: this.outputs.counters("completion"),
    });
    this.#fsm.onChange((state, reason) => {
      this.metrics.state = state;
      this.#options.log?.(`primary: ${reason}`);
    });
    this.#unsubscribe.push(
      this.#guest.onOutput((bytes) => this.#guestOutput({ kind: "console", bytes })),
      this.#guest.onFrame((bytes) => this.#guestOutput({ kind: "frame", bytes })),
      this.#guest.onBlockRequest((event) => this.#blockRequest(event)),
      this.#guest.onBlockCompleted((event, outcome) => this.#blockCompleted(event, outcome.ok ? outcome.readData : undefined)),
      this.#guest.onBackendFailure((_event, error) => this.#diskFailed(error)),
      this.#guest.onIdle(() => this.#scheduler.guestIdle()),
    );
  }

  get state(): PrimaryState {
    return this.#fsm.state;
  }

  get epoch(): number {
    return this.#options.epoch;
  }

  get mode(): DiskMode {
    return this.#options.mode;
  }

  get syncMode(): SyncMode {
    return this.#options.syncMode;
  }

  /** Requests whose completion the guest waits for (held until a sync covering them is acknowledged). */
  get heldRequests(): number {
    return this.outputs.heldCompletions;
  }

  onStateChange(listener: (state: PrimaryState, reason: string) => void): () => void {
    return this.#fsm.onChange((state, reason) => listener(state, reason));
  }

  /**
   * Called with an ingress id when every frame up to it is in the secondary's copy (an
   * acknowledged sync covers it), or no secondary protects the guest: a network gateway may
   * forget those frames (it gives a new primary only what its replica has not seen).
   */
  onIngressCommitted(listener: (id: number) => void): () => void {
    this.#ingressListeners.add(listener);
    return () => this.#ingressListeners.delete(listener);
  }

  /** The node handed the guest's NIC ingress frame `id`: committed at once unless output is held (then with the sync that covers it). */
  ingressDelivered(id: number): void {
    if (this.#policy().output !== "hold") this.#ingressCommitted(id);
  }

  /** Called after each acknowledged sync. */
  onSync(listener: (event: SyncEvent) => void): () => void {
    this.#syncListeners.add(listener);
    return () => this.#syncListeners.delete(listener);
  }

  /**
   * Initial sync with a (new) secondary, from `idle` or after a loss; then event-driven
   * syncs. Resolves when protected, or when the attempt failed (see `state`): a link that
   * fails is a loss, handled by the loss policy, never a rejection.
   */
  async protect(channel: ReplicationChannel): Promise<void> {
    if (!this.#fsm.is("idle", "unprotected")) throw new Error(`protect: engine is ${this.state}`);
    await protect(this.#core, channel);
  }

  /**
   * Captures now, even with nothing pending, and resolves once that sync is acknowledged: the
   * secondary then holds the guest as it is at this moment. Rejects when the guest is not protected.
   */
  syncNow(): Promise<void> {
    if (!this.#fsm.is("protected")) return Promise.reject(new Error(`syncNow: the guest is not protected (${this.state})`));
    return this.#syncNow();
  }

  /**
   * Hands the guest over to the secondary (handover.ts): on success this primary is fenced; on
   * failure the guest runs on here, unprotected, and this rejects.
   */
  handOver(reason: string): Promise<{ pausedAtMs: number; resumedAtMs: number | undefined }> {
    return handOver(this.#core, reason);
  }

  /** Compares the replica with this primary by ranges, without stopping the guest; with `repair`, sends what differs again. */
  verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    if (!this.#fsm.is("protected")) return Promise.reject(new Error(`verify: the guest is not protected (${this.state})`));
    return verifyReplica(this.#checks.host(), options);
  }

  /** Live migration to `target` (migrate.ts). */
  migrate(target: ReplicationChannel, options: { stopAndCopy?: boolean } = {}): Promise<MigrationReport> {
    return migrate(this.#core, target, options);
  }

  /** The peer took over (it said so, authenticated, or a handshake proved it): never acknowledge another guest write. */
  fence(reason: string): void {
    if (this.#fsm.is("fenced", "closed")) return;
    this.#lease?.stop();
    this.#fsm.go("fenced", `${reason}; this primary stops its guest for good`);
    this.#endSession(reason);
    this.#waiters.rejectAll(new Error(`fenced: ${reason}`));
    // The guest is stopped for good: what it waits for is never completed, and what it said goes nowhere.
    this.#guest.halt();
    this.outputs.discardOutput();
  }

  /** Stops replicating (the guest keeps running unprotected) and closes the channel. */
  async close(reason = "primary shutting down"): Promise<void> {
    if (this.#fsm.is("closed")) return;
    const fenced = this.#fsm.is("fenced");
    this.#fsm.go("closed", reason);
    this.#lease?.stop();
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    this.#endSession(reason);
    this.#waiters.rejectAll(new Error(`closed: ${reason}`));
    if (!fenced) {
      this.outputs.releaseAll();
      this.#ingressCommitted(this.#guest.ingressWatermark());
    }
    this.#pending.clear();
    this.#guest.dispose();
  }

  // ------------------------------------------------------------ guest events

  #policy(): IoPolicy {
    return ioPolicy(this.#fsm.state, this.#options.onSecondaryLoss, this.#options.syncMode, {
      ...(this.#lease?.running === true && { lease: this.#lease.valid }),
      copying: this.#copying,
    });
  }

  #blockRequest(event: BlockIoEvent): void | Promise<void> {
    if (this.#ackedAt !== undefined) {
      this.metrics.stage("next-request", performance.now() - this.#ackedAt);
      this.#ackedAt = undefined;
    }
    const order = this.#pending.submitted(event);
    const policy = this.#policy();
    switch (event.type) {
      case "read":
        if (policy.read === "track" && this.#options.readReplay) this.#pending.readStarted(event);
        return;
      case "flush":
        if (policy.flush === "pass") return;
        this.#pending.add({ event, submittedAt: performance.now(), order });
        return this.#scheduler.wake();
      case "write": {
        this.#checks.noteWrite(event);
        if (policy.write === "pass") return;
        if (policy.write === "speculate" && this.#mayDefer(event)) {
          // Complete now; the capture at the interval's end logs it (its data as submitted rides along if the guest changes the buffer before then).
          this.#pending.add({ event, submittedAt: performance.now(), order });
          return this.#scheduler.wake();
        }
        return new Promise<void>((release) => {
          const submittedAt = performance.now();
          const completion: HeldOutput = { kind: "completion", release, atCapture: policy.write === "speculate" };
          this.outputs.hold(completion, submittedAt);
          this.#pending.add({ event, submittedAt, order, completion });
          this.#scheduler.wake();
        });
      }
    }
  }

  /** A read's data landed in guest memory: a candidate for read-replay at the next capture. */
  #blockCompleted(event: BlockIoEvent, readData: Uint8Array | undefined): void {
    if (event.type === "read") this.#pending.readCompleted(event, this.#policy().read === "track" ? readData : undefined);
  }

  #guestOutput(output: HeldOutput & { kind: "console" | "frame" }): void {
    const policy = this.#policy().output;
    if (policy === "drop") return;
    // Behind output still held (covered by a copy not yet acknowledged) it waits its turn: the outside sees it in order.
    if (policy === "pass" && this.outputs.heldBytes === 0) return this.outputs.pass(output);
    this.outputs.hold(output, performance.now());
    this.#scheduler.wake();
  }

  /** Takes over a request the guest's disk failed when a secondary can run it instead. */
  #diskFailed(error: Error): Promise<boolean> | undefined {
    if (this.#diskFailover !== undefined) return this.#diskFailover;
    if (!this.#fsm.is("protected")) return undefined; // nobody to hand over to: the guest gets the error
    this.#options.log?.(`primary: the guest's disk failed (${error.message}); handing the guest over to the secondary`);
    this.#diskFailover = this.handOver(`the primary's disk failed: ${error.message}`).then(
      () => true,
      () => {
        this.#diskFailover = undefined;
        return false;
      },
    );
    return this.#diskFailover;
  }

  // ------------------------------------------------------------ syncs

  #syncNow(): Promise<void> {
    const acknowledged = this.#waiters.add(performance.now());
    this.#scheduler.wake();
    return acknowledged;
  }

  #mayDefer(event: BlockIoEvent): boolean {
    return this.#pending.count < MAX_DEFERRED_WRITES && this.#pending.dataBytes + (event.data?.length ?? 0) <= MAX_DEFERRED_WRITE_BYTES;
  }

  /** What the scheduler is asked for: a capture at once for work someone waits on, soon for output, at the interval's end for speculative writes. */
  #captureWanted(): CaptureWant {
    if (this.#pending.holdsCompletion || this.#waiters.wantCapture || this.#checks.wantsCapture) return "now";
    if (this.outputs.hasUncoveredOutput) return "soon";
    if (this.#pending.count === 0) return undefined;
    return this.#options.syncMode === "speculative" ? "later" : "now";
  }

  /** Since when the oldest work waits for a capture (for the capture-delay metric). */
  #workSince(): number | undefined {
    const times = [this.#pending.oldestSubmittedAt, this.outputs.oldestUncoveredAt, this.#waiters.waitingSince, this.#checks.waitingSince].filter(
      (time): time is number => time !== undefined,
    );
    return times.length === 0 ? undefined : Math.min(...times);
  }

  async #capture(): Promise<void> {
    const session = this.#session!;
    const workSince = this.#workSince();
    const askedAt = performance.now();
    let sync: InFlightSync | undefined;
    let sent = false;
    try {
      // Sent where it is taken when it can be: the boundary is usually inside the guest's slice,
      // and anything awaited waits for the slice to end (a speculative capture's slice runs on).
      sync = await this.#guest.atNextBoundary(() => {
        const taken = captureSync(this.#core, session, this.#checks, this.#waiters, { workSince, askedAt });
        sent = taken !== undefined && this.#sendNow(session, taken);
        return taken;
      });
    } catch (error) {
      return this.#lose(session, `capture failed: ${(error as Error).message}`);
    }
    if (sync !== undefined && !sent) void this.#send(session, sync);
  }

  /** Sends a sync in this call if nothing is ahead of it and it needs no compression; false: send it with #send. */
  #sendNow(session: PrimarySession, sync: InFlightSync): boolean {
    if (this.#options.compressSyncs || sync.after.length > 0) return false;
    try {
      if (!session.sendFramesNow(sync.encoded!.frames, sync.bytes)) return false;
    } catch (error) {
      // Thrown inside the guest's slice: the loss waits for the slice's end.
      queueMicrotask(() => this.#lose(session, `sending sync ${sync.seq} failed: ${(error as Error).message}`));
      return true;
    }
    this.#sent(sync);
    return true;
  }

  #sent(sync: InFlightSync): void {
    sync.sentAt = performance.now();
    this.metrics.stage("send", sync.sentAt - sync.capturedAt);
  }

  async #send(session: PrimarySession, sync: InFlightSync): Promise<void> {
    try {
      await session.sendFrames(sync.encoded!.frames, sync.bytes, { compress: this.#options.compressSyncs }, sync.after);
      this.#sent(sync);
    } catch (error) {
      this.#lose(session, `sending sync ${sync.seq} failed: ${(error as Error).message}`);
    }
  }

  #acknowledged(session: PrimarySession, sync: InFlightSync): void {
    if (session.ended) return;
    const ackedAt = performance.now();
    const roundTripMs = ackedAt - sync.capturedAt;
    this.metrics.roundTrip.add(roundTripMs);
    if (sync.sentAt !== undefined) this.metrics.stage("wire", ackedAt - sync.sentAt);
    this.metrics.syncs++;
    this.metrics.pagesSynced += sync.encoded?.pages.length ?? 0;
    this.metrics.writesSynced += sync.requests.filter((r) => r.event.type === "write").length;
    const framesBefore = this.outputs.counters("frame");
    const consoleBefore = this.outputs.counters("console");
    this.outputs.acknowledged(sync.seq);
    this.#ingressCommitted(sync.ingressWatermark);
    this.#ackedAt = performance.now();
    this.metrics.stage("release", this.#ackedAt - ackedAt);
    if (!session.awaitingSyncAck || this.outputs.size === 0) this.#guest.eagerYield(false);
    this.#waiters.acknowledged(sync.seq);
    if (sync.encoded !== undefined && this.#syncListeners.size > 0) {
      const event: SyncEvent = {
        role: "primary",
        seq: sync.seq,
        pages: sync.encoded.pages,
        bytes: sync.bytes,
        io: sync.encoded.io,
        pauseMs: sync.pauseMs,
        roundTripMs,
        released: {
          frames: this.outputs.counters("frame").released - framesBefore.released,
          frameBytes: this.outputs.counters("frame").releasedBytes - framesBefore.releasedBytes,
          consoleBytes: this.outputs.counters("console").releasedBytes - consoleBefore.releasedBytes,
        },
      };
      for (const listener of this.#syncListeners) listener(event);
    }
    this.#scheduler.wake();
  }

  // ------------------------------------------------------------ sessions and loss

  #openSession(channel: ReplicationChannel): PrimarySession {
    const session: PrimarySession = new PrimarySession(channel, {
      epoch: this.epoch,
      heartbeatIntervalMs: this.#options.heartbeatIntervalMs,
      // The initial copy keeps both sides busy (disks hashed and written): a longer window until it is done.
      peerTimeoutMs: Math.max(this.#options.peerTimeoutMs, SETUP_PEER_TIMEOUT_MS),
      ackTimeoutMs: this.#options.ackTimeoutMs,
      metrics: this.metrics,
      clock: this.#options.clock,
      events: {
        acknowledged: (sync) => this.#acknowledged(session, sync),
        lost: (reason) => this.#lose(session, reason),
        tookOver: (epoch) => {
          if (!session.ended) this.fence(`the secondary took over at epoch ${epoch}`);
        },
      },
    });
    this.#session = session;
    // From the start: a secondary that hangs during a long initial copy is noticed too.
    session.startHeartbeat();
    return session;
  }

  /** Ends the current session (it says goodbye where the link still works); its waits settle. */
  #endSession(reason: string): void {
    const session = this.#session;
    this.#session = undefined;
    session?.end(reason);
    this.#guest.eagerYield(false);
  }

  /**
   * The secondary is gone, or let go: per policy the guest runs on unprotected, or its writes
   * and output wait. The session's end says goodbye where the link still works, so a secondary
   * that is only slow holds its replica instead of taking over.
   */
  #lose(session: PrimarySession, reason: string): void {
    if (this.#session !== session) return;
    const lastAcknowledged = session.lastAcknowledged;
    this.#endSession(reason);
    // Nothing the guest waits for is dropped: what unacknowledged syncs covered waits again, for
    // the next initial copy (which also covers what the pending requests would have logged).
    this.outputs.uncoverAfter(lastAcknowledged);
    this.#pending.clear();
    this.#waiters.rejectAll(new Error(`the secondary was lost before the sync was acknowledged: ${reason}`));
    if (this.#fsm.is("fenced", "closed")) return;
    const stall = this.#options.onSecondaryLoss === "stall";
    this.#fsm.go(
      "unprotected",
      `${reason}; ${stall ? "guest writes and output are HELD until a secondary protects the guest again" : "the guest now runs UNPROTECTED"}`,
    );
    // Under an arbiter the guest's I/O waits until the witness confirms this node still holds its epoch.
    if (this.#lease !== undefined) return this.#lease.start(this.epoch);
    if (!stall) this.#runUnprotected();
  }

  /** Nothing protects the guest now: what waited goes out, and nobody will replay what the guest has seen. */
  #runUnprotected(): void {
    this.#pending.clear();
    this.outputs.releaseAll();
    this.#ingressCommitted(this.#guest.ingressWatermark());
  }

  /**
   * A secondary protects the guest (again): no lease is needed. Under `continue` this node holds
   * at the witness, so a link cut leaves the guest running here; under `stall` its guest would
   * only wait here, so the secondary may take over at once.
   */
  #protectedAgain(): void {
    if (this.#options.onSecondaryLoss === "continue") this.#lease?.hold(this.epoch, holdFor(this.#options.peerTimeoutMs));
    else this.#lease?.stop();
  }

  #leaseChanged(valid: boolean): void {
    this.#options.log?.(
      `primary: ${valid ? "the witness confirms this node holds the guest" : "the witness lease ran out: the guest's writes and output wait"}`,
    );
    if (valid && this.#fsm.is("unprotected") && this.#options.onSecondaryLoss === "continue") this.#runUnprotected();
  }

  #ingressCommitted(id: number | null): void {
    if (id === null) return;
    for (const listener of this.#ingressListeners) listener(id);
  }

  #makeCore(): PrimaryCore {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the core's getters read the engine's current fields
    const engine = this;
    return {
      guest: this.#guest,
      options: this.#options,
      fsm: this.#fsm,
      metrics: this.metrics,
      outputs: this.outputs,
      pending: this.#pending,
      get session() {
        return engine.#session;
      },
      policy: () => this.#policy(),
      openSession: (channel) => this.#openSession(channel),
      lose: (session, reason) => this.#lose(session, reason),
      wake: () => this.#scheduler.wake(),
      syncNow: () => this.#syncNow(),
      fence: (reason) => this.fence(reason),
      ingressCommitted: (id) => this.#ingressCommitted(id),
      protectedAgain: () => this.#protectedAgain(),
      releaseHold: () => this.#lease?.release(),
      copying: (running) => {
        this.#copying = running;
      },
    };
  }
}
