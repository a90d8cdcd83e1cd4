// The primary's per-sync timeline (metrics.stagesMs) as benchmarks report it: a table of each
// stage's p50 / p99 per target and a stacked chart of the p50s. Shared by sync-modes and talk.
import type { DurationSummary, SyncStage } from "../replication/engine/metrics.ts";
import { median } from "./stats.ts";
import { stackedBars } from "./talk/charts.ts";

/** The primary's stages in the order a sync lives them: they do not overlap, so they stack. */
const TIMELINE_STAGES: readonly SyncStage[] = ["boundary", "pages", "state", "encode", "send", "wire", "release", "next-request"];
/** Parts of `wire`, each side's share of it, in the table after it. */
const WIRE_PARTS: readonly SyncStage[] = ["receive", "apply", "ack", "ack-receive"];
/** Stages the secondary measures (the rest are the primary's). */
const SECONDARY_STAGES: ReadonlySet<SyncStage> = new Set(["receive", "apply", "ack"]);

/** One measured cell's timeline: a target (a mode, a variant) and its stage summaries. */
export interface TimelineSample {
  target: string;
  stages: Partial<Record<SyncStage, DurationSummary>>;
  /** The secondary's stages (receive, apply, ack), where the cell read its metrics. */
  secondaryStages?: Partial<Record<SyncStage, DurationSummary>>;
  roundTrip: DurationSummary;
}

export type TimelineRow = SyncStage | "round trip";

function summaryOf(sample: TimelineSample, stage: TimelineRow): DurationSummary | undefined {
  if (stage === "round trip") return sample.roundTrip;
  return SECONDARY_STAGES.has(stage) ? sample.secondaryStages?.[stage] : sample.stages[stage];
}

/** A target's figures for one stage over its samples: the median of their p50s, the max of their p99s. */
export function stageFigures(samples: readonly TimelineSample[], target: string, stage: TimelineRow): { p50: number; p99: number } | undefined {
  const summaries = samples
    .filter((s) => s.target === target)
    .map((s) => summaryOf(s, stage))
    .filter((s): s is DurationSummary => s !== undefined && s.count > 0);
  if (summaries.length === 0) return undefined;
  return { p50: median(summaries.map((s) => s.p50Ms)), p99: Math.max(...summaries.map((s) => s.p99Ms)) };
}

/**
 * Markdown: a row per stage (and the round trip), a column per target, `p50 / p99` ms; after
 * `wire`, its parts: the secondary's stages and the primary's handling of the ack.
 */
export function timelineTable(samples: readonly TimelineSample[], targets: readonly string[]): string {
  const fixed = (value: number) => value.toFixed(2);
  const rowStages: TimelineRow[] = TIMELINE_STAGES.flatMap((stage) => (stage === "wire" ? [stage, ...WIRE_PARTS] : [stage]));
  const label = (stage: TimelineRow) =>
    WIRE_PARTS.includes(stage as SyncStage) ? `wire: ${stage} (${SECONDARY_STAGES.has(stage as SyncStage) ? "secondary" : "primary"})` : stage;
  const rows = [...rowStages, "round trip" as const].map((stage) => {
    const columns = targets.map((target) => {
      const figures = stageFigures(samples, target, stage);
      return figures === undefined ? "–" : `${fixed(figures.p50)} / ${fixed(figures.p99)}`;
    });
    return `| ${label(stage)} | ${columns.join(" | ")} |`;
  });
  return [`| stage | ${targets.join(" | ")} |`, `|---|${targets.map(() => "---").join("|")}|`, ...rows].join("\n");
}

/** SVG: a bar per target, each stage's p50 stacked. */
export function timelineChart(title: string, samples: readonly TimelineSample[], targets: readonly string[]): string {
  return stackedBars(
    title,
    [...TIMELINE_STAGES],
    targets.map((target) => ({ label: target, values: TIMELINE_STAGES.map((stage) => stageFigures(samples, target, stage)?.p50 ?? 0) })),
    "ms",
  );
}
