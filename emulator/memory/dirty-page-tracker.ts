// Which 4 KiB pages of a machine's RAM changed since the last collection, whoever wrote
// them (CPU, JIT code or device DMA), with their contents before and after. A shadow copy
// of RAM in v86's own heap holds what the last collection saw. Three ways to find changes:
//  - "write-map": the patched v86 module marks pages as they are written (write-map.ts);
//    only marked pages are compared with the shadow, so a collection costs O(pages written);
//  - "scan": every page is compared with the shadow (wasm SIMD), O(RAM);
//  - "cross-check": both; the scan's result is used and pages the map missed are counted.
// The first collection of a new tracker is always a full scan: its shadow starts as zeros.
// A collection in place (`collectInPlace`) hands out views instead of copies: a capture
// encodes its pages where they lie and allocates nothing for them (copies were most of the
// primary's garbage, two fresh 4 KiB arrays for each of ~55 pages a sync).
import { allocateInV86Heap, type HeapBlock } from "../v86-internals.ts";
import { requireBoundary } from "../paused.ts";
import type { Machine } from "../machine.ts";
import { checkPageSet, pageCountOf, type PageSet } from "./pages.ts";
import { createPageScanner, type PageScanner, type ScanEngine } from "./page-scanner.ts";
import { WriteMap } from "./write-map.ts";
import { PAGE_SIZE } from "../units.ts";

export type TrackingMode = "write-map" | "scan" | "cross-check";

export interface TrackerOptions {
  /** "auto" (default) uses wasm SIMD where the engine has it, else the JS scanner. */
  engine?: ScanEngine | "auto";
  /** "auto" (default): "write-map" when v86 runs the patched module, else "scan". */
  mode?: TrackingMode | "auto";
}

/** Pages that changed, with what they held at the previous collection (`previous`, same layout as `data`). */
export interface PageChanges extends PageSet {
  readonly previous: Uint8Array;
}

/** Pages that changed, seen without copies: read what you need before the guest runs again. */
export interface PageChangeViews {
  /** Page numbers, ascending. */
  readonly indices: Uint32Array;
  /** Page `indices[k]` now: a view of RAM, valid until the guest runs again. */
  now(k: number): Uint8Array;
  /** Page `indices[k]` at the previous collection: valid until the next collection. */
  before(k: number): Uint8Array;
}

/** Copies of what views show (to keep past the guest's next instructions or the next collection). */
export function copyPageChanges(views: PageChangeViews): PageChanges {
  const { indices } = views;
  const data = new Uint8Array(indices.length * PAGE_SIZE);
  const previous = new Uint8Array(indices.length * PAGE_SIZE);
  for (let k = 0; k < indices.length; k++) {
    data.set(views.now(k), k * PAGE_SIZE);
    previous.set(views.before(k), k * PAGE_SIZE);
  }
  return { indices, data, previous };
}

/** The previous contents of at most this many pages stay allocated between collections (4 MiB). */
const RETAINED_BEFORE_PAGES = 1024;

export interface TrackerStats {
  collections: number;
  /** Pages the write map marked (write-map and cross-check modes). */
  marked: number;
  /** Pages whose bytes changed. */
  changed: number;
  /** cross-check: changed pages the write map did not mark (must stay 0). */
  missed: number;
  /** cross-check: up to 16 missed page numbers, for a report. */
  missedExamples: number[];
}

/**
 * Every method reads or writes RAM and must run at an instruction boundary (outside the
 * guest's instructions: see `Machine.atNextBoundary`); it throws otherwise.
 *
 * A new tracker's shadow is all zeros, so the first `collect()` reports every non-zero
 * page: exactly what a peer whose RAM is still zero needs. Call `baseline()` instead when
 * the peer already holds the same RAM (e.g. both restored from one snapshot).
 */
export class DirtyPageTracker {
  readonly pageCount: number;
  readonly mode: TrackingMode;
  readonly stats: TrackerStats = { collections: 0, marked: 0, changed: 0, missed: 0, missedExamples: [] };
  #machine: Machine;
  #scanner: PageScanner;
  #shadow: HeapBlock;
  #indexBuffer: HeapBlock;
  #writeMap: WriteMap | undefined;
  /** The shadow does not hold RAM as a peer knows it (new tracker): scan everything once. */
  #fullScanDue = true;
  /** The previous contents of the last in-place collection's pages (reused; see #beforeBuffer). */
  #before = new Uint8Array(0);
  /** The first page a running live copy has not handed out yet; undefined when none runs. */
  #liveCopyAt: number | undefined;
  #disposed = false;

  private constructor(machine: Machine, scanner: PageScanner, shadow: HeapBlock, indexBuffer: HeapBlock, writeMap: WriteMap | undefined, mode: TrackingMode) {
    this.#machine = machine;
    this.#scanner = scanner;
    this.#shadow = shadow;
    this.#indexBuffer = indexBuffer;
    this.#writeMap = writeMap;
    this.mode = mode;
    this.pageCount = pageCountOf(machine);
  }

