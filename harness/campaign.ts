// The failover campaign: rounds of "start a pair, write and sync files in the guest,
// inject a fault at a random moment, check that nothing the guest saw as durable was
// lost". Usage:
//   npm run campaign -- --rounds N --mode logging-replay|dirty-block-copy|both
//        [--fault KIND[,KIND...]|all] [--seed S] [--policy continue|stall|both]
//        [--sync-mode synchronous|speculative|both] [--arbiter on|off|both]
//        [--expect reprotect,stall,fencing] [--json] [--junit FILE] [--artifacts DIR] [--verbose]
//        [--record FILE] [--minutes M]
// --record keeps every finished round in FILE (JSON lines) and skips those already there, so
// a long campaign runs in parts (--minutes M starts no round after M minutes; 0 runs none and
// only summarises); the summary then covers every round the record holds.
// Exits 1 if any round lost a write, failed e2fsck, failed to take over or failed a check.
import { writeFile } from "node:fs/promises";
import { campaignIdentity, describeIdentity, openRecord, RecordError } from "./campaign/record.ts";
import { parseArgs } from "node:util";
import type { SecondaryLossPolicy, SyncMode } from "../replication/engine/primary/engine.ts";
import { defaultArtifactsDir, planRounds, runCampaign, type CampaignBase, type CampaignOptions, type CampaignRun } from "./campaign/run-campaign.ts";
import { failureDetail, junitXml, roundLine, summarize, summaryText } from "./campaign/report.ts";
import { FAULT_KINDS, NO_FEATURES, type EngineFeatures, type RoundResult } from "./campaign/round-result.ts";

const USAGE = `usage: campaign --rounds N --mode logging-replay|dirty-block-copy|both [--fault ${FAULT_KINDS.join("|")}|all (comma-separated)] [--seed S] [--policy continue|stall|both] [--sync-mode synchronous|speculative|both] [--arbiter on|off|both] [--expect reprotect,stall,fencing] [--json] [--junit FILE] [--artifacts DIR] [--verbose] [--record FILE] [--minutes M]`;

class UsageError extends Error {}

