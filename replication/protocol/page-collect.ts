// Builds memory-page frames from guest memory, sending all-zero pages as bare
// indices (freshly freed or never touched memory is common and costs 4 bytes).
import type { MemoryPagesFrame } from "./frames.ts";
import { MAX_PAGES_PER_FRAME, PAGE_SIZE } from "./limits.ts";

/** Splits `pageIndices` (any order) into frames of at most MAX_PAGES_PER_FRAME pages each. */
export function collectPages(memory: Uint8Array, pageIndices: Iterable<number>, seq: number, epoch: number): MemoryPagesFrame[] {
  const sorted = Uint32Array.from(new Set(pageIndices)).sort();
  const frames: MemoryPagesFrame[] = [];
  for (let start = 0; start < sorted.length; start += MAX_PAGES_PER_FRAME) {
    const batch = sorted.subarray(start, start + MAX_PAGES_PER_FRAME);
    const dataIndices: number[] = [];
    const zeroIndices: number[] = [];
    for (const index of batch) (isAllZero(memory.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE)) ? zeroIndices : dataIndices).push(index);
    const data = new Uint8Array(dataIndices.length * PAGE_SIZE);
    dataIndices.forEach((index, i) => data.set(memory.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE), i * PAGE_SIZE));
    frames.push({ kind: "memory-pages", seq, epoch, indices: Uint32Array.from(dataIndices), data, zeroIndices: Uint32Array.from(zeroIndices) });
  }
  return frames;
}

/**
 * Writes a decoded memory frame through `write` (guest-physical address, bytes): a plain
 * array's `set`, or a machine's RAM writer, which also drops compiled code over the pages.
 */
export function applyPages(frame: MemoryPagesFrame, write: (gpa: number, bytes: Uint8Array) => void): void {
  frame.indices.forEach((index, i) => write(index * PAGE_SIZE, frame.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)));
  const zero = new Uint8Array(PAGE_SIZE);
  for (const index of frame.zeroIndices) write(index * PAGE_SIZE, zero);
}

/** Whether every byte is zero; word-wise when aligned (8x fewer steps for pages and disk chunks). */
export function isAllZero(bytes: Uint8Array): boolean {
  if (bytes.byteOffset % 4 === 0 && bytes.length % 4 === 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
