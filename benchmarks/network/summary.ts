// The network matrix's results as Markdown tables: per link, the round trip and both
// streams for each target with the ratio to the unreplicated node (the median of per-round
// ratios: each replicated cell against the unreplicated cell of the same round and link,
// minutes apart, so that the machine's drifting load cancels as far as it can); what output
// commit adds to a round trip, stage by stage; and what each sync carried.
import type { LinkSpec } from "../talk/links.ts";
import { configName, type TargetConfig } from "./targets.ts";
import { median, type Cell, type NetworkMatrixResults, type PhaseName, type PhaseStats } from "./matrix.ts";
import { medianRange } from "../stats.ts";

const MiB = 1 << 20;
const dash = "–";

function fmt(value: number | undefined, digits = 2): string {
  return value === undefined || !Number.isFinite(value) ? dash : value.toFixed(digits);
}

export const rttMedian = (cell: Cell) => median(cell.rttMs);
export const inMiBps = (cell: Cell) => cell.streamBytes / MiB / (cell.intoGuestMs / 1000);
export const outMiBps = (cell: Cell) => cell.streamBytes / MiB / (cell.outOfGuestMs / 1000);

export interface NetworkSummary {
  tables: string;
  /** Figures for the JSON and the README, by link and target. */
  data: Record<string, Record<string, unknown>>;
}

export function summarizeNetwork(results: NetworkMatrixResults, links: readonly LinkSpec[], configs: readonly TargetConfig[]): NetworkSummary {
  const cells = results.cells;
  const of = (link: string, config: TargetConfig) => cells.filter((c) => c.link === link && configName(c.config) === configName(config));
  const none = configs.find((c) => c.variant === "none")!;
  /** Per-round ratios of `pick` against the unreplicated cell of the same round and link. */
  const ratios = (link: string, config: TargetConfig, pick: (cell: Cell) => number) =>
    of(link, config).flatMap((cell) => {
      const base = of(link, none).find((b) => b.round === cell.round);
      return base === undefined ? [] : [pick(cell) / pick(base)];
    });
  const sections: string[] = [];
  const data: NetworkSummary["data"] = {};

  for (const link of links) {
    const rows = configs.map((config) => {
      const mine = of(link.name, config);
      const isBase = config.variant === "none";
      const figures = {
        rttMs: median(mine.map(rttMedian)),
        rttP90Ms: median(mine.map((c) => percentile(c.rttMs, 90))),
        intoGuestMiBps: median(mine.map(inMiBps)),
        outOfGuestMiBps: median(mine.map(outMiBps)),
        rttRatio: isBase ? 1 : median(ratios(link.name, config, rttMedian)),
        intoGuestRatio: isBase ? 1 : median(ratios(link.name, config, inMiBps)),
        outOfGuestRatio: isBase ? 1 : median(ratios(link.name, config, outMiBps)),
        rounds: mine.length,
      };
      (data[link.name] ??= {})[configName(config)] = figures;
      const ratio = (values: number[]) => (isBase ? "1" : `**${fmt(median(values))}**`);
      return (
        `| ${configName(config)} | ${medianRange(mine.map(rttMedian))} | ${fmt(figures.rttP90Ms)} | ${ratio(ratios(link.name, config, rttMedian))} | ` +
        `${medianRange(mine.map(inMiBps))} | ${ratio(ratios(link.name, config, inMiBps))} | ${medianRange(mine.map(outMiBps))} | ${ratio(ratios(link.name, config, outMiBps))} |`
      );
    });
    sections.push(
      `### ${link.name}: round trip and streams (median and range of ${Math.max(...configs.map((c) => of(link.name, c).length))} rounds; ratios against the unreplicated node, median of per-round ratios)\n\n` +
        "| target | 1-byte round trip, ms | p90, ms | × unreplicated | into the guest, MiB/s | × | out of the guest, MiB/s | × |\n|---|---|---|---|---|---|---|---|\n" +
        rows.join("\n"),
    );
  }

  sections.push(outputCommitCost(links, configs, of));
  sections.push(perSyncTable(links, configs, of));
  return { tables: sections.join("\n\n"), data };
}

/**
 * What a round trip costs under output commit: the echo's frame is held until the sync that
 * covers it is acknowledged. The added time against the unreplicated node, beside the sync's
 * stages over the ping-pong (medians of each cell's p50): the frame waiting for its capture,
 * the guest paused for the capture, and capture to acknowledgement (send, wire, the
 * secondary's apply and ack).
 */
