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
import type { ControlMessage } from "../protocol/messages.ts";
import { MAX_IO_LOG_ENTRIES, MAX_SYNC_DISK_BYTES } from "../protocol/limits.ts";
import type { PrimaryGuest } from "./guest.ts";
import { sendInitialSync } from "./initial-sync.ts";
import { primaryGuestOf } from "./machine-guest.ts";
import { ReplicationMetrics } from "./metrics.ts";
import { OutputCommit } from "./output-commit.ts";
import { PrimarySession, type InFlightSync } from "./primary-session.ts";
import { verify as verifyReplica, type CheckHost, type SectorRange, type VerifyOptions, type VerifyReport } from "./consistency-check.ts";
import { encodeSync, type CompletedRead, type DiskMode, type HeldRequest, type LoggedIo } from "./sync-encoder.ts";
import { StateMachine, type TransitionTable } from "./transitions.ts";

export type { DiskMode } from "./sync-encoder.ts";

/** handing-over: the guest is stopped for a last sync, then the secondary takes over (a failed disk, a migration). */
export type PrimaryState = "idle" | "initial-sync" | "protected" | "handing-over" | "unprotected" | "fenced" | "closed";

const PRIMARY_TRANSITIONS: TransitionTable<PrimaryState> = {
  idle: ["initial-sync", "fenced", "closed"],
  "initial-sync": ["protected", "unprotected", "fenced", "closed"],
  protected: ["handing-over", "unprotected", "fenced", "closed"],
  "handing-over": ["fenced", "unprotected", "closed"],
  unprotected: ["initial-sync", "fenced", "closed"],
  fenced: ["closed"],
  closed: [],
};

/** How long a handover waits for the secondary to say it runs the guest. */
const HANDOVER_TIMEOUT_MS = 30_000;

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
  /** Read-replay: pages a disk read filled travel as a log entry the secondary replays from its own disk (default on). */
  readReplay?: boolean;
  log?: (line: string) => void;
}

