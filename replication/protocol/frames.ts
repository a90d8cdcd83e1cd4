// The binary frame kinds: their decoded shapes, and each kind's facts defined once (its code,
// the size of its kind header, what its bytes count as on the wire, the encoded size of an I/O
// log). Encoding and decoding are frame-codec.ts; the rules both check, frame-rules.ts.
// Layouts are tabled in PROTOCOL.md.
import { FrameKind, type FrameKindCode } from "./frame-header.ts";

interface FrameBase {
  seq: number;
  epoch: number;
}

/** Initial sync: guest pages; all-zero pages travel as indices only. */
export interface MemoryPagesFrame extends FrameBase {
  kind: "memory-pages";
  /** Strictly increasing indices of the pages in `data`. */
  indices: Uint32Array;
  /** indices.length × PAGE_SIZE bytes. */
  data: Uint8Array;
  /** Strictly increasing indices of pages that are all zero, disjoint from `indices`. */
  zeroIndices: Uint32Array;
}

/** Initial sync: the whole device state as its parts (emulator/state/state-parts.ts). */
export interface StatePartsFrame extends FrameBase {
  kind: "state-parts";
  parts: Uint8Array[];
}

/** dirty-block-copy writes, and io-log writes marked `inline`: the data of one write (or a piece). */
export interface DiskBlocksFrame extends FrameBase {
  kind: "disk-blocks";
  disk: number;
  sector: number;
  /** A whole number of sectors. */
  data: Uint8Array;
}

/** Initial sync: one piece of a disk image, in order. */
export interface DiskChunkFrame extends FrameBase {
  kind: "disk-chunk";
  disk: number;
  offset: number;
  length: number;
  /** The chunk's bytes, or "zeros" when the chunk is all zero and none were sent. */
  data: Uint8Array | "zeros";
}

/** How one page travels in a sync: all zeros, whole, or as a run delta against the copy the secondary holds. */
export type PageEncoding = "zero" | "full" | "runs";

export interface PageUpdate {
  page: number;
  encoding: PageEncoding;
  /** zero: empty; full: PAGE_SIZE bytes; runs: a run delta (protocol/run-delta.ts) over PAGE_SIZE bytes. */
  bytes: Uint8Array;
}

/** Sync N: changed guest pages, strictly increasing page numbers. */
export interface PageUpdatesFrame extends FrameBase {
  kind: "page-updates";
  updates: PageUpdate[];
}

export interface PartChange {
  index: number;
  encoding: "full" | "runs";
  /** The part's length after the change. */
  length: number;
  /** full: `length` bytes; runs: a run delta against the part as of sync N-1. */
  bytes: Uint8Array;
}

/** Sync N: the device-state parts that changed, strictly increasing indices below partCount. */
export interface StateChangesFrame extends FrameBase {
  kind: "state-changes";
  /** How many parts the state has after sync N (parts at or past it are dropped). */
  partCount: number;
  changes: PartChange[];
}

export interface GuestSegment {
  /** Guest-physical address of a request's buffer. */
  gpa: number;
  length: number;
}

/**
 * A disk write to replay: from the secondary's replica memory at `segments`, or, when
 * `inline` (dirty-block-copy mode, or a write whose buffer the guest changed before the
 * capture), from the sync's disk-blocks frames, in order; an inline write has no segments.
 */
export interface IoLogWrite {
  type: "write";
  disk: number;
  sector: number;
  sectors: number;
  segments: GuestSegment[];
  inline?: true;
}

/** The guest flushed the disk: the secondary makes what it replayed durable. */
export interface IoLogFlush {
  type: "flush";
  disk: number;
}

/**
 * Read-replay: the guest read these sectors into these pages and changed them no further
 * before the capture, so the pages did not travel: the secondary reads the same sectors
 * from its own disk into its replica's memory, at this point of the log.
 */
export interface IoLogRead {
  type: "read";
  disk: number;
  sector: number;
  sectors: number;
  segments: GuestSegment[];
}

export type IoLogEntry = IoLogWrite | IoLogFlush | IoLogRead;

/** What the guest let out: bytes on its console, or an Ethernet frame. */
export type CarriedOutputKind = "console" | "frame";

export interface CarriedOutput {
  kind: CarriedOutputKind;
  bytes: Uint8Array;
}

/**
 * Held output, numbered in the session from `first` in the order the guest produced it;
 * `released`: how many numbered outputs the primary has let out, so the secondary forgets those.
 */
export interface HeldOutputBatch {
  first: number;
  released: number;
  outputs: CarriedOutput[];
}

/**
 * Sync N: the console bytes and Ethernet frames that capture N covers, which the primary
 * holds until sync N is acknowledged (output commit). The secondary holds them too, so that
 * a takeover lets out what the primary had not yet: what the guest produced before the
 * state the survivor resumes from.
 */
