// Guest-physical scatter-gather lists of block requests.
import type { GuestSegment } from "./hook.ts";

/** Copies the bytes of `segments` out of guest RAM into one array, in order. */
export function gatherSegments(ram: Uint8Array, segments: readonly GuestSegment[]): Uint8Array {
  const out = new Uint8Array(segments.reduce((sum, s) => sum + s.length, 0));
  let at = 0;
  for (const { gpa, length } of segments) {
    out.set(ram.subarray(gpa, gpa + length), at);
    at += length;
  }
  return out;
}

/** Whether guest RAM at `segments` still holds `data` (e.g. a write's bytes as submitted). */
export function segmentsHold(ram: Uint8Array, segments: readonly GuestSegment[], data: Uint8Array): boolean {
  let at = 0;
  for (const { gpa, length } of segments) {
    const slice = ram.subarray(gpa, gpa + length);
    for (let i = 0; i < length; i++) if (slice[i] !== data[at + i]) return false;
    at += length;
  }
  return true;
}