/** What a migration took. `downtimeMs`: from the guest's last instruction here to its first on the target. */
export interface MigrationReport {
  totalMs: number;
  /** The copy and catch-up (the guest runs meanwhile, unless stop-and-copy). */
  copyMs: number;
  downtimeMs: number | undefined;
  /** Bytes this primary sent for the migration (copy, syncs, control). */
  bytes: number;
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
  readReplay: true,
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
  /** Submission order of every guest request (reads too), for one log in guest order. */
  #nextOrder = 1;
  readonly #orderOf = new WeakMap<BlockIoEvent, number>();
  /** Reads submitted and not completed: a write logged meanwhile may change what they read (by order). */
  readonly #readsInFlight = new Set<number>();
  /** Reads completed since the last capture (read-replay candidates). */
  #completedReads: CompletedRead[] = [];
  /** Writes logged while reads were in flight: a later write to the sectors of an earlier read forbids replaying it. */
  #writesLoggedDuringReads: { order: number; disk: string; sector: number; sectors: number }[] = [];
  /** When the oldest work waiting for a capture arrived (performance.now()). */
  #workSince: number | undefined;
  #captureScheduled = false;
  /** A capture is wanted even without pending work (syncNow). */
  #forcedCapture = false;
  /** Run at the next capture's boundary, after its pages and requests were taken (consistency checks). */
  #captureTasks: ((seq: number) => ControlMessage[])[] = [];
  /** Replica pages a consistency check found wrong: the next sync sends them whole. */
  readonly #forcedPages = new Set<number>();
  /** Consistency checks watching the guest's writes to a disk range. */
  readonly #writeWatchers = new Set<{ disk: string; range: SectorRange; hits: SectorRange[] }>();
  #nextCheckId = 1;
  /** A handover waiting for the secondary's `promoted`. */
  #handoverWaiter: { resolve: (resumedAtMs: number | undefined) => void; reject: (error: Error) => void } | undefined;
  /** A handover started by a failed disk: later failures wait for the same outcome. */
  #diskFailover: Promise<boolean> | undefined;
  /** syncNow callers: seq is the capture that covers them (undefined until it is taken). */
  #syncWaiters: { seq: number | undefined; resolve: () => void; reject: (error: Error) => void }[] = [];
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
      this.#guest.onBlockCompleted((event, outcome) => this.#blockCompleted(event, outcome.ok ? outcome.readData : undefined)),
      this.#guest.onBackendFailure((_event, error) => this.#diskFailed(error)),
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
          // The copy covers what reads so far brought in; a read still in flight may see writes the copy already holds.
          this.#readsInFlight.clear();
          this.#completedReads = [];
          this.#writesLoggedDuringReads = [];
          return this.#held.splice(0);
        },
        onCaptured: (requests, capturedAt) => session.track({ seq: 0, requests, capturedAt, encoded: undefined, bytes: emptyBytes(), pauseMs: 0, after: [] }),
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

  /**
   * Captures now, even with nothing pending, and resolves once that sync is acknowledged: the
   * secondary then holds the guest as it is at this moment. Rejects when the guest is not protected.
   */
  syncNow(): Promise<void> {
    if (!this.#fsm.is("protected")) return Promise.reject(new Error(`syncNow: the guest is not protected (${this.state})`));
    return this.#syncNow();
  }

  #syncNow(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#syncWaiters.push({ seq: undefined, resolve, reject });
      this.#forcedCapture = true;
      this.#workSince ??= performance.now();
      this.#wake();
    });
  }

  /**
   * Hands the guest over to the secondary: stops it, sends a last sync, asks the secondary to
   * take over, and fences this primary once the secondary says it runs the guest. On failure
   * (no secondary, a refusal, a timeout) the guest runs on here, unprotected, and this rejects.
   * Resolves with when the guest stopped here and resumed there (ms since the Unix epoch).
   */
  async handOver(reason: string): Promise<{ pausedAtMs: number; resumedAtMs: number | undefined }> {
    if (!this.#fsm.is("protected")) throw new Error(`handOver: the guest is not protected (${this.state})`);
    const session = this.#session!;
    this.#fsm.go("handing-over", reason);
    await this.#guest.pause();
    const pausedAtMs = wallClockMs();
    try {
      await this.#syncNow();
      const promoted = new Promise<number | undefined>((resolve, reject) => {
        this.#handoverWaiter = { resolve, reject };
        setTimeout(() => reject(new Error(`the secondary did not take over within ${HANDOVER_TIMEOUT_MS} ms`)), HANDOVER_TIMEOUT_MS).unref?.();
      });
      await session.sendControl({ type: "handover", epoch: this.epoch, reason: reason.slice(0, 500) });
      const resumedAtMs = await promoted;
      this.fence(`handed over to the secondary (${reason})`);
      return { pausedAtMs, resumedAtMs };
    } catch (error) {
      this.#handoverWaiter = undefined;
      if (this.#fsm.is("handing-over")) this.#lose(session, `handover failed: ${(error as Error).message}`);
      if (this.#fsm.is("unprotected")) this.#guest.resume();
      throw error;
    }
  }

  /**
   * Compares the replica with this primary, by ranges, without stopping the guest (see
   * consistency-check.ts); with `repair`, sends what differs again. Needs a protected guest.
   */
  verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    if (!this.#fsm.is("protected")) return Promise.reject(new Error(`verify: the guest is not protected (${this.state})`));
    return verifyReplica(this.#checkHost(), options);
  }

  #checkHost(): CheckHost {
    const guest = this.#guest;
    return {
      memoryBytes: guest.memoryBytes,
      disks: guest.disks,
      atCapture: <T>(task: (seq: number, ram: Uint8Array) => { value: T; after: ControlMessage[] }) =>
        new Promise<T>((resolve, reject) => {
          if (!this.#fsm.is("protected")) return reject(new Error(`the guest is not protected any more (${this.state})`));
          this.#captureTasks.push((seq) => {
            const { value, after } = task(seq, guest.ram());
            resolve(value);
            return after;
          });
          this.#forcedCapture = true;
          this.#workSince ??= performance.now();
          this.#wake();
        }),
      digestsFor: (id) => {
        const session = this.#session;
        return session === undefined ? Promise.reject(new Error("no secondary")) : session.digestsFor(id);
      },
      nextId: () => this.#nextCheckId++,
      watchWrites: (disk, range) => {
        const watcher = { disk: guest.disks[disk]!.name, range, hits: [] as SectorRange[] };
        this.#writeWatchers.add(watcher);
        return { hits: () => watcher.hits, stop: () => void this.#writeWatchers.delete(watcher) };
      },
      heldWrites: (disk, range) =>
        this.#held
          .filter(({ event }) => event.type === "write" && event.disk === guest.disks[disk]!.name && overlaps(range, event))
          .map(({ event }) => ({ sector: event.sector, sectors: event.sectors })),
      repairDisk: (disk, sector, data) => {
        const event: BlockIoEvent = { disk: guest.disks[disk]!.name, type: "write", sector, sectors: data.length / 512, segments: [], data };
        this.#queue({ event, release: () => undefined, submittedAt: performance.now(), order: this.#nextOrder++, forceInline: true });
      },
      repairPages: (pages) => {
        for (const page of pages) this.#forcedPages.add(page);
        this.#forcedCapture = true;
        this.#wake();
      },
    };
  }

  /** At a capture: the pages to send whole, with their bytes now. */
  #takeForcedPages(): Map<number, Uint8Array> {
    const pages = new Map<number, Uint8Array>();
    if (this.#forcedPages.size === 0) return pages;
    const ram = this.#guest.ram();
    for (const page of this.#forcedPages) pages.set(page, ram.slice(page * 4096, (page + 1) * 4096));
    this.#forcedPages.clear();
    return pages;
  }

  /**
   * Live migration with logging-replay: copies the guest to `target` (a node with its own
   * disks: those it proves by digest to hold already are not copied) while it runs, keeps the
   * target current with event-driven syncs (I/O logs for the disks: no dirty-block tracking),
   * then hands over: the guest stops here, a last sync, the target resumes, this primary is
   * fenced. A protected primary first lets its secondary go (it says goodbye, so the secondary
   * does not take over); the target protects the guest from the copy on. `stopAndCopy`: the
   * baseline that stops the guest for the whole copy. On failure the guest runs on here.
   */
  async migrate(target: ReplicationChannel, options: { stopAndCopy?: boolean } = {}): Promise<MigrationReport> {
    if (!this.#fsm.is("idle", "unprotected", "protected")) throw new Error(`migrate: the engine is ${this.state}`);
    const started = performance.now();
    const bytesBefore = this.metrics.totalBytes;
    // Ending a session always says goodbye: the secondary holds its replica instead of taking over.
    if (this.#session !== undefined) this.#lose(this.#session, "migrating the guest to another node");
    let stoppedAtMs: number | undefined;
    if (options.stopAndCopy === true) {
      await this.#guest.pause();
      stoppedAtMs = wallClockMs();
    }
    const copyStarted = performance.now();
    await this.protect(target);
    if (!this.#fsm.is("protected")) {
      if (stoppedAtMs !== undefined) this.#guest.resume();
      throw new Error(`migrate: the target could not be brought up to date (${this.state})`);
    }
    const copyMs = performance.now() - copyStarted;
    const { pausedAtMs, resumedAtMs } = await this.handOver("migration");
    const stopped = stoppedAtMs ?? pausedAtMs;
    return {
      totalMs: performance.now() - started,
      copyMs,
      downtimeMs: resumedAtMs === undefined ? undefined : resumedAtMs - stopped,
      bytes: this.metrics.totalBytes - bytesBefore,
    };
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

  /** The peer took over (it said so, authenticated, or a handshake proved it): never acknowledge another guest write. */
  fence(reason: string): void {
    if (this.#fsm.is("fenced", "closed")) return;
    this.#fsm.go("fenced", `${reason}; this primary stops its guest for good`);
    const session = this.#session;
    this.#session = undefined;
    this.#guest.eagerYield(false);
    // The guest is stopped for good: what it waits for is never completed.
    this.#held.unshift(...(session?.end(reason) ?? []).flatMap((sync) => sync.requests));
    this.#initLost?.();
    for (const waiter of this.#syncWaiters.splice(0)) waiter.reject(new Error(`fenced: ${reason}`));
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
    this.#guest.eagerYield(false);
    this.#initLost?.();
    for (const waiter of this.#syncWaiters.splice(0)) waiter.reject(new Error(`closed: ${reason}`));
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
    return this.#fsm.is("protected", "handing-over", "initial-sync", "fenced") || (this.#fsm.is("unprotected") && this.#options.onSecondaryLoss === "stall");
  }

  #blockRequest(event: BlockIoEvent): void | Promise<void> {
    const order = this.#nextOrder++;
    this.#orderOf.set(event, order);
    if (event.type === "write")
      for (const watcher of this.#writeWatchers)
        if (watcher.disk === event.disk && overlaps(watcher.range, event)) watcher.hits.push({ sector: event.sector, sectors: event.sectors });
    if (event.type === "read") {
      if (this.#options.readReplay && this.#fsm.is("protected")) this.#readsInFlight.add(order);
      return;
    }
    if (!this.#holding) return;
    if (event.type === "flush") {
      // Not held: log it so the secondary flushes too, once the guest is protected.
      if (this.#fsm.is("protected")) this.#queue({ event, release: () => undefined, submittedAt: performance.now(), order });
      return;
    }
    return new Promise<void>((release) => this.#queue({ event, release, submittedAt: performance.now(), order }));
  }

  /** A read's data landed in guest memory: a candidate for read-replay at the next capture. */
  #blockCompleted(event: BlockIoEvent, readData: Uint8Array | undefined): void {
    if (event.type !== "read") return;
    const order = this.#orderOf.get(event);
    if (order === undefined || !this.#readsInFlight.delete(order)) return;
    if (readData !== undefined && this.#fsm.is("protected")) this.#completedReads.push({ event, data: readData, order });
  }

  /**
   * The reads a capture may replay: not one that a write submitted after it (and already
   * logged) overlaps, since the secondary's disk holds that write by the time it replays.
   */
  #takeReplayableReads(): CompletedRead[] {
    const reads = this.#completedReads.splice(0);
    const replayable = reads.filter(
      (read) =>
        !this.#writesLoggedDuringReads.some(
          (w) =>
            w.order > read.order && w.disk === read.event.disk && w.sector < read.event.sector + read.event.sectors && read.event.sector < w.sector + w.sectors,
        ),
    );
    return replayable;
  }

  /** Remembers logged writes while reads are outstanding (the check above), and forgets what no read can need. */
  #noteLoggedWrites(requests: readonly HeldRequest[]): void {
    const oldestRead = Math.min(...this.#readsInFlight, ...this.#completedReads.map((r) => r.order));
    this.#writesLoggedDuringReads = this.#writesLoggedDuringReads.filter((w) => w.order > oldestRead);
    if (!Number.isFinite(oldestRead)) return;
    for (const { event, order } of requests) {
      if (event.type === "write" && order > oldestRead)
        this.#writesLoggedDuringReads.push({ order, disk: event.disk, sector: event.sector, sectors: event.sectors });
    }
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
    if (this.#captureScheduled || session === undefined || !this.#fsm.is("protected", "handing-over")) return;
    if (this.#held.length === 0 && !this.output.hasUncovered && !this.#forcedCapture) return;
    if (session.inFlightCount >= this.#options.syncWindow) return;
    this.#captureScheduled = true;
    void this.#guest
      .atNextBoundary(() => this.#capture(session))
      .then(
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
    if (this.#session !== session || session.ended || !this.#fsm.is("protected", "handing-over")) return undefined;
    const started = performance.now();
    if (this.#workSince !== undefined) this.metrics.captureDelay.add(started - this.#workSince);
    const seq = session.takeSeq();
    this.#forcedCapture = false;
    for (const waiter of this.#syncWaiters) waiter.seq ??= seq;
    const changes = this.#guest.captureChanges();
    const requests = this.#takeBatch();
    // In flight from here: should anything below throw, the loss that follows hands the
    // requests back (released or held per policy) instead of dropping them with the sync.
    const sync: InFlightSync = { seq, requests, capturedAt: started, encoded: undefined, bytes: emptyBytes(), pauseMs: 0, after: [] };
    session.track(sync);
    const reads = this.#options.readReplay ? this.#takeReplayableReads() : [];
    this.#noteLoggedWrites(requests);
    this.output.cover(seq);
    this.#workSince = this.#held.length > 0 ? this.#held[0]!.submittedAt : undefined;
    const encoded = encodeSync({
      seq,
      epoch: this.epoch,
      mode: this.#options.mode,
      pages: changes.pages,
      state: changes.state,
      requests,
      reads,
      forcedPages: this.#takeForcedPages(),
      ram: this.#guest.ram(),
      diskNumber: (name) => this.#diskNumber(name),
    });
    const capturedAt = performance.now();
    // Work that must see this boundary (consistency checks): it may add messages to follow the sync.
    const after = this.#captureTasks.splice(0).flatMap((task) => task(seq));
    Object.assign(sync, { capturedAt, encoded, pauseMs: capturedAt - started, after });
    this.metrics.pause.add(sync.pauseMs);
    this.metrics.memoryPagesRawBytes += changes.pages.indices.length * 4096;
    this.metrics.inlineWrites += encoded.inlineWrites;
    this.metrics.pageEncodings.zero += encoded.zeroPages;
    this.metrics.pageEncodings.runs += encoded.deltaPages;
    this.metrics.pageEncodings.full += encoded.fullPages;
    this.metrics.readReplayedPages += encoded.readReplayedPages;
    // The guest waits for the ack: take it as soon as it arrives, not at the end of a slice.
    this.#guest.eagerYield(true);
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
      await session.sendFrames(sync.encoded!.frames, sync.bytes, { compress: this.#options.compressSyncs }, sync.after);
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
    if (!session.awaitingSyncAck) this.#guest.eagerYield(false);
    for (const request of sync.requests) request.release();
    this.output.acknowledged(sync.seq);
    this.#syncWaiters = this.#syncWaiters.filter((waiter) => {
      if (waiter.seq === undefined || waiter.seq > sync.seq) return true;
      waiter.resolve();
      return false;
    });
    if (sync.encoded !== undefined && this.#syncListeners.size > 0) {
      const event: SyncEvent = {
        role: "primary",
        seq: sync.seq,
        pages: sync.encoded.pages,
        bytes: sync.bytes,
        io: sync.encoded.io,
        pauseMs: sync.pauseMs,
        roundTripMs,
      };
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
        promoted: (epoch, resumedAtMs) => {
          if (this.#session !== session) return;
          const waiter = this.#handoverWaiter;
          this.#handoverWaiter = undefined;
          if (waiter !== undefined) return waiter.resolve(resumedAtMs);
          this.fence(`the secondary took over at epoch ${epoch}`);
        },
      },
    });
    this.#session = session;
    // From the start: a secondary that hangs during a long initial copy is noticed too.
    session.startHeartbeat();
    return session;
  }

  /**
   * The secondary is gone, or let go: per policy the guest runs on unprotected, or its writes
   * and output wait. The session's end says goodbye where the link still works, so a secondary
   * that is only slow holds its replica instead of taking over.
   */
  #lose(session: PrimarySession, reason: string): void {
    if (this.#session !== session) return;
    this.#session = undefined;
    const unacked = session.end(reason);
    this.#guest.eagerYield(false);
    // Nothing captured is dropped: unacknowledged requests go back in front, in order.
    this.#held.unshift(...unacked.flatMap((sync) => sync.requests).filter((r) => r.event.type !== "flush"));
    this.#held = this.#held.filter((r) => r.event.type !== "flush"); // the next initial copy covers what flushes asked for
    this.#initLost?.();
    for (const waiter of this.#syncWaiters.splice(0)) waiter.reject(new Error(`the secondary was lost before the sync was acknowledged: ${reason}`));
    this.#handoverWaiter?.reject(new Error(`the secondary was lost: ${reason}`));
    this.#handoverWaiter = undefined;
    this.#forcedCapture = false;
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

function overlaps(range: SectorRange, event: { sector: number; sectors: number }): boolean {
  return event.sector < range.sector + range.sectors && range.sector < event.sector + event.sectors;
}

/** Wall-clock time in ms with sub-ms precision (comparable between processes on one host). */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

function emptyBytes(): InFlightSync["bytes"] {
  return { memoryPages: 0, deviceState: 0, ioLog: 0, diskBlocks: 0, diskCopy: 0, control: 0 };
}
