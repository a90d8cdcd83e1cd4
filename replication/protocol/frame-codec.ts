// Binary frames to bytes and back. Decoders check everything a frame can get wrong on its own
// (lengths, order of lists, run deltas against a page: frame-rules.ts); what depends on the
// session is checked by SessionOrder and the secondary's sync assembler.
import { deflate, inflateExact } from "./compression.ts";
import { ProtocolError } from "./errors.ts";
import { FRAME_HEADER_BYTES, FrameFlag, FrameKind, readFrameHeader, writeFrameHeader } from "./frame-header.ts";
import {
  MAX_DEVICE_STATE_BYTES,
  MAX_DISK_BYTES,
  MAX_FRAME_BYTES,
  MAX_IO_LOG_ENTRIES,
  MAX_PAGE_UPDATES_PER_FRAME,
  MAX_PAGES_PER_FRAME,
  MAX_SEGMENTS_PER_ENTRY,
  MAX_OUTPUTS_PER_FRAME,
  MAX_SAFE,
  MAX_STATE_PARTS,
} from "./limits.ts";
import {
  FRAME_KINDS,
  ioLogBytes,
  PAGE_ENCODINGS,
  PART_ENCODINGS,
  IO_TYPES,
  OUTPUT_ENTRY_BYTES,
  OUTPUT_KINDS,
  type BinaryFrame,
  type CarriedOutput,
  type BinaryFrameKind,
  type EncodeOptions,
  type IoLogEntry,
  type PageUpdate,
  type PartChange,
} from "./frames.ts";
import { checkPageIndices, checkPageUpdates, checkStateChanges, checkParts, checkIoLog, checkBlockExtent, checkChunkExtent } from "./frame-rules.ts";
import { ByteReader, ByteWriter } from "./byte-io.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";

export async function encodeFrame(frame: BinaryFrame, options: EncodeOptions = {}): Promise<Uint8Array> {
  if (options.compress !== true) return encodeFrameNow(frame);
  const { kindHeader, prefix, data } = layout(frame);
  if (data.length > 0) {
    const deflated = await deflate(data);
    if (deflated.length < data.length) return assemble(frame, kindHeader, prefix, deflated, plainFlags(frame) | FrameFlag.compressed);
  }
  return assemble(frame, kindHeader, prefix, data, plainFlags(frame));
}

/** The same bytes as `encodeFrame` without compression, in this call (no deflate to wait for). */
export function encodeFrameNow(frame: BinaryFrame): Uint8Array {
  const { kindHeader, prefix, data } = layout(frame);
  return assemble(frame, kindHeader, prefix, data, plainFlags(frame));
}

function plainFlags(frame: BinaryFrame): number {
  return frame.kind === "disk-chunk" && frame.data === "zeros" ? FrameFlag.zeroChunk : 0;
}

