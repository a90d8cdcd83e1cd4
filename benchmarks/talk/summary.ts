// The talk benchmark's results as Markdown tables beside the talk's own figures, and the
// issue's targets as measured. Medians over rounds, with the spread (min-max).
import type { CellResult } from "./matrix.ts";
import type { TalkRun } from "../talk.bench.ts";
import { WORKLOADS } from "./workloads.ts";
import { shapingDescription } from "./links.ts";
import { stageFigures, timelineTable, type TimelineSample } from "../sync-timeline.ts";

const MiB = 1024;

function values(cells: CellResult[], pick: (cell: CellResult) => number | undefined): number[] {
  return cells
    .map(pick)
    .filter((v): v is number => v !== undefined && Number.isFinite(v))
    .sort((a, b) => a - b);
}

function median(sorted: number[]): number | undefined {
  if (sorted.length === 0) return undefined;
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const fixed = (value: number | undefined, digits = 2) => (value === undefined ? "–" : value.toFixed(digits));

function spread(sorted: number[], digits = 2): string {
  const m = median(sorted);
  if (m === undefined) return "–";
  return sorted.length > 1 ? `${m.toFixed(digits)} (${sorted[0]!.toFixed(digits)}–${sorted.at(-1)!.toFixed(digits)})` : m.toFixed(digits);
}

function perSync(cell: CellResult, pick: (m: NonNullable<CellResult["metrics"]>) => number): number | undefined {
  const m = cell.metrics;
  return m === undefined || m.syncs === 0 ? undefined : pick(m) / m.syncs;
}

const syncBytes = (m: NonNullable<CellResult["metrics"]>) => m.bytes.memoryPages + m.bytes.deviceState + m.bytes.ioLog + m.bytes.diskBlocks + m.bytes.control;

/** The workload whose syncs the timeline shows: random 4 KiB writes (a sync each, as in Kemari) when the run has them. */
export function timelineWorkload(run: TalkRun): string {
  return run.options.workloads.includes("rand-4k") ? "rand-4k" : run.options.workloads[0]!;
}

/** The first link's (unshaped in a full run) per-sync timelines for the timeline's workload, a sample per replicated cell. */
export function timelineSamples(run: TalkRun): TimelineSample[] {
  const link = run.options.links[0]!.name;
  const workload = timelineWorkload(run);
  return run.main.cells
    .filter((c) => c.link === link && c.workload === workload && c.metrics !== undefined)
    .map((c) => ({
      target: c.variant,
      stages: c.metrics!.stagesMs,
      ...(c.secondaryStages && { secondaryStages: c.secondaryStages }),
      roundTrip: c.metrics!.roundTripMs,
    }));
}

/** The variants that replicate, in the run's order. */
export function replicatedVariants(run: TalkRun): string[] {
  return run.options.variants.filter((v) => v !== "none");
}

export interface TalkSummary {
  description: string;
  table: string;
  data: Record<string, unknown>;
}

export function summarizeTalk(run: TalkRun): TalkSummary {
  const cells = run.main.cells;
  const select = (link: string, variant: string, workload: string) => cells.filter((c) => c.link === link && c.variant === variant && c.workload === workload);
  const tput = (link: string, variant: string, workload: string) => median(values(select(link, variant, workload), (c) => c.kibPerSecond));
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? undefined : a / b);
  const sections: string[] = [];
  const data: Record<string, unknown> = {};
  // The talk's traffic figures are Kemari's: a sync per write. With the synchronous variants in the run they come from those.
  const kemari = (variant: "logging-replay" | "dirty-block-copy") =>
    run.options.variants.includes(`${variant}+synchronous`) ? `${variant}+synchronous` : variant;

  for (const link of run.options.links) {
    const rows = run.options.workloads.map((workload) => {
      const none = tput(link.name, "none", workload);
      const cellsFor = (variant: string) => select(link.name, variant, workload);
      const column = (variant: string) =>
        run.options.variants.includes(variant as never) ? spread(values(cellsFor(variant), (c) => c.kibPerSecond / MiB)) : "–";
      const lr = tput(link.name, "logging-replay", workload);
      const dbc = tput(link.name, "dirty-block-copy", workload);
      return `| ${workload} | ${column("none")} | ${column("logging-replay")} | ${fixed(ratio(lr, none))} | ${column("dirty-block-copy")} | ${fixed(ratio(dbc, none))} | **${fixed(ratio(lr, dbc))}** |`;
    });
    sections.push(
      `### Guest write throughput, ${link.name} (MiB/s, median and range of ${run.options.rounds}; speculative sync mode)\n\n` +
        "| workload | none | logging-replay | replay / none | dirty-block-copy | copy / none | replay / copy |\n|---|---|---|---|---|---|---|\n" +
        rows.join("\n"),
    );
    if (run.options.variants.includes("logging-replay+synchronous")) {
      const synchronousRows = run.options.workloads.map((workload) => {
        const none = tput(link.name, "none", workload);
        const column = (variant: string) => spread(values(select(link.name, variant, workload), (c) => c.kibPerSecond / MiB));
        const lr = tput(link.name, "logging-replay+synchronous", workload);
        const dbc = tput(link.name, "dirty-block-copy+synchronous", workload);
        const speculative = tput(link.name, "logging-replay", workload);
        return `| ${workload} | ${column("logging-replay+synchronous")} | ${fixed(ratio(lr, none))} | ${column("logging-replay+deflate")} | ${column("dirty-block-copy+synchronous")} | ${fixed(ratio(dbc, none))} | **${fixed(ratio(lr, dbc))}** | ${fixed(ratio(speculative, lr))} |`;
      });
      sections.push(
        `### Guest write throughput, ${link.name}, synchronous sync mode (Kemari: each write waits for its acknowledgement)\n\n` +
          "| workload | logging-replay | replay / none | replay + deflate | dirty-block-copy | copy / none | replay / copy | replay, speculative / synchronous |\n|---|---|---|---|---|---|---|---|\n" +
          synchronousRows.join("\n"),
      );
    }
    const trafficRows = run.options.workloads.map((workload) => {
      const lr = select(link.name, kemari("logging-replay"), workload);
      const dbc = select(link.name, kemari("dirty-block-copy"), workload);
      const deflated = select(link.name, "logging-replay+deflate", workload);
      const diskLr = median(values(lr, (c) => c.metrics?.diskSyncBytes));
      const diskDbc = median(values(dbc, (c) => c.metrics?.diskSyncBytes));
      const perSyncLr = median(values(lr, (c) => perSync(c, syncBytes)));
      const perSyncDbc = median(values(dbc, (c) => perSync(c, syncBytes)));
      const perSyncDeflate = median(values(deflated, (c) => perSync(c, syncBytes)));
      const pagesSent = median(values(lr, (c) => perSync(c, (m) => m.bytes.memoryPages)));
      const pagesRaw = median(values(lr, (c) => perSync(c, (m) => m.memoryPagesRawBytes)));
      const pause = (which: "p50Ms" | "p99Ms") => median(values(lr, (c) => c.metrics?.pauseMs[which]));
      const rtt = median(values(lr, (c) => c.metrics?.roundTripMs.p50Ms));
      const reduction = (a: number | undefined, b: number | undefined) =>
        a === undefined || b === undefined || b === 0 ? "–" : `${(100 * (1 - a / b)).toFixed(1)}%`;
      return (
        `| ${workload} | ${fixed(diskLr === undefined ? undefined : diskLr / 1024, 1)} | ${fixed(diskDbc === undefined ? undefined : diskDbc / 1024, 1)} | ${reduction(diskLr, diskDbc)} | ` +
        `${fixed(perSyncLr === undefined ? undefined : perSyncLr / 1024, 1)} | ${fixed(perSyncDbc === undefined ? undefined : perSyncDbc / 1024, 1)} | ${reduction(perSyncLr, perSyncDbc)} | ` +
        `${fixed(perSyncDeflate === undefined ? undefined : perSyncDeflate / 1024, 1)} | ${fixed(pagesSent === undefined ? undefined : pagesSent / 1024, 1)} / ${fixed(pagesRaw === undefined ? undefined : pagesRaw / 1024, 0)} | ` +
        `${fixed(pause("p50Ms"))} / ${fixed(pause("p99Ms"))} | ${fixed(rtt)} |`
      );
    });
    sections.push(
      `### Traffic and pauses, ${link.name} (logging-replay unless named, ${kemari("logging-replay").endsWith("synchronous") ? "synchronous: a sync per write, as Kemari" : "speculative"}; medians)\n\n` +
        "| workload | disk-sync KiB, replay | disk-sync KiB, copy | less | KiB per sync, replay | KiB per sync, copy | less | KiB per sync, replay + deflate | page KiB per sync sent / raw | pause p50 / p99 ms | round trip p50 ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n" +
        trafficRows.join("\n"),
    );
  }

  // The talk's three figures, and the targets, as measured.
  const slowest = run.options.links.at(-1)!.name;
  const fastest = run.options.links.find((l) => l.name === "1 Gbit/s")?.name ?? run.options.links[0]!.name;
  const allDisk = (variant: string, link: string) =>
    median(
      values(
        cells.filter((c) => c.link === link && c.variant === variant),
        (c) => c.metrics?.diskSyncBytes,
      ),
    );
  const diskReduction = ratio(allDisk(kemari("logging-replay"), fastest), allDisk(kemari("dirty-block-copy"), fastest));
  const perSyncOf = (variant: string, link: string, workload: string) => median(values(select(link, variant, workload), (c) => perSync(c, syncBytes)));
  const perSyncRatio64 = ratio(perSyncOf(kemari("logging-replay"), slowest, "seq-64k"), perSyncOf(kemari("dirty-block-copy"), slowest, "seq-64k"));
  const fileRatio = (link: string, suffix = "") =>
    ratio(tput(link, `logging-replay${suffix}`, "ext4-files"), tput(link, `dirty-block-copy${suffix}`, "ext4-files"));
  const ratio64 = ratio(tput(slowest, "logging-replay", "seq-64k"), tput(slowest, "dirty-block-copy", "seq-64k"));
  const unshaped = run.options.links[0]!.name;
  const vsNone4k = ratio(tput(unshaped, "logging-replay", "seq-4k"), tput(unshaped, "none", "seq-4k"));
  const vsNoneRand = ratio(tput(unshaped, "logging-replay", "rand-4k"), tput(unshaped, "none", "rand-4k"));
  const synchronousVsNone4k = ratio(tput(unshaped, "logging-replay+synchronous", "seq-4k"), tput(unshaped, "none", "seq-4k"));
  const synchronousVsNoneRand = ratio(tput(unshaped, "logging-replay+synchronous", "rand-4k"), tput(unshaped, "none", "rand-4k"));
  const p99All = median(
    values(
      cells.filter((c) => c.variant === "logging-replay" && c.link === unshaped),
      (c) => c.metrics?.pauseMs.p99Ms,
    ),
  );
  const memory = run.pauseByMemory?.cells ?? [];
  const pauseAt = (mib: number, which: "p50Ms" | "p99Ms") =>
    median(
      values(
        memory.filter((c) => c.memoryMiB === mib),
        (c) => c.metrics?.pauseMs[which],
      ),
    );
  const [small, large] = [run.options.pauseByMemoryMiB[0], run.options.pauseByMemoryMiB.at(-1)];
  const memoryRatio = small === undefined || large === undefined ? undefined : ratio(pauseAt(large, "p99Ms"), pauseAt(small, "p99Ms"));
  const timelines = timelineSamples(run);
  const timelineOf = timelineWorkload(run);
  const roundTrip = stageFigures(timelines, "logging-replay+synchronous", "round trip")?.p50;
  const speculativeRoundTrip = stageFigures(timelines, "logging-replay", "round trip")?.p50;
  const nextRequest = stageFigures(timelines, "logging-replay+synchronous", "next-request")?.p50;
  const pct = (r: number | undefined) => (r === undefined ? "–" : `${(100 * (1 - r)).toFixed(1)}% less`);
  const times = (r: number | undefined) => (r === undefined ? "–" : `${r.toFixed(2)}x`);
  const verdict = (ok: boolean | undefined) => (ok === undefined ? "not measured" : ok ? "met" : "**not met**");

  const comparison =
    "### Beside the talk\n\n| the talk's claim (Kemari, 1 GiB guest, IOzone, 1 GbE) | talk | measured here |\n|---|---|---|\n" +
    `| traffic needed to sync disks, logging-replay vs dirty-block copy | 99% less | ${pct(diskReduction)} (all workloads, ${fastest}, ${kemari("logging-replay").endsWith("synchronous") ? "synchronous" : "speculative"}) |\n` +
    `| traffic per sync | 50% less | ${pct(perSyncRatio64)} (seq-64k, ${slowest}, ${kemari("logging-replay").endsWith("synchronous") ? "synchronous" : "speculative"}) |\n` +
    `| file I/O throughput, logging-replay vs dirty-block copy | +160% (2.6x) | speculative: ${times(fileRatio(fastest))} at ${fastest}, ${times(fileRatio(slowest))} at ${slowest}; synchronous (as Kemari): ${times(fileRatio(fastest, "+synchronous"))} at ${fastest}, ${times(fileRatio(slowest, "+synchronous"))} at ${slowest} (ext4-files) |\n\n` +
    "### The issues' targets\n\n| target | measured | |\n|---|---|---|\n" +
    `| logging-replay ≥ 0.8x of unreplicated, 4 KiB direct writes, speculative | ${times(vsNone4k)} seq-4k, ${times(vsNoneRand)} rand-4k (${unshaped}) | ${verdict(vsNone4k === undefined || vsNoneRand === undefined ? undefined : Math.min(vsNone4k, vsNoneRand) >= 0.8)} |\n` +
    `| the same, synchronous | ${times(synchronousVsNone4k)} seq-4k, ${times(synchronousVsNoneRand)} rand-4k | ${verdict(synchronousVsNone4k === undefined || synchronousVsNoneRand === undefined ? undefined : Math.min(synchronousVsNone4k, synchronousVsNoneRand) >= 0.5)} |\n` +
    `| ext4-files, logging-replay ≥ 2.6x dirty-block copy at ${slowest} (the talk) | speculative ${times(fileRatio(slowest))}, synchronous ${times(fileRatio(slowest, "+synchronous"))} | ${verdict(fileRatio(slowest) === undefined ? undefined : fileRatio(slowest)! >= 2.6)} |\n` +
    `| logging-replay ≥ 2x dirty-block copy, 64 KiB writes at ${slowest} | ${times(ratio64)} | ${verdict(ratio64 === undefined ? undefined : ratio64 >= 2)} |\n` +
    `| traffic per sync ≤ 50% of dirty-block copy (seq-64k, ${slowest}) | ${times(perSyncRatio64)} | ${verdict(perSyncRatio64 === undefined ? undefined : perSyncRatio64 <= 0.5)} |\n` +
    `| sync round trip p50 ≤ 0.3 ms (logging-replay, ${unshaped}, ${timelineOf}) | synchronous ${fixed(roundTrip)} ms, speculative ${fixed(speculativeRoundTrip)} ms | ${verdict(roundTrip === undefined ? undefined : roundTrip <= 0.3)} |\n` +
    `| ack to the guest's next request p50 ≤ 0.2 ms (logging-replay, synchronous, ${timelineOf}) | ${fixed(nextRequest)} ms | ${verdict(nextRequest === undefined ? undefined : nextRequest <= 0.2)} |\n` +
    `| guest pause per sync p99 ≤ 5 ms (logging-replay, ${unshaped}) | ${fixed(p99All)} ms | ${verdict(p99All === undefined ? undefined : p99All <= 5)} |\n` +
    `| ${large} MiB guest's pause within 1.5x of ${small} MiB (p99, seq-4k) | ${fixed(pauseAt(small ?? 0, "p99Ms"))} ms vs ${fixed(pauseAt(large ?? 0, "p99Ms"))} ms: ${times(memoryRatio)} | ${verdict(memoryRatio === undefined ? undefined : memoryRatio <= 1.5)} |`;

  const failures = [...run.main.failures, ...(run.pauseByMemory?.failures ?? [])];
  const shapingText =
    run.shaping === "netns-tc"
      ? `a private network namespace made by the benchmark (\`unshare --net\`), ${shapingDescription()}; nothing leaves the namespace`
      : `**fallback: an in-process rate-limited TCP proxy between the nodes** (no namespace here: ${run.fallbackReason}); not the kernel's shaping`;
  const description =
    `Primary and secondary are separate processes (\`harness/replica-node.ts\`) connected by the real WebSocket over ${shapingText}. ` +
    `Each pair restores one guest snapshot (128 MiB, default guest, two 64 MiB disk images: raw vda, file system on vdb at /mnt), ` +
    (run.options.warmUpSeconds > 0
      ? `runs ${run.options.warmUpSeconds} s of unmeasured writes (4 KiB random, then 64 KiB sequential: a restored guest has all its code to compile again, in v86's JIT and in V8, and measured cold the unreplicated guest ran seq-4k at about a third of its warm speed), then every workload in order; `
      : "runs a short unmeasured warm-up (128 writes), then every workload in order; ") +
    `the disk mode \`none\` runs the primary alone. Replicated pairs run in the default sync mode, speculative (a write completes at once; syncs are taken when output waits or every 20 ms), those marked synchronous in Kemari's (a write completes at its sync's acknowledgement). ` +
    `${run.options.rounds} rounds per cell, modes interleaved within each round; medians with (min–max). Throughput is fio's write bandwidth in the guest; ` +
    `traffic and pauses are the primary's counters over each workload (bytes on the wire after encryption, by category; "raw" is changed pages × 4 KiB). ` +
    "Workloads: " +
    WORKLOADS.filter((w) => run.options.workloads.includes(w.name))
      .map((w) => `\`${w.name}\` ${w.description}`)
      .join("; ") +
    "." +
    (failures.length > 0 ? ` Failed cells (left out): ${failures.join("; ")}.` : "");
  data["comparison"] = {
    diskReduction,
    perSyncRatio64,
    fileRatio: { [fastest]: fileRatio(fastest), [slowest]: fileRatio(slowest) },
    fileRatioSynchronous: { [fastest]: fileRatio(fastest, "+synchronous"), [slowest]: fileRatio(slowest, "+synchronous") },
    synchronousVsNone4k,
    synchronousVsNoneRand,
    ratio64,
    vsNone4k,
    vsNoneRand,
    p99All,
    memoryRatio,
    roundTrip,
    nextRequest,
  };
  const timeline =
    `### Per-sync timeline, ${unshaped} (ms, p50 / p99, ${timelineOf}: median of the rounds' p50s and max of their p99s; the primary's stages, and under \`wire\` each side's share of it: the rest of \`wire\` is the link and the wait for each side's event loop)\n\n` +
    timelineTable(timelines, replicatedVariants(run));
  data["timelines"] = timelines;
  return { description, table: [comparison, ...sections, timeline].join("\n\n"), data };
}
