// Plans a campaign's rounds from the options and a seeded PRNG, runs them one after
// another from one booted template, and always removes the template and work files
// (a failed round's files are moved to the artifacts folder first).
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DiskMode, SecondaryLossPolicy, SyncMode } from "../../replication/engine/primary/engine.ts";
import { privateDir } from "../testing/pair-files.ts";
import type { GuestTemplate } from "../testing/template.ts";
import { createCampaignTemplate } from "./fixture.ts";
import { faultDelayMs, Prng } from "./prng.ts";
import type { EngineFeatures, FaultKind, RoundPlan, RoundResult } from "./round-result.ts";
import { runRound } from "./rounds.ts";

export interface CampaignOptions {
  /** Rounds per (fault, mode) pair. */
  rounds: number;
  modes: DiskMode[];
  faults: FaultKind[];
  seed: number;
  /** Loss policies, sync modes and arbiter settings rotate from round to round (see `planRounds`). */
  policies: SecondaryLossPolicy[];
  syncModes: SyncMode[];
  arbiters: boolean[];
  features: EngineFeatures;
  echoStderr?: boolean;
  /** Where the campaign's temporary folder goes (default: the OS temp dir). */
  workDir?: string;
  /** Where failed rounds' files go (default: <temp dir>/twinvm-campaign-<seed>-artifacts). */
  artifactsDir?: string;
  /** Start no round after this long (the rounds not run are counted, not failed). */
  budgetMs?: number;
}

/**
 * Every (fault, disk mode) pair gets `rounds` rounds. The other dimensions rotate: plan j of
 * round r gets combination r + j (the sync mode varying fastest, then the arbiter, then the
 * loss policy), so that each pair meets every combination over as many rounds as there are
 * combinations, and any prefix of a campaign mixes them all.
 */
export function planRounds(options: Pick<CampaignOptions, "rounds" | "modes" | "faults" | "seed" | "policies" | "syncModes" | "arbiters">): RoundPlan[] {
  const prng = new Prng(options.seed);
  const plans: RoundPlan[] = [];
  const { syncModes, arbiters, policies } = options;
  for (let round = 0; round < options.rounds; round++) {
    let j = 0;
    for (const fault of options.faults) {
      for (const mode of options.modes) {
        const combination = round + j++;
        const syncMode = syncModes[combination % syncModes.length]!;
        const arbiter = fault === "primary-freeze" || arbiters[Math.floor(combination / syncModes.length) % arbiters.length]!;
        // Split brain after a cut and the old primary's next write are only observable with `continue`.
        const policy = fault === "link-cut-mid-sync" ? "continue" : policies[Math.floor(combination / (syncModes.length * arbiters.length)) % policies.length]!;
        plans.push({
          index: plans.length + 1,
          mode,
          fault,
          delayMs: faultDelayMs(prng),
          cutKind: prng.pick(["reset", "silent"] as const),
          policy,
          syncMode,
          arbiter,
        });
      }
    }
  }
  return plans;
}

export function defaultArtifactsDir(seed: number): string {
  return join(tmpdir(), `twinvm-campaign-${seed}-artifacts`);
}

export interface CampaignRun {
  bootMs: number;
  /** The rounds this run ran (not those it skipped). */
  results: RoundResult[];
  artifactsDir: string;
  /** Planned rounds neither skipped nor run, because the time budget ran out. */
  notRun: number;
}

/** A booted template and a work folder that rounds share; `dispose` removes both. */
export interface CampaignBase {
  template: GuestTemplate;
  workDir: string;
  dispose(): Promise<void>;
}

export async function createCampaignBase(parentDir?: string): Promise<CampaignBase> {
  const workDir = await privateDir(parentDir, "campaign");
  try {
    const template = await createCampaignTemplate(workDir);
    return {
      template,
      workDir,
      async dispose() {
        await template.dispose();
        await rm(workDir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(workDir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * Runs the planned rounds but those in `skip` (already recorded by an earlier run), until the
 * time budget. `onBase` lets a caller dispose of the base on a signal; `onRound` records a
 * result (awaited, so that a record holds every round before the next starts).
 */
export async function runCampaign(
  options: CampaignOptions,
  hooks: { skip?: ReadonlySet<number>; onBase?: (base: CampaignBase) => void; onRound?: (result: RoundResult) => void | Promise<void> } = {},
): Promise<CampaignRun> {
  const started = performance.now();
  const plans = planRounds(options).filter((plan) => !hooks.skip?.has(plan.index));
  const base = await createCampaignBase(options.workDir);
  hooks.onBase?.(base);
  const artifactsDir = options.artifactsDir ?? defaultArtifactsDir(options.seed);
  try {
    const results: RoundResult[] = [];
    for (const plan of plans) {
      if (options.budgetMs !== undefined && performance.now() - started >= options.budgetMs) break;
      const result = await runRound(plan, {
        template: base.template,
        workDir: base.workDir,
        artifactsDir,
        features: options.features,
        echoStderr: options.echoStderr ?? false,
      });
      results.push(result);
      await hooks.onRound?.(result);
    }
    return { bootMs: base.template.bootMs, results, artifactsDir, notRun: plans.length - results.length };
  } finally {
    await base.dispose();
  }
}
