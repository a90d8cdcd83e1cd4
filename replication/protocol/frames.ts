// The four binary frame kinds: their decoded shapes, and encode/decode between
// those shapes and bytes. Layouts are tabled in PROTOCOL.md.
import { deflate, inflateExact } from "./compression.ts";
import { ProtocolError } from "./errors.ts";
import { FRAME_HEADER_BYTES, FrameFlag, FrameKind, readFrameHeader, writeFrameHeader } from "./frame-header.ts";
import {
  MAX_DEVICE_STATE_BYTES,
  MAX_DISK_BYTES,
  MAX_DISK_CHUNK_BYTES,
  MAX_DISKS,
  MAX_FRAME_BYTES,
  MAX_PAGES_PER_FRAME,
  MAX_SECTORS_PER_BLOCK_FRAME,
  PAGE_SIZE,
  SECTOR_SIZE,
} from "./limits.ts";

interface FrameBase {
  seq: number;
  epoch: number;
}

/** Guest pages of one sync; all-zero pages travel as indices only. */
export interface MemoryPagesFrame extends FrameBase {
  kind: "memory-pages";
  /** Strictly increasing indices of the pages in `data`. */
  indices: Uint32Array;
  /** indices.length × PAGE_SIZE bytes. */
  data: Uint8Array;
  /** Strictly increasing indices of pages that are all zero, disjoint from `indices`. */
  zeroIndices: Uint32Array;
}

export interface DeviceStateFrame extends FrameBase {
  kind: "device-state";
  /** full: a whole state (initial sync); delta: changes since the last committed seq. The bytes are the emulator's. */
  mode: "full" | "delta";
  data: Uint8Array;
}

/** dirty-block-copy: the data of one announced block write. */
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

export type BinaryFrame = MemoryPagesFrame | DeviceStateFrame | DiskBlocksFrame | DiskChunkFrame;
export type BinaryFrameKind = BinaryFrame["kind"];

export interface EncodeOptions {
  /** Deflate the data section; dropped for this frame when it does not make it smaller. */
  compress?: boolean;
}

const KIND_HEADER_BYTES = { "memory-pages": 8, "device-state": 8, "disk-blocks": 16, "disk-chunk": 16 } as const;
const STATE_MODES = ["full", "delta"] as const;

// ---------------------------------------------------------------- encoding

export async function encodeFrame(frame: BinaryFrame, options: EncodeOptions = {}): Promise<Uint8Array> {
  checkEncodable(frame);
  const raw = dataSection(frame);
  let data = raw;
  let flags = frame.kind === "disk-chunk" && frame.data === "zeros" ? FrameFlag.zeroChunk : 0;
  if (options.compress === true && raw.length > 0) {
    const deflated = await deflate(raw);
    if (deflated.length < raw.length) {
      data = deflated;
      flags |= FrameFlag.compressed;
    }
  }
  const prefix = frame.kind === "memory-pages" ? (frame.indices.length + frame.zeroIndices.length) * 4 : 0;
  const kindHeaderBytes = KIND_HEADER_BYTES[frame.kind];
  const total = FRAME_HEADER_BYTES + kindHeaderBytes + prefix + data.length;
  if (total > MAX_FRAME_BYTES) throw new ProtocolError("oversized", `${frame.kind} frame would be ${total} bytes, limit ${MAX_FRAME_BYTES}`);

  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  writeFrameHeader(view, { kind: FrameKind[kindKey(frame.kind)], flags, seq: frame.seq, epoch: frame.epoch, bodyLength: total - FRAME_HEADER_BYTES });
  const k = FRAME_HEADER_BYTES;
  switch (frame.kind) {
    case "memory-pages": {
      view.setUint32(k, frame.indices.length, true);
      view.setUint32(k + 4, frame.zeroIndices.length, true);
      let at = k + 8;
      for (const list of [frame.indices, frame.zeroIndices]) {
        for (const index of list) {
          view.setUint32(at, index, true);
          at += 4;
        }
      }
      break;
    }
    case "device-state":
      view.setUint8(k, STATE_MODES.indexOf(frame.mode));
      view.setUint32(k + 4, frame.data.length, true);
      break;
    case "disk-blocks":
      view.setUint16(k, frame.disk, true);
      view.setUint32(k + 4, frame.data.length / SECTOR_SIZE, true);
      view.setBigUint64(k + 8, BigInt(frame.sector), true);
      break;
    case "disk-chunk":
      view.setUint16(k, frame.disk, true);
      view.setUint32(k + 4, frame.length, true);
      view.setBigUint64(k + 8, BigInt(frame.offset), true);
      break;
  }
  out.set(data, total - data.length);
  return out;
}

