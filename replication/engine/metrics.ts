// What a replication node counts: bytes on the wire by category, syncs, pages per sync
// (as found changed and as sent), how long the guest stood still per sync, how long a sync
// waited for its instruction boundary, and how long its round trip took.
import { BYTE_CATEGORIES, type ByteCategory } from "../protocol/frames.ts";
import type { HeldKind, OutputCounters } from "./primary/output-commit.ts";

const SAMPLES = 4096;

/** A duration series: running totals, and the last SAMPLES values for percentiles. */
export class DurationStats {
  count = 0;
  totalMs = 0;
  maxMs = 0;
  lastMs = 0;
  readonly #ring = new Float64Array(SAMPLES);

  /** Forgets every sample (counts start again). */
  clear(): void {
    this.count = 0;
    this.totalMs = 0;
    this.maxMs = 0;
    this.lastMs = 0;
  }

  add(ms: number): void {
    this.#ring[this.count % SAMPLES] = ms;
    this.count++;
    this.totalMs += ms;
    this.maxMs = Math.max(this.maxMs, ms);
    this.lastMs = ms;
  }

  /** The p-th percentile (0-100) of the recent samples. */
  percentile(p: number): number {
    const n = Math.min(this.count, SAMPLES);
    if (n === 0) return 0;
    const sorted = this.#ring.slice(0, n).sort();
    return sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]!;
  }

  toJSON(): DurationSummary {
    return {
      count: this.count,
      meanMs: this.count === 0 ? 0 : this.totalMs / this.count,
      p50Ms: this.percentile(50),
      p99Ms: this.percentile(99),
      maxMs: this.maxMs,
      lastMs: this.lastMs,
    };
  }
}

/**
 * Where a sync's time goes, stage by stage (the per-sync timeline). Primary: `boundary` (work
 * waiting for the guest's instruction boundary), `pages`, `state` and `encode` (the capture,
 * the guest stopped), `send` (sealed and handed to the socket), `wire` (from the socket to the
 * ack: both directions and the secondary's share), `ack-receive` (the part of `wire` from the
 * ack's arrival at this side's transport to its handling: opened, decoded, checked, and the
 * wait for the event loop), `release` (what the ack frees), and `next-request` (from the ack to
 * the guest's next disk request). Secondary: `receive` (from the arrival of the sync's last
 * record at its transport to the sync assembled: opened, decoded, checked), `apply` (the sync
 * applied to the replica's RAM, its disk operations queued) and `ack` (the ack sealed and
 * handed to the socket).
 */
export const SYNC_STAGES = [
  "boundary",
  "pages",
  "state",
  "encode",
  "send",
  "wire",
  "ack-receive",
  "release",
  "next-request",
  "receive",
  "apply",
  "ack",
] as const;
export type SyncStage = (typeof SYNC_STAGES)[number];

export interface DurationSummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  lastMs: number;
}

export interface MetricsSnapshot {
  role: "primary" | "secondary";
  state: string;
  epoch: number;
  bytes: Record<ByteCategory, number>;
  /** Bytes that carried disk writes: the I/O log and the blocks (inline or copied). */
  diskSyncBytes: number;
  /** Changed pages × PAGE_SIZE: what the pages would cost sent whole. */
  memoryPagesRawBytes: number;
  syncs: number;
  pagesSynced: number;
  pagesPerSync: number;
  writesSynced: number;
  /** io-log mode: writes whose data pages changed before capture and so travelled inline. */
  inlineWrites: number;
  /** How the changed pages travelled: as a zero page, a run delta, or whole. */
  pageEncodings: { zero: number; runs: number; full: number };
  /** Changed pages that did not travel: a logged read fills them on the secondary (read-replay). */
  readReplayedPages: number;
  /** How long the guest stood still per sync (the capture). */
  pauseMs: DurationSummary;
  /** From the guest's request (a write, a flush, output) to its capture; the guest runs meanwhile. */
  captureDelayMs: DurationSummary;
  roundTripMs: DurationSummary;
  /** The per-sync timeline: each stage that ran on this node. */
  stagesMs: Partial<Record<SyncStage, DurationSummary>>;
  /** Output commit (a primary): console bytes, network frames and the guest's disk-write completions held, released and dropped so far. */
  output?: Record<HeldKind, OutputCounters>;
  /** Output commit (a primary): how long console bytes and frames waited, from the guest's output to its release (the latency replication adds to them). */
  outputHoldMs?: Record<"console" | "frame", DurationSummary>;
  initialSync?: { ms: number; bytes: number };
  failoverMs?: number;
  uptimeMs: number;
}

