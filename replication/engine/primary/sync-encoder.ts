// Turns one capture into the frames of sync N: page updates (a run delta against the copy
// the secondary holds, the whole page when that is not shorter, nothing for a zero page),
// the changed device-state parts, the disk data that must travel (every write in
// dirty-block-copy mode; in logging-replay only writes whose buffer the guest changed
// before the capture), and the sync-commit with the I/O log. With read-replay, pages that
// a disk read filled and nothing changed since do not travel: the log says which sectors
// the secondary reads from its own disk into them. The guest's output that the capture
// covers travels too (held-output), so that a survivor can let out what the primary held.
import { segmentsHold } from "../../../emulator/block/segments.ts";
import type { PageChangeViews } from "../../../emulator/memory/index.ts";
import type { StateChanges } from "../../../emulator/state/state-parts.ts";
import {
  byteCategoryOf,
  OUTPUT_ENTRY_BYTES,
  type BinaryFrame,
  type ByteCategory,
  type CarriedOutput,
  type HeldOutputBatch,
  type IoLogEntry,
  type PageUpdate,
  type PartChange,
} from "../../protocol/frames.ts";
import { MAX_FRAME_BYTES, MAX_OUTPUTS_PER_FRAME, MAX_PAGE_UPDATES_PER_FRAME, MAX_SECTORS_PER_BLOCK_FRAME } from "../../protocol/limits.ts";
import { encodeRunDelta } from "../../protocol/run-delta.ts";
import { bytesEqual } from "../../../emulator/state/bytes-equal.ts";
import { isAllZero } from "../../protocol/page-collect.ts";
import type { CompletedRead, PendingRequest } from "./pending-io.ts";
import type { LoggedIo } from "../sync-event.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../../emulator/units.ts";

export type DiskMode = "logging-replay" | "dirty-block-copy";

export interface OutgoingFrame {
  frame: BinaryFrame;
  category: ByteCategory;
}

export interface EncodedSync {
  frames: OutgoingFrame[];
  /** Pages that changed, and how they travelled. */
  pages: Uint32Array;
  zeroPages: number;
  deltaPages: number;
  fullPages: number;
  /** Pages left out because a logged read fills them on the secondary. */
  readReplayedPages: number;
  io: LoggedIo[];
  inlineWrites: number;
}

export interface SyncInput {
  seq: number;
  epoch: number;
  mode: DiskMode;
  /** Views of the changed pages: encodeSync copies what its frames keep. */
  pages: PageChangeViews;
  state: StateChanges;
  /** Requests to log, in submission order. */
  requests: readonly PendingRequest[];
  /** Reads completed since the last capture that may replace pages (read-replay); [] to send every page. */
  reads: readonly CompletedRead[];
  /** Pages to send whole whether they changed or not (a repair of the replica's RAM), with their bytes now. */
  forcedPages: ReadonlyMap<number, Uint8Array>;
  /** Guest RAM at the capture's boundary: decides which writes must carry their data. */
  ram: Uint8Array;
  diskNumber: (name: string) => number;
  /** The output the capture covers, numbered from `first`, and how many numbered outputs were released; undefined: nothing to tell. */
  output?: HeldOutputBatch;
}

export function encodeSync(input: SyncInput): EncodedSync {
  const { seq, epoch } = input;
  const frames: OutgoingFrame[] = [];
  const { log, blocks, io, inlineWrites, elided } = ioLog(input);
  const pages = pageUpdates(input.pages, elided, input.forcedPages);
  for (const batch of batches(pages.updates)) frames.push({ frame: { kind: "page-updates", seq, epoch, updates: batch }, category: "memoryPages" });
  const changes = partChanges(input.state);
  if (changes.length > 0) {
    frames.push({ frame: { kind: "state-changes", seq, epoch, partCount: input.state.partCount, changes }, category: "deviceState" });
  }
  for (const block of blocks) frames.push({ frame: { kind: "disk-blocks", seq, epoch, ...block }, category: "diskBlocks" });
  let outputFrames = 0;
  if (input.output !== undefined) {
    const { first, released, outputs } = input.output;
    let numbered = first;
    for (const batch of outputBatches(outputs)) {
      frames.push({ frame: { kind: "held-output", seq, epoch, first: numbered, released, outputs: batch }, category: "output" });
      numbered += batch.length;
      outputFrames++;
    }
  }
  const commit: BinaryFrame = {
    kind: "sync-commit",
    seq,
    epoch,
    pageUpdates: pages.updates.length,
    stateChanges: changes.length > 0 ? 1 : 0,
    blockFrames: blocks.length,
    outputFrames,
    log,
  };
  frames.push({ frame: commit, category: byteCategoryOf(commit, wireDiskMode(input.mode)) });
  const sent = elided.size === 0 ? input.pages.indices : input.pages.indices.filter((page) => !elided.has(page));
  return { frames, pages: sent, zeroPages: pages.zero, deltaPages: pages.delta, fullPages: pages.full, readReplayedPages: elided.size, io, inlineWrites };
}

