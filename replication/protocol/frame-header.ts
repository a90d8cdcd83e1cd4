// The fixed 24-byte little-endian header every binary frame starts with.
import { ProtocolError } from "./errors.ts";
import { MAX_FRAME_BYTES, MAX_SAFE, PROTOCOL_VERSION } from "./limits.ts";

/** "TWRP" read as a little-endian u32. */
export const FRAME_MAGIC = 0x50525754;
export const FRAME_HEADER_BYTES = 24;

export const FrameKind = {
  memoryPages: 1,
  stateParts: 2,
  diskBlocks: 3,
  diskChunk: 4,
  pageUpdates: 5,
  stateChanges: 6,
  syncCommit: 7,
  heldOutput: 8,
} as const;
export type FrameKindCode = (typeof FrameKind)[keyof typeof FrameKind];

export const FrameFlag = {
  /** The data section is deflate-raw compressed. */
  compressed: 1 << 0,
  /** disk-chunk only: the chunk is all zeros and carries no data. */
  zeroChunk: 1 << 1,
} as const;
const KNOWN_FLAGS = FrameFlag.compressed | FrameFlag.zeroChunk;

export interface FrameHeader {
  kind: FrameKindCode;
  flags: number;
  seq: number;
  epoch: number;
  /** Bytes after the common header: kind header + payload. */
  bodyLength: number;
}

export function writeFrameHeader(view: DataView, header: FrameHeader): void {
  view.setUint32(0, FRAME_MAGIC, true);
  view.setUint8(4, PROTOCOL_VERSION);
  view.setUint8(5, header.kind);
  view.setUint16(6, header.flags, true);
  view.setBigUint64(8, BigInt(header.seq), true);
  view.setUint32(16, header.epoch, true);
  view.setUint32(20, header.bodyLength, true);
}

/**
 * Where the frame that starts `bytes` ends (header plus the body it announces, at most all of
 * `bytes`), for frames back to back; undefined when not even the header is there. The frame
 * itself is checked by `readFrameHeader` when it is decoded.
 */
export function announcedFrameLength(bytes: Uint8Array): number | undefined {
  if (bytes.length < FRAME_HEADER_BYTES) return undefined;
  const bodyLength = new DataView(bytes.buffer, bytes.byteOffset, FRAME_HEADER_BYTES).getUint32(20, true);
  return Math.min(bytes.length, FRAME_HEADER_BYTES + bodyLength);
}

/** Checks the header and that the frame holds exactly the bytes it announces. */
export function readFrameHeader(bytes: Uint8Array): FrameHeader {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError("malformed", "binary frame is not a byte array");
  if (bytes.length > MAX_FRAME_BYTES) throw new ProtocolError("oversized", `frame of ${bytes.length} bytes, limit ${MAX_FRAME_BYTES}`);
  if (bytes.length < FRAME_HEADER_BYTES) {
    throw new ProtocolError("truncated", `frame of ${bytes.length} bytes is shorter than the ${FRAME_HEADER_BYTES}-byte header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== FRAME_MAGIC) throw new ProtocolError("bad-magic", "frame does not start with TWRP");
  const version = view.getUint8(4);
  if (version !== PROTOCOL_VERSION) throw new ProtocolError("version", `frame version ${version}, this build speaks ${PROTOCOL_VERSION}`);
  const kind = view.getUint8(5);
  if (!Object.values(FrameKind).includes(kind as FrameKindCode)) throw new ProtocolError("unknown-kind", `frame kind ${kind}`);
  const flags = view.getUint16(6, true);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw new ProtocolError("malformed", `unknown frame flags 0x${flags.toString(16)}`);
  const seq = view.getBigUint64(8, true);
  if (seq > BigInt(MAX_SAFE)) throw new ProtocolError("malformed", `frame seq ${seq} is beyond 2^53-1`);
  const epoch = view.getUint32(16, true);
  const bodyLength = view.getUint32(20, true);
  if (bodyLength > MAX_FRAME_BYTES - FRAME_HEADER_BYTES) throw new ProtocolError("oversized", `frame announces a ${bodyLength}-byte body`);
  const actual = bytes.length - FRAME_HEADER_BYTES;
  if (actual < bodyLength) throw new ProtocolError("truncated", `frame body has ${actual} of ${bodyLength} announced bytes`);
  if (actual > bodyLength) throw new ProtocolError("malformed", `frame has ${actual - bodyLength} bytes after its announced body`);
  return { kind: kind as FrameKindCode, flags, seq: Number(seq), epoch, bodyLength };
}
