// A new secondary's full copy (sync 0): RAM and device state from one instruction boundary,
// the disks (except those the secondary proves by digest it already holds), then init-end.
// The guest stops only for the capture and runs on while the copy travels: its writes after
// the capture are held and travel as the syncs that follow. Requests taken before the
// capture are covered by the copy (the disks are read after their backend I/O), so they
// complete with the init-ack.
import { PAGE_SIZE } from "../protocol/limits.ts";
import { isAllZero, pageSetFrames } from "../protocol/page-collect.ts";
import { copyDisk, diskDigest } from "./disk-image.ts";
import type { PrimaryGuest } from "./guest.ts";
import type { PrimarySession } from "./primary-session.ts";
import type { DiskMode, HeldRequest } from "./sync-encoder.ts";

export interface InitialSyncInput {
  guest: PrimaryGuest;
  session: PrimarySession;
  epoch: number;
  mode: DiskMode;
  /** How long to wait for the secondary's digests of its own disks. */
  digestWaitMs: number;
  /** At the capture's boundary: takes the requests the copy covers. */
  takeCovered(): HeldRequest[];
  /** Registers the capture (seq 0) as in flight with the requests it covers. */
  onCaptured(requests: HeldRequest[], capturedAt: number): void;
}

/** Sends everything up to init-end; rejects when the link fails. The caller waits for init-ack. */
export async function sendInitialSync(input: InitialSyncInput): Promise<void> {
  const { guest, session, epoch } = input;
  const peerDigests = new Map(await session.peerDigests(guest.disks.length, input.digestWaitMs));
  if (session.ended) return;
  const { pages, state } = await guest.atNextBoundary(() => {
    const capture = guest.captureFull();
    input.onCaptured(input.takeCovered(), performance.now());
    return capture;
  });
  // The copy must hold what the covered requests wrote: wait until the disks did it.
  await Promise.all(guest.disks.map((disk) => disk.idle()));
  const ownDigests = await Promise.all(guest.disks.map((disk) => diskDigest(disk.backend)));
  const disks = guest.disks.map((disk, id) => ({
    id,
    name: disk.name,
    sizeBytes: disk.backend.sizeBytes,
    ...(peerDigests.get(id) === ownDigests[id] ? { sha256: ownDigests[id]! } : {}),
  }));
  await session.sendControl({
    type: "init-begin",
    seq: 0,
    epoch,
    memoryBytes: guest.memoryBytes,
    pageSize: PAGE_SIZE,
    diskMode: input.mode === "logging-replay" ? "io-log" : "dirty-block-copy",
    disks,
  });
  for (const frame of pageSetFrames(pages, 0, epoch)) {
    await session.sendFrame(frame, "memoryPages", { compress: true });
    await session.channel.whenDrained();
  }
  await session.sendFrame({ kind: "state-parts", seq: 0, epoch, parts: state }, "deviceState", { compress: true });
  for (const [id, disk] of guest.disks.entries()) {
    if (disks[id]!.sha256 !== undefined) continue;
    // The guest writes on while the disk is read: the digest covers what was sent, and
    // every write after the capture is replayed on top by the syncs that follow.
    const sent = await copyDisk(disk.backend, async (offset, data) => {
      await session.sendFrame({ kind: "disk-chunk", seq: 0, epoch, disk: id, offset, length: data.length, data: isAllZero(data) ? "zeros" : data }, "diskCopy", { compress: true });
      await session.channel.whenDrained();
    });
    await session.sendControl({ type: "disk-digest", seq: 0, epoch, disk: id, sha256: sent });
  }
  await session.sendControl({ type: "init-end", seq: 0, epoch, pageCount: pages.indices.length, stateParts: state.length });
}
