// The binary frame kinds: their decoded shapes, and encode/decode between those shapes and
// bytes. Layouts are tabled in PROTOCOL.md. Decoders check everything a frame can get wrong
// on its own (lengths, order of lists, run deltas against a page); what depends on the
// session (memory and disk sizes, the state a delta applies to) is checked by SessionOrder
// and the secondary's sync assembler.
import { deflate, inflateExact } from "./compression.ts";
import { ProtocolError } from "./errors.ts";
import { FRAME_HEADER_BYTES, FrameFlag, FrameKind, readFrameHeader, writeFrameHeader, type FrameKindCode } from "./frame-header.ts";
import {
  MAX_DEVICE_STATE_BYTES,
  MAX_DISK_BYTES,
  MAX_DISK_CHUNK_BYTES,
  MAX_DISKS,
  MAX_FRAME_BYTES,
  MAX_IO_LOG_ENTRIES,
  MAX_MEMORY_BYTES,
  MAX_PAGE_UPDATES_PER_FRAME,
  MAX_PAGES_PER_FRAME,
  MAX_SECTORS_PER_BLOCK_FRAME,
  MAX_SECTORS_PER_REQUEST,
  MAX_SEGMENTS_PER_ENTRY,
  MAX_STATE_PARTS,
} from "./limits.ts";
import { checkRunDelta } from "./run-delta.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";

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

/**
 * Sync N ends: counts of the frames that came before it (a check that none was lost or
 * added) and the I/O log, in guest submission order.
 */
export interface SyncCommitFrame extends FrameBase {
  kind: "sync-commit";
  pageUpdates: number;
  stateChanges: number;
  blockFrames: number;
  log: IoLogEntry[];
}

export type BinaryFrame = MemoryPagesFrame | StatePartsFrame | DiskBlocksFrame | DiskChunkFrame | PageUpdatesFrame | StateChangesFrame | SyncCommitFrame;
export type BinaryFrameKind = BinaryFrame["kind"];

export interface EncodeOptions {
  /** Deflate the data section; dropped for this frame when it does not make it smaller. */
  compress?: boolean;
}

/**
 * What a byte on the wire carried, for metrics: guest pages, device state, the I/O log, disk
 * data of syncs (inline or dirty-block-copy), the initial disk copy, and control messages.
 */
export type ByteCategory = "memoryPages" | "deviceState" | "ioLog" | "diskBlocks" | "diskCopy" | "control";
export const BYTE_CATEGORIES: readonly ByteCategory[] = ["memoryPages", "deviceState", "ioLog", "diskBlocks", "diskCopy", "control"];

/** Each kind once: its code in the header, the size of its kind header, and what its bytes count as. */
const KINDS: { readonly [K in BinaryFrameKind]: { code: FrameKindCode; headerBytes: number; category: ByteCategory } } = {
  "memory-pages": { code: FrameKind.memoryPages, headerBytes: 8, category: "memoryPages" },
  "state-parts": { code: FrameKind.stateParts, headerBytes: 8, category: "deviceState" },
  "disk-blocks": { code: FrameKind.diskBlocks, headerBytes: 16, category: "diskBlocks" },
  "disk-chunk": { code: FrameKind.diskChunk, headerBytes: 16, category: "diskCopy" },
  "page-updates": { code: FrameKind.pageUpdates, headerBytes: 8, category: "memoryPages" },
  "state-changes": { code: FrameKind.stateChanges, headerBytes: 12, category: "deviceState" },
  "sync-commit": { code: FrameKind.syncCommit, headerBytes: 24, category: "ioLog" },
};

/**
 * The category a frame's bytes count in. In dirty-block-copy mode a sync-commit's log only
 * announces the blocks that travelled: it is part of their cost.
 */
export function byteCategoryOf(frame: BinaryFrame, diskMode: "io-log" | "dirty-block-copy"): ByteCategory {
  return frame.kind === "sync-commit" && diskMode === "dirty-block-copy" ? "diskBlocks" : KINDS[frame.kind].category;
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
    case "sync-commit":
      return ioLogBytes(frame.log);
  }
}

const SEGMENT_BYTES = 12;
const IO_ENTRY_BYTES = 20;

