// The talk's comparison, reproduced: fio workloads on a replicated guest whose primary and
// secondary are separate processes over the real WebSocket, in a private network namespace
// whose loopback is shaped to 1 Gbit/s and 100 Mbit/s (and unshaped), for the disk modes
// none, logging-replay (also with deflate on top) and dirty-block-copy; every cell several
// times, modes interleaved. Records JSON, a Markdown summary beside the talk's figures, and
// SVG charts. `npm run bench -- talk` (root for the namespace; else a labelled fallback).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchContext, BenchReport } from "./run.ts";
import { runMatrixInChild } from "./matrix-process.ts";
import { groupedBars, stackSvgs, stackedBars } from "./talk/charts.ts";
import { buildGuestTemplate } from "./talk/guest-template.ts";
import { LINKS, canUseNamespaces, type LinkSpec } from "./talk/links.ts";
import type { CellResult, MatrixConfig, MatrixResults, Variant } from "./talk/matrix.ts";
import { WORKLOADS } from "./talk/workloads.ts";
import { replicatedVariants, summarizeTalk, timelineSamples, timelineWorkload } from "./talk/summary.ts";
import { timelineChart } from "./sync-timeline.ts";

const here = fileURLToPath(new URL(".", import.meta.url));

export interface TalkOptions {
  links: readonly LinkSpec[];
  workloads: readonly string[];
  variants: readonly Variant[];
  rounds: number;
  /** Compare the guest pause of these memory sizes (logging-replay, seq-4k, unshaped); empty: skip. */
  pauseByMemoryMiB: readonly number[];
  /** Unmeasured writes in each new pair first, seconds (0: a short warm-up). */
  warmUpSeconds: number;
}

/** How a link filter compares names: "100M" and "100mbit" both pick "100 Mbit/s". */
const linkKey = (name: string) => name.replace(/\s+/g, "").toLowerCase();

/** `TWINVM_BENCH_LINKS=unshaped,100M`: only the links whose names start so (a shorter run). */
const LINK_FILTER = (process.env.TWINVM_BENCH_LINKS ?? "")
  .split(",")
  .map(linkKey)
  .filter((name) => name !== "");

export const FULL: TalkOptions = {
  links: LINK_FILTER.length === 0 ? LINKS : LINKS.filter((link) => LINK_FILTER.some((prefix) => linkKey(link.name).startsWith(prefix))),
  workloads: WORKLOADS.map((w) => w.name),
  variants: ["none", "logging-replay", "logging-replay+deflate", "dirty-block-copy", "logging-replay+synchronous", "dirty-block-copy+synchronous"],
  rounds: Number(process.env.TWINVM_BENCH_ROUNDS ?? 3),
  pauseByMemoryMiB: [128, 1024],
  warmUpSeconds: 30,
};

export interface TalkRun {
  shaping: MatrixResults["shaping"];
  /** Why the fallback was used, when it was. */
  fallbackReason: string | undefined;
  options: TalkOptions;
  main: MatrixResults;
  pauseByMemory: MatrixResults | undefined;
}