  /** Allocates a shadow as large as RAM in v86's heap (which may grow the wasm memory). Call at a boundary. */
  static create(machine: Machine, options: TrackerOptions = {}): DirtyPageTracker {
    requireBoundary(machine, "DirtyPageTracker.create");
    const pageCount = pageCountOf(machine);
    const blocks: HeapBlock[] = [];
    try {
      const shadow = allocateInV86Heap(machine.emulator, pageCount * PAGE_SIZE);
      blocks.push(shadow);
      const indexBuffer = allocateInV86Heap(machine.emulator, pageCount * 4);
      blocks.push(indexBuffer);
      // The shadow's contract is "zeros until the first collect".
      shadow.zeroed();
      const wanted = options.mode ?? "auto";
      const writeMap = wanted === "scan" ? undefined : WriteMap.attach(machine, pageCount);
      if (writeMap === undefined && wanted !== "auto" && wanted !== "scan") {
        throw new Error(`DirtyPageTracker: mode ${wanted} needs the patched v86 module (emulator/wasm-patch/), this machine runs the original`);
      }
      const mode: TrackingMode = wanted === "auto" ? (writeMap === undefined ? "scan" : "write-map") : wanted;
      return new DirtyPageTracker(machine, createPageScanner(shadow.memory, options.engine), shadow, indexBuffer, writeMap, mode);
    } catch (error) {
      for (const block of blocks) block.free();
      throw error;
    }
  }

  get engine(): ScanEngine {
    return this.#scanner.engine;
  }

