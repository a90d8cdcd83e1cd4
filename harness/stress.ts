// The takeover stress loop: many rounds of "two ext4 disks with writes in flight, SIGKILL the
// node running the guest, then a shell line (stop the writers, check the files, unmount) under
// a deadline". Usage:
//   npm run stress -- [--rounds N] [--seed S] [--mode logging-replay|dirty-block-copy|both]
//        [--policy continue|stall|both] [--takeovers 1|2|mixed] [--reprotect on|off|mixed] [--load N] [--memory MIB]
//        [--deadline SECONDS] [--minutes M: start no round after M minutes] [--artifacts DIR] [--json FILE]
// Every failed or slow round keeps its pair's folder in the artifacts folder; exits 1 if any
// round failed (a late answer alone is "slow", reported, not a failure).
import { rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { DiskMode, SecondaryLossPolicy } from "../replication/engine/primary/engine.ts";
import { privateDir } from "./testing/pair-files.ts";
import type { GuestTemplate } from "./testing/template.ts";
import { createStressTemplate } from "./stress/fixture.ts";
import { startLoad, type Load } from "./stress/load.ts";
import { planRounds, type TakeoverCount } from "./stress/plan.ts";
import { roundLine, summarize, summaryText } from "./stress/report.ts";
import { runStressRound, type StressRoundResult } from "./stress/round.ts";

const USAGE = `usage: stress [--rounds N] [--seed S] [--mode logging-replay|dirty-block-copy|both] [--policy continue|stall|both]
              [--takeovers 1|2|mixed] [--reprotect on|off|mixed] [--load N] [--memory MIB] [--deadline SECONDS] [--minutes M] [--artifacts DIR] [--json FILE]`;

class UsageError extends Error {}

interface StressOptions {
  rounds: number;
  seed: number;
  modes: DiskMode[];
  policies: SecondaryLossPolicy[];
  takeovers: TakeoverCount | "mixed";
  reprotect: boolean | "mixed";
  load: number;
  memoryMiB: number;
  deadlineMs: number;
  /** No round starts after this many ms from the first (undefined: run every round). */
  budgetMs: number | undefined;
  artifactsDir: string;
  json: string | undefined;
}

function integer(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) throw new UsageError(`--${name} must be an integer from ${min} to ${max}, not "${text}"`);
  return value;
}

function choice<T extends string>(name: string, text: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text)) throw new UsageError(`--${name} must be one of ${allowed.join(", ")}, not "${text}"`);
  return text as T;
}

function parseStressArgs(argv: string[]): StressOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "10" },
      seed: { type: "string" },
      mode: { type: "string", default: "both" },
      policy: { type: "string", default: "both" },
      takeovers: { type: "string", default: "mixed" },
      reprotect: { type: "string", default: "mixed" },
      load: { type: "string", default: "0" },
      memory: { type: "string", default: "128" },
      deadline: { type: "string", default: "60" },
      minutes: { type: "string" },
      artifacts: { type: "string" },
      json: { type: "string" },
    },
    strict: true,
  });
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : integer("seed", values.seed, 0, 2 ** 32 - 1);
  const mode = choice("mode", values.mode, ["logging-replay", "dirty-block-copy", "both"] as const);
  const policy = choice("policy", values.policy, ["continue", "stall", "both"] as const);
  const takeovers = choice("takeovers", values.takeovers, ["1", "2", "mixed"] as const);
  const reprotect = choice("reprotect", values.reprotect, ["on", "off", "mixed"] as const);
  return {
    rounds: integer("rounds", values.rounds, 1, 5000),
    seed,
    modes: mode === "both" ? ["logging-replay", "dirty-block-copy"] : [mode],
    policies: policy === "both" ? ["continue", "stall"] : [policy],
    takeovers: takeovers === "mixed" ? "mixed" : (Number(takeovers) as TakeoverCount),
    reprotect: reprotect === "mixed" ? "mixed" : reprotect === "on",
    load: integer("load", values.load, 0, 16),
    memoryMiB: integer("memory", values.memory, 128, 2048),
    deadlineMs: 1000 * integer("deadline", values.deadline, 20, 3600),
    budgetMs: values.minutes === undefined ? undefined : 60_000 * integer("minutes", values.minutes, 1, 24 * 60),
    artifactsDir: values.artifacts ?? join(tmpdir(), `twinvm-stress-${seed}-artifacts`),
    json: values.json,
  };
}

/** A loaded machine can take longer than the guest's 90 s boot bound: try a few times before giving up. */
async function bootTemplate(options: StressOptions, workDir: string, log: (line: string) => void): Promise<GuestTemplate> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await createStressTemplate({ memoryMiB: options.memoryMiB, workDir });
    } catch (error) {
      if (attempt >= 3) throw error;
      log(`stress: booting the template failed (attempt ${attempt} of 3): ${(error as Error).message.split("\n")[0]}`);
    }
  }
}

async function main(): Promise<number> {
  let options: StressOptions;
  try {
    options = parseStressArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`stress: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const workDir = await privateDir(undefined, "stress");
  let template: GuestTemplate | undefined;
  let load: Load | undefined;
  const cleanUp = async () => {
    load?.stop();
    await template?.dispose();
    await rm(workDir, { recursive: true, force: true });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      log(`stress: ${signal}, cleaning up`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
  const results: StressRoundResult[] = [];
  try {
    log(
      `stress: seed ${options.seed}, ${options.rounds} round(s), modes ${options.modes.join("+")}, policies ${options.policies.join("+")}, takeovers ${options.takeovers}, re-protection ${options.reprotect === "mixed" ? "mixed" : options.reprotect ? "on" : "off"}, load ${options.load}, ${options.memoryMiB} MiB, deadline ${options.deadlineMs / 1000} s; ${cpus().length} cores, load average ${loadavg()[0]!.toFixed(1)}`,
    );
    template = await bootTemplate(options, workDir, log);
    log(`stress: guest booted in ${(template.bootMs / 1000).toFixed(1)} s with two ext4 disks; failed or slow rounds go to ${options.artifactsDir}`);
    if (options.load > 0) {
      load = startLoad(options.load);
      log(`stress: ${options.load} busy-loop process(es) running (pid ${load.pids.join(", ")})`);
    }
    const plans = planRounds({
      rounds: options.rounds,
      seed: options.seed,
      modes: options.modes,
      policies: options.policies,
      takeovers: options.takeovers,
      reprotect: options.reprotect,
    });
    const startedAt = performance.now();
    for (const plan of plans) {
      if (options.budgetMs !== undefined && performance.now() - startedAt > options.budgetMs) {
        log(`stress: the ${options.budgetMs / 60_000}-minute budget is spent after ${results.length} of ${plans.length} round(s)`);
        break;
      }
      const result = await runStressRound(plan, { template, workDir, artifactsDir: options.artifactsDir, deadlineMs: options.deadlineMs });
      results.push(result);
      process.stdout.write(`${roundLine(result)}\n`);
      if (options.json !== undefined) await writeFile(options.json, JSON.stringify({ options, results, summary: summarize(results) }, null, 2));
    }
  } finally {
    await cleanUp();
  }
  const summary = summarize(results);
  process.stdout.write(`\nseed ${options.seed}\n${summaryText(summary)}\n`);
  return summary.failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`stress: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
