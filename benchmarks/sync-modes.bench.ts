// `npm run bench -- sync-modes`: what the guest pays for replication in each sync mode,
// measured in one run so that the modes compare as ratios. The same guest (restored from one
// template) runs unreplicated (one node process) and as pairs of the test API (two node
// processes over the real WebSocket) in both disk modes and both sync modes; each target
// writes 4 KiB blocks with O_DIRECT (fio, one at a time: every write is a sync), sequential
// and random, and answers a console command line 20 times (the console's added latency:
// its output waits for output commit). The primary's per-sync timeline (metrics.stagesMs)
// is recorded for each replicated target. Rounds rotate the order of targets.
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DurationSummary, MetricsSnapshot } from "../replication/engine/metrics.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { networkTemplate } from "./network/guest.ts";
import { configName, startTarget, TARGET_CONFIGS, type TargetConfig } from "./network/targets.ts";
import { median } from "./stats.ts";
import { timelineChart, timelineTable, type TimelineSample } from "./sync-timeline.ts";

const ROUNDS = Number(process.env.TWINVM_BENCH_ROUNDS ?? 3);
/**
 * `TWINVM_BENCH_SYNC_INTERVALS=5,50`: to choose the speculative mode's sync interval, compare
 * unreplicated, logging-replay speculative at the default interval and at each of these (ms),
 * instead of the modes.
 */
const INTERVALS = (process.env.TWINVM_BENCH_SYNC_INTERVALS ?? "")
  .split(",")
  .filter((ms) => ms.trim() !== "")
  .map(Number);
/**
 * `TWINVM_BENCH_OUTPUT_COALESCE=0,5`: to choose how long output waits for the rest of its burst,
 * compare unreplicated and logging-replay in both sync modes at the engine's default and at each
 * of these (ms), instead of the modes.
 */
const COALESCE = (process.env.TWINVM_BENCH_OUTPUT_COALESCE ?? "")
  .split(",")
  .filter((ms) => ms.trim() !== "")
  .map(Number);
const TARGETS: readonly TargetConfig[] =
  COALESCE.length > 0
    ? [
        { variant: "none" },
        ...(["speculative", "synchronous"] as const).flatMap((syncMode): TargetConfig[] => [
          { variant: "logging-replay", syncMode },
          ...COALESCE.map((outputCoalesceMs): TargetConfig => ({ variant: "logging-replay", syncMode, outputCoalesceMs })),
        ]),
      ]
    : INTERVALS.length === 0
      ? TARGET_CONFIGS
      : [
          { variant: "none" },
          { variant: "logging-replay", syncMode: "speculative" },
          ...INTERVALS.map((syncIntervalMs): TargetConfig => ({ variant: "logging-replay", syncMode: "speculative", syncIntervalMs })),
        ];
const SECONDS = 10;
const CONSOLE_LINES = 20;
const RAW = "--filename=/dev/vda --ioengine=psync --direct=1 --iodepth=1";
const fio = (name: string, rw: string, seconds: number) =>
  `fio --name=${name} ${RAW} --rw=${rw} --bs=4k --size=32m --time_based --runtime=${seconds} --output-format=terse --terse-version=3 2>&1 | cut -d';' -f48`;
const WORKLOADS = [
  { name: "seq-4k", command: fio("seq", "write", SECONDS) },
  { name: "rand-4k", command: fio("rand", "randwrite", SECONDS) },
] as const;

interface Cell {
  round: number;
  target: string;
  workload: string;
  mibPerSecond: number;
  load: number;
}

interface ConsoleCell {
  round: number;
  target: string;
  /** Each command line's answer time, ms. */
  answersMs: number[];
  /** Replicated: how long the primary held the guest's console bytes (output commit) over these lines. */
  holdMs?: DurationSummary;
}

interface TimelineCell extends TimelineSample {
  round: number;
}

const here = fileURLToPath(new URL(".", import.meta.url));

export default async function syncModes(context: BenchContext): Promise<BenchReport> {
  const loadAtStart = loadavg()[0]!;
  context.log("booting the guest template");
  const template = await networkTemplate();
  const cells: Cell[] = [];
  const consoles: ConsoleCell[] = [];
  const timelines: TimelineCell[] = [];
  const failures: string[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      const order = TARGETS.map((_, i) => TARGETS[(i + round - 1) % TARGETS.length]!);
      for (const config of order) {
        const target = configName(config);
        try {
          await measureTarget(template, config, round, { cells, consoles, timelines }, context.log);
        } catch (error) {
          failures.push(`round ${round} ${target}: ${(error as Error).message.split("\n")[0]}`);
          context.log(`FAILED round ${round} ${target}: ${(error as Error).message}`);
        }
      }
    }
  } finally {
    await template.dispose();
  }
  writeFileSync(
    join(here, "results", "sync-modes-timeline.svg"),
    timelineChart("Per-sync timeline on the primary, p50 of each stage (rand-4k)", timelines, REPLICATED),
  );
  const loadAtEnd = loadavg()[0]!;
  return {
    description:
      "What the guest pays for replication in each sync mode, in one run. The default guest (128 MiB) restored from one template, unreplicated (one node process, " +
      "`mode: none`) and as replicated pairs of the test API (two node processes over the real WebSocket on loopback, through the fault proxy, unshaped), " +
      "in both disk modes and both sync modes. Each target first writes unmeasured for 8 s (v86 compiles the guest's hot paths), then fio writes 4 KiB blocks " +
      `with O_DIRECT one at a time (psync, iodepth 1) for ${SECONDS} s, sequential then random, on the raw 64 MiB disk; then ${CONSOLE_LINES} console command lines ` +
      "(`echo`, typed on the serial console, answered when its output is seen: replicated, output commit holds it until the sync covering it is acknowledged). " +
      `${ROUNDS} rounds; each round rotates the order of targets. Load average (1 min, 2 cores): ${loadAtStart.toFixed(1)} at the start, ${loadAtEnd.toFixed(1)} at the end.`,
    table: [
      "### 4 KiB direct writes (MiB/s, median of rounds, and ratio to unreplicated)",
      throughputTable(cells),
      "### Console command line answered (ms, median and p99 over all rounds' lines)",
      consoleTable(consoles),
      "### Per-sync timeline (ms, p50 / p99, rand-4k's cells of all rounds: median of the rounds' p50s and max of their p99s; the primary's stages, and under `wire` each side's share of it)",
      timelineTable(timelines, REPLICATED),
      "Chart: [the per-sync timeline, p50, stacked](sync-modes-timeline.svg).",
      ...(failures.length > 0 ? ["### Failures", failures.map((f) => `- ${f}`).join("\n")] : []),
    ].join("\n\n"),
    data: { rounds: ROUNDS, seconds: SECONDS, cells, consoles, timelines, failures, load: { start: loadAtStart, end: loadAtEnd } },
  };
}

