// A delta between two versions of a byte string that the receiver already holds the old
// version of (a guest page, a device-state part): alternating runs of "keep this many
// bytes of the old version" and "take these literal bytes", each length a LEB128 varint.
// QEMU's XBZRLE does the same for migration; a dirty page typically differs from the copy
// the secondary holds in ~100 of its 4096 bytes, so its delta is ~2% of the page.
//
//   delta  := (keep:varint copy:varint literal[copy])*   covering exactly `targetLength`
//
// A keep run may only cover bytes the old version has. Unchanged gaps shorter than
// MIN_KEEP_RUN are folded into the literal run around them: two varints cost more.
import { ProtocolError } from "./errors.ts";

const MIN_KEEP_RUN = 3;
/** Initial size of the encoder's scratch buffer: a page's delta never needs more. */
const PAGE_DELTA_SCRATCH = 4096 + 16;

/** Encodes `target` against `base` (any lengths); undefined when the delta would not be shorter than `limit` bytes. */
export function encodeRunDelta(base: Uint8Array, target: Uint8Array, limit = target.length): Uint8Array | undefined {
  // Written into a shared scratch buffer and copied out once: per-run allocations (writer growth,
  // subarrays) cost more than the scan on a page that differs in ~100 bytes (twice as fast).
  const cap = Math.min(limit, target.length + 16);
  const out = scratchFor(cap);
  const length = target.length;
  const common = Math.min(base.length, length);
  const words = wordViews(base, target, common);
  let written = 0;
  let at = 0; // first byte not yet described
  let scan = 0;
  while (at < length) {
    // Find the next byte that differs (or lies past the base).
    scan = nextDifference(base, target, scan, common, words);
    if (scan >= length) {
      // The rest is unchanged.
      written = putRun(out, written, cap, length - at, target, at, at);
      if (written < 0) return undefined;
      break;
    }
    // Extend the literal run until MIN_KEEP_RUN equal bytes (inside the base) follow.
    let end = scan + 1;
    for (;;) {
      while (end < length && (end >= common || base[end] !== target[end])) end++;
      if (end >= length) break;
      let same = end;
      while (same < common && same < end + MIN_KEEP_RUN && base[same] === target[same]) same++;
      if (same - end >= MIN_KEEP_RUN || same >= length) break;
      end = same;
    }
    written = putRun(out, written, cap, scan - at, target, scan, end);
    if (written < 0) return undefined;
    at = end;
    scan = end;
  }
  return out.slice(0, written);
}

/** Word views of the common prefix, when both arrays are 4-byte aligned. */
type WordViews = [base: Int32Array, target: Int32Array] | undefined;

function wordViews(base: Uint8Array, target: Uint8Array, common: number): WordViews {
  if (base.byteOffset % 4 !== 0 || target.byteOffset % 4 !== 0) return undefined;
  return [new Int32Array(base.buffer, base.byteOffset, common >>> 2), new Int32Array(target.buffer, target.byteOffset, common >>> 2)];
}

/** The first index >= from where target differs from base, comparing words where it can. */
function nextDifference(base: Uint8Array, target: Uint8Array, from: number, common: number, words: WordViews): number {
  let i = from;
  if (words !== undefined) {
    while (i < common && (i & 3) !== 0 && base[i] === target[i]) i++;
    if ((i & 3) === 0) {
      const wb = words[0];
      const wt = words[1];
      let w = i >>> 2;
      while (w < wb.length && wb[w] === wt[w]) w++;
      i = w << 2;
    }
  }
  while (i < common && base[i] === target[i]) i++;
  return i < common ? i : common < target.length ? common : target.length;
}

/**
 * Appends one run (keep `keep` bytes, then target[from, end) literally) at `written`; returns
 * the new length, or -1 when the delta would reach `limit`.
 */
function putRun(out: Uint8Array, written: number, limit: number, keep: number, target: Uint8Array, from: number, end: number): number {
  const copy = end - from;
  if (written + varintLength(keep) + varintLength(copy) + copy >= limit) return -1;
  written = putVarint(out, written, keep);
  written = putVarint(out, written, copy);
  if (copy > 32) {
    out.set(target.subarray(from, end), written);
    return written + copy;
  }
  for (let i = from; i < end; i++) out[written++] = target[i]!;
  return written;
}

function putVarint(out: Uint8Array, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  out[at++] = value;
  return at;
}

let scratch = new Uint8Array(PAGE_DELTA_SCRATCH);

/** The shared output buffer, at least `bytes` long (the encoder is synchronous, so one suffices). */
function scratchFor(bytes: number): Uint8Array {
  if (scratch.length < bytes) scratch = new Uint8Array(bytes);
  return scratch;
}

/**
 * Rebuilds the target into `out` (which holds, or is, the base: keep runs leave it alone)
 * after checking the whole delta first, so a bad delta changes nothing. Throws ProtocolError.
 */
export function applyRunDelta(delta: Uint8Array, baseLength: number, out: Uint8Array, what: string): void {
  checkRunDelta(delta, baseLength, out.length, what);
  // Checked: the varints are well formed and every run fits.
  let pos = 0;
  let at = 0;
  while (pos < delta.length) {
    pos = readVarint(delta, pos, what);
    at += varintValue;
    pos = readVarint(delta, pos, what);
    const copy = varintValue;
    if (copy > 32) out.set(delta.subarray(pos, pos + copy), at);
    else for (let i = 0; i < copy; i++) out[at + i] = delta[pos + i]!;
    pos += copy;
    at += copy;
  }
}

/**
 * Checks that a delta is well formed and rebuilds exactly `targetLength` bytes from a base of
 * `baseLength`. Throws ProtocolError. Allocates nothing: it runs on every page of every sync.
 */
export function checkRunDelta(delta: Uint8Array, baseLength: number, targetLength: number, what: string): void {
  let pos = 0;
  let at = 0;
  while (pos < delta.length) {
    pos = readVarint(delta, pos, what);
    const keep = varintValue;
    pos = readVarint(delta, pos, what);
    const copy = varintValue;
    if (at + keep > Math.min(baseLength, targetLength))
      throw new ProtocolError(
        "malformed",
        `${what}: keeps bytes ${at}..${at + keep} the old version (${baseLength} bytes) or the target (${targetLength}) lacks`,
      );
    at += keep;
    if (at + copy > targetLength) throw new ProtocolError("malformed", `${what}: literal run ends at ${at + copy}, past the ${targetLength}-byte target`);
    if (pos + copy > delta.length) throw new ProtocolError("truncated", `${what}: literal run of ${copy} bytes, ${delta.length - pos} left`);
    pos += copy;
    at += copy;
  }
  if (at !== targetLength) throw new ProtocolError("inconsistent", `${what}: delta covers ${at} of ${targetLength} bytes`);
}

/** The value readVarint read last (a second result without allocating one). */
let varintValue = 0;

/** Reads the varint at `pos` into varintValue; returns the position after it. */
function readVarint(delta: Uint8Array, pos: number, what: string): number {
  let value = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= delta.length) throw new ProtocolError("truncated", `${what}: delta ends inside a run length`);
    const byte = delta[pos++]!;
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) {
      varintValue = value;
      return pos;
    }
  }
  throw new ProtocolError("malformed", `${what}: run length varint longer than 5 bytes`);
}

function varintLength(value: number): number {
  let length = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    length++;
  }
  return length;
}