function assemble(frame: BinaryFrame, kindHeader: Uint8Array, prefix: Uint8Array, data: Uint8Array, flags: number): Uint8Array {
  const total = FRAME_HEADER_BYTES + kindHeader.length + prefix.length + data.length;
  if (total > MAX_FRAME_BYTES) throw new ProtocolError("oversized", `${frame.kind} frame would be ${total} bytes, limit ${MAX_FRAME_BYTES}`);
  const out = new Uint8Array(total);
  writeFrameHeader(new DataView(out.buffer), {
    kind: FRAME_KINDS[frame.kind].code,
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
  const kindHeader = new Uint8Array(FRAME_KINDS[frame.kind].headerBytes);
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
      head.setUint32(20, frame.outputFrames, true);
      return { kindHeader, prefix: empty, data: writer.finish() };
    }
    case "held-output": {
      const writer = new ByteWriter(frame.outputs.reduce((n, output) => n + OUTPUT_ENTRY_BYTES + output.bytes.length, 0));
      for (const output of frame.outputs) {
        writer.u8(OUTPUT_KINDS.indexOf(output.kind));
        writer.u8(0);
        writer.u16(0);
        writer.u32(output.bytes.length);
        writer.bytes(output.bytes);
      }
      head.setUint32(0, frame.outputs.length, true);
      head.setUint32(4, writer.length, true);
      head.setBigUint64(8, BigInt(frame.first), true);
      head.setBigUint64(16, BigInt(frame.released), true);
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
      if (!Number.isInteger(frame.outputFrames) || frame.outputFrames < 0 || frame.outputFrames > 0xffff_ffff) fail(`outputFrames ${frame.outputFrames}`);
      break;
    case "held-output":
      checkHeldOutput(frame.first, frame.released, frame.outputs);
      break;
  }
}

/** Numbering within exact integers, no more released than numbered, a bounded count of known kinds. */
function checkHeldOutput(first: number, released: number, outputs: readonly CarriedOutput[]): void {
  if (outputs.length > MAX_OUTPUTS_PER_FRAME) throw new ProtocolError("oversized", `${outputs.length} held outputs in a frame, limit ${MAX_OUTPUTS_PER_FRAME}`);
  if (!Number.isSafeInteger(first) || first < 0 || first + outputs.length > MAX_SAFE)
    throw new ProtocolError("malformed", `held outputs numbered from ${first}`);
  if (!Number.isSafeInteger(released) || released < 0 || released > first)
    throw new ProtocolError("inconsistent", `${released} held outputs released, but only ${first} numbered before this frame's`);
  for (const [index, output] of outputs.entries()) {
    if (!OUTPUT_KINDS.includes(output.kind)) throw new ProtocolError("malformed", `held output ${index}: unknown kind`);
  }
}

// ---------------------------------------------------------------- decoding

/** Decodes one binary frame; throws only ProtocolError. */
export async function decodeFrame(bytes: Uint8Array): Promise<BinaryFrame> {
  const header = readFrameHeader(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const base = { seq: header.seq, epoch: header.epoch };
  const k = FRAME_HEADER_BYTES;
  const kindName = (Object.keys(FRAME_KINDS) as BinaryFrameKind[]).find((name) => FRAME_KINDS[name].code === header.kind)!;
  if (header.bodyLength < FRAME_KINDS[kindName].headerBytes) {
    throw new ProtocolError("truncated", `${kindName} frame body too short for its ${FRAME_KINDS[kindName].headerBytes}-byte kind header`);
  }
  const compressed = (header.flags & FrameFlag.compressed) !== 0;
  if ((header.flags & FrameFlag.zeroChunk) !== 0 && header.kind !== FrameKind.diskChunk) {
    throw new ProtocolError("malformed", "zero-chunk flag on a frame that is not a disk chunk");
  }
  const section = bytes.subarray(k + FRAME_KINDS[kindName].headerBytes);
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
      const reader = new ByteReader(await dataOf(section, compressed, u32(16), "sync-commit frame"), "sync-commit frame");
      const log: IoLogEntry[] = [];
      for (let i = 0; i < entries; i++) log.push(readIoEntry(reader, i));
      reader.end();
      checkIoLog(log);
      return { kind: "sync-commit", ...base, pageUpdates: u32(0), stateChanges: u32(4), blockFrames: u32(8), outputFrames: u32(20), log };
    }
    case FrameKind.heldOutput: {
      const count = u32(0);
      if (count > MAX_OUTPUTS_PER_FRAME) throw new ProtocolError("oversized", `${count} held outputs in a frame, limit ${MAX_OUTPUTS_PER_FRAME}`);
      const first = view.getBigUint64(k + 8, true);
      const released = view.getBigUint64(k + 16, true);
      if (first > BigInt(MAX_SAFE) || released > BigInt(MAX_SAFE)) throw new ProtocolError("malformed", "held-output numbering beyond 2^53-1");
      const reader = new ByteReader(await dataOf(section, compressed, u32(4), "held-output frame"), "held-output frame");
      const outputs: CarriedOutput[] = [];
      for (let i = 0; i < count; i++) {
        const kind = OUTPUT_KINDS[reader.u8()];
        if (kind === undefined || reader.u8() !== 0 || reader.u16() !== 0)
          throw new ProtocolError("malformed", `held output ${i}: unknown kind or reserved bytes set`);
        outputs.push({ kind, bytes: reader.bytes(reader.u32()) });
      }
      reader.end();
      checkHeldOutput(Number(first), Number(released), outputs);
      return { kind: "held-output", ...base, first: Number(first), released: Number(released), outputs };
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
