// Memory-pages frames (the initial sync) from a set of guest pages, sending all-zero pages
// as bare indices (freshly freed or never touched memory is common and costs 4 bytes), and
// their application on the receiving side.
import type { PageSet } from "../../emulator/memory/index.ts";
import type { MemoryPagesFrame } from "./frames.ts";
import { MAX_PAGES_PER_FRAME } from "./limits.ts";
import { PAGE_SIZE } from "../../emulator/units.ts";

/** Splits a page set (indices ascending) into frames of at most MAX_PAGES_PER_FRAME pages each. */
export function pageSetFrames(pages: PageSet, seq: number, epoch: number): MemoryPagesFrame[] {
  const frames: MemoryPagesFrame[] = [];
  for (let start = 0; start < pages.indices.length; start += MAX_PAGES_PER_FRAME) {
    const end = Math.min(pages.indices.length, start + MAX_PAGES_PER_FRAME);
    const dataIndices: number[] = [];
    const zeroIndices: number[] = [];
    const kept: number[] = [];
    for (let k = start; k < end; k++) {
      if (isAllZero(pages.data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE))) zeroIndices.push(pages.indices[k]!);
      else {
        dataIndices.push(pages.indices[k]!);
        kept.push(k);
      }
    }
    const data = new Uint8Array(kept.length * PAGE_SIZE);
    kept.forEach((k, i) => data.set(pages.data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE), i * PAGE_SIZE));
    frames.push({ kind: "memory-pages", seq, epoch, indices: Uint32Array.from(dataIndices), data, zeroIndices: Uint32Array.from(zeroIndices) });
  }
  return frames;
}

/** Writes a decoded memory frame into `memory` (a replica's RAM, which does not run). */
export function applyPages(frame: MemoryPagesFrame, memory: Uint8Array): void {
  frame.indices.forEach((index, i) => memory.set(frame.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), index * PAGE_SIZE));
  for (const index of frame.zeroIndices) memory.fill(0, index * PAGE_SIZE, (index + 1) * PAGE_SIZE);
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
