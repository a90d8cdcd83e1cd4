// `npm run bench -- tlb-rearm`: what re-arming the write map costs the guest. One booted guest,
// its pages collected every millisecond (about one collection per 4 KiB write, as a synchronous
// pair captures), while fio writes 4 KiB blocks; the write map re-arms either by making the TLB
// read-only (the default) or by clearing it (the tracker before), alternating in one process so
// that the two compare as a ratio on a noisy machine.
import { MemoryBackend } from "../emulator/block/memory-backend.ts";
import { Machine } from "../emulator/machine.ts";
import { DirtyPageTracker } from "../emulator/memory/index.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median } from "./stats.ts";

const ROUNDS = Number(process.env.TWINVM_BENCH_ROUNDS ?? 8);
const SECONDS = 4;
const COLLECT_EVERY_MS = 1;
const REARMS = ["write-protect", "clear"] as const;
type Rearm = (typeof REARMS)[number];

const fio = (seconds: number) =>
  `fio --name=r --filename=/dev/vda --ioengine=psync --direct=1 --rw=randwrite --bs=4k --size=8m --time_based --runtime=${seconds} ` +
  "--output-format=terse --terse-version=3 2>&1 | cut -d';' -f48";

export default async function tlbRearm(context: BenchContext): Promise<BenchReport> {
  const machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: new MemoryBackend(64 << 20) })] });
  const results: Record<Rearm, number[]> = { "write-protect": [], clear: [] };
  try {
    context.log("booting the guest");
    await machine.boot();
    const tracker = await machine.atNextBoundary(() => DirtyPageTracker.create(machine));
    if (tracker.mode !== "write-map") throw new Error(`the tracker runs in ${tracker.mode} mode: this needs the patched v86 module`);
    let collecting = true;
    const collector = (async () => {
      while (collecting) {
        await new Promise((resolve) => setTimeout(resolve, COLLECT_EVERY_MS));
        await machine.atNextBoundary(() => tracker.collect());
      }
    })();
    try {
      await machine.exec(fio(10), { timeoutMs: 120_000 }); // unmeasured: v86 compiles the guest's hot paths
      for (let round = 0; round < ROUNDS; round++) {
        for (const rearm of round % 2 === 0 ? REARMS : [...REARMS].reverse()) {
          tracker.rearm = rearm;
          const { output } = await machine.exec(fio(SECONDS), { timeoutMs: 120_000 });
          const kib = Number(output.trim().split("\n").at(-1));
          if (!Number.isFinite(kib) || kib <= 0) throw new Error(`fio printed no bandwidth: ${output.slice(-200)}`);
          results[rearm].push(kib / 1024);
          context.log(`round ${round + 1} ${rearm}: ${(kib / 1024).toFixed(2)} MiB/s`);
        }
      }
    } finally {
      collecting = false;
      await collector;
    }
  } finally {
    await machine.destroy();
  }
  const fixed = (value: number) => value.toFixed(2);
  const protect = median(results["write-protect"]);
  const clear = median(results.clear);
  const pairsFaster = results["write-protect"].filter((value, i) => value > results.clear[i]!).length;
  return {
    description:
      `The default guest (128 MiB) writes 4 KiB blocks with O_DIRECT (fio, psync, random, ${SECONDS} s a cell) to a RAM-backed virtio disk while the host collects ` +
      `its changed pages every ${COLLECT_EVERY_MS} ms (DirtyPageTracker, write-map mode; about one collection per write). After each collection the write map ` +
      "re-arms either by making every TLB entry read-only (write-protect, the default: the next write to each page walks the page tables, reads keep their " +
      "translations) or by clearing the TLB (clear, the re-arm before: every page the guest touches next is walked again). " +
      `${ROUNDS} rounds, the two alternating in one process (ABAB, then BABA).`,
    table: [
      "| re-arm | MiB/s, median | range | × clear |",
      "|---|---|---|---|",
      `| write-protect | ${fixed(protect)} | ${fixed(Math.min(...results["write-protect"]))}–${fixed(Math.max(...results["write-protect"]))} | **${fixed(protect / clear)}** |`,
      `| clear | ${fixed(clear)} | ${fixed(Math.min(...results.clear))}–${fixed(Math.max(...results.clear))} | 1.00 |`,
      "",
      `Write-protect was faster in ${pairsFaster} of ${ROUNDS} rounds.`,
    ].join("\n"),
    data: { rounds: ROUNDS, seconds: SECONDS, collectEveryMs: COLLECT_EVERY_MS, results },
  };
}
