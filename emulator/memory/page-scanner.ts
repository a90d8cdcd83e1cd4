// Finds the pages of guest RAM that differ from a shadow copy. Two engines with one
// contract: wasm SIMD (fast path, ~one memcpy of RAM per scan) and plain JS for engines
// without wasm SIMD.
import { pageScanModuleBytes } from "./page-scan-wasm.ts";
import { PAGE_SIZE } from "../units.ts";

export type ScanEngine = "simd" | "js";

export interface PageScanner {
  readonly engine: ScanEngine;
  /**
   * Compares `pageCount` pages at `ramOffset` with the shadow at `shadowOffset` (offsets in
   * the scanner's memory) and writes the index of each differing page as a u32 at
   * `outOffset`. Returns how many pages differed, in ascending index order. Changes nothing else.
   */
  scan(ramOffset: number, shadowOffset: number, pageCount: number, outOffset: number): number;
}

let simdModule: WebAssembly.Module | null | undefined;

/** The compiled SIMD module, or null when this engine has no wasm SIMD (or bulk memory). */
function compiledSimdModule(): WebAssembly.Module | null {
  if (simdModule === undefined) {
    const bytes = pageScanModuleBytes();
    // Synchronous compile is fine in browsers too: the module is a few hundred bytes.
    simdModule = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  return simdModule;
}

export function simdAvailable(): boolean {
  return compiledSimdModule() !== null;
}

/** "auto" picks SIMD where the engine has it. */
export function createPageScanner(memory: WebAssembly.Memory, engine: ScanEngine | "auto" = "auto"): PageScanner {
  const chosen = engine === "auto" ? (simdAvailable() ? "simd" : "js") : engine;
  return chosen === "simd" ? createSimdScanner(memory) : createJsScanner(memory);
}

function createSimdScanner(memory: WebAssembly.Memory): PageScanner {
  const module = compiledSimdModule();
  if (module === null) throw new Error("page scanner: this WebAssembly engine has no SIMD; use the js engine");
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  const scan = instance.exports["scan"] as (ram: number, shadow: number, pages: number, out: number) => number;
  return { engine: "simd", scan: (ram, shadow, pages, out) => scan(ram, shadow, pages, out) >>> 0 };
}

const WORDS_PER_PAGE = PAGE_SIZE / 4;

/** Compares 32-bit words: integer compares are exact, unlike Float64Array (NaN, -0). */
function createJsScanner(memory: WebAssembly.Memory): PageScanner {
  return {
    engine: "js",
    scan(ramOffset, shadowOffset, pageCount, outOffset) {
      if ((ramOffset | shadowOffset | outOffset) & 3) throw new RangeError("page scanner: offsets must be 4-byte aligned");
      // Views made per call: the memory may have grown (and detached older views) since the last one.
      const words = new Uint32Array(memory.buffer);
      const ram = ramOffset >>> 2;
      const shadow = shadowOffset >>> 2;
      const out = outOffset >>> 2;
      let dirty = 0;
      for (let page = 0; page < pageCount; page++) {
        const a = ram + page * WORDS_PER_PAGE;
        const b = shadow + page * WORDS_PER_PAGE;
        let w = 0;
        while (w < WORDS_PER_PAGE && words[a + w] === words[b + w]) w++;
        if (w < WORDS_PER_PAGE) words[out + dirty++] = page;
      }
      return dirty;
    },
  };
}