/** Held outputs in frames under the frame limits; at least one frame (an empty one still tells what was released). */
function outputBatches(outputs: readonly CarriedOutput[]): CarriedOutput[][] {
  const limit = MAX_FRAME_BYTES - 4096;
  const batches: CarriedOutput[][] = [[]];
  let bytes = 0;
  for (const output of outputs) {
    const size = OUTPUT_ENTRY_BYTES + output.bytes.length;
    const current = batches.at(-1)!;
    if (current.length > 0 && (current.length >= MAX_OUTPUTS_PER_FRAME || bytes + size > limit)) {
      batches.push([output]);
      bytes = size;
    } else {
      current.push(output);
      bytes += size;
    }
  }
  return batches;
}

/** The disk mode as the wire names it (init-begin). */
export function wireDiskMode(mode: DiskMode): "io-log" | "dirty-block-copy" {
  return mode === "logging-replay" ? "io-log" : "dirty-block-copy";
}

function pageUpdates(
  changes: PageChangeViews,
  elided: ReadonlySet<number>,
  forced: ReadonlyMap<number, Uint8Array>,
): { updates: PageUpdate[]; zero: number; delta: number; full: number } {
  const updates: PageUpdate[] = [];
  let zero = 0;
  let delta = 0;
  let full = 0;
  changes.indices.forEach((page, k) => {
    if (elided.has(page) || forced.has(page)) return;
    const now = changes.now(k);
    if (isAllZero(now)) {
      zero++;
      updates.push({ page, encoding: "zero", bytes: new Uint8Array(0) });
      return;
    }
    const runs = encodeRunDelta(changes.before(k), now, PAGE_SIZE);
    if (runs !== undefined) {
      delta++;
      updates.push({ page, encoding: "runs", bytes: runs });
    } else {
      full++;
      // A copy: the frame is sent after the guest has run on over this page.
      updates.push({ page, encoding: "full", bytes: now.slice() });
    }
  });
  if (forced.size > 0) {
    for (const [page, bytes] of forced) updates.push({ page, encoding: "full", bytes });
    updates.sort((a, b) => a.page - b.page);
    full += forced.size;
  }
  return { updates, zero, delta, full };
}

/** Room a page-updates frame keeps for its headers below MAX_FRAME_BYTES. */
const FRAME_HEADROOM_BYTES = 4096;

/** Splits updates so each frame stays under the entry and byte limits. */
function* batches(updates: PageUpdate[]): Generator<PageUpdate[]> {
  let batch: PageUpdate[] = [];
  let bytes = 0;
  for (const update of updates) {
    const size = 8 + update.bytes.length;
    if (batch.length === MAX_PAGE_UPDATES_PER_FRAME || bytes + size > MAX_FRAME_BYTES - FRAME_HEADROOM_BYTES) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(update);
    bytes += size;
  }
  if (batch.length > 0) yield batch;
}

function partChanges(state: StateChanges): PartChange[] {
  return state.changed.map(({ index, previous, current }) => {
    const runs = previous === undefined ? undefined : encodeRunDelta(previous, current, current.length);
    return runs === undefined
      ? { index, encoding: "full" as const, length: current.length, bytes: current }
      : { index, encoding: "runs" as const, length: current.length, bytes: runs };
  });
}

interface BlockPiece {
  disk: number;
  sector: number;
  data: Uint8Array;
}