/** Bytes of an I/O log as encoded in a sync-commit frame: a fixed entry, and the segments of reads and writes. */
export function ioLogBytes(log: readonly IoLogEntry[]): number {
  return log.reduce((n, entry) => n + IO_ENTRY_BYTES + (entry.type === "flush" ? 0 : entry.segments.length * SEGMENT_BYTES), 0);
}

const PAGE_ENCODINGS: readonly PageEncoding[] = ["zero", "full", "runs"];
const PART_ENCODINGS = [undefined, "full", "runs"] as const;
const IO_TYPES = [undefined, "write", "flush", "read"] as const;
// ---------------------------------------------------------------- encoding

export async function encodeFrame(frame: BinaryFrame, options: EncodeOptions = {}): Promise<Uint8Array> {
  const { kindHeader, prefix, data: raw } = layout(frame);
  let data = raw;
  let flags = frame.kind === "disk-chunk" && frame.data === "zeros" ? FrameFlag.zeroChunk : 0;
  if (options.compress === true && raw.length > 0) {
    const deflated = await deflate(raw);
    if (deflated.length < raw.length) {
      data = deflated;
      flags |= FrameFlag.compressed;
    }
  }
  const total = FRAME_HEADER_BYTES + kindHeader.length + prefix.length + data.length;
  if (total > MAX_FRAME_BYTES) throw new ProtocolError("oversized", `${frame.kind} frame would be ${total} bytes, limit ${MAX_FRAME_BYTES}`);
  const out = new Uint8Array(total);
  writeFrameHeader(new DataView(out.buffer), {
    kind: KINDS[frame.kind].code,
    flags,
    seq: frame.seq,
    epoch: frame.epoch,
    bodyLength: total - FRAME_HEADER_BYTES,
  });
  out.set(kindHeader, FRAME_HEADER_BYTES);
  out.set(prefix, FRAME_HEADER_BYTES + kindHeader.length);
  out.set(data, total - data.length);
  return out;
}

/** A frame as its kind header, an uncompressed prefix and the (compressible) data section. */
function layout(frame: BinaryFrame): { kindHeader: Uint8Array; prefix: Uint8Array; data: Uint8Array } {
  checkEncodable(frame);
  const kindHeader = new Uint8Array(KINDS[frame.kind].headerBytes);
  const head = new DataView(kindHeader.buffer);
  const empty = new Uint8Array(0);
  switch (frame.kind) {
    case "memory-pages": {
      head.setUint32(0, frame.indices.length, true);
      head.setUint32(4, frame.zeroIndices.length, true);
      const prefix = new Uint8Array((frame.indices.length + frame.zeroIndices.length) * 4);
      const view = new DataView(prefix.buffer);
      [...frame.indices, ...frame.zeroIndices].forEach((index, i) => view.setUint32(i * 4, index, true));
      return { kindHeader, prefix, data: frame.data };
    }
    case "state-parts": {
      const writer = new ByteWriter(4 * frame.parts.length + frame.parts.reduce((n, p) => n + p.length, 0));
      for (const part of frame.parts) writer.u32(part.length);
      for (const part of frame.parts) writer.bytes(part);
      head.setUint32(0, frame.parts.length, true);
      head.setUint32(4, writer.length, true);
      return { kindHeader, prefix: empty, data: writer.finish() };
    }
    case "disk-blocks":
      head.setUint16(0, frame.disk, true);
      head.setUint32(4, frame.data.length / SECTOR_SIZE, true);
      head.setBigUint64(8, BigInt(frame.sector), true);
      return { kindHeader, prefix: empty, data: frame.data };
    case "disk-chunk":
      head.setUint16(0, frame.disk, true);
      head.setUint32(4, frame.length, true);
      head.setBigUint64(8, BigInt(frame.offset), true);
      return { kindHeader, prefix: empty, data: frame.data === "zeros" ? empty : frame.data };
    case "page-updates": {
      const writer = new ByteWriter(frame.updates.reduce((n, u) => n + 8 + u.bytes.length, 0));
      for (const update of frame.updates) {
        writer.u32(update.page);
        writer.u8(PAGE_ENCODINGS.indexOf(update.encoding));
        writer.u8(0);
        writer.u16(update.bytes.length);
        writer.bytes(update.bytes);
      }
      head.setUint32(0, frame.updates.length, true);
      head.setUint32(4, writer.length, true);
      return { kindHeader, prefix: empty, data: writer.finish() };
    }
    case "state-changes": {
      const writer = new ByteWriter(frame.changes.reduce((n, c) => n + 16 + c.bytes.length, 0));
      for (const change of frame.changes) {
        writer.u32(change.index);
        writer.u8(PART_ENCODINGS.indexOf(change.encoding));
        writer.u8(0);
        writer.u16(0);
        writer.u32(change.length);
        writer.u32(change.bytes.length);
        writer.bytes(change.bytes);
      }
      head.setUint32(0, frame.partCount, true);
      head.setUint32(4, frame.changes.length, true);
      head.setUint32(8, writer.length, true);
      return { kindHeader, prefix: empty, data: writer.finish() };
    }
    case "sync-commit": {
      const writer = new ByteWriter(ioLogBytes(frame.log));
      for (const entry of frame.log) {
        writer.u8(IO_TYPES.indexOf(entry.type));
        writer.u8(entry.type === "write" && entry.inline === true ? 1 : 0);
        writer.u16(entry.disk);
        const segments = entry.type === "flush" ? [] : entry.segments;
        writer.u32(entry.type === "flush" ? 0 : entry.sectors);
        writer.u64(entry.type === "flush" ? 0 : entry.sector);
        writer.u32(segments.length);
        for (const segment of segments) {
          writer.u64(segment.gpa);
          writer.u32(segment.length);
        }
      }
      head.setUint32(0, frame.pageUpdates, true);
      head.setUint32(4, frame.stateChanges, true);
      head.setUint32(8, frame.blockFrames, true);
      head.setUint32(12, frame.log.length, true);
      head.setUint32(16, writer.length, true);
      return { kindHeader, prefix: empty, data: writer.finish() };
    }
  }
}

