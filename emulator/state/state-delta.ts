// Binary delta between two captures of the same kind (memory-less states): most bytes do
// not change between syncs. Per 64-byte block: a bitmap of changed blocks, then the changed
// blocks. The delta names its base by length and content hash, and the result by its hash,
// so a delta applied to the wrong base, or damaged, is refused instead of producing garbage.
import { StateDeltaError } from "../errors.ts";
import { contentHash } from "./content-hash.ts";
import { readTag, writeTag, type Tag } from "./tagged-header.ts";

export const DELTA_BLOCK_SIZE = 64;
const HEADER_BYTES = 40; // magic 8, version, block size, base length, target length (u32 each), base hash 8, target hash 8
const TAG: Tag = { magic: "TWVMDLTA", version: 1, headerBytes: HEADER_BYTES, what: "state delta" };
const WORDS_PER_BLOCK = DELTA_BLOCK_SIZE / 4;

export interface DeltaInfo {
  baseLength: number;
  baseHash: string;
  targetLength: number;
  targetHash: string;
}

/** `target` as the blocks that differ from `base`. The base may be shorter or longer. */
export function encodeDelta(base: Uint8Array, target: Uint8Array): Uint8Array {
  const blockCount = Math.ceil(target.length / DELTA_BLOCK_SIZE);
  const bitmapBytes = Math.ceil(blockCount / 8);
  const changed = changedBlocks(base, target, blockCount);
  let payload = 0;
  for (const block of changed) payload += blockLength(block, target.length);
  const out = new Uint8Array(HEADER_BYTES + bitmapBytes + payload);
  writeHeader(out, {
    baseLength: base.length,
    baseHash: contentHash(base),
    targetLength: target.length,
    targetHash: contentHash(target),
  });
  const bitmap = out.subarray(HEADER_BYTES, HEADER_BYTES + bitmapBytes);
  let at = HEADER_BYTES + bitmapBytes;
  for (const block of changed) {
    bitmap[block >>> 3]! |= 1 << (block & 7);
    const start = block * DELTA_BLOCK_SIZE;
    const length = blockLength(block, target.length);
    out.set(target.subarray(start, start + length), at);
    at += length;
  }
  return out;
}

/** Rebuilds the target; throws StateDeltaError when `base` is not the delta's base or the delta is damaged. */
export function applyDelta(base: Uint8Array, delta: Uint8Array): Uint8Array {
  const info = readDeltaInfo(delta);
  const baseHash = contentHash(base);
  if (base.length !== info.baseLength || baseHash !== info.baseHash) {
    throw new StateDeltaError(
      `state delta: made against base ${info.baseHash} (${info.baseLength} bytes), given base ${baseHash} (${base.length} bytes)`,
    );
  }
  const blockCount = Math.ceil(info.targetLength / DELTA_BLOCK_SIZE);
  const bitmapBytes = Math.ceil(blockCount / 8);
  if (delta.length < HEADER_BYTES + bitmapBytes) throw new StateDeltaError("state delta: truncated bitmap");
  const bitmap = delta.subarray(HEADER_BYTES, HEADER_BYTES + bitmapBytes);
  const out = new Uint8Array(info.targetLength);
  out.set(base.subarray(0, Math.min(base.length, info.targetLength)));
  let at = HEADER_BYTES + bitmapBytes;
  for (let block = 0; block < blockCount; block++) {
    if ((bitmap[block >>> 3]! & (1 << (block & 7))) === 0) continue;
    const length = blockLength(block, info.targetLength);
    if (at + length > delta.length) throw new StateDeltaError("state delta: truncated block data");
    out.set(delta.subarray(at, at + length), block * DELTA_BLOCK_SIZE);
    at += length;
  }
  if (at !== delta.length || contentHash(out) !== info.targetHash) {
    throw new StateDeltaError(`state delta: damaged (result does not match target ${info.targetHash})`);
  }
  return out;
}

export function readDeltaInfo(delta: Uint8Array): DeltaInfo {
  const view = readTag(delta, TAG, (message) => new StateDeltaError(message));
  const blockSize = view.getUint32(12, true);
  if (blockSize !== DELTA_BLOCK_SIZE) throw new StateDeltaError(`state delta: block size ${blockSize}, expected ${DELTA_BLOCK_SIZE}`);
  return {
    baseLength: view.getUint32(16, true),
    targetLength: view.getUint32(20, true),
    baseHash: hashHex(delta.subarray(24, 32)),
    targetHash: hashHex(delta.subarray(32, 40)),
  };
}

function writeHeader(out: Uint8Array, info: DeltaInfo): void {
  const view = writeTag(out, TAG);
  view.setUint32(12, DELTA_BLOCK_SIZE, true);
  view.setUint32(16, info.baseLength, true);
  view.setUint32(20, info.targetLength, true);
  out.set(hashBytes(info.baseHash), 24);
  out.set(hashBytes(info.targetHash), 32);
}

function hashBytes(hash: string): Uint8Array {
  return Uint8Array.from(hash.match(/../g)!, (pair) => parseInt(pair, 16));
}

function hashHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function blockLength(block: number, targetLength: number): number {
  return Math.min(DELTA_BLOCK_SIZE, targetLength - block * DELTA_BLOCK_SIZE);
}

/** Indices of target blocks that differ from base (blocks past the base's end always differ). */
function changedBlocks(base: Uint8Array, target: Uint8Array, blockCount: number): number[] {
  const changed: number[] = [];
  const wordAligned = base.byteOffset % 4 === 0 && target.byteOffset % 4 === 0;
  const baseWords = wordAligned ? new Uint32Array(base.buffer, base.byteOffset, base.length >>> 2) : undefined;
  const targetWords = wordAligned ? new Uint32Array(target.buffer, target.byteOffset, target.length >>> 2) : undefined;
  for (let block = 0; block < blockCount; block++) {
    const start = block * DELTA_BLOCK_SIZE;
    const end = Math.min(start + DELTA_BLOCK_SIZE, target.length);
    let same: boolean;
    if (end > base.length) same = false;
    else if (end - start === DELTA_BLOCK_SIZE && baseWords !== undefined && targetWords !== undefined) {
      same = wordsEqual(baseWords, targetWords, start >>> 2);
    } else same = bytesEqual(base, target, start, end);
    if (!same) changed.push(block);
  }
  return changed;
}

function wordsEqual(a: Uint32Array, b: Uint32Array, from: number): boolean {
  for (let i = from; i < from + WORDS_PER_BLOCK; i++) if (a[i] !== b[i]) return false;
  return true;
}

function bytesEqual(a: Uint8Array, b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (a[i] !== b[i]) return false;
  return true;
}
