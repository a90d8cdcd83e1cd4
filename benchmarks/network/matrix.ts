// The network benchmark's matrix: for each round, each target (unreplicated; both disk modes
// in both sync modes) restored from one guest template, warmed up, then on each link (the
// replication link reshaped under the running pair) a 1-byte ping-pong, a stream into the
// guest and one out of it, each with the primary's sync counters and sync events over
// exactly that phase. Target and link orders rotate from round to round, so that drift in
// the machine's load does not favour one of them.
import { loadavg } from "node:os";
import type { SyncReport } from "../../harness/engines.ts";
import type { MetricsSnapshot, DurationSummary, SyncStage } from "../../replication/engine/metrics.ts";
import type { GuestTemplate } from "../../harness/testing/template.ts";
import type { LinkSpec } from "../talk/links.ts";
import { pingPong, pullFrom, pushInto } from "./clients.ts";
import { ECHO_PORT, SINK_PORT, SOURCE_PORT } from "./guest.ts";
import { shapeReplicationLink, shapedBytes } from "./link-shaping.ts";
import { configName, startTarget, type Target, type TargetConfig } from "./targets.ts";

export type Shaping = "netns-tc" | "unshaped-only";

export interface NetworkMatrixConfig {
  shaping: Shaping;
  links: LinkSpec[];
  configs: TargetConfig[];
  rounds: number;
  /** Round trips per ping-pong (fewer if the budget runs out). */
  pings: number;
  pingBudgetMs: number;
  /** Bytes of each stream, each way. */
  streamBytes: number;
}

export type PhaseName = "ping-pong" | "into-guest" | "out-of-guest";

/** What the primary did during one phase (zeros for the unreplicated node). */
export interface PhaseStats {
  wallMs: number;
  syncs: number;
  /** Acknowledged syncs whose acknowledgement released at least one frame (from the sync events). */
  syncsReleasingFrames: number;
  /** Sync events seen (a few may arrive after the phase ends; syncs is the exact count). */
  syncEvents: number;
  framesReleased: number;
  frameBytesReleased: number;
  /** Replication bytes on the wire, all categories. */
  replicationBytes: number;
  /** Of those, guest memory pages and device state. */
  memoryAndStateBytes: number;
  /** Frames per sync that released any: median and largest. */
  framesPerReleasingSync: { median: number; max: number } | undefined;
  /** Duration summaries restarted at the phase's start. */
  captureDelayMs: DurationSummary | undefined;
  pauseMs: DurationSummary | undefined;
  roundTripMs: DurationSummary | undefined;
  stagesMs: Partial<Record<SyncStage, DurationSummary>>;
  /** Bytes the replication link's token bucket passed during the phase (shaped links). */
  shapedBytes: number | undefined;
}

export interface Cell {
  round: number;
  link: string;
  config: TargetConfig;
  name: string;
  /** One-byte round trips, ms each. */
  rttMs: number[];
  intoGuestMs: number;
  outOfGuestMs: number;
  streamBytes: number;
  phases: Record<PhaseName, PhaseStats>;
  /** 1-minute load average before and after the cell. */
  load: [number, number];
}

export interface NetworkMatrixResults {
  shaping: Shaping;
  cells: Cell[];
  /** Problems that cost a cell or a target (recorded, not hidden). */
  failures: string[];
  /** Seconds each target took from start to protected (replicated) or ready. */
  startSeconds: { name: string; seconds: number }[];
}

const rotate = <T>(items: readonly T[], by: number): T[] => items.map((_, i) => items[(i + by) % items.length]!);

export async function runNetworkMatrix(template: GuestTemplate, config: NetworkMatrixConfig, log: (line: string) => void): Promise<NetworkMatrixResults> {
  const results: NetworkMatrixResults = { shaping: config.shaping, cells: [], failures: [], startSeconds: [] };
  for (let round = 1; round <= config.rounds; round++) {
    for (const targetConfig of rotate(config.configs, round - 1)) {
      const name = configName(targetConfig);
      let target: Target | undefined;
      try {
        const started = performance.now();
        target = await startTarget(template, targetConfig);
        results.startSeconds.push({ name, seconds: (performance.now() - started) / 1000 });
        await warmUp(target, config);
        const port = await target.replicationPort();
        for (const link of rotate(config.links, round - 1)) {
          try {
            shapeReplicationLink(link, port);
            const cell = await measure(target, link, round, config);
            results.cells.push(cell);
            log(
              `round ${round} ${name} ${link.name}: rtt ${median(cell.rttMs).toFixed(2)} ms, in ${mibps(cell.streamBytes, cell.intoGuestMs)} MiB/s, out ${mibps(cell.streamBytes, cell.outOfGuestMs)} MiB/s, load ${cell.load[1].toFixed(1)}`,
            );
          } catch (error) {
            results.failures.push(`round ${round} ${name} ${link.name}: ${(error as Error).message.split("\n")[0]}`);
            log(`FAILED round ${round} ${name} ${link.name}: ${(error as Error).message}`);
          }
        }
      } catch (error) {
        results.failures.push(`round ${round} ${name}: ${(error as Error).message.split("\n")[0]}`);
        log(`FAILED round ${round} ${name}: ${(error as Error).message}`);
      } finally {
        shapeReplicationLink({ name: "unshaped", bitsPerSecond: undefined }, undefined);
        await target?.stop();
      }
    }
  }
  return results;
}