/** The encoder applies the decoder's rules too, so a frame we send is one we would accept. */
function checkEncodable(frame: BinaryFrame): void {
  const fail = (why: string): never => {
    throw new ProtocolError("malformed", `cannot encode ${frame.kind} frame: ${why}`);
  };
  if (!Number.isSafeInteger(frame.seq) || frame.seq < 0) fail(`seq ${frame.seq}`);
  if (!Number.isInteger(frame.epoch) || frame.epoch < 0 || frame.epoch > 0xffff_ffff) fail(`epoch ${frame.epoch}`);
  switch (frame.kind) {
    case "memory-pages":
      if (frame.data.length !== frame.indices.length * PAGE_SIZE) fail("data is not indices.length pages");
      checkPageIndices(frame.indices, frame.zeroIndices);
      break;
    case "state-parts":
      checkParts(
        frame.parts.length,
        frame.parts.reduce((n, p) => n + p.length, 0),
      );
      break;
    case "disk-blocks":
      checkBlockExtent(frame.disk, frame.sector, frame.data.length);
      break;
    case "disk-chunk":
      checkChunkExtent(frame.disk, frame.offset, frame.length);
      if (frame.data !== "zeros" && frame.data.length !== frame.length) fail("data length differs from length");
      break;
    case "page-updates":
      checkPageUpdates(frame.updates);
      break;
    case "state-changes":
      checkStateChanges(frame.partCount, frame.changes);
      break;
    case "sync-commit":
      checkIoLog(frame.log);
      break;
  }
}

// ---------------------------------------------------------------- decoding