  /** How the write map re-arms after a collection (see WriteMap.rearm); for measurements. */
  set rearm(how: "write-protect" | "clear") {
    if (this.#writeMap !== undefined) this.#writeMap.rearm = how;
  }

  /** Pages changed since the last collection (or baseline), with copies of their contents before and after. */
  collect(): PageChanges {
    return copyPageChanges(this.collectInPlace("collect"));
  }

  /**
   * Pages changed since the last collection (or baseline), as views: the shadow is brought
   * up to date at once, and what it held for them is kept until the next collection.
   */
  collectInPlace(operation = "collectInPlace"): PageChangeViews {
    this.#requireUsable(operation);
    if (this.#liveCopyAt !== undefined)
      throw new Error(`DirtyPageTracker.${operation}: a live copy is at page ${this.#liveCopyAt} of ${this.pageCount}; finish it first`);
    const marked = this.#writeMap?.take();
    let changed: Uint32Array;
    if (this.#fullScanDue || this.mode !== "write-map" || marked === undefined) {
      changed = this.#scanAll();
      if (marked !== undefined && !this.#fullScanDue) this.#crossCheck(marked, changed);
      this.#fullScanDue = false;
    } else {
      changed = this.#scanMarked(marked);
    }
    this.stats.collections++;
    this.stats.changed += changed.length;
    if (marked !== undefined) this.stats.marked += marked.length;
    return this.#changesInPlace(changed);
  }

  /**
   * Starts copying RAM while the guest runs (pre-copy): writes are marked from now on, and
   * `copyNext` hands RAM out range by range. Once the last range is out, `collect()` reports
   * the pages written since their range was copied, so the copy overlaid with that
   * collection is RAM as of the collection. Only on a new tracker (its shadow still zeros).
   */
  startLiveCopy(): void {
    this.#requireUsable("startLiveCopy");
    if (!this.#fullScanDue || this.#liveCopyAt !== undefined) throw new Error("DirtyPageTracker.startLiveCopy: only a new tracker can start a live copy");
    this.#writeMap?.take();
    this.#liveCopyAt = 0;
  }

  /** The non-zero pages of the live copy's next range (at most `maxPages`); `done` once RAM is covered. */
  copyNext(maxPages: number): { pages: PageSet; done: boolean } {
    this.#requireUsable("copyNext");
    const first = this.#liveCopyAt;
    if (first === undefined) throw new Error("DirtyPageTracker.copyNext: no live copy is running (startLiveCopy)");
    if (!Number.isInteger(maxPages) || maxPages < 1) throw new RangeError(`copyNext: maxPages must be a positive integer, got ${maxPages}`);
    const count = Math.min(maxPages, this.pageCount - first);
    const at = first * PAGE_SIZE;
    const found = this.#scanner.scan(this.#machine.ram.offsetInWasmMemory + at, this.#shadow.offset + at, count, this.#indexBuffer.offset);
    const indices = new Uint32Array(this.#shadow.memory.buffer, this.#indexBuffer.offset, found).map((relative) => relative + first);
    const data = this.#copyOut(indices);
    this.#liveCopyAt = first + count;
    const done = this.#liveCopyAt >= this.pageCount;
    if (done) {
      this.#liveCopyAt = undefined;
      this.#fullScanDue = false;
    }
    return { pages: { indices, data }, done };
  }

  /** Takes the current RAM as seen: the next `collect()` reports only later changes. */
  baseline(): void {
    this.#requireUsable("baseline");
    this.#shadowBytes().set(this.#machine.ram.bytes.subarray(0, this.pageCount * PAGE_SIZE));
    this.#writeMap?.take();
    this.#fullScanDue = false;
    this.#liveCopyAt = undefined; // the baseline covers all of RAM
  }

  /** A copy of one page of RAM as it is now. */
  readPage(index: number): Uint8Array {
    this.#requireUsable("readPage");
    this.#checkIndex(index);
    return this.#machine.ram.bytes.slice(index * PAGE_SIZE, (index + 1) * PAGE_SIZE);
  }

  /**
   * Replaces one page of RAM like a device would (JIT code over it is dropped). The shadow
   * is left alone, so the next `collect()` reports the page, as it would any other write.
   */
  writePage(index: number, bytes: Uint8Array): void {
    this.#requireUsable("writePage");
    checkPageSet({ indices: Uint32Array.of(index), data: bytes }, this.pageCount);
    this.#machine.ram.write(index * PAGE_SIZE, bytes);
  }

  /** Frees the shadow and stops the write map. The tracker cannot be used afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#writeMap?.dispose(this.#machine);
    // A destroyed machine's heap is gone with it; nothing to give back then.
    if (this.#machine.state === "destroyed") return;
    this.#shadow.free();
    this.#indexBuffer.free();
  }

  #scanAll(): Uint32Array {
    const ram = this.#machine.ram;
    const count = this.#scanner.scan(ram.offsetInWasmMemory, this.#shadow.offset, this.pageCount, this.#indexBuffer.offset);
    return new Uint32Array(this.#shadow.memory.buffer, this.#indexBuffer.offset, count).slice();
  }

  /** Compares only the marked pages (about 40% of marks are rewrites with the same bytes). */
  #scanMarked(marked: Uint32Array): Uint32Array {
    const ramOffset = this.#machine.ram.offsetInWasmMemory;
    const changed: number[] = [];
    for (const page of marked) {
      const at = page * PAGE_SIZE;
      if (this.#scanner.scan(ramOffset + at, this.#shadow.offset + at, 1, this.#indexBuffer.offset) === 1) changed.push(page);
    }
    return Uint32Array.from(changed);
  }

  #crossCheck(marked: Uint32Array, changed: Uint32Array): void {
    const markedSet = new Set(marked);
    for (const page of changed) {
      if (markedSet.has(page)) continue;
      this.stats.missed++;
      if (this.stats.missedExamples.length < 16) this.stats.missedExamples.push(page);
    }
  }

  /** Moves the shadow's copy of `pages` aside, brings the shadow up to date for them, and hands out views. */
  #changesInPlace(pages: Uint32Array): PageChangeViews {
    const ram = this.#machine.ram.bytes;
    const shadow = this.#shadowBytes();
    const before = this.#beforeBuffer(pages.length);
    pages.forEach((page, k) => {
      const from = page * PAGE_SIZE;
      before.set(shadow.subarray(from, from + PAGE_SIZE), k * PAGE_SIZE);
      shadow.set(ram.subarray(from, from + PAGE_SIZE), from);
    });
    return {
      indices: pages,
      now: (k) => ram.subarray(pages[k]! * PAGE_SIZE, (pages[k]! + 1) * PAGE_SIZE),
      before: (k) => before.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE),
    };
  }

  /** Copies out the contents of `pages` (a live copy's range) and brings the shadow up to date for them. */
  #copyOut(pages: Uint32Array): Uint8Array {
    const ram = this.#machine.ram.bytes;
    const shadow = this.#shadowBytes();
    const data = new Uint8Array(pages.length * PAGE_SIZE);
    pages.forEach((page, k) => {
      const now = ram.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
      data.set(now, k * PAGE_SIZE);
      shadow.set(now, page * PAGE_SIZE);
    });
    return data;
  }

  /** Room for `pages` pages' previous contents: reused while small, so a steady stream of captures allocates nothing. */
  #beforeBuffer(pages: number): Uint8Array {
    if (pages > RETAINED_BEFORE_PAGES) return new Uint8Array(pages * PAGE_SIZE);
    if (this.#before.length < pages * PAGE_SIZE)
      this.#before = new Uint8Array(Math.min(RETAINED_BEFORE_PAGES, Math.max(pages, (2 * this.#before.length) / PAGE_SIZE, 64)) * PAGE_SIZE);
    return this.#before;
  }

  #shadowBytes(): Uint8Array {
    return new Uint8Array(this.#shadow.memory.buffer, this.#shadow.offset, this.#shadow.size);
  }

  #requireUsable(operation: string): void {
    if (this.#disposed) throw new Error(`DirtyPageTracker.${operation}: tracker was disposed`);
    requireBoundary(this.#machine, `DirtyPageTracker.${operation}`);
  }

  #checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.pageCount) {
      throw new RangeError(`page ${index} is out of range (RAM has ${this.pageCount} pages)`);
    }
  }
}