/**
 * Unmeasured traffic first: v86 compiles the guest's hot paths (here its network stack and
 * busybox's nc and cat) as it meets them, and the first pass of each is several times slower.
 */
async function warmUp(target: Target, config: NetworkMatrixConfig): Promise<void> {
  await pingPong(target.hostPort(ECHO_PORT), 100, 20_000);
  const bytes = Math.min(config.streamBytes, 2 << 20);
  await pushInto(target.hostPort(SINK_PORT), bytes, 300_000);
  await pullFrom(target.hostPort(SOURCE_PORT), bytes, 300_000);
}

async function measure(target: Target, link: LinkSpec, round: number, config: NetworkMatrixConfig): Promise<Cell> {
  const loadBefore = loadavg()[0]!;
  const streamTimeoutMs = 600_000;
  const ping = await phase(target, () => pingPong(target.hostPort(ECHO_PORT), config.pings, config.pingBudgetMs));
  const into = await phase(target, () => pushInto(target.hostPort(SINK_PORT), config.streamBytes, streamTimeoutMs));
  const out = await phase(target, () => pullFrom(target.hostPort(SOURCE_PORT), config.streamBytes, streamTimeoutMs));
  return {
    round,
    link: link.name,
    config: target.config,
    name: configName(target.config),
    rttMs: ping.value,
    intoGuestMs: into.value.ms,
    outOfGuestMs: out.value.ms,
    streamBytes: config.streamBytes,
    phases: { "ping-pong": ping.stats, "into-guest": into.stats, "out-of-guest": out.stats },
    load: [loadBefore, loadavg()[0]!],
  };
}

async function phase<T>(target: Target, body: () => Promise<T>): Promise<{ value: T; stats: PhaseStats }> {
  const before = await target.metrics(true);
  const shapedBefore = shapedBytes();
  const recording = target.recordSyncs();
  const started = performance.now();
  let value: T;
  try {
    value = await body();
  } finally {
    recording.stop();
  }
  const wallMs = performance.now() - started;
  const after = await target.metrics();
  const shapedAfter = shapedBytes();
  return { value, stats: phaseStats(before, after, recording.syncs, wallMs, shapedBefore && shapedAfter && shapedAfter.bytes - shapedBefore.bytes) };
}

function phaseStats(before: MetricsSnapshot, after: MetricsSnapshot, syncs: SyncReport[], wallMs: number, shaped: number | undefined): PhaseStats {
  const sum = (m: MetricsSnapshot) => Object.values(m.bytes).reduce((a, b) => a + b, 0);
  const releasing = syncs.filter((s) => s.framesReleased > 0);
  const frames = (m: MetricsSnapshot) => m.output?.frame ?? { released: 0, releasedBytes: 0 };
  const replicated = after.syncs > 0 || before.syncs > 0;
  return {
    wallMs,
    syncs: after.syncs - before.syncs,
    syncsReleasingFrames: releasing.length,
    syncEvents: syncs.length,
    framesReleased: frames(after).released - frames(before).released,
    frameBytesReleased: frames(after).releasedBytes - frames(before).releasedBytes,
    replicationBytes: sum(after) - sum(before),
    memoryAndStateBytes: after.bytes.memoryPages + after.bytes.deviceState - before.bytes.memoryPages - before.bytes.deviceState,
    framesPerReleasingSync:
      releasing.length === 0 ? undefined : { median: median(releasing.map((s) => s.framesReleased)), max: Math.max(...releasing.map((s) => s.framesReleased)) },
    captureDelayMs: replicated ? after.captureDelayMs : undefined,
    pauseMs: replicated ? after.pauseMs : undefined,
    roundTripMs: replicated ? after.roundTripMs : undefined,
    stagesMs: after.stagesMs,
    shapedBytes: shaped,
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export const mibps = (bytes: number, ms: number) => (bytes / (1 << 20) / (ms / 1000)).toFixed(2);
