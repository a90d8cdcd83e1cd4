// The talk's comparison: the same fio write workload on a protected guest with
// I/O logging-replay and with dirty-block copy (and unreplicated, as the ceiling),
// measured in one run. Both nodes live in this process, joined by the in-memory
// link, so the figures compare the methods, not a network.
import type { Machine } from "../emulator/machine.ts";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";
import type { DiskMode } from "../replication/engine/primary/engine.ts";
import { benchPrimary, benchSecondary, prepareBenchGuest } from "./in-process-pair.ts";
import { metricsSince } from "./metrics-diff.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median } from "./stats.ts";

const DISK_BYTES = 96 << 20;
const ROUNDS = 3;
// Sequential 4 KiB writes with an fsync every 16: many small synced writes, the talk's case.
const FIO =
  "fio --name=w --filename=/dev/vda --rw=write --bs=4k --size=8m --ioengine=psync --direct=1 --fsync=16 " +
  "--output-format=terse --terse-version=3 2>&1 | cut -d';' -f48";

type Variant = DiskMode | "none";

interface Sample {
  kibPerSecond: number;
  metrics: MetricsSnapshot | undefined;
}

export default async function replication(context: BenchContext): Promise<BenchReport> {
  // Running fio once warms up v86's JIT on fio's code.
  const guest = await prepareBenchGuest(DISK_BYTES, FIO);

  const samples = new Map<Variant, Sample[]>([
    ["none", []],
    ["logging-replay", []],
    ["dirty-block-copy", []],
  ]);
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of samples.keys()) {
      const sample = await runVariant(variant, guest);
      samples.get(variant)!.push(sample);
      context.log(`round ${round + 1} ${variant}: ${(sample.kibPerSecond / 1024).toFixed(2)} MiB/s, ${sample.metrics?.syncs ?? 0} syncs`);
    }
  }

  const rows: string[] = [];
  const data: Record<string, unknown> = {};
  const base = median(samples.get("none")!.map((s) => s.kibPerSecond));
  for (const [variant, list] of samples) {
    const throughput = median(list.map((s) => s.kibPerSecond));
    const metrics = list.map((s) => s.metrics).filter((m): m is MetricsSnapshot => m !== undefined);
    const perSync = (f: (m: MetricsSnapshot) => number) => (metrics.length === 0 ? 0 : median(metrics.map((m) => f(m) / Math.max(1, m.syncs))));
    const syncBytes = perSync((m) => m.bytes.memoryPages + m.bytes.deviceState + m.bytes.ioLog + m.bytes.diskBlocks + m.bytes.control);
    const diskSyncBytes = metrics.length === 0 ? 0 : median(metrics.map((m) => m.diskSyncBytes));
    const syncs = metrics.length === 0 ? 0 : median(metrics.map((m) => m.syncs));
    const pause = metrics.length === 0 ? 0 : median(metrics.map((m) => m.pauseMs.meanMs));
    const rtt = metrics.length === 0 ? 0 : median(metrics.map((m) => m.roundTripMs.meanMs));
    data[variant] = { throughputKiBs: list.map((s) => s.kibPerSecond), metrics };
    rows.push(
      `| ${variant} | ${(throughput / 1024).toFixed(2)} | ${(throughput / base).toFixed(2)} | ${syncs} | ${(syncBytes / 1024).toFixed(1)} | ` +
        `${(diskSyncBytes / 1024).toFixed(0)} | ${perSync((m) => m.pagesSynced).toFixed(1)} | ${pause.toFixed(1)} | ${rtt.toFixed(1)} |`,
    );
  }
  const [replay, copy] = [samples.get("logging-replay")!, samples.get("dirty-block-copy")!];
  const ratio = (f: (s: Sample) => number) => median(replay.map(f)) / median(copy.map(f));
  const diskRatio = ratio((s) => s.metrics!.diskSyncBytes);
  const perSyncRatio =
    ratio(
      (s) => s.metrics!.bytes.memoryPages + s.metrics!.bytes.deviceState + s.metrics!.bytes.ioLog + s.metrics!.bytes.diskBlocks + s.metrics!.bytes.control,
    ) / ratio((s) => s.metrics!.syncs);
  const throughputRatio = ratio((s) => s.kibPerSecond);
  return {
    description:
      `Default guest (128 MiB), virtio-blk over a ${DISK_BYTES >> 20} MiB in-memory disk, primary and secondary in one process over the ` +
      `in-memory link. Workload in the guest: \`${FIO.split(" 2>&1")[0]}\` (write throughput as fio reports it). ` +
      `${ROUNDS} rounds, variants interleaved, medians. Each run restores the same warmed-up snapshot and starts from the same disk.`,
    table: [
      "| variant | MiB/s | vs none | syncs | KiB per sync | disk-sync KiB | pages per sync | guest pause ms | round trip ms |",
      "|---|---|---|---|---|---|---|---|---|",
      ...rows,
      "",
      `logging-replay vs dirty-block-copy: disk-sync bytes ${(100 * (1 - diskRatio)).toFixed(1)}% less, ` +
        `bytes per sync ${(100 * (1 - perSyncRatio)).toFixed(1)}% less, guest write throughput ${throughputRatio.toFixed(2)}x.`,
    ].join("\n"),
    data: { ...data, ratios: { diskSyncBytes: diskRatio, bytesPerSync: perSyncRatio, throughput: throughputRatio } },
  };
}

async function runVariant(variant: Variant, guest: { snapshot: Uint8Array; disk: Uint8Array }): Promise<Sample> {
  if (variant === "none") {
    const { machine } = await benchPrimary(guest, { mode: "logging-replay" });
    try {
      return { kibPerSecond: await fioWriteBandwidth(machine), metrics: undefined };
    } finally {
      await machine.destroy();
    }
  }
  const primary = await benchPrimary(guest, { mode: variant });
  // The secondary already holds the same disk: the initial sync proves it by digest.
  const secondary = await benchSecondary(primary, guest.disk);
  try {
    await primary.engine.protect(secondary.channel);
    const before = primary.engine.metrics.snapshot();
    const kibPerSecond = await fioWriteBandwidth(primary.machine);
    return { kibPerSecond, metrics: metricsSince(before, primary.engine.metrics.snapshot()) };
  } finally {
    await primary.engine.close();
    await primary.machine.destroy();
    await secondary.machine.destroy();
  }
}

async function fioWriteBandwidth(machine: Machine): Promise<number> {
  const result = await machine.exec(FIO, { timeoutMs: 600_000 });
  const kibPerSecond = Number(result.output.trim());
  if (!Number.isFinite(kibPerSecond) || kibPerSecond <= 0) throw new Error(`fio gave no write bandwidth: ${result.output}`);
  return kibPerSecond;
}