async function measureTarget(
  template: Awaited<ReturnType<typeof networkTemplate>>,
  config: TargetConfig,
  round: number,
  into: { cells: Cell[]; consoles: ConsoleCell[]; timelines: TimelineCell[] },
  log: (line: string) => void,
): Promise<void> {
  const name = configName(config);
  const target = await startTarget(template, config);
  try {
    await target.exec(fio("warm", "randwrite", 8), 120_000);
    for (const workload of WORKLOADS) {
      const replicated = config.variant !== "none";
      if (replicated) await Promise.all([target.metrics(true), target.secondaryMetrics(true)]);
      const { output } = await target.exec(workload.command, 120_000);
      const kib = Number(output.trim().split("\n").at(-1));
      if (!Number.isFinite(kib) || kib <= 0) throw new Error(`fio printed no bandwidth: ${output.slice(-200)}`);
      into.cells.push({ round, target: name, workload: workload.name, mibPerSecond: kib / 1024, load: loadavg()[0]! });
      log(`round ${round} ${name} ${workload.name}: ${(kib / 1024).toFixed(2)} MiB/s`);
      if (replicated && workload.name === "rand-4k") {
        const metrics: MetricsSnapshot = await target.metrics();
        const secondaryStages = (await target.secondaryMetrics())?.stagesMs;
        into.timelines.push({ round, target: name, stages: metrics.stagesMs, ...(secondaryStages && { secondaryStages }), roundTrip: metrics.roundTripMs });
      }
    }
    const answersMs: number[] = [];
    const replicated = config.variant !== "none";
    if (replicated) await target.metrics(true);
    for (let line = 0; line < CONSOLE_LINES; line++) {
      const started = performance.now();
      await target.exec("echo answered", 30_000);
      answersMs.push(performance.now() - started);
    }
    const holdMs = replicated ? (await target.metrics()).outputHoldMs?.console : undefined;
    into.consoles.push({ round, target: name, answersMs, ...(holdMs && { holdMs }) });
    log(`round ${round} ${name} console: median ${median(answersMs).toFixed(0)} ms`);
  } finally {
    await target.stop();
  }
}

const NAMES = TARGETS.map(configName);
const REPLICATED = NAMES.filter((name) => name !== "unreplicated");
const fixed = (value: number | undefined, digits = 2) => (value === undefined || !Number.isFinite(value) ? "–" : value.toFixed(digits));

function throughputTable(cells: Cell[]): string {
  const medianOf = (target: string, workload: string) => {
    const values = cells.filter((c) => c.target === target && c.workload === workload).map((c) => c.mibPerSecond);
    return values.length === 0 ? undefined : median(values);
  };
  const rows = WORKLOADS.map(({ name: workload }) => {
    const none = medianOf("unreplicated", workload);
    const columns = NAMES.map((target) => {
      const value = medianOf(target, workload);
      return target === "unreplicated" || value === undefined || none === undefined ? fixed(value) : `${fixed(value)} (**${fixed(value / none)}x**)`;
    });
    return `| ${workload} | ${columns.join(" | ")} |`;
  });
  return [`| workload | ${NAMES.join(" | ")} |`, `|---|${NAMES.map(() => "---").join("|")}|`, ...rows].join("\n");
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function consoleTable(consoles: ConsoleCell[]): string {
  const all = (target: string) => consoles.filter((c) => c.target === target).flatMap((c) => c.answersMs);
  const none = all("unreplicated");
  const rows = NAMES.map((target) => {
    const values = all(target);
    if (values.length === 0) return `| ${target} | – | – | – | – |`;
    const added =
      none.length === 0 || target === "unreplicated"
        ? ""
        : `${fixed(median(values) - median(none), 1)} / ${fixed(percentile(values, 99) - percentile(none, 99), 1)}`;
    const holds = consoles.filter((c) => c.target === target && c.holdMs !== undefined && c.holdMs.count > 0).map((c) => c.holdMs!);
    const held = holds.length === 0 ? "" : `${fixed(median(holds.map((h) => h.p50Ms)))} / ${fixed(Math.max(...holds.map((h) => h.p99Ms)))}`;
    return `| ${target} | ${fixed(median(values), 1)} | ${fixed(percentile(values, 99), 1)} | ${added} | ${held} |`;
  });
  return [
    "| target | median | p99 | added by replication (median / p99) | console bytes held by output commit, p50 / p99 (primary) |",
    "|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}
