// Guest-physical memory as a device sees it: bounds checks and little-endian
// fields. Reads go straight to the view; writes go through `write`, which for v86
// also drops compiled code over the range (GuestRam in v86-internals.ts).

export interface GuestMemory {
  /** Bytes of RAM, from guest-physical address 0. */
  readonly size: number;
  /** A view of all RAM; re-read it after anything that may grow the backing memory. */
  readonly bytes: Uint8Array;
  write(gpa: number, data: Uint8Array): void;
}

/** Whether [gpa, gpa + length) lies inside RAM; false for anything not a safe integer. */
export function isInRam(ram: GuestMemory, gpa: number, length: number): boolean {
  return Number.isSafeInteger(gpa) && Number.isSafeInteger(length) && gpa >= 0 && length >= 0 && gpa + length <= ram.size;
}

// The readers below expect the caller to have checked the range with isInRam.

export function readU16(bytes: Uint8Array, gpa: number): number {
  return bytes[gpa]! | (bytes[gpa + 1]! << 8);
}

export function readU32(bytes: Uint8Array, gpa: number): number {
  return (bytes[gpa]! | (bytes[gpa + 1]! << 8) | (bytes[gpa + 2]! << 16) | (bytes[gpa + 3]! << 24)) >>> 0;
}

/** A u64 as a number; values past 2^53 come back as Infinity so that range checks fail. */
export function readU64(bytes: Uint8Array, gpa: number): number {
  const high = readU32(bytes, gpa + 4);
  return high >= 0x200000 ? Infinity : high * 0x1_0000_0000 + readU32(bytes, gpa);
}

export function writeU16(ram: GuestMemory, gpa: number, value: number): void {
  ram.write(gpa, Uint8Array.of(value & 0xff, (value >>> 8) & 0xff));
}

export function writeU32Pair(ram: GuestMemory, gpa: number, first: number, second: number): void {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, first, true);
  view.setUint32(4, second, true);
  ram.write(gpa, out);
}
