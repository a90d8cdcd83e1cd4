// A new secondary's full copy (sync 0): RAM copied while the guest runs (pre-copy), the disks
// (except those the secondary proves by digest it already holds), then the pages written
// meanwhile and the device state from one instruction boundary, then init-end. The guest
// never stops for more than one range of the copy: requests it makes after the copy's start
// are held and travel as the syncs that follow. Requests taken before the start are covered
// by the copy (the disks are read after their backend I/O), so they complete with the
// init-ack.
import type { PageSet } from "../../../emulator/memory/index.ts";
import { isAllZero, pageSetFrames } from "../../protocol/page-collect.ts";
import { copyDisk, diskDigest } from "../disk-image.ts";
import type { PrimaryGuest } from "../guest.ts";
import type { PrimarySession } from "./session.ts";
import { nextTurn } from "../next-turn.ts";
import { wireDiskMode, type DiskMode } from "./sync-encoder.ts";
import { PAGE_SIZE } from "../../../emulator/units.ts";

export interface InitialSyncInput {
  guest: PrimaryGuest;
  session: PrimarySession;
  epoch: number;
  mode: DiskMode;
  /** How long to wait for the secondary's digests of its own disks. */
  digestWaitMs: number;
  /** At the copy's start, an instruction boundary: everything the guest did so far is covered by the copy (sync 0). */
  atCopyStart(): void;
  /** At the copy's last boundary: RAM and device state as of here are what the secondary resumes from. */
  atCopyEnd(): void;
}

/** Pages per range of the live copy: ~8 MiB scanned and copied between two slices of the guest. */
const COPY_RANGE_PAGES = 2048;

/** Sends everything up to init-end; rejects when the link fails. The caller waits for init-ack. */
export async function sendInitialSync(input: InitialSyncInput): Promise<void> {
  const { guest, session, epoch } = input;
  const peerDigests = new Map(await session.peerDigests(guest.disks.length, input.digestWaitMs));
  if (session.ended) return;
  // The copy's start: requests taken so far are covered by it; later ones are held and
  // travel in the syncs that follow (the guest runs on while RAM is copied).
  await guest.atNextBoundary(() => {
    guest.beginFullCopy();
    input.atCopyStart();
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
    diskMode: wireDiskMode(input.mode),
    disks,
  });
  let pageCount = 0;
  const sendPages = async (pages: PageSet): Promise<void> => {
    for (const frame of pageSetFrames(pages, 0, epoch)) {
      await session.sendFrame(frame, "memoryPages", { compress: true });
      await session.channel.whenDrained();
    }
    pageCount += pages.indices.length;
  };
  // RAM range by range, the guest running between ranges; then, at one boundary, the pages
  // it wrote meanwhile and the device state: together RAM and state as of that boundary.
  for (let done = false; !done && !session.ended;) {
    const range = await guest.atNextBoundary(() => guest.copyPages(COPY_RANGE_PAGES));
    done = range.done;
    await sendPages(range.pages);
    // The guest (and the heartbeat) run between ranges: a range of zero pages sends nothing,
    // and a loop of microtasks alone held both off for seconds on a 1 GiB guest.
    await nextTurn();
  }
  if (session.ended) return;
  // The disks before the last boundary: the guest's output flows until then (see io-policy's
  // COPYING), and the disk copy is most of the copy's time.
  for (const [id, disk] of guest.disks.entries()) {
    if (disks[id]!.sha256 !== undefined) continue;
    // The guest writes on while the disk is read: the digest covers what was sent, and
    // every write after the copy's start is replayed on top by the syncs that follow.
    const sent = await copyDisk(disk.backend, async (offset, data) => {
      await session.sendFrame(
        { kind: "disk-chunk", seq: 0, epoch, disk: id, offset, length: data.length, data: isAllZero(data) ? "zeros" : data },
        "diskCopy",
        { compress: true },
      );
      await session.channel.whenDrained();
    });
    await session.sendControl({ type: "disk-digest", seq: 0, epoch, disk: id, sha256: sent });
  }
  if (session.ended) return;
  const end = await guest.atNextBoundary(() => {
    input.atCopyEnd();
    return guest.finishFullCopy();
  });
  await sendPages(end.pages);
  await session.sendFrame({ kind: "state-parts", seq: 0, epoch, parts: end.state }, "deviceState", { compress: true });
  await session.sendControl({ type: "init-end", seq: 0, epoch, pageCount, stateParts: end.state.length });
}
