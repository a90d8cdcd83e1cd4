// The primary's sync engine (Kemari, event-driven): the guest runs; when it submits disk
// writes or prints, the engine captures, at the guest's next instruction boundary and without
// stopping it, the pages changed since the last capture and the device-state parts that
// changed, takes the held requests, and sends them as sync N: page deltas, state changes
// and an I/O log (logging-replay) or the written blocks (dirty-block-copy). The writes'
// completions and the printed bytes are released when the secondary acknowledges sync N;
// up to SYNC_WINDOW syncs may be in flight. A flush completes at once (it covers only
// completed writes, which the secondary already holds) and rides in the next sync's log so
// the secondary makes its copy durable too.
import type { BlockHook, BlockIoEvent } from "../../emulator/block/hook.ts";
import { withoutUndefined } from "../../emulator/config.ts";
import { Machine } from "../../emulator/machine.ts";
import type { ReplicationChannel } from "../channel/channel.ts";
import { MAX_IO_LOG_ENTRIES, MAX_SYNC_DISK_BYTES } from "../protocol/limits.ts";
import type { PrimaryGuest } from "./guest.ts";
import { sendInitialSync } from "./initial-sync.ts";
import { primaryGuestOf } from "./machine-guest.ts";
import { ReplicationMetrics } from "./metrics.ts";
import { OutputCommit } from "./output-commit.ts";
import { PrimarySession, type InFlightSync } from "./primary-session.ts";
import { encodeSync, type DiskMode, type HeldRequest, type LoggedIo } from "./sync-encoder.ts";
import { StateMachine, type TransitionTable } from "./transitions.ts";

export type { DiskMode } from "./sync-encoder.ts";

export type PrimaryState = "idle" | "initial-sync" | "protected" | "unprotected" | "fenced" | "closed";

const PRIMARY_TRANSITIONS: TransitionTable<PrimaryState> = {
  idle: ["initial-sync", "fenced", "closed"],
  "initial-sync": ["protected", "unprotected", "fenced", "closed"],
  protected: ["unprotected", "fenced", "closed"],
  unprotected: ["initial-sync", "fenced", "closed"],
  fenced: ["closed"],
  closed: [],
};

/**
 * What the primary does when it loses its secondary (it cannot tell a dead secondary
 * from a cut link). `continue`: the guest runs on unprotected, writes complete and
 * output flows, and the engine says so. `stall`: guest writes and output are held
 * until a secondary is protecting the guest again (the guest waits on its disk).
 */
export type SecondaryLossPolicy = "continue" | "stall";

export interface PrimaryOptions {
  mode: DiskMode;
  /** The hook the machine's disks were built with (needed when a Machine is given). */
  hook?: BlockHook;
  epoch?: number;
  heartbeatIntervalMs?: number;
  /** A sync or heartbeat unanswered this long means the secondary is gone. */
  peerTimeoutMs?: number;
  onSecondaryLoss?: SecondaryLossPolicy;
  /** The secondary writes and hashes whole disks before its init-ack: allow for that. */
  initialSyncTimeoutMs?: number;
  /** Syncs in flight at once (a guest with several requests outstanding overlaps their round trips). */
  syncWindow?: number;
  /** Deflate sync frames (pays only on slow links; see benchmarks/results/talk.md). */
  compressSyncs?: boolean;
  log?: (line: string) => void;
}

/** What one acknowledged sync carried, for live views and `--json` events. */
export interface SyncEvent {
  role: "primary" | "secondary";
  seq: number;
  /** Guest page numbers the sync carried. */
  pages: Uint32Array;
  bytes: InFlightSync["bytes"];
  io: readonly LoggedIo[];
  pauseMs: number;
  roundTripMs: number;
}

const DEFAULTS = {
  epoch: 1,
  heartbeatIntervalMs: 250,
  peerTimeoutMs: 5000,
  onSecondaryLoss: "continue" as SecondaryLossPolicy,
  initialSyncTimeoutMs: 300_000,
  syncWindow: 4,
  compressSyncs: false,
};

