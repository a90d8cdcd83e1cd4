// Streaming chart of replication traffic: bytes/s by category (stacked areas are
// hard to read when one category dwarfs the rest, so lines on a log scale) and
// syncs/s on a second axis.
import uPlot from "uplot";
import type { ByteCategory, MetricsSnapshot } from "../engine-adapter.ts";

export const CHART_CATEGORIES: readonly ByteCategory[] = ["memoryPages", "deviceState", "ioLog", "diskBlocks", "diskCopy", "output"];
const COLORS: Record<ByteCategory, string> = {
  memoryPages: "#4f9dde",
  deviceState: "#b07fe0",
  ioLog: "#3fbf7f",
  diskBlocks: "#e5534b",
  diskCopy: "#d9a21b",
  output: "#2bb5b5",
  control: "#888888",
};
/** Seconds of history on screen. */
const WINDOW_S = 60;

export interface RatePoint {
  /** Seconds since the page started. */
  t: number;
  syncsPerSecond: number;
  bytesPerSecond: Record<ByteCategory, number>;
}

export class TrafficChart {
  readonly #plot: uPlot;
  readonly #columns: number[][];

  constructor(target: HTMLElement) {
    this.#columns = [[], [], ...CHART_CATEGORIES.map(() => [])];
    const series: uPlot.Series[] = [
      {},
      { label: "syncs/s", scale: "syncs", stroke: "#eeeeee", width: 1.5, dash: [4, 3], points: { show: false } },
      ...CHART_CATEGORIES.map((category) => ({
        label: category,
        scale: "bytes",
        stroke: COLORS[category],
        width: 2,
        points: { show: false },
        value: (_: uPlot, v: number | null) => formatRate(v),
      })),
    ];
    this.#plot = new uPlot(
      {
        width: Math.max(320, target.clientWidth),
        height: 220,
        series,
        scales: {
          x: { time: false },
          bytes: { distr: 3, range: (_u, min, max) => [Math.max(1, min), Math.max(1024, max)] },
          syncs: { range: (_u, _min, max) => [0, Math.max(10, max)] },
        },
        axes: [
          { stroke: "#aaa", grid: { stroke: "#2a2f36" }, label: "seconds", values: (_u, ticks) => ticks.map((t) => t.toFixed(0)) },
          {
            scale: "bytes",
            stroke: "#aaa",
            grid: { stroke: "#2a2f36" },
            values: (_u, ticks) => ticks.map(decadeLabel),
            size: 50,
            label: "bytes/s",
            labelSize: 18,
          },
          { scale: "syncs", side: 1, stroke: "#aaa", grid: { show: false }, label: "syncs/s" },
        ],
        legend: { live: false },
      },
      this.#columns as uPlot.AlignedData,
      target,
    );
  }

  push(point: RatePoint): void {
    const [t, syncs, ...bytes] = this.#columns;
    t!.push(point.t);
    syncs!.push(point.syncsPerSecond);
    CHART_CATEGORIES.forEach((category, i) => bytes[i]!.push(point.bytesPerSecond[category] || 0.5)); // log scale: no zeros
    while (t!.length > 0 && t![0]! < point.t - WINDOW_S) for (const column of this.#columns) column.shift();
    this.#plot.setData(this.#columns as uPlot.AlignedData);
  }

  resize(width: number): void {
    this.#plot.setSize({ width: Math.max(320, width), height: 220 });
  }
}

/** Turns cumulative counters into per-second rates; a new source or a counter reset starts over. */
export class RateMeter {
  #previous: { source: unknown; at: number; snapshot: MetricsSnapshot } | undefined;

  /** `source` identifies the counting engine; the first sample of a source yields no point. */
  sample(source: unknown, snapshot: MetricsSnapshot, atSeconds: number): RatePoint | undefined {
    const previous = this.#previous;
    this.#previous = { source, at: atSeconds, snapshot };
    if (previous === undefined || previous.source !== source || atSeconds <= previous.at) return undefined;
    const seconds = atSeconds - previous.at;
    const bytesPerSecond = Object.fromEntries(
      (Object.keys(snapshot.bytes) as ByteCategory[]).map((category) => [category, (snapshot.bytes[category] - previous.snapshot.bytes[category]) / seconds]),
    ) as Record<ByteCategory, number>;
    return { t: atSeconds, syncsPerSecond: (snapshot.syncs - previous.snapshot.syncs) / seconds, bytesPerSecond };
  }
}

export function formatRate(value: number | null): string {
  if (value === null || value < 1) return "0";
  return `${formatBytes(value)}/s`;
}

/** Log-axis labels at powers of ten only (uPlot also ticks 2..9 of each decade): 1, 100, 10k, 1M. */
function decadeLabel(value: number | null): string {
  if (value === null) return ""; // a tick uPlot filtered out for lack of room
  if (value < 1) return "0";
  if (Math.abs(Math.log10(value) - Math.round(Math.log10(value))) > 1e-9) return "";
  const [divisor, suffix] = value >= 1e9 ? [1e9, "G"] : value >= 1e6 ? [1e6, "M"] : value >= 1e3 ? [1e3, "k"] : [1, ""];
  return `${Number((value / divisor).toPrecision(2))}${suffix}`;
}

export function formatBytes(value: number): string {
  const units = ["B", "KB", "MB", "GB"];
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}
