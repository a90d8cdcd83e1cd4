// What a network benchmark cell runs against: the same guest (restored from one template,
// its services running) in one node process behind a network gateway (passt) in this
// process, either unreplicated (`mode: "none"`: frames go straight out, as `twinvm run
// --forward` does) or as a replicated pair of the test API (output commit holds frames
// until the secondary acknowledged the sync covering them). Same processes, same gateway,
// same client: the difference is the replication.
import { rm } from "node:fs/promises";
import type { SyncReport } from "../../harness/engines.ts";
import { startGateway, type Gateway } from "../../harness/network/gateway.ts";
import { NodeProcess } from "../../harness/node-process.ts";
import { copyTemplateDisks, type GuestTemplate } from "../../harness/testing/template.ts";
import { privateDir, writeSecret } from "../../harness/testing/pair-files.ts";
import { startPair, type Pair } from "../../harness/testing/pair.ts";
import { loadSecret } from "../../replication/node/secret.ts";
import type { DiskMode, SyncMode } from "../../replication/engine/primary/engine.ts";
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import { GUEST_PORTS } from "./guest.ts";

export type Variant = "none" | DiskMode;

export interface TargetConfig {
  variant: Variant;
  /** Replicated variants only. */
  syncMode?: SyncMode;
  /** Speculative only: the primary's sync interval (default: the engine's). */
  syncIntervalMs?: number;
  /** How long output waits for the rest of its burst before a capture (default: the engine's). */
  outputCoalesceMs?: number;
}

export const TARGET_CONFIGS: readonly TargetConfig[] = [
  { variant: "none" },
  { variant: "logging-replay", syncMode: "synchronous" },
  { variant: "logging-replay", syncMode: "speculative" },
  { variant: "dirty-block-copy", syncMode: "synchronous" },
  { variant: "dirty-block-copy", syncMode: "speculative" },
];

export function configName(config: TargetConfig): string {
  if (config.variant === "none") return "unreplicated";
  const interval = config.syncIntervalMs === undefined ? "" : ` ${config.syncIntervalMs} ms`;
  const coalesce = config.outputCoalesceMs === undefined ? "" : `, output coalesced ${config.outputCoalesceMs} ms`;
  return `${config.variant}, ${config.syncMode}${interval}${coalesce}`;
}

export interface Target {
  readonly config: TargetConfig;
  hostPort(guestPort: number): number;
  /** The node's metrics (replicated: the primary's); `restart` makes duration percentiles count from now. */
  metrics(restart?: boolean): Promise<MetricsSnapshot>;
  /** Replicated: the secondary's metrics (`restart` as for `metrics`); unreplicated: undefined. */
  secondaryMetrics(restart?: boolean): Promise<MetricsSnapshot | undefined>;
  /** Acknowledged syncs from now on, until the returned function is called. */
  recordSyncs(): { syncs: SyncReport[]; stop(): void };
  /** Runs a shell command line in the guest (on the primary). */
  exec(command: string, timeoutMs?: number): Promise<{ output: string; exitCode: number }>;
  /** The port the secondary listens on: the replication link's far end (undefined: unreplicated). */
  replicationPort(): Promise<number | undefined>;
  stop(): Promise<void>;
}

const forwards = GUEST_PORTS.map((guestPort) => ({ port: 0, guestPort }));

export async function startTarget(template: GuestTemplate, config: TargetConfig): Promise<Target> {
  return config.variant === "none" ? startUnreplicated(template, config) : startReplicated(template, config);
}

async function startReplicated(template: GuestTemplate, config: TargetConfig): Promise<Target> {
  const pair: Pair = await startPair({
    template,
    mode: config.variant as DiskMode,
    ...(config.syncMode !== undefined && { syncMode: config.syncMode }),
    ...(config.syncIntervalMs !== undefined && { syncIntervalMs: config.syncIntervalMs }),
    ...(config.outputCoalesceMs !== undefined && { outputCoalesceMs: config.outputCoalesceMs }),
    forwards,
    // A takeover is not what these cells measure; a lost secondary should fail them, not heal.
    reprotect: false,
    startTimeoutMs: 300_000,
  });
  return {
    config,
    hostPort: (guestPort) => pair.hostPort(guestPort),
    metrics: (restart = false) => pair.primary.process.metrics(restart),
    secondaryMetrics: async (restart = false) => pair.secondary?.process.metrics(restart),
    exec: (command, timeoutMs = 120_000) => pair.exec(command, { timeoutMs }),
    recordSyncs() {
      const syncs: SyncReport[] = [];
      const stop = pair.onEvent((event) => {
        if (event.type === "sync") syncs.push(event.report);
      });
      return { syncs, stop };
    },
    async replicationPort() {
      const url = (await pair.status()).secondary?.listenUrl;
      if (url === undefined) throw new Error("the pair's secondary reports no listening URL");
      return Number(new URL(url).port);
    },
    stop: async () => void (await pair.stop()),
  };
}

async function startUnreplicated(template: GuestTemplate, config: TargetConfig): Promise<Target> {
  const dir = await privateDir(undefined, "netbench");
  let gateway: Gateway | undefined;
  let node: NodeProcess | undefined;
  const stop = async () => {
    await node?.stop(3000);
    await gateway?.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const secretFile = await writeSecret(dir);
    gateway = await startGateway({ forwards, secret: await loadSecret({ file: secretFile }) });
    const disks = await copyTemplateDisks(template, dir);
    node = new NodeProcess({
      role: "primary",
      mode: "none",
      disks: disks.primary,
      memoryMiB: template.memoryMiB,
      snapshotPath: template.snapshotPath,
      ...(template.overlayArchive !== undefined && { overlayArchive: template.overlayArchive }),
      secretFile,
      gateway: gateway.url,
      metricsIntervalMs: 0,
      name: "unreplicated",
    });
    await node.waitFor((e): e is Extract<typeof e, { type: "phase" }> => e.type === "phase" && e.phase === "ready", 300_000, "ready");
  } catch (error) {
    await stop();
    throw error;
  }
  const started = node;
  const open = gateway;
  return {
    config,
    hostPort: (guestPort) => open.hostPort(guestPort),
    metrics: (restart = false) => started.metrics(restart),
    secondaryMetrics: () => Promise.resolve(undefined),
    exec: (command, timeoutMs = 120_000) => started.exec(command, timeoutMs),
    recordSyncs: () => ({ syncs: [], stop: () => undefined }),
    replicationPort: () => Promise.resolve(undefined),
    stop,
  };
}
