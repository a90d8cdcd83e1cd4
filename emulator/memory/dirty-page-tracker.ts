// Which 4 KiB pages of a machine's RAM changed since the last collection, whoever wrote
// them (CPU, JIT code or device DMA): v86 keeps no write log, so RAM is compared with a
// shadow copy. The shadow lives in v86's own heap so that one wasm module sees both.
import { allocateInV86Heap, type HeapBlock } from "../v86-internals.ts";
import { requireStopped } from "../paused.ts";
import type { Machine } from "../machine.ts";
import { PAGE_SIZE, checkPageSet, pageCountOf, type PageSet } from "./pages.ts";
import { createPageScanner, type PageScanner, type ScanEngine } from "./page-scanner.ts";

export interface TrackerOptions {
  /** "auto" (default) uses wasm SIMD where the engine has it, else the JS scanner. */
  engine?: ScanEngine | "auto";
}

/**
 * Every method reads or writes RAM and must run at one instruction boundary: it throws
 * unless the machine is stopped (after `await machine.pause()`, or blank). Use
 * `whilePaused(machine, () => tracker.collect())` from a running machine.
 *
 * A new tracker's shadow is all zeros, so the first `collect()` reports every non-zero
 * page: exactly what a peer whose RAM is still zero needs. Call `baseline()` instead when
 * the peer already holds the same RAM (e.g. both restored from one snapshot).
 */
export class DirtyPageTracker {
  readonly pageCount: number;
  #machine: Machine;
  #scanner: PageScanner;
  #shadow: HeapBlock;
  #indexBuffer: HeapBlock;
  #disposed = false;

  private constructor(machine: Machine, scanner: PageScanner, shadow: HeapBlock, indexBuffer: HeapBlock) {
    this.#machine = machine;
    this.#scanner = scanner;
    this.#shadow = shadow;
    this.#indexBuffer = indexBuffer;
    this.pageCount = pageCountOf(machine);
  }

  /** Allocates a shadow as large as RAM in v86's heap (which may grow the wasm memory). */
  static create(machine: Machine, options: TrackerOptions = {}): DirtyPageTracker {
    const pageCount = pageCountOf(machine);
    const shadow = allocateInV86Heap(machine.emulator, pageCount * PAGE_SIZE);
    let indexBuffer: HeapBlock;
    try {
      indexBuffer = allocateInV86Heap(machine.emulator, pageCount * 4);
    } catch (error) {
      shadow.free();
      throw error;
    }
    // v86's allocator does not zero; the shadow's contract is "zeros until the first collect".
    new Uint8Array(shadow.memory.buffer, shadow.offset, shadow.size).fill(0);
    return new DirtyPageTracker(machine, createPageScanner(shadow.memory, options.engine), shadow, indexBuffer);
  }

  get engine(): ScanEngine {
    return this.#scanner.engine;
  }

  /** Pages changed since the last collection (or baseline), with copies of their contents. */
  collect(): PageSet {
    this.#requireUsable("collect");
    const ram = this.#machine.ram;
    const count = this.#scanner.scan(ram.offsetInWasmMemory, this.#shadow.offset, this.pageCount, this.#indexBuffer.offset);
    const buffer = this.#shadow.memory.buffer;
    const indices = new Uint32Array(buffer, this.#indexBuffer.offset, count).slice();
    // The scan just copied each changed page into the shadow: copy out from there.
    const shadow = new Uint8Array(buffer, this.#shadow.offset, this.#shadow.size);
    const data = new Uint8Array(count * PAGE_SIZE);
    indices.forEach((page, k) => data.set(shadow.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE), k * PAGE_SIZE));
    return { indices, data };
  }

  /** Takes the current RAM as seen: the next `collect()` reports only later changes. */
  baseline(): void {
    this.#requireUsable("baseline");
    new Uint8Array(this.#shadow.memory.buffer, this.#shadow.offset, this.#shadow.size).set(this.#machine.ram.bytes);
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

  /** Frees the shadow. The tracker cannot be used afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    // A destroyed machine's heap is gone with it; nothing to give back then.
    if (this.#machine.state === "destroyed") return;
    this.#shadow.free();
    this.#indexBuffer.free();
  }

  #requireUsable(operation: string): void {
    if (this.#disposed) throw new Error(`DirtyPageTracker.${operation}: tracker was disposed`);
    requireStopped(this.#machine, `DirtyPageTracker.${operation}`);
  }

  #checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.pageCount) {
      throw new RangeError(`page ${index} is out of range (RAM has ${this.pageCount} pages)`);
    }
  }
}