export class PrimaryEngine {
  readonly metrics = new ReplicationMetrics("primary");
  /** Guest console output, released by output commit; attach terminals here. */
  readonly output = new OutputCommit();
  readonly #guest: PrimaryGuest;
  readonly #options: typeof DEFAULTS & PrimaryOptions;
  readonly #fsm = new StateMachine<PrimaryState>("primary", PRIMARY_TRANSITIONS, "idle");
  #session: PrimarySession | undefined;
  /** Requests waiting for a sync to log them, oldest first. */
  #held: HeldRequest[] = [];
  /** When the oldest work waiting for a capture arrived (performance.now()). */
  #workSince: number | undefined;
  #captureScheduled = false;
  readonly #unsubscribe: (() => void)[] = [];
  readonly #syncListeners = new Set<(event: SyncEvent) => void>();

  /** `target`: a booted Machine (give `options.hook`) or any PrimaryGuest. */
  constructor(target: Machine | PrimaryGuest, options: PrimaryOptions) {
    this.#options = { ...DEFAULTS, ...withoutUndefined(options), mode: options.mode };
    if (target instanceof Machine) {
      if (options.hook === undefined) throw new Error("PrimaryEngine: give the BlockHook the machine's disks were built with");
      this.#guest = primaryGuestOf(target, options.hook);
    } else {
      this.#guest = target;
    }
    this.metrics.epoch = this.#options.epoch;
    this.metrics.state = this.#fsm.state;
    this.#fsm.onChange((state, reason) => {
      this.metrics.state = state;
      this.#options.log?.(`primary: ${reason}`);
    });
    this.#unsubscribe.push(
      this.#guest.onOutput((bytes) => this.#guestOutput(bytes)),
      this.#guest.onBlockRequest((event) => this.#blockRequest(event)),
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

  /** Requests the guest is waiting on (held for a sync, or in a sync not yet acknowledged). */
  get heldRequests(): number {
    return this.#held.length + (this.#session?.inFlightCount ?? 0);
  }

  onStateChange(listener: (state: PrimaryState, reason: string) => void): () => void {
    return this.#fsm.onChange((state, reason) => listener(state, reason));
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
    this.#fsm.go("initial-sync", "initial sync started");
    const started = performance.now();
    const bytesBefore = this.metrics.totalBytes;
    const session = this.#newSession(channel);
    const acked = new Promise<HeldRequest[] | undefined>((resolve) => {
      this.#initAck = (covered) => resolve(covered);
      this.#initLost = () => resolve(undefined);
    });
    try {
      await sendInitialSync({
        guest: this.#guest,
        session,
        epoch: this.epoch,
        mode: this.#options.mode,
        digestWaitMs: this.#options.peerTimeoutMs,
        takeCovered: () => {
          this.output.coverAllByInitialCopy();
          this.#workSince = undefined;
          return this.#held.splice(0);
        },
        onCaptured: (requests, capturedAt) => session.track({ seq: 0, requests, capturedAt, encoded: undefined, bytes: emptyBytes(), pauseMs: 0 }),
      });
    } catch (error) {
      this.#lose(session, `initial sync failed: ${(error as Error).message}`);
    }
    const timer = setTimeout(() => this.#lose(session, `no init-ack within ${this.#options.initialSyncTimeoutMs} ms`), this.#options.initialSyncTimeoutMs);
    const covered = await acked;
    clearTimeout(timer);
    this.#initAck = this.#initLost = undefined;
    if (covered === undefined || this.#session !== session) return;
    this.metrics.initialSync = { ms: performance.now() - started, bytes: this.metrics.totalBytes - bytesBefore };
    this.#fsm.go("protected", `initial sync done in ${(this.metrics.initialSync.ms / 1000).toFixed(1)} s`);
    for (const request of covered) request.release();
    this.output.acknowledged(0);
    this.#wake();
  }

  /** Settle the pending `protect()`: init-ack arrived (with the requests the copy covered), or the session is gone. */
  #initAck: ((covered: HeldRequest[]) => void) | undefined;
  #initLost: (() => void) | undefined;

  /** The peer took over (it said so, authenticated, or a handshake proved it): never acknowledge another guest write. */
  fence(reason: string): void {
    if (this.#fsm.is("fenced", "closed")) return;
    this.#fsm.go("fenced", `${reason}; this primary stops its guest for good`);
    const session = this.#session;
    this.#session = undefined;
    // The guest is stopped for good: what it waits for is never completed.
    this.#held.unshift(...(session?.end(reason) ?? []).flatMap((sync) => sync.requests));
    this.#initLost?.();
    this.#guest.halt();
    this.output.discardAll();
  }

  /** Stops replicating (the guest keeps running unprotected) and closes the channel. */
  async close(reason = "primary shutting down"): Promise<void> {
    if (this.#fsm.is("closed")) return;
    const fenced = this.#fsm.is("fenced");
    this.#fsm.go("closed", reason);
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    const session = this.#session;
    this.#session = undefined;
    const unacked = session?.end(reason) ?? [];
    this.#initLost?.();
    if (!fenced) {
      for (const sync of unacked) for (const request of sync.requests) request.release();
      this.#releaseHeld();
      this.output.releaseAll();
    }
    this.#guest.dispose();
  }

  // ------------------------------------------------------------ guest events

  /** Whether guest writes and output must wait for a secondary now. */
  get #holding(): boolean {
    return this.#fsm.is("protected", "initial-sync", "fenced") || (this.#fsm.is("unprotected") && this.#options.onSecondaryLoss === "stall");
  }

  #blockRequest(event: BlockIoEvent): void | Promise<void> {
    if (event.type === "read" || !this.#holding) return;
    if (event.type === "flush") {
      // Not held: log it so the secondary flushes too, once the guest is protected.
      if (this.#fsm.is("protected")) this.#queue({ event, release: () => undefined, submittedAt: performance.now() });
      return;
    }
    return new Promise<void>((release) => this.#queue({ event, release, submittedAt: performance.now() }));
  }

  #guestOutput(bytes: Uint8Array): void {
    if (this.#fsm.is("fenced")) return; // a fenced primary's guest is no longer the real one
    if (!this.#holding) {
      this.output.hold(bytes);
      this.output.releaseAll();
      return;
    }
    this.output.hold(bytes);
    this.#workSince ??= performance.now();
    this.#wake();
  }

  #queue(request: HeldRequest): void {
    this.#held.push(request);
    this.#workSince ??= request.submittedAt;
    this.#wake();
  }

  // ------------------------------------------------------------ event-driven sync

  /** Asks for a capture when there is work and room in the window. */
  #wake(): void {
    const session = this.#session;
    if (this.#captureScheduled || session === undefined || !this.#fsm.is("protected")) return;
    if (this.#held.length === 0 && !this.output.hasUncovered) return;
    if (session.inFlightCount >= this.#options.syncWindow) return;
    this.#captureScheduled = true;
    void this.#guest.atNextBoundary(() => this.#capture(session)).then(
      (sync) => {
        this.#captureScheduled = false;
        if (sync !== undefined) void this.#send(session, sync);
        this.#wake();
      },
      (error: unknown) => {
        this.#captureScheduled = false;
        this.#lose(session, `capture failed: ${(error as Error).message}`);
      },
    );
  }

  /** At an instruction boundary: everything of one sync. */
  #capture(session: PrimarySession): InFlightSync | undefined {
    if (this.#session !== session || session.ended || !this.#fsm.is("protected")) return undefined;
    const started = performance.now();
    if (this.#workSince !== undefined) this.metrics.captureDelay.add(started - this.#workSince);
    const seq = session.takeSeq();
    const changes = this.#guest.captureChanges();
    const requests = this.#takeBatch();
    this.output.cover(seq);
    this.#workSince = this.#held.length > 0 ? this.#held[0]!.submittedAt : undefined;
    const encoded = encodeSync({
      seq,
      epoch: this.epoch,
      mode: this.#options.mode,
      pages: changes.pages,
      state: changes.state,
      requests,
      ram: this.#guest.ram(),
      diskNumber: (name) => this.#diskNumber(name),
    });
    const capturedAt = performance.now();
    const sync: InFlightSync = { seq, requests, capturedAt, encoded, bytes: emptyBytes(), pauseMs: capturedAt - started };
    this.metrics.pause.add(sync.pauseMs);
    this.metrics.memoryPagesRawBytes += changes.pages.indices.length * 4096;
    this.metrics.inlineWrites += encoded.inlineWrites;
    session.track(sync);
    return sync;
  }

  /** The held requests one sync takes: all of them, unless their data would make it too large. */
  #takeBatch(): HeldRequest[] {
    let bytes = 0;
    let count = 0;
    for (const { event } of this.#held) {
      const carried = this.#options.mode === "dirty-block-copy" ? (event.data?.length ?? 0) : 0;
      if (count > 0 && (count >= MAX_IO_LOG_ENTRIES || bytes + carried > MAX_SYNC_DISK_BYTES)) break;
      bytes += carried;
      count++;
    }
    return this.#held.splice(0, count);
  }

  async #send(session: PrimarySession, sync: InFlightSync): Promise<void> {
    try {
      await session.sendFrames(sync.encoded!.frames, sync.bytes, { compress: this.#options.compressSyncs });
    } catch (error) {
      this.#lose(session, `sending sync ${sync.seq} failed: ${(error as Error).message}`);
    }
  }

  #acknowledged(session: PrimarySession, sync: InFlightSync): void {
    if (this.#session !== session) return;
    const roundTripMs = performance.now() - sync.capturedAt;
    this.metrics.roundTrip.add(roundTripMs);
    this.metrics.syncs++;
    this.metrics.pagesSynced += sync.encoded?.pages.length ?? 0;
    this.metrics.writesSynced += sync.requests.filter((r) => r.event.type === "write").length;
    for (const request of sync.requests) request.release();
    this.output.acknowledged(sync.seq);
    if (sync.encoded !== undefined && this.#syncListeners.size > 0) {
      const event: SyncEvent = { role: "primary", seq: sync.seq, pages: sync.encoded.pages, bytes: sync.bytes, io: sync.encoded.io, pauseMs: sync.pauseMs, roundTripMs };
      for (const listener of this.#syncListeners) listener(event);
    }
    this.#wake();
  }

  // ------------------------------------------------------------ sessions and loss

  #newSession(channel: ReplicationChannel): PrimarySession {
    const session: PrimarySession = new PrimarySession(channel, {
      epoch: this.epoch,
      heartbeatIntervalMs: this.#options.heartbeatIntervalMs,
      peerTimeoutMs: this.#options.peerTimeoutMs,
      metrics: this.metrics,
      events: {
        acknowledged: (sync) => this.#acknowledged(session, sync),
        initAcknowledged: (covered) => {
          if (this.#session === session) this.#initAck?.(covered);
        },
        lost: (reason) => this.#lose(session, reason),
        promoted: (epoch) => {
          if (this.#session === session) this.fence(`the secondary took over at epoch ${epoch}`);
        },
      },
    });
    this.#session = session;
    // From the start: a secondary that hangs during a long initial copy is noticed too.
    session.startHeartbeat();
    return session;
  }

  /** The secondary is gone: per policy the guest runs on unprotected, or its writes and output wait. */
  #lose(session: PrimarySession, reason: string): void {
    if (this.#session !== session) return;
    this.#session = undefined;
    const unacked = session.end(reason);
    // Nothing captured is dropped: unacknowledged requests go back in front, in order.
    this.#held.unshift(...unacked.flatMap((sync) => sync.requests).filter((r) => r.event.type !== "flush"));
    this.#held = this.#held.filter((r) => r.event.type !== "flush"); // the next initial copy covers what flushes asked for
    this.#initLost?.();
    if (this.#fsm.is("fenced", "closed")) return;
    const stall = this.#options.onSecondaryLoss === "stall";
    this.#fsm.go(
      "unprotected",
      `${reason}; ${stall ? "guest writes and output are HELD until a secondary protects the guest again" : "the guest now runs UNPROTECTED"}`,
    );
    if (!stall) {
      this.#releaseHeld();
      this.output.releaseAll();
    }
  }

  #releaseHeld(): void {
    this.#workSince = undefined;
    for (const request of this.#held.splice(0)) request.release();
  }

  #diskNumber(name: string): number {
    const index = this.#guest.disks.findIndex((disk) => disk.name === name);
    if (index < 0) throw new Error(`block request for unknown disk ${name}`);
    return index;
  }
}

function emptyBytes(): InFlightSync["bytes"] {
  return { memoryPages: 0, deviceState: 0, ioLog: 0, diskBlocks: 0, diskCopy: 0, control: 0 };
}