/** Decodes one binary frame; throws only ProtocolError. */
export async function decodeFrame(bytes: Uint8Array): Promise<BinaryFrame> {
  const header = readFrameHeader(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const base = { seq: header.seq, epoch: header.epoch };
  const k = FRAME_HEADER_BYTES;
  const kindName = (Object.keys(KINDS) as BinaryFrameKind[]).find((name) => KINDS[name].code === header.kind)!;
  if (header.bodyLength < KINDS[kindName].headerBytes) {
    throw new ProtocolError("truncated", `${kindName} frame body too short for its ${KINDS[kindName].headerBytes}-byte kind header`);
  }
  const compressed = (header.flags & FrameFlag.compressed) !== 0;
  if ((header.flags & FrameFlag.zeroChunk) !== 0 && header.kind !== FrameKind.diskChunk) {
    throw new ProtocolError("malformed", "zero-chunk flag on a frame that is not a disk chunk");
  }
  const section = bytes.subarray(k + KINDS[kindName].headerBytes);
  const u32 = (at: number) => view.getUint32(k + at, true);

  switch (header.kind) {
    case FrameKind.memoryPages: {
      const dataPages = u32(0);
      const zeroPages = u32(4);
      if (dataPages + zeroPages > MAX_PAGES_PER_FRAME) {
        throw new ProtocolError("oversized", `memory frame of ${dataPages + zeroPages} pages, limit ${MAX_PAGES_PER_FRAME}`);
      }
      const indicesEnd = k + 8 + (dataPages + zeroPages) * 4;
      if (indicesEnd > bytes.length) throw new ProtocolError("truncated", "memory frame ends inside its page index list");
      const indices = readU32List(view, k + 8, dataPages);
      const zeroIndices = readU32List(view, k + 8 + dataPages * 4, zeroPages);
      checkPageIndices(indices, zeroIndices);
      const data = await dataOf(bytes.subarray(indicesEnd), compressed, dataPages * PAGE_SIZE, "memory frame");
      return { kind: "memory-pages", ...base, indices, data, zeroIndices };
    }
    case FrameKind.stateParts: {
      const count = u32(0);
      const dataBytes = u32(4);
      if (count > MAX_STATE_PARTS) throw new ProtocolError("oversized", `${count} state parts, limit ${MAX_STATE_PARTS}`);
      if (dataBytes > MAX_DEVICE_STATE_BYTES + 4 * count)
        throw new ProtocolError("oversized", `device state of ${dataBytes} bytes, limit ${MAX_DEVICE_STATE_BYTES}`);
      const reader = new ByteReader(await dataOf(section, compressed, dataBytes, "state-parts frame"), "state-parts frame");
      const lengths = Array.from({ length: count }, () => reader.u32());
      const parts = lengths.map((length) => reader.bytes(length));
      reader.end();
      return { kind: "state-parts", ...base, parts };
    }
    case FrameKind.diskBlocks: {
      const { disk, count: sectors, position: sector } = readExtentHeader(view, k);
      checkBlockExtent(disk, sector, sectors * SECTOR_SIZE);
      const data = await dataOf(section, compressed, sectors * SECTOR_SIZE, "disk-blocks frame");
      return { kind: "disk-blocks", ...base, disk, sector, data };
    }
    case FrameKind.diskChunk: {
      const { disk, count: length, position: offset } = readExtentHeader(view, k);
      checkChunkExtent(disk, offset, length);
      if ((header.flags & FrameFlag.zeroChunk) !== 0) {
        if (header.bodyLength !== 16 || compressed) throw new ProtocolError("malformed", "zero chunk carries data or a compressed flag");
        return { kind: "disk-chunk", ...base, disk, offset, length, data: "zeros" };
      }
      const data = await dataOf(section, compressed, length, "disk-chunk frame");
      return { kind: "disk-chunk", ...base, disk, offset, length, data };
    }
    case FrameKind.pageUpdates: {
      const count = u32(0);
      if (count > MAX_PAGE_UPDATES_PER_FRAME) throw new ProtocolError("oversized", `${count} page updates in a frame, limit ${MAX_PAGE_UPDATES_PER_FRAME}`);
      const reader = new ByteReader(await dataOf(section, compressed, u32(4), "page-updates frame"), "page-updates frame");
      const updates: PageUpdate[] = [];
      for (let i = 0; i < count; i++) {
        const page = reader.u32();
        const encoding = PAGE_ENCODINGS[reader.u8()];
        if (encoding === undefined || reader.u8() !== 0) throw new ProtocolError("malformed", `page update ${i}: unknown encoding or reserved byte set`);
        updates.push({ page, encoding, bytes: reader.bytes(reader.u16()) });
      }
      reader.end();
      checkPageUpdates(updates);
      return { kind: "page-updates", ...base, updates };
    }
    case FrameKind.stateChanges: {
      const partCount = u32(0);
      const count = u32(4);
      if (count > partCount) throw new ProtocolError("inconsistent", `${count} changed parts of a ${partCount}-part state`);
      const reader = new ByteReader(await dataOf(section, compressed, u32(8), "state-changes frame"), "state-changes frame");
      const changes: PartChange[] = [];
      for (let i = 0; i < count; i++) {
        const index = reader.u32();
        const encoding = PART_ENCODINGS[reader.u8()];
        if (encoding === undefined || reader.u8() !== 0 || reader.u16() !== 0)
          throw new ProtocolError("malformed", `state change ${i}: unknown encoding or reserved bytes set`);
        const length = reader.u32();
        changes.push({ index, encoding, length, bytes: reader.bytes(reader.u32()) });
      }
      reader.end();
      checkStateChanges(partCount, changes);
      return { kind: "state-changes", ...base, partCount, changes };
    }
    case FrameKind.syncCommit: {
      const entries = u32(12);
      if (entries > MAX_IO_LOG_ENTRIES) throw new ProtocolError("oversized", `${entries} I/O log entries, limit ${MAX_IO_LOG_ENTRIES}`);
      if (u32(20) !== 0) throw new ProtocolError("malformed", "sync-commit reserved bytes are not zero");
      const reader = new ByteReader(await dataOf(section, compressed, u32(16), "sync-commit frame"), "sync-commit frame");
      const log: IoLogEntry[] = [];
      for (let i = 0; i < entries; i++) log.push(readIoEntry(reader, i));
      reader.end();
      checkIoLog(log);
      return { kind: "sync-commit", ...base, pageUpdates: u32(0), stateChanges: u32(4), blockFrames: u32(8), log };
    }
  }
  throw new ProtocolError("unknown-kind", `frame kind ${String(header.kind)}`);
}

function readIoEntry(reader: ByteReader, index: number): IoLogEntry {
  const type = IO_TYPES[reader.u8()];
  const flags = reader.u8();
  const disk = reader.u16();
  const sectors = reader.u32();
  const sector = reader.u64();
  const segmentCount = reader.u32();
  if (type === undefined) throw new ProtocolError("malformed", `I/O log entry ${index}: unknown type`);
  if (segmentCount > MAX_SEGMENTS_PER_ENTRY)
    throw new ProtocolError("oversized", `I/O log entry ${index}: ${segmentCount} segments, limit ${MAX_SEGMENTS_PER_ENTRY}`);
  const segments = Array.from({ length: segmentCount }, () => ({ gpa: reader.u64(), length: reader.u32() }));
  if (type === "flush") {
    if (flags !== 0 || sectors !== 0 || sector !== 0 || segmentCount !== 0)
      throw new ProtocolError("malformed", `I/O log entry ${index}: a flush with an extent or flags`);
    return { type, disk };
  }
  if ((flags & ~1) !== 0 || (type === "read" && flags !== 0)) throw new ProtocolError("malformed", `I/O log entry ${index}: unknown flags ${flags}`);
  if (type === "read") return { type, disk, sector, sectors, segments };
  return { type, disk, sector, sectors, segments, ...(flags === 1 ? { inline: true as const } : {}) };
}

function readExtentHeader(view: DataView, at: number): { disk: number; count: number; position: number } {
  if (view.getUint16(at + 2, true) !== 0) throw new ProtocolError("malformed", "reserved bytes of a disk frame are not zero");
  const position = view.getBigUint64(at + 8, true);
  if (position > BigInt(MAX_DISK_BYTES)) throw new ProtocolError("malformed", `disk position ${position} beyond the largest disk`);
  return { disk: view.getUint16(at, true), count: view.getUint32(at + 4, true), position: Number(position) };
}

async function dataOf(section: Uint8Array, compressed: boolean, expectedLength: number, what: string): Promise<Uint8Array> {
  if (expectedLength > MAX_FRAME_BYTES) throw new ProtocolError("oversized", `${what}: declares ${expectedLength} data bytes, limit ${MAX_FRAME_BYTES}`);
  if (compressed) return inflateExact(section, expectedLength, what);
  if (section.length !== expectedLength) {
    throw new ProtocolError(
      section.length < expectedLength ? "truncated" : "inconsistent",
      `${what}: ${section.length} data bytes, expected ${expectedLength}`,
    );
  }
  return section.slice(); // own copy: the receive buffer may be reused by the transport
}

function readU32List(view: DataView, at: number, count: number): Uint32Array {
  const list = new Uint32Array(count);
  for (let i = 0; i < count; i++) list[i] = view.getUint32(at + i * 4, true);
  return list;
}

// ---------------------------------------------------------------- shared rules

function checkPageIndices(indices: Uint32Array, zeroIndices: Uint32Array): void {
  if (indices.length + zeroIndices.length > MAX_PAGES_PER_FRAME) {
    throw new ProtocolError("oversized", `memory frame of ${indices.length + zeroIndices.length} pages, limit ${MAX_PAGES_PER_FRAME}`);
  }
  for (const list of [indices, zeroIndices]) {
    for (let i = 1; i < list.length; i++) {
      if (list[i]! <= list[i - 1]!) throw new ProtocolError("malformed", "page indices are not strictly increasing");
    }
  }
  // Both lists are sorted, so one merge pass finds a page that is in both.
  let a = 0;
  let b = 0;
  while (a < indices.length && b < zeroIndices.length) {
    if (indices[a] === zeroIndices[b]) throw new ProtocolError("malformed", `page ${indices[a]} is both a data page and a zero page`);
    if (indices[a]! < zeroIndices[b]!) a++;
    else b++;
  }
}

function checkPageUpdates(updates: readonly PageUpdate[]): void {
  if (updates.length > MAX_PAGE_UPDATES_PER_FRAME)
    throw new ProtocolError("oversized", `${updates.length} page updates in a frame, limit ${MAX_PAGE_UPDATES_PER_FRAME}`);
  let last = -1;
  for (const { page, encoding, bytes } of updates) {
    if (page <= last) throw new ProtocolError("malformed", "page updates are not in strictly increasing page order");
    if (page >= MAX_MEMORY_BYTES / PAGE_SIZE) throw new ProtocolError("malformed", `page ${page} is beyond the largest memory`);
    last = page;
    const expected = encoding === "zero" ? 0 : encoding === "full" ? PAGE_SIZE : undefined;
    if (expected !== undefined && bytes.length !== expected) throw new ProtocolError("malformed", `page ${page}: ${encoding} update of ${bytes.length} bytes`);
    if (encoding === "runs") checkRunDelta(bytes, PAGE_SIZE, PAGE_SIZE, `page ${page} delta`);
  }
}

function checkStateChanges(partCount: number, changes: readonly PartChange[]): void {
  if (partCount > MAX_STATE_PARTS) throw new ProtocolError("oversized", `${partCount} state parts, limit ${MAX_STATE_PARTS}`);
  let last = -1;
  let total = 0;
  for (const { index, encoding, length, bytes } of changes) {
    if (index <= last || index >= partCount) throw new ProtocolError("malformed", `state change for part ${index}: not increasing or not below ${partCount}`);
    last = index;
    total += length;
    if (encoding === "full" && bytes.length !== length)
      throw new ProtocolError("malformed", `part ${index}: full change of ${bytes.length} bytes for length ${length}`);
  }
  if (total > MAX_DEVICE_STATE_BYTES) throw new ProtocolError("oversized", `state changes of ${total} bytes, limit ${MAX_DEVICE_STATE_BYTES}`);
}

function checkParts(count: number, bytes: number): void {
  if (count > MAX_STATE_PARTS) throw new ProtocolError("oversized", `${count} state parts, limit ${MAX_STATE_PARTS}`);
  if (bytes > MAX_DEVICE_STATE_BYTES) throw new ProtocolError("oversized", `device state of ${bytes} bytes, limit ${MAX_DEVICE_STATE_BYTES}`);
}

function checkIoLog(log: readonly IoLogEntry[]): void {
  if (log.length > MAX_IO_LOG_ENTRIES) throw new ProtocolError("oversized", `${log.length} I/O log entries, limit ${MAX_IO_LOG_ENTRIES}`);
  log.forEach((entry, index) => {
    if (entry.disk >= MAX_DISKS) throw new ProtocolError("malformed", `I/O log entry ${index}: disk ${entry.disk}, limit ${MAX_DISKS - 1}`);
    if (entry.type === "flush") return;
    if (entry.sectors < 1 || entry.sectors > MAX_SECTORS_PER_REQUEST) throw new ProtocolError("malformed", `I/O log entry ${index}: ${entry.sectors} sectors`);
    if (!Number.isSafeInteger(entry.sector) || (entry.sector + entry.sectors) * SECTOR_SIZE > MAX_DISK_BYTES) {
      throw new ProtocolError("malformed", `I/O log entry ${index}: sector ${entry.sector} is beyond the largest disk`);
    }
    if (entry.type === "write" && entry.inline === true) {
      if (entry.segments.length !== 0) throw new ProtocolError("malformed", `I/O log entry ${index}: an inline write with segments`);
      return;
    }
    if (entry.segments.length < 1 || entry.segments.length > MAX_SEGMENTS_PER_ENTRY)
      throw new ProtocolError("malformed", `I/O log entry ${index}: ${entry.segments.length} segments`);
    let bytes = 0;
    for (const { gpa, length } of entry.segments) {
      if (length < 1 || gpa + length > MAX_MEMORY_BYTES) throw new ProtocolError("malformed", `I/O log entry ${index}: segment ${gpa}+${length}`);
      bytes += length;
    }
    if (bytes !== entry.sectors * SECTOR_SIZE) {
      throw new ProtocolError(
        "inconsistent",
        `I/O log entry ${index}: segments hold ${bytes} bytes, ${entry.sectors} sectors need ${entry.sectors * SECTOR_SIZE}`,
      );
    }
  });
}

function checkBlockExtent(disk: number, sector: number, byteLength: number): void {
  if (disk >= MAX_DISKS) throw new ProtocolError("malformed", `disk ${disk}, limit ${MAX_DISKS - 1}`);
  if (byteLength === 0 || byteLength % SECTOR_SIZE !== 0) throw new ProtocolError("malformed", `block data of ${byteLength} bytes is not whole sectors`);
  if (byteLength / SECTOR_SIZE > MAX_SECTORS_PER_BLOCK_FRAME) {
    throw new ProtocolError("oversized", `${byteLength / SECTOR_SIZE} sectors in a block frame, limit ${MAX_SECTORS_PER_BLOCK_FRAME}`);
  }
  if (!Number.isSafeInteger(sector) || sector < 0 || (sector + byteLength / SECTOR_SIZE) * SECTOR_SIZE > MAX_DISK_BYTES) {
    throw new ProtocolError("malformed", `sector ${sector} is beyond the largest disk`);
  }
}

function checkChunkExtent(disk: number, offset: number, length: number): void {
  if (disk >= MAX_DISKS) throw new ProtocolError("malformed", `disk ${disk}, limit ${MAX_DISKS - 1}`);
  if (length === 0) throw new ProtocolError("malformed", "empty disk chunk");
  if (length > MAX_DISK_CHUNK_BYTES) throw new ProtocolError("oversized", `disk chunk of ${length} bytes, limit ${MAX_DISK_CHUNK_BYTES}`);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > MAX_DISK_BYTES) {
    throw new ProtocolError("malformed", `disk chunk at ${offset} is beyond the largest disk`);
  }
}

