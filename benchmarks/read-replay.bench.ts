// Read-replay (the talk's future work): pages that a disk read filled travel as a log entry
// instead of as pages; the secondary reads the same sectors from its own disk. Measured on a
// read-heavy workload with a cold page cache, logging-replay with read-replay on and off,
// and unreplicated as the ceiling, interleaved in one run. In-process link.
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";
import { benchPrimary, benchSecondary, prepareBenchGuest } from "./in-process-pair.ts";
import { metricsSince, totalBytes } from "./metrics-diff.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median } from "./stats.ts";

const DISK_BYTES = 48 << 20;
const ROUNDS = 3;
const SETUP =
  "mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt && " +
  "for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/f$i bs=64k count=16 2>/dev/null; done && " +
  "dd if=/dev/urandom of=/mnt/big bs=1M count=8 2>/dev/null && sync";
/** Buffered reads of 14 MiB from a cold cache, then 4 KiB direct random reads (fio prints their KiB/s). */
const READS =
  "echo 3 > /proc/sys/vm/drop_caches && cat /mnt/f* /mnt/big > /dev/null && " +
  "fio --name=r --filename=/mnt/big --rw=randread --bs=4k --size=8m --ioengine=psync --direct=1 --randrepeat=1 " +
  "--output-format=terse --terse-version=3 2>&1 | cut -d';' -f7";

type Variant = "none" | "read-replay" | "pages";

interface Sample {
  wallMs: number;
  randomReadKiBs: number;
  metrics: MetricsSnapshot | undefined;
}

export default async function readReplay(context: BenchContext): Promise<BenchReport> {
  // Run the workload once at set-up: v86's JIT then knows fio's and cat's code.
  const guest = await prepareBenchGuest(DISK_BYTES, `${SETUP} && ${READS} > /dev/null`);
  const samples = new Map<Variant, Sample[]>([
    ["none", []],
    ["read-replay", []],
    ["pages", []],
  ]);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [variant, list] of samples) {
      const sample = await runVariant(variant, guest);
      list.push(sample);
      context.log(
        `round ${round + 1} ${variant}: ${(sample.wallMs / 1000).toFixed(1)} s, random reads ${sample.randomReadKiBs} KiB/s, ${((sample.metrics ? totalBytes(sample.metrics) : 0) / 2 ** 20).toFixed(2)} MiB sent`,
      );
    }
  }
  const base = samples.get("none")!;
  const rows: string[] = [];
  const data: Record<string, unknown> = {};
  for (const [variant, list] of samples) {
    const metrics = list.map((s) => s.metrics).filter((m): m is MetricsSnapshot => m !== undefined);
    const of = (f: (m: MetricsSnapshot) => number) => (metrics.length === 0 ? 0 : median(metrics.map(f)));
    const wall = median(list.map((s) => s.wallMs));
    const random = median(list.map((s) => s.randomReadKiBs));
    data[variant] = { wallMs: list.map((s) => s.wallMs), randomReadKiBs: list.map((s) => s.randomReadKiBs), metrics };
    rows.push(
      `| ${variant} | ${(wall / 1000).toFixed(2)} | ${(median(base.map((s) => s.wallMs)) / wall).toFixed(2)} | ${random} | ` +
        `${(of(totalBytes) / 2 ** 20).toFixed(2)} | ${(of((m) => m.bytes.memoryPages) / 2 ** 20).toFixed(2)} | ${of((m) => m.readReplayedPages)} | ${of((m) => m.syncs)} |`,
    );
  }
  const ratio = (f: (s: Sample) => number) => median(samples.get("read-replay")!.map(f)) / median(samples.get("pages")!.map(f));
  const bytesRatio = ratio((s) => totalBytes(s.metrics!));
  const wallRatio = ratio((s) => s.wallMs);
  return {
    description:
      `Default guest (128 MiB), logging-replay over the in-memory link, a ${DISK_BYTES >> 20} MiB ext2 disk holding 14 MiB of files. ` +
      `Workload: \`${READS.replace(" --output-format=terse --terse-version=3 2>&1 | cut -d';' -f7", "")}\`. ` +
      `"read-replay": pages a read filled travel as a log entry; "pages": the same engine with read-replay off (readReplay: false), so those pages travel as page data. ` +
      `Bytes are everything the primary sent from the start of the workload through a sync after it. ${ROUNDS} rounds, variants interleaved, medians.`,
    table: [
      "| variant | workload s | speed vs none | fio random-read KiB/s | MiB sent | page MiB | read-replayed pages | syncs |",
      "|---|---|---|---|---|---|---|---|",
      ...rows,
      "",
      `read-replay vs pages: ${(100 * (1 - bytesRatio)).toFixed(1)}% fewer bytes sent; workload time ${wallRatio.toFixed(2)}x.`,
    ].join("\n"),
    data: { ...data, ratios: { bytes: bytesRatio, wall: wallRatio } },
  };
}

async function runVariant(variant: Variant, guest: { snapshot: Uint8Array; disk: Uint8Array }): Promise<Sample> {
  const primary = await benchPrimary(guest, { mode: "logging-replay", readReplay: variant !== "pages" });
  const secondary = variant === "none" ? undefined : await benchSecondary(primary, guest.disk);
  try {
    if (secondary !== undefined) await primary.engine.protect(secondary.channel);
    const before = primary.engine.metrics.snapshot();
    const started = performance.now();
    const result = await primary.machine.exec(READS, { timeoutMs: 600_000 });
    const wallMs = performance.now() - started;
    const randomReadKiBs = Number(result.output.trim());
    if (!Number.isFinite(randomReadKiBs) || randomReadKiBs <= 0) throw new Error(`fio gave no read bandwidth: ${result.output}`);
    if (secondary === undefined) return { wallMs, randomReadKiBs, metrics: undefined };
    await primary.engine.syncNow(); // pages the reads filled since the last sync count too
    return { wallMs, randomReadKiBs, metrics: metricsSince(before, primary.engine.metrics.snapshot()) };
  } finally {
    await primary.engine.close();
    await primary.machine.destroy();
    await secondary?.machine.destroy();
  }
}
