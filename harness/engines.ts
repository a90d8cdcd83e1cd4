// The harness's one place that constructs replication engines and reads their
// progress, so that a change of the engines' API (the lead is reshaping them) is
// mended here and nowhere else in harness/.
import type { BlockHook } from "../emulator/block/hook.ts";
import { withoutUndefined } from "../emulator/config.ts";
import type { Machine } from "../emulator/machine.ts";
import { PrimaryEngine, type DiskMode, type SecondaryLossPolicy } from "../replication/engine/primary.ts";
import { SecondaryEngine } from "../replication/engine/secondary.ts";
import type { ByteCategory, MetricsSnapshot, ReplicationMetrics } from "../replication/engine/metrics.ts";

export interface PrimarySettings {
  mode: DiskMode;
  hook: BlockHook;
  /** The failover generation: 1 for a first primary, the survivor's epoch for one that took over. */
  epoch?: number;
  peerTimeoutMs?: number;
  onSecondaryLoss?: SecondaryLossPolicy;
  log: (line: string) => void;
}

export function createPrimaryEngine(machine: Machine, settings: PrimarySettings): PrimaryEngine {
  return new PrimaryEngine(machine, undefined, {
    mode: settings.mode,
    hook: settings.hook,
    ...withoutUndefined({ epoch: settings.epoch, peerTimeoutMs: settings.peerTimeoutMs, onSecondaryLoss: settings.onSecondaryLoss }),
    log: settings.log,
  });
}

export interface SecondarySettings {
  peerTimeoutMs?: number;
  autoFailover?: boolean;
  log: (line: string) => void;
}

export function createSecondaryEngine(machine: Machine, settings: SecondarySettings): SecondaryEngine {
  return new SecondaryEngine(machine, { ...withoutUndefined({ peerTimeoutMs: settings.peerTimeoutMs, autoFailover: settings.autoFailover }), log: settings.log });
}

/** Syncs acknowledged since the last report: how many, and what they carried. */
export interface SyncReport {
  /** Syncs in this report (1 when the engine reports each sync). */
  syncs: number;
  /** The engine's sync count after them. */
  totalSyncs: number;
  pages: number;
  writes: number;
  bytes: Record<ByteCategory, number>;
  /** Mean round trip of the syncs in this report, where known. */
  roundTripMs?: number;
}

const SYNC_SAMPLE_MS = 500;

/**
 * Calls `listener` as syncs complete. The engines have no per-sync event yet, so
 * this samples their metrics and reports the difference (at most every 500 ms);
 * returns the function that stops it.
 */
export function onSyncs(metrics: ReplicationMetrics, listener: (report: SyncReport) => void): () => void {
  let last: MetricsSnapshot = metrics.snapshot();
  const timer = setInterval(() => {
    const now = metrics.snapshot();
    if (now.syncs > last.syncs) {
      const bytes = Object.fromEntries(Object.entries(now.bytes).map(([category, value]) => [category, value - last.bytes[category as ByteCategory]])) as Record<ByteCategory, number>;
      const count = now.roundTripMs.count - last.roundTripMs.count;
      listener({
        syncs: now.syncs - last.syncs,
        totalSyncs: now.syncs,
        pages: now.pagesSynced - last.pagesSynced,
        writes: now.writesSynced - last.writesSynced,
        bytes,
        ...(count > 0 && { roundTripMs: (now.roundTripMs.meanMs * now.roundTripMs.count - last.roundTripMs.meanMs * last.roundTripMs.count) / count }),
      });
    }
    last = now;
  }, SYNC_SAMPLE_MS);
  timer.unref();
  return () => clearInterval(timer);
}
