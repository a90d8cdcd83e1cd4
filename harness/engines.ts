// The harness's one place that constructs replication engines and reads their
// progress, so that a change of the engines' API (the lead is reshaping them) is
// mended here and nowhere else in harness/.
import type { BlockHook } from "../emulator/block/hook.ts";
import { withoutUndefined } from "../emulator/config.ts";
import type { Machine } from "../emulator/machine.ts";
import { PrimaryEngine, type DiskMode, type SecondaryLossPolicy, type SyncMode } from "../replication/engine/primary/engine.ts";
import { SecondaryEngine } from "../replication/engine/secondary/engine.ts";
import type { ByteCategory } from "../replication/protocol/frames.ts";
import type { Witness } from "../replication/arbiter/witness.ts";

export interface PrimarySettings {
  mode: DiskMode;
  hook: BlockHook;
  /** The failover generation: 1 for a first primary, the survivor's epoch for one that took over. */
  epoch?: number;
  peerTimeoutMs?: number;
  ackTimeoutMs?: number;
  onSecondaryLoss?: SecondaryLossPolicy;
  syncMode?: SyncMode;
  /** Speculative mode: how long a completed write may wait for the capture that logs it. */
  syncIntervalMs?: number;
  /** How long output may wait for the rest of its burst before a capture covers it. */
  outputCoalesceMs?: number;
  compressSyncs?: boolean;
  /** The arbiter's witness and this node's name there, if there is one. */
  witness?: Witness;
  nodeName?: string;
  log: (line: string) => void;
}

export function createPrimaryEngine(machine: Machine, settings: PrimarySettings): PrimaryEngine {
  return new PrimaryEngine(machine, {
    mode: settings.mode,
    hook: settings.hook,
    ...withoutUndefined({
      epoch: settings.epoch,
      peerTimeoutMs: settings.peerTimeoutMs,
      ackTimeoutMs: settings.ackTimeoutMs,
      onSecondaryLoss: settings.onSecondaryLoss,
      syncMode: settings.syncMode,
      syncIntervalMs: settings.syncIntervalMs,
      outputCoalesceMs: settings.outputCoalesceMs,
      compressSyncs: settings.compressSyncs,
      witness: settings.witness,
      nodeName: settings.nodeName,
    }),
    log: settings.log,
  });
}

export interface SecondarySettings {
  peerTimeoutMs?: number;
  autoFailover?: boolean;
  witness?: Witness;
  nodeName?: string;
  log: (line: string) => void;
}

export function createSecondaryEngine(machine: Machine, settings: SecondarySettings): SecondaryEngine {
  return new SecondaryEngine(machine, {
    ...withoutUndefined({ peerTimeoutMs: settings.peerTimeoutMs, autoFailover: settings.autoFailover, witness: settings.witness, nodeName: settings.nodeName }),
    log: settings.log,
  });
}

/** One acknowledged sync, as `--json` and the test API's events report it. */
export interface SyncReport {
  seq: number;
  /** Guest pages it carried. */
  pages: number;
  /** Guest disk writes it logged (flushes not counted). */
  writes: number;
  bytes: Record<ByteCategory, number>;
  /** How long the guest stood still for the capture. */
  pauseMs: number;
  /** From the capture to the secondary's acknowledgement. */
  roundTripMs: number;
  /** Network frames the acknowledgement released to the gateway. */
  framesReleased: number;
  frameBytesReleased: number;
}

/** Calls `listener` for each sync the primary engine gets acknowledged; returns the function that stops it. */
export function onSyncs(engine: PrimaryEngine, listener: (report: SyncReport) => void): () => void {
  return engine.onSync((sync) =>
    listener({
      seq: sync.seq,
      pages: sync.pages.length,
      writes: sync.io.filter((entry) => entry.type === "write").length,
      bytes: { ...sync.bytes },
      pauseMs: sync.pauseMs,
      roundTripMs: sync.roundTripMs,
      framesReleased: sync.released.frames,
      frameBytesReleased: sync.released.frameBytes,
    }),
  );
}