/** Runs the matrix (in a namespace when possible) and returns the raw results. */
export async function runTalk(options: TalkOptions, log: (line: string) => void): Promise<TalkRun> {
  const dir = mkdtempSync(join(tmpdir(), "twinvm-talk-templates-"));
  try {
    const namespaces = canUseNamespaces();
    const shaping = namespaces.ok ? "netns-tc" : "proxy";
    if (!namespaces.ok) log(`no private network namespace (${namespaces.why}): shaping with the in-process rate-limited proxy instead`);
    const memories = [...new Set([128, ...options.pauseByMemoryMiB])];
    const templates = new Map<number, Awaited<ReturnType<typeof buildGuestTemplate>>>();
    for (const memoryMiB of memories) {
      log(`booting the ${memoryMiB} MiB guest template`);
      templates.set(memoryMiB, await buildGuestTemplate(dir, memoryMiB));
    }
    const main = await runMatrixProcess(
      "main",
      {
        shaping,
        links: [...options.links],
        workloads: [...options.workloads],
        variants: [...options.variants],
        rounds: options.rounds,
        guests: [templates.get(128)!],
        warmUpSeconds: options.warmUpSeconds,
      },
      log,
    );
    const pauseByMemory =
      options.pauseByMemoryMiB.length < 2
        ? undefined
        : await runMatrixProcess(
            "memory",
            {
              shaping,
              links: [LINKS[0]!],
              workloads: ["seq-4k"],
              variants: ["logging-replay"],
              rounds: options.rounds,
              guests: options.pauseByMemoryMiB.map((m) => templates.get(m)!),
              warmUpSeconds: options.warmUpSeconds,
            },
            log,
          );
    return { shaping, fallbackReason: namespaces.ok ? undefined : namespaces.why, options, main, pauseByMemory };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs one matrix in a child process: inside `unshare --net` for tc shaping, else directly. */
function runMatrixProcess(name: string, config: MatrixConfig, log: (line: string) => void): Promise<MatrixResults> {
  return runMatrixInChild<MatrixConfig, MatrixResults>(config, {
    script: join(here, "talk", "run-matrix.ts"),
    name,
    inNamespace: config.shaping === "netns-tc",
    log,
  });
}

export default async function talk(context: BenchContext): Promise<BenchReport> {
  const run = await runTalk(FULL, context.log);
  const summary = summarizeTalk(run);
  const resultsDir = join(here, "results");
  writeFileSync(join(resultsDir, "talk-throughput.svg"), throughputChart(run.main.cells, run.options));
  writeFileSync(join(resultsDir, "talk-traffic.svg"), trafficChart(run.main.cells));
  const timelineTitle = `Per-sync timeline on the primary, p50 of each stage (${timelineWorkload(run)}, ${run.options.links[0]!.name})`;
  writeFileSync(join(resultsDir, "talk-timeline.svg"), timelineChart(timelineTitle, timelineSamples(run), replicatedVariants(run)));
  return {
    description: summary.description,
    table: `${summary.table}\n\nCharts: [throughput by mode per link](talk-throughput.svg), [traffic per sync by category](talk-traffic.svg), [the per-sync timeline, p50, stacked](talk-timeline.svg).`,
    data: {
      ...summary.data,
      cells: run.main.cells,
      pauseByMemory: run.pauseByMemory?.cells ?? [],
      failures: [...run.main.failures, ...(run.pauseByMemory?.failures ?? [])],
    },
  };
}

function medianOf(cells: CellResult[], pick: (cell: CellResult) => number): number | undefined {
  const values = cells.map(pick).sort((a, b) => a - b);
  if (values.length === 0) return undefined;
  const middle = values.length >> 1;
  return values.length % 2 === 1 ? values[middle]! : (values[middle - 1]! + values[middle]!) / 2;
}

function throughputChart(cells: CellResult[], options: TalkOptions): string {
  const panels = options.links.map((link) =>
    groupedBars(
      `Guest write throughput, ${link.name}`,
      [...options.variants],
      options.workloads.map((workload) => ({
        label: workload,
        values: options.variants.map((variant) => {
          const median = medianOf(
            cells.filter((c) => c.link === link.name && c.workload === workload && c.variant === variant),
            (c) => c.kibPerSecond / 1024,
          );
          return median;
        }),
      })),
      "MiB/s",
    ),
  );
  return stackSvgs(panels);
}

function trafficChart(cells: CellResult[]): string {
  const categories = ["memoryPages", "deviceState", "ioLog", "diskBlocks", "control"] as const;
  const link = "1 Gbit/s";
  const bars = WORKLOADS.flatMap((workload) =>
    (["logging-replay+synchronous", "dirty-block-copy+synchronous"] as const).map((variant) => {
      const matching = cells.filter(
        (c) => c.link === link && c.workload === workload.name && c.variant === variant && c.metrics !== undefined && c.metrics.syncs > 0,
      );
      return {
        label: `${workload.name}\n${variant === "logging-replay+synchronous" ? "replay" : "block copy"}`,
        values: categories.map((category) => medianOf(matching, (c) => c.metrics!.bytes[category] / c.metrics!.syncs / 1024)),
      };
    }),
  );
  return stackedBars(`Traffic per sync by category, ${link}, synchronous (Kemari's setting)`, [...categories], bars, "KiB per sync");
}