function kindKey(kind: BinaryFrameKind): keyof typeof FrameKind {
  const keys = { "memory-pages": "memoryPages", "device-state": "deviceState", "disk-blocks": "diskBlocks", "disk-chunk": "diskChunk" } as const;
  return keys[kind];
}

function dataSection(frame: BinaryFrame): Uint8Array {
  if (frame.kind === "disk-chunk" && frame.data === "zeros") return new Uint8Array(0);
  return frame.data as Uint8Array;
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
    case "device-state":
      if (frame.data.length > MAX_DEVICE_STATE_BYTES) fail(`state of ${frame.data.length} bytes`);
      break;
    case "disk-blocks":
      checkBlockExtent(frame.disk, frame.sector, frame.data.length);
      break;
    case "disk-chunk":
      checkChunkExtent(frame.disk, frame.offset, frame.length);
      if (frame.data !== "zeros" && frame.data.length !== frame.length) fail("data length differs from length");
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
  const need = (kindHeaderBytes: number): void => {
    if (header.bodyLength < kindHeaderBytes) throw new ProtocolError("truncated", `frame body too short for its ${kindHeaderBytes}-byte kind header`);
  };
  const compressed = (header.flags & FrameFlag.compressed) !== 0;
  if ((header.flags & FrameFlag.zeroChunk) !== 0 && header.kind !== FrameKind.diskChunk) {
    throw new ProtocolError("malformed", "zero-chunk flag on a frame that is not a disk chunk");
  }

  switch (header.kind) {
    case FrameKind.memoryPages: {
      need(8);
      const dataPages = view.getUint32(k, true);
      const zeroPages = view.getUint32(k + 4, true);
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
    case FrameKind.deviceState: {
      need(8);
      const modeCode = view.getUint8(k);
      const mode = STATE_MODES[modeCode];
      if (mode === undefined || view.getUint8(k + 1) !== 0 || view.getUint16(k + 2, true) !== 0) {
        throw new ProtocolError("malformed", `device-state frame mode byte ${modeCode} or reserved bytes not zero`);
      }
      const length = view.getUint32(k + 4, true);
      if (length > MAX_DEVICE_STATE_BYTES) throw new ProtocolError("oversized", `device state of ${length} bytes, limit ${MAX_DEVICE_STATE_BYTES}`);
      const data = await dataOf(bytes.subarray(k + 8), compressed, length, "device-state frame");
      return { kind: "device-state", ...base, mode, data };
    }
    case FrameKind.diskBlocks: {
      need(16);
      const { disk, count: sectors, position: sector } = readExtentHeader(view, k);
      checkBlockExtent(disk, sector, sectors * SECTOR_SIZE);
      const data = await dataOf(bytes.subarray(k + 16), compressed, sectors * SECTOR_SIZE, "disk-blocks frame");
      return { kind: "disk-blocks", ...base, disk, sector, data };
    }
    case FrameKind.diskChunk: {
      need(16);
      const { disk, count: length, position: offset } = readExtentHeader(view, k);
      checkChunkExtent(disk, offset, length);
      if ((header.flags & FrameFlag.zeroChunk) !== 0) {
        if (header.bodyLength !== 16 || compressed) throw new ProtocolError("malformed", "zero chunk carries data or a compressed flag");
        return { kind: "disk-chunk", ...base, disk, offset, length, data: "zeros" };
      }
      const data = await dataOf(bytes.subarray(k + 16), compressed, length, "disk-chunk frame");
      return { kind: "disk-chunk", ...base, disk, offset, length, data };
    }
  }
}

function readExtentHeader(view: DataView, at: number): { disk: number; count: number; position: number } {
  if (view.getUint16(at + 2, true) !== 0) throw new ProtocolError("malformed", "reserved bytes of a disk frame are not zero");
  const position = view.getBigUint64(at + 8, true);
  if (position > BigInt(MAX_DISK_BYTES)) throw new ProtocolError("malformed", `disk position ${position} beyond the largest disk`);
  return { disk: view.getUint16(at, true), count: view.getUint32(at + 4, true), position: Number(position) };
}

async function dataOf(section: Uint8Array, compressed: boolean, expectedLength: number, what: string): Promise<Uint8Array> {
  if (compressed) return inflateExact(section, expectedLength, what);
  if (section.length !== expectedLength) {
    throw new ProtocolError(section.length < expectedLength ? "truncated" : "inconsistent", `${what}: ${section.length} data bytes, expected ${expectedLength}`);
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
