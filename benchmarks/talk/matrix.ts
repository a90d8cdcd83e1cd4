// Runs the talk benchmark's matrix: for each link, round and disk mode, a pair of node
// processes (primary and secondary over the real WebSocket; the primary alone for "none")
// restored from one guest snapshot, and every workload in it. Started by talk.bench.ts,
// inside a private network namespace when it can (then it shapes loopback itself): see
// run-matrix.ts.
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FaultProxy } from "../../harness/fault-proxy.ts";
import { NodeProcess } from "../../harness/node-process.ts";
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import { shapeLoopback, type LinkSpec, type Shaping } from "./links.ts";
import { RAW, WORKLOADS, fioCommand, parseBandwidth, type Workload } from "./workloads.ts";
import { metricsSince } from "../metrics-diff.ts";

/** A disk mode, in the default (speculative) sync mode unless `+synchronous` (Kemari) says otherwise; `+deflate` is synchronous too. */
export type Variant = "none" | "logging-replay" | "logging-replay+deflate" | "dirty-block-copy" | "logging-replay+synchronous" | "dirty-block-copy+synchronous";

const ENGINE_MODE = {
  "logging-replay": "logging-replay",
  "logging-replay+deflate": "logging-replay",
  "logging-replay+synchronous": "logging-replay",
  "dirty-block-copy": "dirty-block-copy",
  "dirty-block-copy+synchronous": "dirty-block-copy",
  none: "none",
} as const;

export interface MatrixConfig {
  shaping: Shaping;
  links: LinkSpec[];
  workloads: string[];
  variants: Variant[];
  rounds: number;
  /** Guests to run (each cell runs on each): a memory size and the snapshot and disk images it was taken with. */
  guests: GuestTemplate[];
  /** Seconds of unmeasured writes in every new pair before its cells (0: a short warm-up of 128 writes). */
  warmUpSeconds: number;
}

export interface GuestTemplate {
  memoryMiB: number;
  snapshot: string;
  vda: string;
  vdb: string;
}

export interface CellResult {
  link: string;
  round: number;
  memoryMiB: number;
  variant: Variant;
  workload: string;
  kibPerSecond: number;
  wallMs: number;
  /** The primary's counters over this workload (replicated variants). */
  metrics?: MetricsSnapshot;
  /** The secondary's per-sync stages over this workload (replicated variants). */
  secondaryStages?: MetricsSnapshot["stagesMs"];
}

export interface MatrixResults {
  shaping: Shaping;
  cells: CellResult[];
  /** Problems that cost a cell (recorded, not hidden). */
  failures: string[];
}

const SECRET = "talk-benchmark-secret-0123456789abcdef";
/**
 * The unmeasured writes a new pair starts with. A pair restored from the snapshot has
 * everything to compile again: v86's JIT turns the guest's hot code into wasm modules,
 * and V8 compiles them (and tiers up v86's own module) on helper threads that took about
 * one of this machine's two cores for the first half minute, measured with perf. A cell
 * run cold measured that start-up; time-based warm-up measures the pair as it runs after.
 */
function warmUp(seconds: number): Workload {
  if (seconds <= 0) return { name: "warm-up", description: "", fio: `--name=warm ${RAW} --rw=write --bs=4k --size=512k` };
  const half = Math.max(1, Math.round(seconds / 2));
  return {
    name: "warm-up",
    description: "",
    fio: `--name=warm4k ${RAW} --rw=randwrite --bs=4k --size=4m --time_based --runtime=${half} --name=warm64k --stonewall ${RAW} --rw=write --bs=64k --size=16m --time_based --runtime=${half}`,
  };
}