export interface HeldOutputFrame extends FrameBase, HeldOutputBatch {
  kind: "held-output";
}

/**
 * Sync N ends: counts of the frames that came before it (a check that none was lost or
 * added) and the I/O log, in guest submission order.
 */
export interface SyncCommitFrame extends FrameBase {
  kind: "sync-commit";
  pageUpdates: number;
  stateChanges: number;
  blockFrames: number;
  /** held-output frames in the sync (0 when it covers no output and nothing more was released). */
  outputFrames: number;
  log: IoLogEntry[];
}

export type BinaryFrame =
  MemoryPagesFrame | StatePartsFrame | DiskBlocksFrame | DiskChunkFrame | PageUpdatesFrame | StateChangesFrame | HeldOutputFrame | SyncCommitFrame;
export type BinaryFrameKind = BinaryFrame["kind"];

export interface EncodeOptions {
  /** Deflate the data section; dropped for this frame when it does not make it smaller. */
  compress?: boolean;
}

/**
 * What a byte on the wire carried, for metrics: guest pages, device state, the I/O log, disk
 * data of syncs (inline or dirty-block-copy), the initial disk copy, the guest's held output
 * (console bytes and frames), and control messages.
 */
export type ByteCategory = "memoryPages" | "deviceState" | "ioLog" | "diskBlocks" | "diskCopy" | "output" | "control";
export const BYTE_CATEGORIES: readonly ByteCategory[] = ["memoryPages", "deviceState", "ioLog", "diskBlocks", "diskCopy", "output", "control"];

/** Each kind once: its code in the header, the size of its kind header, and what its bytes count as. */
export const FRAME_KINDS: { readonly [K in BinaryFrameKind]: { code: FrameKindCode; headerBytes: number; category: ByteCategory } } = {
  "memory-pages": { code: FrameKind.memoryPages, headerBytes: 8, category: "memoryPages" },
  "state-parts": { code: FrameKind.stateParts, headerBytes: 8, category: "deviceState" },
  "disk-blocks": { code: FrameKind.diskBlocks, headerBytes: 16, category: "diskBlocks" },
  "disk-chunk": { code: FrameKind.diskChunk, headerBytes: 16, category: "diskCopy" },
  "page-updates": { code: FrameKind.pageUpdates, headerBytes: 8, category: "memoryPages" },
  "state-changes": { code: FrameKind.stateChanges, headerBytes: 12, category: "deviceState" },
  "held-output": { code: FrameKind.heldOutput, headerBytes: 24, category: "output" },
  "sync-commit": { code: FrameKind.syncCommit, headerBytes: 24, category: "ioLog" },
};

/**
 * The category a frame's bytes count in. In dirty-block-copy mode a sync-commit's log only
 * announces the blocks that travelled: it is part of their cost.
 */
export function byteCategoryOf(frame: BinaryFrame, diskMode: "io-log" | "dirty-block-copy"): ByteCategory {
  return frame.kind === "sync-commit" && diskMode === "dirty-block-copy" ? "diskBlocks" : FRAME_KINDS[frame.kind].category;
}

/** What a decoded frame carries, in bytes, without headers (both sides count the same). */
export function payloadBytes(frame: BinaryFrame): number {
  switch (frame.kind) {
    case "memory-pages":
    case "disk-blocks":
      return frame.data.length;
    case "disk-chunk":
      return frame.data === "zeros" ? 0 : frame.data.length;
    case "state-parts":
      return frame.parts.reduce((n, part) => n + part.length, 0);
    case "page-updates":
      return frame.updates.reduce((n, update) => n + update.bytes.length, 0);
    case "state-changes":
      return frame.changes.reduce((n, change) => n + change.bytes.length, 0);
    case "held-output":
      return frame.outputs.reduce((n, output) => n + output.bytes.length, 0);
    case "sync-commit":
      return ioLogBytes(frame.log);
  }
}

/** Encoded sizes of an I/O log entry and of each of its segments. */
export const IO_ENTRY_BYTES = 20;
export const SEGMENT_BYTES = 12;

/** Bytes of an I/O log as encoded in a sync-commit frame: a fixed entry, and the segments of reads and writes. */
export function ioLogBytes(log: readonly IoLogEntry[]): number {
  return log.reduce((n, entry) => n + IO_ENTRY_BYTES + (entry.type === "flush" ? 0 : entry.segments.length * SEGMENT_BYTES), 0);
}

export const PAGE_ENCODINGS: readonly PageEncoding[] = ["zero", "full", "runs"];
export const PART_ENCODINGS = [undefined, "full", "runs"] as const;
export const IO_TYPES = [undefined, "write", "flush", "read"] as const;
export const OUTPUT_KINDS = [undefined, "console", "frame"] as const;
/** Encoded size of a held output's entry header. */
export const OUTPUT_ENTRY_BYTES = 8;
