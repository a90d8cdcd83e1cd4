// The CPU's own record of written pages, kept by the patched v86 module (see
// emulator/wasm-patch/dirty-map-patch.ts): one byte per page of RAM in v86's heap, set by the
// first write through each TLB entry after it was flushed or made read-only, and by every
// physical write. Taking the marks clears them and makes the TLB read-only, so each page's
// next write is caught again.
import { TRACK_EXPORT, WRITE_PROTECT_EXPORT } from "../wasm-patch/dirty-map-abi.ts";
import { allocateInV86Heap, writeMapControls, type HeapBlock, type WriteMapControls } from "../v86-internals.ts";
import type { Machine } from "../machine.ts";
import { PAGE_SIZE } from "../units.ts";

/** The patch keeps one map per v86 instance: a second one would silently take over the first's marks. */
const attached = new WeakSet<object>();

export class WriteMap {
  readonly #owner: object;
  readonly #controls: WriteMapControls;
  readonly #map: HeapBlock;
  readonly pageCount: number;
  #disposed = false;

  private constructor(owner: object, controls: WriteMapControls, map: HeapBlock, pageCount: number) {
    this.#owner = owner;
    this.#controls = controls;
    this.#map = map;
    this.pageCount = pageCount;
  }

  /** Starts marking; undefined when the machine runs an unpatched v86 module. Call at an instruction boundary. */
  static attach(machine: Machine, pageCount: number): WriteMap | undefined {
    const controls = writeMapControls(machine.emulator, { track: TRACK_EXPORT, writeProtect: WRITE_PROTECT_EXPORT });
    if (controls === undefined) return undefined;
    const owner = machine.emulator;
    if (attached.has(owner)) throw new Error("write map: this machine already has one (dispose the other tracker first)");
    const ramOffset = machine.ram.offsetInWasmMemory;
    // The patch turns a TLB entry into a page number with a shift: RAM must start on a page.
    if (ramOffset % PAGE_SIZE !== 0) throw new Error(`write map: guest RAM starts at ${ramOffset} in wasm memory, not on a page`);
    const map = allocateInV86Heap(machine.emulator, pageCount, 64);
    const writeMap = new WriteMap(owner, controls, map, pageCount);
    attached.add(owner);
    writeMap.#bytes().fill(0);
    controls.track(map.offset, ramOffset / PAGE_SIZE, pageCount);
    controls.fullClearTlb();
    return writeMap;
  }

  /**
   * How `take` re-arms: "write-protect" (default) makes every TLB entry read-only; "clear"
   * drops them all, as the tracker did before (kept to measure the difference: benchmarks/tlb-rearm).
   */
  rearm: "write-protect" | "clear" = "write-protect";

  /** Pages marked since the last call, ascending; clears the marks and re-arms the TLB. */
  take(): Uint32Array {
    if (this.#disposed) throw new Error("WriteMap.take: disposed");
    const bytes = this.#bytes();
    const marked: number[] = [];
    // Word-wise: most of the map is zero.
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
    for (let w = 0; w < words.length; w++) {
      if (words[w] === 0) continue;
      for (let page = w << 2; page < (w << 2) + 4; page++) if (bytes[page] !== 0) marked.push(page);
      words[w] = 0;
    }
    for (let page = words.length << 2; page < bytes.length; page++) {
      if (bytes[page] !== 0) marked.push(page);
      bytes[page] = 0;
    }
    // Re-armed by write-protecting the TLB, not clearing it: the guest keeps its translations for
    // reads and code, and only its first write to each page walks the page tables (a full clear
    // after each capture added ~0.4 ms of page walks to the guest's next 4 KiB write).
    if (this.rearm === "clear") this.#controls.fullClearTlb();
    else this.#controls.writeProtectTlb();
    return Uint32Array.from(marked);
  }

  /** Stops marking and frees the map. */
  dispose(machine: Machine): void {
    if (this.#disposed) return;
    this.#disposed = true;
    attached.delete(this.#owner);
    if (machine.state === "destroyed") return;
    this.#controls.track(0, 0, 0);
    this.#map.free();
  }

  /** A view made per use: v86's memory may have grown (and detached older views) meanwhile. */
  #bytes(): Uint8Array {
    return new Uint8Array(this.#map.memory.buffer, this.#map.offset, this.pageCount);
  }
}
