// What a replication node counts: bytes on the wire by category, syncs, pages
// per sync, how long the guest stood still and how long a sync's round trip took.

export type ByteCategory = "memoryPages" | "deviceState" | "ioLog" | "diskBlocks" | "diskCopy" | "control";

export const BYTE_CATEGORIES: readonly ByteCategory[] = ["memoryPages", "deviceState", "ioLog", "diskBlocks", "diskCopy", "control"];

/** Running summary of a duration series without keeping every sample. */
export class DurationStats {
  count = 0;
  totalMs = 0;
  maxMs = 0;
  lastMs = 0;

  add(ms: number): void {
    this.count++;
    this.totalMs += ms;
    this.maxMs = Math.max(this.maxMs, ms);
    this.lastMs = ms;
  }

  toJSON(): { count: number; meanMs: number; maxMs: number; lastMs: number } {
    return { count: this.count, meanMs: this.count === 0 ? 0 : this.totalMs / this.count, maxMs: this.maxMs, lastMs: this.lastMs };
  }
}

export interface MetricsSnapshot {
  role: "primary" | "secondary";
  state: string;
  epoch: number;
  bytes: Record<ByteCategory, number>;
  /** Bytes that carried disk writes: the I/O log (io-log mode) or the written blocks. */
  diskSyncBytes: number;
  syncs: number;
  pagesSynced: number;
  pagesPerSync: number;
  writesSynced: number;
  /** io-log mode: writes whose data pages changed before capture and so travelled inline. */
  inlineWrites: number;
  pauseMs: ReturnType<DurationStats["toJSON"]>;
  roundTripMs: ReturnType<DurationStats["toJSON"]>;
  initialSync?: { ms: number; bytes: number };
  failoverMs?: number;
  uptimeMs: number;
}

export class ReplicationMetrics {
  readonly bytes: Record<ByteCategory, number> = { memoryPages: 0, deviceState: 0, ioLog: 0, diskBlocks: 0, diskCopy: 0, control: 0 };
  syncs = 0;
  pagesSynced = 0;
  writesSynced = 0;
  inlineWrites = 0;
  readonly pause = new DurationStats();
  readonly roundTrip = new DurationStats();
  initialSync: { ms: number; bytes: number } | undefined;
  failoverMs: number | undefined;
  epoch = 0;
  state = "starting";
  readonly #started = performance.now();

  constructor(readonly role: "primary" | "secondary") {}

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
      syncs: this.syncs,
      pagesSynced: this.pagesSynced,
      pagesPerSync: this.syncs === 0 ? 0 : this.pagesSynced / this.syncs,
      writesSynced: this.writesSynced,
      inlineWrites: this.inlineWrites,
      pauseMs: this.pause.toJSON(),
      roundTripMs: this.roundTrip.toJSON(),
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
      `pages=${kib(s.bytes.memoryPages)}KiB state=${kib(s.bytes.deviceState)}KiB iolog=${kib(s.bytes.ioLog)}KiB ` +
      `blocks=${kib(s.bytes.diskBlocks)}KiB pause=${s.pauseMs.lastMs.toFixed(1)}ms rtt=${s.roundTripMs.lastMs.toFixed(1)}ms`
    );
  }
}
