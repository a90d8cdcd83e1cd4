// Counter arithmetic for benchmarks: a workload's own share of a run's metrics.
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";

/** The counters' growth between two snapshots (a workload's own share, the initial sync excluded). */
export function metricsSince(before: MetricsSnapshot, after: MetricsSnapshot): MetricsSnapshot {
  const bytes = { ...after.bytes };
  for (const key of Object.keys(bytes) as (keyof typeof bytes)[]) bytes[key] -= before.bytes[key];
  const syncs = after.syncs - before.syncs;
  const pagesSynced = after.pagesSynced - before.pagesSynced;
  return {
    ...after,
    bytes,
    diskSyncBytes: after.diskSyncBytes - before.diskSyncBytes,
    syncs,
    pagesSynced,
    pagesPerSync: syncs === 0 ? 0 : pagesSynced / syncs,
    writesSynced: after.writesSynced - before.writesSynced,
    inlineWrites: after.inlineWrites - before.inlineWrites,
    readReplayedPages: after.readReplayedPages - before.readReplayedPages,
    memoryPagesRawBytes: after.memoryPagesRawBytes - before.memoryPagesRawBytes,
    pageEncodings: {
      zero: after.pageEncodings.zero - before.pageEncodings.zero,
      runs: after.pageEncodings.runs - before.pageEncodings.runs,
      full: after.pageEncodings.full - before.pageEncodings.full,
    },
  };
}

/** All bytes a snapshot counts, every category. */
export function totalBytes(metrics: MetricsSnapshot): number {
  return Object.values(metrics.bytes).reduce((sum, value) => sum + value, 0);
}