function oneOf<T extends string>(value: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${what} must be one of ${allowed.join(", ")}, not "${value}"`);
  return value as T;
}

function bothOrOne<T extends string>(value: T | "both", both: readonly T[]): T[] {
  return value === "both" ? [...both] : [value];
}

function parseCampaignArgs(argv: string[]): CampaignOptions & { json: boolean; junit: string | undefined; record: string | undefined } {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "1" },
      mode: { type: "string", default: "both" },
      fault: { type: "string", default: "primary-kill" },
      seed: { type: "string" },
      policy: { type: "string", default: "continue" },
      "sync-mode": { type: "string", default: "synchronous" },
      arbiter: { type: "string", default: "off" },
      expect: { type: "string", default: "reprotect,stall,fencing" },
      json: { type: "boolean", default: false },
      junit: { type: "string" },
      artifacts: { type: "string" },
      verbose: { type: "boolean", default: false },
      record: { type: "string" },
      minutes: { type: "string" },
    },
    strict: true,
  });
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000) throw new UsageError(`--rounds must be an integer from 1 to 1000, not "${values.rounds}"`);
  const mode = oneOf(values.mode, ["logging-replay", "dirty-block-copy", "both"] as const, "--mode");
  const faults = values.fault === "all" ? [...FAULT_KINDS] : values.fault.split(",").map((name) => oneOf(name, FAULT_KINDS, "--fault"));
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new UsageError(`--seed must be an integer from 0 to 2^32-1, not "${values.seed}"`);
  const minutes = values.minutes === undefined ? undefined : Number(values.minutes);
  if (minutes !== undefined && !(Number.isInteger(minutes) && minutes >= 0 && minutes <= 24 * 60))
    throw new UsageError(`--minutes must be an integer from 0 (only summarise the record) to 1440, not "${values.minutes}"`);
  if (minutes === 0 && values.record === undefined) throw new UsageError("--minutes 0 summarises a record: give --record FILE");
  const features: EngineFeatures = { ...NO_FEATURES };
  for (const name of values.expect.split(",").filter((part) => part !== ""))
    features[oneOf(name, ["reprotect", "stall", "fencing"] as const, "--expect")] = true;
  return {
    rounds,
    modes: mode === "both" ? ["logging-replay", "dirty-block-copy"] : [mode],
    faults,
    seed,
    policies: bothOrOne<SecondaryLossPolicy>(oneOf(values.policy, ["continue", "stall", "both"] as const, "--policy"), ["continue", "stall"]),
    syncModes: bothOrOne<SyncMode>(oneOf(values["sync-mode"], ["synchronous", "speculative", "both"] as const, "--sync-mode"), ["synchronous", "speculative"]),
    arbiters: { on: [true], off: [false], both: [false, true] }[oneOf(values.arbiter, ["on", "off", "both"] as const, "--arbiter")],
    features,
    echoStderr: values.verbose,
    json: values.json,
    junit: values.junit,
    record: values.record,
    ...(minutes !== undefined && { budgetMs: minutes * 60_000 }),
    ...(values.artifacts !== undefined && { artifactsDir: values.artifacts }),
  };
}

async function main(): Promise<number> {
  let options: ReturnType<typeof parseCampaignArgs>;
  try {
    options = parseCampaignArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`campaign: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  // On Ctrl-C or SIGTERM: remove the images and snapshot; the node processes die with their IPC channel's owner.
  let base: CampaignBase | undefined;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      process.stderr.write(`campaign: ${signal}, cleaning up\n`);
      void (base?.dispose() ?? Promise.resolve()).finally(() => process.exit(130));
    });
  }
  const log = (line: string) => process.stderr.write(`${line}\n`);
  let record: Awaited<ReturnType<typeof openRecord>> | undefined;
  if (options.record !== undefined) {
    try {
      record = await openRecord(options.record, campaignIdentity(options));
    } catch (error) {
      if (!(error instanceof RecordError)) throw error;
      process.stderr.write(`campaign: ${error.message}\n`);
      return 2;
    }
  }
  const recorded = record?.recorded ?? new Map<number, RoundResult>();
  const planned = planRounds(options).length;
  if (record !== undefined) {
    log(
      `campaign: record ${options.record}: ${recorded.size} of ${planned} planned round(s) recorded${record.unreadableLines > 0 ? ` (${record.unreadableLines} unreadable line(s) ignored: those rounds run again)` : ""}`,
    );
  }
  let run: CampaignRun = { bootMs: 0, results: [], artifactsDir: options.artifactsDir ?? defaultArtifactsDir(options.seed), notRun: 0 };
  if (recorded.size < planned && options.budgetMs !== 0) {
    log(
      `campaign: ${describeIdentity(campaignIdentity(options))}${options.budgetMs !== undefined ? `, starting no round after ${options.budgetMs / 60_000} min` : ""}; booting the guest once`,
    );
    run = await runCampaign(options, {
      skip: new Set(recorded.keys()),
      onBase: (created) => {
        base = created;
        log(
          `campaign: guest booted in ${(created.template.bootMs / 1000).toFixed(1)} s, snapshot taken; a failed round's files go to ${options.artifactsDir ?? defaultArtifactsDir(options.seed)}`,
        );
      },
      onRound: async (result) => {
        await record?.append(result);
        if (options.json) {
          log(roundLine(result));
          return;
        }
        process.stdout.write(`${roundLine(result)}\n`);
        if (!result.passed) process.stdout.write(`${failureDetail(result).join("\n")}\n`);
      },
    });
  }
  // With a record, the summary is the whole campaign's so far: the rounds recorded before and this run's.
  for (const result of run.results) recorded.set(result.plan.index, result);
  const results = [...recorded.values()].sort((a, b) => a.plan.index - b.plan.index);
  const summary = summarize(results);
  if (options.junit !== undefined) {
    await writeFile(options.junit, junitXml(results, { seed: options.seed, policy: options.policies.join("+"), bootMs: run.bootMs }));
    log(`campaign: JUnit report written to ${options.junit}`);
  }
  const progress = `${results.length} of ${planned} planned round(s) run${record !== undefined ? ` (${run.results.length} by this run)` : ""}${run.notRun > 0 ? `; ${run.notRun} not started: the time budget ran out` : ""}`;
  if (options.json) {
    process.stdout.write(
      `${JSON.stringify({ seed: options.seed, policy: options.policies.join("+"), features: options.features, bootMs: run.bootMs, artifactsDir: run.artifactsDir, planned, notRun: planned - results.length, summary, rounds: results }, null, 2)}\n`,
    );
  } else {
    process.stdout.write(`\nseed ${options.seed}, ${progress}\n${summaryText(summary)}\n`);
  }
  if (options.json) log(`campaign: ${progress}`);
  return summary.passed === summary.rounds ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`campaign: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
