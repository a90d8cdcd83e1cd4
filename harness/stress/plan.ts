// What each stress round does, from the options and a seeded PRNG: disk mode and loss
// policy (alternating, so any stretch of rounds covers all four pairs), one takeover or
// two, whether a fresh secondary protects the survivor again (a second takeover needs it),
// and when each SIGKILL lands (a third of them within 400 ms of the writers starting, often
// mid-sync; see faultDelayMs).
import type { DiskMode, SecondaryLossPolicy } from "../../replication/engine/primary/engine.ts";
import { faultDelayMs, Prng } from "../campaign/prng.ts";

export type TakeoverCount = 1 | 2;

export interface StressPlan {
  index: number;
  mode: DiskMode;
  policy: SecondaryLossPolicy;
  /** Delay before each SIGKILL of the node running the guest: after the writers start, then after re-protection. */
  killDelaysMs: number[];
  /** The pair heals after a takeover (then the survivor's writes and output wait for the new secondary's copy). */
  reprotect: boolean;
}

export interface PlanOptions {
  rounds: number;
  seed: number;
  modes: readonly DiskMode[];
  policies: readonly SecondaryLossPolicy[];
  /** "mixed": every third round (seeded) takes over twice. */
  takeovers: TakeoverCount | "mixed";
  /** "mixed": every other single-takeover round runs without re-protection. */
  reprotect: boolean | "mixed";
}

export function planRounds(options: PlanOptions): StressPlan[] {
  const prng = new Prng(options.seed);
  const plans: StressPlan[] = [];
  for (let i = 0; i < options.rounds; i++) {
    const count = options.takeovers === "mixed" ? (prng.next() < 1 / 3 ? 2 : 1) : options.takeovers;
    const killDelaysMs = [faultDelayMs(prng)];
    if (count === 2) killDelaysMs.push(prng.int(200, 4000));
    plans.push({
      index: i + 1,
      mode: options.modes[i % options.modes.length]!,
      policy: options.policies[Math.floor(i / options.modes.length) % options.policies.length]!,
      killDelaysMs,
      reprotect:
        count === 2 || (options.reprotect === "mixed" ? Math.floor(i / (options.modes.length * options.policies.length)) % 2 === 0 : options.reprotect),
    });
  }
  return plans;
}
