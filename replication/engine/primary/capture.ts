// One capture, at an instruction boundary of the guest: the pages changed since the last
// one, the device-state parts that changed, the requests to log, the reads that may be
// replayed, and the work of consistency checks that must see this boundary, encoded as
// sync N and registered as in flight before anything can fail. The guest runs on at once.
import { PAGE_SIZE } from "../../../emulator/units.ts";
import { emptyByteCounts } from "../sync-event.ts";
import type { CheckSupport } from "./check-support.ts";
import type { PrimaryCore } from "./core.ts";
import type { HeldOutput } from "./output-commit.ts";
import type { InFlightSync, PrimarySession } from "./session.ts";
import { encodeSync } from "./sync-encoder.ts";
import type { SyncWaiters } from "./sync-waiters.ts";

export function captureSync(
  core: PrimaryCore,
  session: PrimarySession,
  checks: CheckSupport,
  waiters: SyncWaiters,
  /** Since when the oldest work waited for a capture, and when the scheduler asked for this one. */
  asked: { workSince: number | undefined; askedAt: number },
): InFlightSync | undefined {
  // The boundary came after the session ended or the state changed: nothing to capture for it.
  if (session.ended || core.session !== session || !core.policy().capture) return undefined;
  const { guest, pending, metrics, options } = core;
  const started = performance.now();
  if (asked.workSince !== undefined) metrics.captureDelay.add(started - asked.workSince);
  metrics.stage("boundary", started - asked.askedAt);
  const seq = session.takeSeq();
  waiters.captured(seq);
  const pages = guest.collectPages();
  const pagesAt = performance.now();
  const state = guest.captureState();
  const stateAt = performance.now();
  const requests = pending.takeBatch(options.mode === "dirty-block-copy");
  // In flight from here: should anything below throw, the loss that follows accounts for the
  // requests (released or held per policy) instead of dropping them with the sync.
  const sync: InFlightSync = {
    seq,
    requests,
    capturedAt: started,
    sentAt: undefined,
    ingressWatermark: guest.ingressWatermark(),
    encoded: undefined,
    bytes: emptyByteCounts(),
    pauseMs: 0,
    after: [],
  };
  session.track(sync);
  const reads = options.readReplay ? pending.takeReplayableReads() : [];
  pending.noteLogged(requests);
  core.outputs.cover(seq, new Set(requests.flatMap((request): HeldOutput[] => (request.completion === undefined ? [] : [request.completion]))));
  const encoded = encodeSync({
    seq,
    epoch: options.epoch,
    mode: options.mode,
    pages,
    state,
    requests,
    reads,
    forcedPages: checks.takeForcedPages(guest.ram()),
    ram: guest.ram(),
    diskNumber: (name) => diskNumber(core, name),
    output: core.outputs.takeCarried(),
  });
  const capturedAt = performance.now();
  metrics.stage("pages", pagesAt - started);
  metrics.stage("state", stateAt - pagesAt);
  metrics.stage("encode", capturedAt - stateAt);
  // Work that must see this boundary (consistency checks): it may add messages to follow the sync.
  const after = checks.runTasks(seq);
  Object.assign(sync, { capturedAt, encoded, pauseMs: capturedAt - started, after });
  metrics.pause.add(sync.pauseMs);
  metrics.memoryPagesRawBytes += pages.indices.length * PAGE_SIZE;
  metrics.inlineWrites += encoded.inlineWrites;
  metrics.pageEncodings.zero += encoded.zeroPages;
  metrics.pageEncodings.runs += encoded.deltaPages;
  metrics.pageEncodings.full += encoded.fullPages;
  metrics.readReplayedPages += encoded.readReplayedPages;
  // Speculative writes held because too many waited unlogged complete now: the capture that logs them is in flight.
  core.outputs.captured(seq);
  // Held output (or a full window) waits for an ack: take it as soon as it arrives, not at the
  // end of a slice. A speculative guest with nothing held runs its slices out.
  if (core.outputs.size > 0 || session.inFlightCount >= options.syncWindow) guest.eagerYield(true);
  return sync;
}

function diskNumber(core: PrimaryCore, name: string): number {
  const index = core.guest.disks.findIndex((disk) => disk.name === name);
  if (index < 0) throw new Error(`block request for unknown disk ${name}`);
  return index;
}