function ioLog(input: SyncInput): { log: IoLogEntry[]; blocks: BlockPiece[]; io: LoggedIo[]; inlineWrites: number; elided: Set<number> } {
  const log: IoLogEntry[] = [];
  const blocks: BlockPiece[] = [];
  const io: LoggedIo[] = [];
  let inlineWrites = 0;
  const { replays, elided } = readReplays(input);
  // One log in submission order: reads at their place among writes and flushes.
  const entries: ({ kind: "request"; request: PendingRequest } | { kind: "read"; replay: ReadReplay })[] = [
    ...input.requests.map((request) => ({ kind: "request" as const, request, order: request.order })),
    ...replays.map((replay) => ({ kind: "read" as const, replay, order: replay.order })),
  ].sort((a, b) => a.order - b.order);
  for (const entry of entries) {
    if (entry.kind === "read") {
      const { disk, sector, sectors, segments } = entry.replay;
      log.push({ type: "read", disk, sector, sectors, segments });
      io.push({ disk, type: "read", sector, sectors, segments, delivery: "read-replayed" });
      continue;
    }
    const { event } = entry.request;
    const disk = input.diskNumber(event.disk);
    if (event.type === "flush") {
      log.push({ type: "flush", disk });
      io.push({ disk, type: "flush", sector: 0, sectors: 0, segments: [], delivery: "flush" });
      continue;
    }
    if (event.type !== "write" || event.data === undefined) continue;
    const segments = event.segments.map(({ gpa, length }) => ({ gpa, length }));
    // Replaying from memory stores what memory holds at the capture; if the guest changed the
    // buffer since it submitted the write, that is not what the primary's disk got.
    const inline = input.mode === "dirty-block-copy" || entry.request.forceInline === true || !segmentsHold(input.ram, segments, event.data);
    if (inline) {
      if (input.mode === "logging-replay") inlineWrites++;
      log.push({ type: "write", disk, sector: event.sector, sectors: event.sectors, segments: [], inline: true });
      const step = MAX_SECTORS_PER_BLOCK_FRAME * SECTOR_SIZE;
      for (let at = 0; at < event.data.length; at += step) {
        blocks.push({ disk, sector: event.sector + at / SECTOR_SIZE, data: event.data.subarray(at, at + step) });
      }
    } else {
      log.push({ type: "write", disk, sector: event.sector, sectors: event.sectors, segments });
    }
    io.push({
      disk,
      type: "write",
      sector: event.sector,
      sectors: event.sectors,
      segments,
      delivery: inline ? (input.mode === "dirty-block-copy" ? "block-copy" : "inline") : "replayed",
    });
  }
  return { log, blocks, io, inlineWrites, elided };
}

interface ReadReplay {
  order: number;
  disk: number;
  sector: number;
  sectors: number;
  segments: { gpa: number; length: number }[];
}

/**
 * Which changed pages a completed read explains: whole, page-aligned pieces of the read's
 * data (starting on a sector) that equal the page now. The last read of a page wins. Pages a
 * write of this sync replays from memory are left alone: that write, earlier in the log,
 * must find the page as the capture saw it, not as the read will fill it.
 */
function readReplays(input: SyncInput): { replays: ReadReplay[]; elided: Set<number> } {
  const elided = new Set<number>();
  if (input.reads.length === 0) return { replays: [], elided };
  const changed = new Map<number, number>();
  input.pages.indices.forEach((page, k) => changed.set(page, k));
  const touchedByWrites = new Set<number>();
  for (const { event } of input.requests) {
    if (event.type !== "write") continue;
    for (const { gpa, length } of event.segments) for (let p = Math.floor(gpa / PAGE_SIZE); p * PAGE_SIZE < gpa + length; p++) touchedByWrites.add(p);
  }
  // page -> the read piece that filled it last
  const pieces = new Map<number, { read: CompletedRead; sector: number }>();
  for (const read of input.reads) {
    let offset = 0;
    for (const { gpa, length } of read.event.segments) {
      for (let start = Math.ceil(gpa / PAGE_SIZE) * PAGE_SIZE; start + PAGE_SIZE <= gpa + length; start += PAGE_SIZE) {
        const at = offset + (start - gpa);
        if (at % SECTOR_SIZE === 0) pieces.set(start / PAGE_SIZE, { read, sector: read.event.sector + at / SECTOR_SIZE });
        else pieces.delete(start / PAGE_SIZE);
      }
      offset += length;
    }
  }
  const replays: ReadReplay[] = [];
  for (const [page, { read, sector }] of [...pieces].sort((a, b) => a[1].read.order - b[1].read.order || a[1].sector - b[1].sector)) {
    const k = changed.get(page);
    if (k === undefined || touchedByWrites.has(page)) continue;
    const landed = read.data.subarray((sector - read.event.sector) * SECTOR_SIZE, (sector - read.event.sector) * SECTOR_SIZE + PAGE_SIZE);
    if (!bytesEqual(landed, input.pages.now(k))) continue;
    elided.add(page);
    const disk = input.diskNumber(read.event.disk);
    const last = replays.at(-1);
    // Consecutive pages of one read from consecutive sectors: one entry.
    if (last !== undefined && last.order === read.order && last.disk === disk && last.sector + last.sectors === sector) {
      last.sectors += PAGE_SIZE / SECTOR_SIZE;
      last.segments.push({ gpa: page * PAGE_SIZE, length: PAGE_SIZE });
    } else {
      replays.push({ order: read.order, disk, sector, sectors: PAGE_SIZE / SECTOR_SIZE, segments: [{ gpa: page * PAGE_SIZE, length: PAGE_SIZE }] });
    }
  }
  return { replays, elided };
}