export class ReplicationMetrics {
  /** Where output-commit counts come from (the primary engine's queue). */
  outputCounts: (() => Record<HeldKind, OutputCounters>) | undefined;
  readonly bytes: Record<ByteCategory, number> = { memoryPages: 0, deviceState: 0, ioLog: 0, diskBlocks: 0, diskCopy: 0, output: 0, control: 0 };
  memoryPagesRawBytes = 0;
  syncs = 0;
  pagesSynced = 0;
  writesSynced = 0;
  inlineWrites = 0;
  readonly pageEncodings = { zero: 0, runs: 0, full: 0 };
  readReplayedPages = 0;
  readonly pause = new DurationStats();
  readonly captureDelay = new DurationStats();
  readonly roundTrip = new DurationStats();
  /** Held output's wait, by kind (a primary's). */
  readonly outputHold = { console: new DurationStats(), frame: new DurationStats() };
  readonly #stages = new Map<SyncStage, DurationStats>();
  initialSync: { ms: number; bytes: number } | undefined;
  failoverMs: number | undefined;
  epoch = 0;
  state = "starting";
  readonly #started = performance.now();

  constructor(readonly role: "primary" | "secondary") {}

  /** Durations count from now on (byte counters keep running). */
  restartDurations(): void {
    for (const stats of [this.pause, this.captureDelay, this.roundTrip, this.outputHold.console, this.outputHold.frame, ...this.#stages.values()])
      stats.clear();
  }

  /** Adds one sync's time in `stage`. */
  stage(stage: SyncStage, ms: number): void {
    let stats = this.#stages.get(stage);
    if (stats === undefined) this.#stages.set(stage, (stats = new DurationStats()));
    stats.add(ms);
  }

  count(category: ByteCategory, bytes: number): void {
    this.bytes[category] += bytes;
  }

  get totalBytes(): number {
    return BYTE_CATEGORIES.reduce((sum, category) => sum + this.bytes[category], 0);
  }

  snapshot(): MetricsSnapshot {
    return {
      role: this.role,
      state: this.state,
      epoch: this.epoch,
      bytes: { ...this.bytes },
      diskSyncBytes: this.bytes.ioLog + this.bytes.diskBlocks,
      memoryPagesRawBytes: this.memoryPagesRawBytes,
      syncs: this.syncs,
      pagesSynced: this.pagesSynced,
      pagesPerSync: this.syncs === 0 ? 0 : this.pagesSynced / this.syncs,
      writesSynced: this.writesSynced,
      inlineWrites: this.inlineWrites,
      pageEncodings: { ...this.pageEncodings },
      readReplayedPages: this.readReplayedPages,
      pauseMs: this.pause.toJSON(),
      captureDelayMs: this.captureDelay.toJSON(),
      roundTripMs: this.roundTrip.toJSON(),
      ...(this.outputCounts !== undefined && {
        output: this.outputCounts(),
        outputHoldMs: { console: this.outputHold.console.toJSON(), frame: this.outputHold.frame.toJSON() },
      }),
      stagesMs: Object.fromEntries(SYNC_STAGES.flatMap((stage) => (this.#stages.has(stage) ? [[stage, this.#stages.get(stage)!.toJSON()]] : []))),
      ...(this.initialSync === undefined ? {} : { initialSync: this.initialSync }),
      ...(this.failoverMs === undefined ? {} : { failoverMs: this.failoverMs }),
      uptimeMs: performance.now() - this.#started,
    };
  }

  /** One line for periodic logs. */
  summaryLine(): string {
    const s = this.snapshot();
    const kib = (n: number) => (n / 1024).toFixed(0);
    return (
      `${s.role} ${s.state} epoch=${s.epoch} syncs=${s.syncs} pages/sync=${s.pagesPerSync.toFixed(1)} ` +
      `pages=${kib(s.bytes.memoryPages)}KiB(raw ${kib(s.memoryPagesRawBytes)}KiB) state=${kib(s.bytes.deviceState)}KiB iolog=${kib(s.bytes.ioLog)}KiB ` +
      `blocks=${kib(s.bytes.diskBlocks)}KiB pause p50/p99=${s.pauseMs.p50Ms.toFixed(2)}/${s.pauseMs.p99Ms.toFixed(2)}ms rtt=${s.roundTripMs.p50Ms.toFixed(1)}ms`
    );
  }
}