// ---------------------------------------------------------------- byte helpers

class ByteWriter {
  readonly #out: Uint8Array;
  readonly #view: DataView;
  length = 0;

  constructor(size: number) {
    this.#out = new Uint8Array(size);
    this.#view = new DataView(this.#out.buffer);
  }

  u8(value: number): void {
    this.#view.setUint8(this.length, value);
    this.length += 1;
  }

  u16(value: number): void {
    this.#view.setUint16(this.length, value, true);
    this.length += 2;
  }

  u32(value: number): void {
    this.#view.setUint32(this.length, value, true);
    this.length += 4;
  }

  u64(value: number): void {
    this.#view.setBigUint64(this.length, BigInt(value), true);
    this.length += 8;
  }

  bytes(data: Uint8Array): void {
    this.#out.set(data, this.length);
    this.length += data.length;
  }

  finish(): Uint8Array {
    return this.#out.subarray(0, this.length);
  }
}

class ByteReader {
  readonly #view: DataView;
  #at = 0;

  constructor(
    private readonly data: Uint8Array,
    private readonly what: string,
  ) {
    this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  #need(bytes: number): number {
    if (this.#at + bytes > this.data.length) throw new ProtocolError("truncated", `${this.what} ends inside an entry`);
    const at = this.#at;
    this.#at += bytes;
    return at;
  }

  u8(): number {
    return this.#view.getUint8(this.#need(1));
  }

  u16(): number {
    return this.#view.getUint16(this.#need(2), true);
  }

  u32(): number {
    return this.#view.getUint32(this.#need(4), true);
  }

  u64(): number {
    const value = this.#view.getBigUint64(this.#need(8), true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError("malformed", `${this.what}: a 64-bit value beyond 2^53-1`);
    return Number(value);
  }

  bytes(length: number): Uint8Array {
    const at = this.#need(length);
    return this.data.subarray(at, at + length);
  }

  end(): void {
    if (this.#at !== this.data.length) throw new ProtocolError("inconsistent", `${this.what}: ${this.data.length - this.#at} bytes after its last entry`);
  }
}
