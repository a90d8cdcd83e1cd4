// The talk's comparison: the same fio write workload on a protected guest with
// I/O logging-replay and with dirty-block copy (and unreplicated, as the ceiling),
// measured in one run. Both nodes live in this process, joined by the in-memory
// link, so the figures compare the methods, not a network.
import { BlockHook } from "../emulator/block/hook.ts";
import { MemoryBackend } from "../emulator/block/memory-backend.ts";
import { Machine } from "../emulator/machine.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import { handshake } from "../replication/channel/handshake.ts";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";
import { PrimaryEngine, type DiskMode } from "../replication/engine/primary.ts";
import { SecondaryEngine } from "../replication/engine/secondary.ts";
import { createMemoryPair } from "../replication/transport/memory-pair.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { median } from "./stats.ts";

const DISK_BYTES = 96 << 20;
const SECRET = new TextEncoder().encode("benchmark-secret-0123456789abcdef");
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
  const template = new MemoryBackend(DISK_BYTES);
  const booted = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: template, id: "vda", keepBackendOpen: true })] });
  await booted.boot();
  await booted.exec(FIO, { timeoutMs: 300_000 }); // warm up v86's JIT on fio's code
  const snapshot = await booted.snapshot();
  await booted.destroy();

  const samples = new Map<Variant, Sample[]>([["none", []], ["logging-replay", []], ["dirty-block-copy", []]]);
  for (let round = 0; round < ROUNDS; round++) {
    for (const variant of samples.keys()) {
      const sample = await runVariant(variant, snapshot, template.bytes);
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
  const perSyncRatio = ratio((s) => s.metrics!.bytes.memoryPages + s.metrics!.bytes.deviceState + s.metrics!.bytes.ioLog + s.metrics!.bytes.diskBlocks + s.metrics!.bytes.control) / ratio((s) => s.metrics!.syncs);
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

async function runVariant(variant: Variant, snapshot: Uint8Array, disk: Uint8Array): Promise<Sample> {
  const hook = new BlockHook();
  const primaryDisk = new MemoryBackend(disk.slice());
  const primary = await Machine.fromSnapshot(snapshot, { ...defaultGuest(), devices: [virtioBlkDisk({ backend: primaryDisk, id: "vda", hook })] });
  let secondary: Machine | undefined;
  let engine: PrimaryEngine | undefined;
  try {
    if (variant !== "none") {
      // The secondary already holds the same disk: the initial sync proves it by digest.
      secondary = await Machine.createBlank({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: new MemoryBackend(disk.slice()), id: "vda" })] });
      const link = createMemoryPair();
      const [a, b] = await Promise.all([handshake(link.a, "primary", SECRET), handshake(link.b, "secondary", SECRET)]);
      await new SecondaryEngine(secondary).attach(b);
      engine = new PrimaryEngine(primary, { mode: variant, hook });
      await engine.protect(a);
    }
    const before = engine?.metrics.snapshot();
    const result = await primary.exec(FIO, { timeoutMs: 600_000 });
    const kibPerSecond = Number(result.output.trim());
    if (!Number.isFinite(kibPerSecond) || kibPerSecond <= 0) throw new Error(`fio gave no write bandwidth: ${result.output}`);
    return { kibPerSecond, metrics: engine === undefined ? undefined : since(before!, engine.metrics.snapshot()) };
  } finally {
    await engine?.close();
    await primary.destroy();
    await secondary?.destroy();
  }
}

/** The workload's own share of the counters (the initial sync excluded). */
function since(before: MetricsSnapshot, after: MetricsSnapshot): MetricsSnapshot {
  const bytes = { ...after.bytes };
  for (const key of Object.keys(bytes) as (keyof typeof bytes)[]) bytes[key] -= before.bytes[key];
  const syncs = after.syncs - before.syncs;
  const pagesSynced = after.pagesSynced - before.pagesSynced;
  return {
    ...after,
    bytes,
    diskSyncBytes: after.diskSyncBytes - before.diskSyncBytes,
    syncs,
    pagesSynced,
    pagesPerSync: syncs === 0 ? 0 : pagesSynced / syncs,
    writesSynced: after.writesSynced - before.writesSynced,
    inlineWrites: after.inlineWrites - before.inlineWrites,
  };
}
