// Cost of one dirty-page collection beside the floor, one full copy of RAM.
import { Machine } from "../emulator/machine.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { DirtyPageTracker, type ScanEngine } from "../emulator/memory/index.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median, timed } from "./stats.ts";
import { PAGE_SIZE } from "../emulator/units.ts";

const SIZES_MIB = [64, 128, 256];
const ENGINES: ScanEngine[] = ["simd", "js"];
const CHANGED_FRACTION = 0.01;
const WARMUP = 3;
const ROUNDS = 15;

interface Row {
  memoryMiB: number;
  engine: ScanEngine | "copy";
  firstCollectMs?: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  pagesPerCollect?: number;
  ratioToCopy: number;
}

export default async function dirtyScan(context: BenchContext): Promise<BenchReport> {
  const rows: Row[] = [];
  for (const memoryMiB of SIZES_MIB) {
    // Not booted: a blank machine's RAM filled with random bytes, so that no page is zero.
    const machine = await Machine.createBlank({ ...defaultGuest(), memoryMiB });
    try {
      const ram = machine.ram;
      fillRandom(ram.bytes, memoryMiB);
      const copyTarget = new Uint8Array(ram.size);
      const copyMs = repeat(() => copyTarget.set(machine.ram.bytes));
      const copy = summarize(copyMs);
      rows.push({ memoryMiB, engine: "copy", ...copy, ratioToCopy: 1 });
      for (const engine of ENGINES) {
        const tracker = DirtyPageTracker.create(machine, { engine });
        const first = timed(() => tracker.collect()); // every page: shadow starts at zero
        let pages = 0;
        // A sequence of its own per engine: replaying the previous engine's would rewrite equal values.
        const random = seededRandom(memoryMiB * 8 + ENGINES.indexOf(engine));
        const collectMs = repeat(() => {
          touchPages(machine, tracker.pageCount, random);
          const { ms, value } = timed(() => tracker.collect());
          pages = value.indices.length;
          return ms;
        });
        tracker.dispose();
        const summary = summarize(collectMs);
        rows.push({ memoryMiB, engine, firstCollectMs: first.ms, ...summary, pagesPerCollect: pages, ratioToCopy: summary.medianMs / copy.medianMs });
        context.log(`${memoryMiB} MiB ${engine}: ${summary.medianMs.toFixed(2)} ms (copy ${copy.medianMs.toFixed(2)} ms), ${pages} pages`);
      }
    } finally {
      await machine.destroy();
    }
  }
  const fmt = (n: number | undefined) => (n === undefined ? "" : n.toFixed(2));
  return {
    description:
      `One \`DirtyPageTracker.collect()\` (scan of all RAM against the shadow, shadow update, copy-out of changed pages) ` +
      `with ${CHANGED_FRACTION * 100}% of pages changed between collections (one 32-bit word each, written via GuestRam.write), ` +
      `beside one full \`Uint8Array.set\` copy of RAM (the floor). Guests are not booted: blank machines whose RAM is filled ` +
      `with random bytes. Median of ${ROUNDS} after ${WARMUP} warm-up rounds; "first" is the first collection of a fresh ` +
      `tracker (every page reported, cold wasm code).`,
    table: [
      "| RAM | method | median ms | min ms | max ms | ratio to copy | pages per collect | first collect ms |",
      "|---|---|---|---|---|---|---|---|",
      ...rows.map(
        (r) =>
          `| ${r.memoryMiB} MiB | ${r.engine === "copy" ? "TypedArray.set copy" : r.engine} | ${fmt(r.medianMs)} | ${fmt(r.minMs)} | ${fmt(r.maxMs)} | ${r.ratioToCopy.toFixed(2)} | ${r.pagesPerCollect ?? ""} | ${fmt(r.firstCollectMs)} |`,
      ),
    ].join("\n"),
    data: rows,
  };
}

function repeat(measure: () => number | void): number[] {
  const times: number[] = [];
  for (let i = 0; i < WARMUP + ROUNDS; i++) {
    const started = performance.now();
    const ms = measure();
    const elapsed = typeof ms === "number" ? ms : performance.now() - started;
    if (i >= WARMUP) times.push(elapsed);
  }
  return times;
}

function summarize(times: number[]): { medianMs: number; minMs: number; maxMs: number } {
  return { medianMs: median(times), minMs: Math.min(...times), maxMs: Math.max(...times) };
}

/** Changes one word in CHANGED_FRACTION of the pages, as a device would. */
function touchPages(machine: Machine, pageCount: number, random: () => number): void {
  const count = Math.round(pageCount * CHANGED_FRACTION);
  for (let i = 0; i < count; i++) {
    const page = Math.floor(random() * pageCount);
    const word = new Uint8Array(new Uint32Array([Math.floor(random() * 2 ** 32) | 1]).buffer);
    machine.ram.write(page * PAGE_SIZE + Math.floor(random() * 1024) * 4, word);
  }
}

function fillRandom(bytes: Uint8Array, seed: number): void {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}
