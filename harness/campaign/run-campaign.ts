// Plans a campaign's rounds from the options and a seeded PRNG, runs them one after
// another on one booted fixture, and always disposes of the fixture.
import type { DiskMode, SecondaryLossPolicy } from "../../replication/engine/primary.ts";
import { CampaignFixture } from "./pair-fixture.ts";
import { faultDelayMs, Prng } from "./prng.ts";
import type { EngineFeatures, FaultKind, RoundPlan, RoundResult } from "./round-result.ts";
import { runRound } from "./rounds.ts";

export interface CampaignOptions {
  /** Rounds per (fault, mode) pair. */
  rounds: number;
  modes: DiskMode[];
  faults: FaultKind[];
  seed: number;
  policy: SecondaryLossPolicy;
  features: EngineFeatures;
  echoStderr?: boolean;
  /** Where the fixture's temporary directory goes (default: the OS temp dir). */
  workDir?: string;
}

export function planRounds(options: CampaignOptions): RoundPlan[] {
  const prng = new Prng(options.seed);
  const plans: RoundPlan[] = [];
  for (let round = 0; round < options.rounds; round++) {
    for (const fault of options.faults) {
      for (const mode of options.modes) {
        plans.push({ index: plans.length + 1, mode, fault, delayMs: faultDelayMs(prng), cutKind: prng.pick(["reset", "silent"] as const), policy: options.policy });
      }
    }
  }
  return plans;
}

export interface CampaignRun {
  bootMs: number;
  results: RoundResult[];
}

/** `onFixture` lets a caller dispose of the fixture on a signal; `onRound` streams results. */
export async function runCampaign(
  options: CampaignOptions,
  hooks: { onFixture?: (fixture: CampaignFixture) => void; onRound?: (result: RoundResult) => void } = {},
): Promise<CampaignRun> {
  const fixture = await CampaignFixture.create(options.workDir);
  hooks.onFixture?.(fixture);
  try {
    const results: RoundResult[] = [];
    for (const plan of planRounds(options)) {
      const result = await runRound(plan, { fixture, features: options.features, echoStderr: options.echoStderr ?? false });
      results.push(result);
      hooks.onRound?.(result);
    }
    return { bootMs: fixture.bootMs, results };
  } finally {
    await fixture.dispose();
  }
}
