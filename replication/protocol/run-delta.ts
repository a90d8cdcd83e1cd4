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

/** Encodes `target` against `base` (any lengths); undefined when the delta would not be shorter than `limit` bytes. */
export function encodeRunDelta(base: Uint8Array, target: Uint8Array, limit = target.length): Uint8Array | undefined {
  const out = new DeltaWriter(Math.min(limit, target.length + 16));
  const common = Math.min(base.length, target.length);
  const words = wordViews(base, target, common);
  let at = 0; // first byte not yet described
  let scan = 0;
  while (at < target.length) {
    // Find the next byte that differs (or lies past the base).
    scan = nextDifference(base, target, scan, common, words);
    if (scan >= target.length) {
      // The rest is unchanged.
      if (!out.put(target.length - at, 0, target, at)) return undefined;
      break;
    }
    // Extend the literal run until MIN_KEEP_RUN equal bytes (inside the base) follow.
    let end = scan + 1;
    for (;;) {
      while (end < target.length && (end >= common || base[end] !== target[end])) end++;
      if (end >= target.length) break;
      let same = end;
      while (same < common && same < end + MIN_KEEP_RUN && base[same] === target[same]) same++;
      if (same - end >= MIN_KEEP_RUN || same >= target.length) break;
      end = same;
    }
    if (!out.put(scan - at, end - scan, target, scan)) return undefined;
    at = end;
    scan = end;
  }
  return out.finish();
}

// Int32 (small-integer friendly in V8) and four words per step: ~2x a plain Uint32 loop.
type WordViews = [base: Int32Array, target: Int32Array] | undefined;

/** Word views of the common prefix, when both arrays are 4-byte aligned. */
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
      const [wb, wt] = words;
      let w = i >>> 2;
      const quads = wb.length & ~3;
      while (w < quads && (w & 3) !== 0 && wb[w] === wt[w]) w++;
      while (w < quads && ((wb[w]! ^ wt[w]!) | (wb[w + 1]! ^ wt[w + 1]!) | (wb[w + 2]! ^ wt[w + 2]!) | (wb[w + 3]! ^ wt[w + 3]!)) === 0) w += 4;
      while (w < wb.length && wb[w] === wt[w]) w++;
      i = w << 2;
    }
  }
  while (i < common && base[i] === target[i]) i++;
  return i < common ? i : common < target.length ? common : target.length;
}

/**
 * Rebuilds the target into `out` (which holds, or is, the base: keep runs leave it alone)
 * after checking the whole delta first, so a bad delta changes nothing. Throws ProtocolError.
 */
export function applyRunDelta(delta: Uint8Array, baseLength: number, out: Uint8Array, what: string): void {
  const runs = parseRunDelta(delta, baseLength, out.length, what);
  for (let r = 0; r < runs.length; r += 3) {
    const [at, from, length] = [runs[r]!, runs[r + 1]!, runs[r + 2]!];
    out.set(delta.subarray(from, from + length), at);
  }
}

/** Checks a delta and returns its literal runs as (target offset, delta offset, length) triples. */
export function parseRunDelta(delta: Uint8Array, baseLength: number, targetLength: number, what: string): number[] {
  const runs: number[] = [];
  let pos = 0;
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (pos >= delta.length) throw new ProtocolError("truncated", `${what}: delta ends inside a run length`);
      const byte = delta[pos++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return value;
    }
    throw new ProtocolError("malformed", `${what}: run length varint longer than 5 bytes`);
  };
  while (pos < delta.length) {
    const keep = varint();
    const copy = varint();
    if (at + keep > Math.min(baseLength, targetLength)) throw new ProtocolError("malformed", `${what}: keeps bytes ${at}..${at + keep} the old version (${baseLength} bytes) or the target (${targetLength}) lacks`);
    at += keep;
    if (at + copy > targetLength) throw new ProtocolError("malformed", `${what}: literal run ends at ${at + copy}, past the ${targetLength}-byte target`);
    if (pos + copy > delta.length) throw new ProtocolError("truncated", `${what}: literal run of ${copy} bytes, ${delta.length - pos} left`);
    if (copy > 0) runs.push(at, pos, copy);
    pos += copy;
    at += copy;
  }
  if (at !== targetLength) throw new ProtocolError("inconsistent", `${what}: delta covers ${at} of ${targetLength} bytes`);
  return runs;
}

class DeltaWriter {
  #buffer: Uint8Array;
  #length = 0;

  constructor(private readonly limit: number) {
    this.#buffer = new Uint8Array(Math.min(limit, 256));
  }

  /** Appends one run; false when the delta would reach the limit. */
  put(keep: number, copy: number, source: Uint8Array, from: number): boolean {
    if (this.#length + 10 + copy >= this.limit && !this.#fits(keep, copy)) return false;
    this.#ensure(10 + copy);
    this.#varint(keep);
    this.#varint(copy);
    this.#buffer.set(source.subarray(from, from + copy), this.#length);
    this.#length += copy;
    return this.#length < this.limit;
  }

  finish(): Uint8Array {
    return this.#buffer.slice(0, this.#length);
  }

  #fits(keep: number, copy: number): boolean {
    return this.#length + varintLength(keep) + varintLength(copy) + copy < this.limit;
  }

  #varint(value: number): void {
    while (value >= 0x80) {
      this.#buffer[this.#length++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    this.#buffer[this.#length++] = value;
  }

  #ensure(extra: number): void {
    if (this.#length + extra <= this.#buffer.length) return;
    const grown = new Uint8Array(Math.max(this.#buffer.length * 2, this.#length + extra));
    grown.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = grown;
  }
}

function varintLength(value: number): number {
  let length = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    length++;
  }
  return length;
}
