// Live migration with logging-replay, as the steps it takes:
//   1. let the secondary that protects the guest go (it says goodbye, so it holds its replica
//      instead of taking over);
//   2. protect the guest with the target: the initial copy while the guest runs (disks the
//      target proves by digest to hold already are not copied), then event-driven syncs with
//      I/O logs keep it current (no dirty-block tracking);
//   3. hand over: the guest stops here, a last sync, the target resumes, this primary is fenced.
// `stopAndCopy`: the baseline that stops the guest for the whole copy. On failure the guest
// runs on here.
import type { ReplicationChannel } from "../../channel/channel.ts";
import type { PrimaryCore } from "./core.ts";
import { handOver } from "./handover.ts";
import { protect } from "./protect.ts";

/** What a migration took. `downtimeMs`: from the guest's last instruction here to its first on the target. */
export interface MigrationReport {
  totalMs: number;
  /** The copy and catch-up (the guest runs meanwhile, unless stop-and-copy). */
  copyMs: number;
  downtimeMs: number | undefined;
  /** Bytes this primary sent for the migration (copy, syncs, control). */
  bytes: number;
}

export async function migrate(core: PrimaryCore, target: ReplicationChannel, options: { stopAndCopy?: boolean } = {}): Promise<MigrationReport> {
  const { fsm, guest, metrics } = core;
  if (!fsm.is("idle", "unprotected", "protected")) throw new Error(`migrate: the engine is ${fsm.state}`);
  const started = performance.now();
  const bytesBefore = metrics.totalBytes;
  if (core.session !== undefined) core.lose(core.session, "migrating the guest to another node");
  let stoppedAtMs: number | undefined;
  if (options.stopAndCopy === true) {
    await guest.pause();
    stoppedAtMs = core.options.clock.wallMs();
  }
  const copyStarted = performance.now();
  await protect(core, target);
  if (!fsm.is("protected")) {
    if (stoppedAtMs !== undefined) guest.resume();
    throw new Error(`migrate: the target could not be brought up to date (${fsm.state})`);
  }
  const copyMs = performance.now() - copyStarted;
  const { pausedAtMs, resumedAtMs } = await handOver(core, "migration");
  const stopped = stoppedAtMs ?? pausedAtMs;
  return {
    totalMs: performance.now() - started,
    copyMs,
    downtimeMs: resumedAtMs === undefined ? undefined : resumedAtMs - stopped,
    bytes: metrics.totalBytes - bytesBefore,
  };
}
