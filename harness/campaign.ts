// The failover campaign: rounds of "start a pair, write and sync files in the guest,
// inject a fault at a random moment, check that nothing the guest saw as durable was
// lost". Usage:
//   npm run campaign -- --rounds N --mode logging-replay|dirty-block-copy|both
//        [--fault KIND[,KIND...]|all] [--seed S] [--policy continue|stall|both]
//        [--sync-mode synchronous|speculative|both] [--arbiter on|off|both]
//        [--expect reprotect,stall,fencing] [--json] [--junit FILE] [--artifacts DIR] [--verbose]
// Exits 1 if any round lost a write, failed e2fsck, failed to take over or failed a check.
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import type { SecondaryLossPolicy, SyncMode } from "../replication/engine/primary/engine.ts";
import { defaultArtifactsDir, runCampaign, type CampaignBase, type CampaignOptions } from "./campaign/run-campaign.ts";
import { failureDetail, junitXml, roundLine, summarize, summaryText } from "./campaign/report.ts";
import { FAULT_KINDS, NO_FEATURES, type EngineFeatures } from "./campaign/round-result.ts";

const USAGE = `usage: campaign --rounds N --mode logging-replay|dirty-block-copy|both [--fault ${FAULT_KINDS.join("|")}|all (comma-separated)] [--seed S] [--policy continue|stall|both] [--sync-mode synchronous|speculative|both] [--arbiter on|off|both] [--expect reprotect,stall,fencing] [--json] [--junit FILE] [--artifacts DIR] [--verbose]`;

class UsageError extends Error {}

function oneOf<T extends string>(value: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${what} must be one of ${allowed.join(", ")}, not "${value}"`);
  return value as T;
}

function bothOrOne<T extends string>(value: T | "both", both: readonly T[]): T[] {
  return value === "both" ? [...both] : [value];
}

function parseCampaignArgs(argv: string[]): CampaignOptions & { json: boolean; junit: string | undefined } {
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
    },
    strict: true,
  });
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000) throw new UsageError(`--rounds must be an integer from 1 to 1000, not "${values.rounds}"`);
  const mode = oneOf(values.mode, ["logging-replay", "dirty-block-copy", "both"] as const, "--mode");
  const faults = values.fault === "all" ? [...FAULT_KINDS] : values.fault.split(",").map((name) => oneOf(name, FAULT_KINDS, "--fault"));
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new UsageError(`--seed must be an integer from 0 to 2^32-1, not "${values.seed}"`);
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
  log(
    `campaign: seed ${options.seed}, ${options.rounds} round(s) x ${options.faults.join("+")} x ${options.modes.join("+")}, policy ${options.policies.join("+")}; booting the guest once`,
  );
  const run = await runCampaign(options, {
    onBase: (created) => {
      base = created;
      log(
        `campaign: guest booted in ${(created.template.bootMs / 1000).toFixed(1)} s, snapshot taken; a failed round's files go to ${options.artifactsDir ?? defaultArtifactsDir(options.seed)}`,
      );
    },
    onRound: (result) => {
      if (options.json) return log(roundLine(result));
      process.stdout.write(`${roundLine(result)}\n`);
      if (!result.passed) process.stdout.write(`${failureDetail(result).join("\n")}\n`);
    },
  });
  const summary = summarize(run.results);
  if (options.junit !== undefined) {
    await writeFile(options.junit, junitXml(run.results, { seed: options.seed, policy: options.policies.join("+"), bootMs: run.bootMs }));
    log(`campaign: JUnit report written to ${options.junit}`);
  }
  if (options.json) {
    process.stdout.write(
      `${JSON.stringify({ seed: options.seed, policy: options.policies.join("+"), features: options.features, bootMs: run.bootMs, artifactsDir: run.artifactsDir, summary, rounds: run.results }, null, 2)}\n`,
    );
  } else {
    process.stdout.write(`\nseed ${options.seed}\n${summaryText(summary)}\n`);
  }
  return summary.passed === summary.rounds ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`campaign: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