function outputCommitCost(links: readonly LinkSpec[], configs: readonly TargetConfig[], of: (link: string, config: TargetConfig) => Cell[]): string {
  const none = configs.find((c) => c.variant === "none")!;
  const rows: string[] = [];
  for (const link of links) {
    const base = median(of(link.name, none).map(rttMedian));
    for (const config of configs.filter((c) => c.variant !== "none")) {
      const mine = of(link.name, config);
      const ping = mine.map((c) => c.phases["ping-pong"]);
      const p50 = (pick: (p: PhaseStats) => number | undefined) => median(ping.map(pick).filter((v): v is number => v !== undefined));
      const syncsPerTrip = median(mine.map((c) => c.phases["ping-pong"].syncs / Math.max(1, c.rttMs.length + 1)));
      rows.push(
        `| ${link.name} | ${configName(config)} | ${fmt(median(mine.map(rttMedian)) - base)} | ${fmt(p50((p) => p.captureDelayMs?.p50Ms))} | ${fmt(p50((p) => p.pauseMs?.p50Ms))} | ` +
          `${fmt(p50((p) => p.stagesMs.send?.p50Ms))} | ${fmt(p50((p) => p.stagesMs.wire?.p50Ms))} | ${fmt(p50((p) => p.roundTripMs?.p50Ms))} | ${fmt(
            p50((p) => p.stagesMs.release?.p50Ms),
            3,
          )} | ${fmt(syncsPerTrip)} | ${fmt(
            p50((p) => (p.syncs === 0 ? undefined : p.replicationBytes / p.syncs / 1024)),
            1,
          )} |`,
      );
    }
  }
  return (
    "### What output commit adds to a round trip (ping-pong phase; ms, medians of each cell's p50)\n\n" +
    "| link | target | added to the round trip (vs unreplicated median) | frame held until its capture | guest paused for the capture | capture sealed and sent | send to ack (wire, secondary) | capture to ack | release | syncs per round trip | KiB per sync |\n" +
    "|---|---|---|---|---|---|---|---|---|---|---|\n" +
    rows.join("\n")
  );
}

/** What the syncs of each phase carried, and how many of them released frames. */
function perSyncTable(links: readonly LinkSpec[], configs: readonly TargetConfig[], of: (link: string, config: TargetConfig) => Cell[]): string {
  const phases: PhaseName[] = ["ping-pong", "into-guest", "out-of-guest"];
  const rows: string[] = [];
  for (const link of links) {
    for (const config of configs.filter((c) => c.variant !== "none")) {
      for (const phase of phases) {
        const stats = of(link.name, config).map((c) => c.phases[phase]);
        const m = (pick: (p: PhaseStats) => number | undefined) => median(stats.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v)));
        rows.push(
          `| ${link.name} | ${configName(config)} | ${phase} | ${fmt(
            m((p) => p.syncs / (p.wallMs / 1000)),
            0,
          )} | ${fmt(
            m((p) => (p.syncEvents === 0 ? undefined : (100 * p.syncsReleasingFrames) / p.syncEvents)),
            0,
          )}% | ` +
            `${fmt(m((p) => (p.syncs === 0 ? undefined : p.framesReleased / p.syncs)))} | ${fmt(
              m((p) => p.framesPerReleasingSync?.max),
              0,
            )} | ` +
            `${fmt(
              m((p) => (p.syncs === 0 ? undefined : p.frameBytesReleased / p.syncs / 1024)),
              1,
            )} | ${fmt(
              m((p) => (p.syncs === 0 ? undefined : p.replicationBytes / p.syncs / 1024)),
              1,
            )} | ` +
            `${fmt(
              m((p) => (p.replicationBytes === 0 ? undefined : (100 * p.memoryAndStateBytes) / p.replicationBytes)),
              0,
            )}% | ${fmt(m((p) => p.pauseMs?.p50Ms))} |`,
        );
      }
    }
  }
  return (
    "### Per sync (medians over rounds)\n\n" +
    "Syncs releasing frames: the share of acknowledged syncs whose acknowledgement released at least one of the guest's frames (the sync events' `framesReleased`); with no disk writes and no console output in these phases, " +
    "network output is what asks for every sync.\n\n" +
    "| link | target | phase | syncs/s | syncs releasing frames | frames per sync | most frames in one sync | frame KiB per sync | replication KiB per sync | of it memory and device state | pause p50, ms |\n" +
    "|---|---|---|---|---|---|---|---|---|---|---|\n" +
    rows.join("\n")
  );
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