export async function runMatrix(config: MatrixConfig, log: (line: string) => void): Promise<MatrixResults> {
  const results: MatrixResults = { shaping: config.shaping, cells: [], failures: [] };
  const workloads = config.workloads.map((name) => {
    const workload = WORKLOADS.find((w) => w.name === name);
    if (workload === undefined) throw new Error(`unknown workload ${name}`);
    return workload;
  });
  const dir = mkdtempSync(join(tmpdir(), "twinvm-talk-"));
  const secretFile = join(dir, "secret");
  writeFileSync(secretFile, SECRET, { mode: 0o600 });
  try {
    for (const link of config.links) {
      if (config.shaping === "netns-tc") shapeLoopback(link);
      for (let round = 1; round <= config.rounds; round++) {
        for (const guest of config.guests)
          for (const variant of config.variants) {
            const started = performance.now();
            const cell = `${link.name} round ${round} ${guest.memoryMiB} MiB ${variant}`;
            try {
              const pair = await startPair(guest, variant, link, config.shaping, dir, secretFile, config.warmUpSeconds);
              try {
                for (const workload of workloads) {
                  const before = variant === "none" ? undefined : await pair.primary.metrics(true);
                  await pair.secondary?.metrics(true);
                  const t0 = performance.now();
                  const { output } = await pair.primary.exec(fioCommand(workload), 600_000);
                  const wallMs = performance.now() - t0;
                  const after = variant === "none" ? undefined : await pair.primary.metrics();
                  const secondaryStages = (await pair.secondary?.metrics())?.stagesMs;
                  const kibPerSecond = parseBandwidth(output, workload);
                  results.cells.push({
                    link: link.name,
                    round,
                    memoryMiB: guest.memoryMiB,
                    variant,
                    workload: workload.name,
                    kibPerSecond,
                    wallMs,
                    ...(after && { metrics: metricsSince(before!, after) }),
                    ...(secondaryStages && { secondaryStages }),
                  });
                  log(`${cell} ${workload.name}: ${(kibPerSecond / 1024).toFixed(2)} MiB/s`);
                }
              } finally {
                await pair.stop();
              }
            } catch (error) {
              results.failures.push(`${cell}: ${(error as Error).message.split("\n")[0]}`);
              log(`FAILED ${cell}: ${(error as Error).message}`);
            }
            log(`${cell}: ${((performance.now() - started) / 1000).toFixed(0)} s`);
          }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

interface RunningPair {
  primary: NodeProcess;
  secondary: NodeProcess | undefined;
  stop(): Promise<void>;
}

async function startPair(
  guest: GuestTemplate,
  variant: Variant,
  link: LinkSpec,
  shaping: Shaping,
  dir: string,
  secretFile: string,
  warmUpSeconds: number,
): Promise<RunningPair> {
  const disks = (who: string) =>
    (["vda", "vdb"] as const).map((disk) => {
      const path = join(dir, `${who}-${disk}.img`);
      copyFileSync(guest[disk], path);
      return path;
    });
  const common = { memoryMiB: guest.memoryMiB, secretFile, metricsIntervalMs: 0 };
  const processes: NodeProcess[] = [];
  let proxy: FaultProxy | undefined;
  let secondary: NodeProcess | undefined;
  const stop = async () => {
    await proxy?.close();
    await Promise.all(processes.map((p) => p.kill()));
  };
  try {
    let connect: string | undefined;
    if (variant !== "none") {
      secondary = new NodeProcess({ role: "secondary", mode: ENGINE_MODE[variant], disks: disks("secondary"), ...common });
      processes.push(secondary);
      connect = await secondary.listeningUrl(120_000);
      if (shaping === "proxy" && link.bitsPerSecond !== undefined) {
        proxy = await FaultProxy.start(Number(new URL(connect).port), { bitsPerSecond: link.bitsPerSecond });
        connect = proxy.urlFor(connect);
      }
    }
    const primary = new NodeProcess({
      role: "primary",
      mode: ENGINE_MODE[variant],
      compressSyncs: variant === "logging-replay+deflate",
      // Deflate is compared with Kemari's setting: synchronous, like the `+synchronous` variants.
      ...((variant.endsWith("+synchronous") || variant === "logging-replay+deflate") && { syncMode: "synchronous" as const }),
      disks: disks("primary"),
      snapshotPath: guest.snapshot,
      ...(connect && { connect }),
      ...common,
    });
    processes.push(primary);
    if (variant === "none") {
      await primary.waitFor((e): e is Extract<typeof e, { type: "phase" }> => e.type === "phase" && e.phase === "ready", 120_000, "ready");
    } else {
      await primary.waitForState("protected", 300_000);
    }
    await primary.exec(fioCommand(warmUp(warmUpSeconds)), 300_000);
    return { primary, secondary, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
