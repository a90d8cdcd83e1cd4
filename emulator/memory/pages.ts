// A set of guest pages with their contents: what a collection yields and what a second
// machine receives.
import { requireBoundary } from "../paused.ts";
import type { Machine } from "../machine.ts";
import { PAGE_SIZE } from "../units.ts";

export interface PageSet {
  /** Page numbers (guest-physical address / PAGE_SIZE), ascending. */
  readonly indices: Uint32Array;
  /** `indices.length * PAGE_SIZE` bytes: page `indices[k]` at `k * PAGE_SIZE`. */
  readonly data: Uint8Array;
}

export function pageCountOf(machine: Machine): number {
  return Math.floor(machine.ram.size / PAGE_SIZE);
}

/** Throws a RangeError naming what is wrong with a page set meant for a RAM of `pageCount` pages. */
export function checkPageSet(pages: PageSet, pageCount: number): void {
  if (pages.data.length !== pages.indices.length * PAGE_SIZE) {
    throw new RangeError(`page set: ${pages.indices.length} indices but ${pages.data.length} bytes of data`);
  }
  for (const index of pages.indices) {
    if (index >= pageCount) throw new RangeError(`page set: page ${index} is past the end of RAM (${pageCount} pages)`);
  }
}

/**
 * Writes pages into a stopped machine's RAM (paused, or blank before `restoreWithoutMemory`).
 * Goes through GuestRam.write so that compiled code over them is dropped; runs of
 * consecutive pages are written in one call.
 */
export function applyPages(machine: Machine, pages: PageSet): void {
  requireBoundary(machine, "applyPages");
  checkPageSet(pages, pageCountOf(machine));
  const { indices, data } = pages;
  let runStart = 0;
  for (let k = 1; k <= indices.length; k++) {
    if (k < indices.length && indices[k] === indices[k - 1]! + 1) continue;
    machine.ram.write(indices[runStart]! * PAGE_SIZE, data.subarray(runStart * PAGE_SIZE, k * PAGE_SIZE));
    runStart = k;
  }
}
