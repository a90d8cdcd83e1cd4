// One stress round: restore the template into a fresh pair, start a writer on each disk,
// SIGKILL the node running the guest at the planned moment (once, or again after the pair
// healed), wait for the takeover, then run the finish line under a deadline and check what
// it found, what the survivor released to the outside, and the images (e2fsck). A round
// that fails or answers late keeps the pair's folder (each node's log and console
// transcript, the disk images) with the survivor's inspections and what they show.
import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import type { NodeInspection } from "../control-request.ts";
import { fsckImage } from "../campaign/host-disk-check.ts";
import type { Pair } from "../testing/pair.ts";
import type { PairNode } from "../testing/pair-node.ts";
import type { GuestTemplate } from "../testing/template.ts";
import { diagnose, type DiskInspection } from "./diagnose.ts";
import { startStressPair } from "./fixture.ts";
import { DONE_MARKER, FINISH, parseFinish, START_WRITERS, WATCHDOG_MARKER, type FinishReport } from "./guest-scripts.ts";
import type { StressPlan } from "./plan.ts";

const TAKEOVER_TIMEOUT_MS = 30_000;
const REPROTECT_TIMEOUT_MS = 240_000;
/** After the deadline, how long a late answer is still waited for (the round is then "slow", not hung). */
const LATE_GRACE_MS = 120_000;
/** After the answer, how long the survivor may take to release it (output commit waits for re-protection). */
const RELEASE_TIMEOUT_MS = 240_000;
/** Inspections of a hung survivor, this far apart. */
const INSPECT_GAP_MS = 2000;
/** Nothing in a round may take longer. */
const ROUND_TIMEOUT_MS = 15 * 60_000;

export interface TakeoverRecord {
  from: string;
  to: string;
  /** SIGKILL to the pair seeing the survivor run the guest (wall, this process). */
  faultToTakeoverMs: number;
  /** The survivor's own measure: primary lost to guest running. */
  failoverMs: number | null;
}

export type RoundOutcome = "passed" | "slow" | "failed";

export interface StressRoundResult {
  plan: StressPlan;
  /** Pairs started for the round: a start that failed (before any fault) is tried once more. */
  startAttempts: number;
  takeovers: TakeoverRecord[];
  /** Last SIGKILL to the survivor's first answer to `echo` (its console and shell work, whatever its disks do). */
  faultToAliveMs: number | null;
  /** Last SIGKILL to a fresh secondary protecting the survivor again (output commit and guest writes wait for it). */
  faultToReprotectedMs: number | null;
  /** Last SIGKILL to the finish line's answer on the survivor's console (exec), late answers included. */
  faultToAnswerMs: number | null;
  /** Last SIGKILL to the answer in the survivor's released output (what a user's terminal shows). */
  faultToReleasedMs: number | null;
  finish: FinishReport | null;
  fsckClean: boolean | null;
  outcome: RoundOutcome;
  /** Why the first start of the pair failed, if it did (see startAttempts). */
  startFailure?: string;
  /** Why the round failed or was slow. */
  problems: string[];
  /** From the survivor's inspections when the finish line hung. */
  diagnosis: string[];
  artifacts: string | null;
  wallMs: number;
}

export interface RoundContext {
  template: GuestTemplate;
  workDir: string;
  artifactsDir: string;
  deadlineMs: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

export async function runStressRound(plan: StressPlan, context: RoundContext): Promise<StressRoundResult> {
  const started = performance.now();
  const result: StressRoundResult = {
    plan,
    takeovers: [],
    startAttempts: 0,
    faultToAliveMs: null,
    faultToReprotectedMs: null,
    faultToAnswerMs: null,
    faultToReleasedMs: null,
    finish: null,
    fsckClean: null,
    outcome: "failed",
    problems: [],
    diagnosis: [],
    artifacts: null,
    wallMs: 0,
  };
  let pair: Pair | undefined;
  const evidence: Record<string, unknown> = {};
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      (async () => {
        pair = await startPairForRound(plan, context, result);
        await runPlan(pair, plan, context, result, evidence);
      })(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`round timeout (${ROUND_TIMEOUT_MS / 60_000} min)`)), ROUND_TIMEOUT_MS))),
    ]);
  } catch (error) {
    result.problems.push((error as Error).message.split("\n").slice(0, 12).join("\n"));
  } finally {
    clearTimeout(timer);
  }
  result.outcome = result.problems.length > 0 ? (result.faultToAnswerMs !== null && isOnlyLate(result) ? "slow" : "failed") : "passed";
  if (pair !== undefined) {
    const keep = result.outcome !== "passed";
    if (keep) await writeEvidence(pair, result, evidence).catch((error: unknown) => result.problems.push(`writing evidence: ${(error as Error).message}`));
    const kept = await pair.stop({ keepFiles: keep });
    if (kept !== undefined) {
      await mkdir(context.artifactsDir, { recursive: true });
      const target = join(
        context.artifactsDir,
        `round-${plan.index}-${plan.mode}-${plan.policy}-${plan.killDelaysMs.length}x${plan.reprotect ? "" : "-noreprotect"}`,
      );
      await rename(kept.dir, target);
      result.artifacts = target;
    }
  }
  result.wallMs = performance.now() - started;
  return result;
}

/**
 * Starts the round's pair; a start that fails is tried once more (on this loaded machine an
 * initial sync was abandoned when the secondary heard nothing for its 3 s peer timeout). The
 * first failure is kept in `startFailure`; a second one fails the round.
 */
async function startPairForRound(plan: StressPlan, context: RoundContext, result: StressRoundResult): Promise<Pair> {
  const options = { mode: plan.mode, policy: plan.policy, reprotect: plan.reprotect, workDir: context.workDir };
  result.startAttempts = 1;
  try {
    return await startStressPair(context.template, options);
  } catch (error) {
    result.startFailure = (error as Error).message.split("\n").slice(0, 12).join("\n");
    result.startAttempts = 2;
    return await startStressPair(context.template, options);
  }
}

/** Slow rounds answered after the deadline and had nothing else wrong. */
function isOnlyLate(result: StressRoundResult): boolean {
  return result.problems.every((problem) => problem.startsWith("late:"));
}

async function runPlan(pair: Pair, plan: StressPlan, context: RoundContext, result: StressRoundResult, evidence: Record<string, unknown>): Promise<void> {
  const started = await pair.exec(START_WRITERS, { timeoutMs: 30_000 });
  if (started.exitCode !== 0) throw new Error(`starting the writers failed: ${started.output}`);
  let faultAt = 0;
  for (const [i, delayMs] of plan.killDelaysMs.entries()) {
    if (i > 0) await pair.waitForProtected({ timeoutMs: REPROTECT_TIMEOUT_MS });
    await sleep(delayMs);
    faultAt = performance.now();
    const killed = await pair.killPrimary();
    const survivor = await pair.waitForTakeover({ timeoutMs: TAKEOVER_TIMEOUT_MS });
    const faultToTakeoverMs = performance.now() - faultAt;
    const metrics = await survivor.process.request<MetricsSnapshot>({ type: "metrics" }).catch(() => undefined);
    result.takeovers.push({ from: killed.name, to: survivor.name, faultToTakeoverMs, failoverMs: metrics?.failoverMs ?? null });
  }
  const survivor = pair.primary;
  const released = releasedAt(pair, survivor);
  const reprotected = protectedAt(pair, survivor);
  const alive = await pair.exec("echo alive-$((6*7))", { timeoutMs: context.deadlineMs }).catch(() => undefined);
  if (alive?.output.includes("alive-42") === true) result.faultToAliveMs = performance.now() - faultAt;
  // The watchdog speaks before the host gives up, so a hang's console shows the guest's own view.
  const watchdogSeconds = Math.max(5, Math.round((context.deadlineMs - 15_000) / 1000));
  const finish = await finishLine(pair, survivor, watchdogSeconds, context.deadlineMs, faultAt, result, evidence).finally(() => {
    reprotected.stop();
    if (reprotected.at !== undefined) result.faultToReprotectedMs = reprotected.at - faultAt;
  });
  if (finish === undefined) return;
  result.finish = finish;
  if (finish.problems > 0)
    result.problems.push(`the finish line found ${finish.problems} problem(s): ${JSON.stringify(finish.files)}${finish.unmounted ? "" : ", umount failed"}`);
  const releasedMs = await Promise.race([released.at, sleep(RELEASE_TIMEOUT_MS).then(() => undefined)]);
  released.stop();
  result.faultToReleasedMs = releasedMs === undefined ? null : releasedMs - faultAt;
  if (releasedMs === undefined) {
    result.problems.push(`the answer was not released within ${RELEASE_TIMEOUT_MS / 1000} s of the fault (output commit held it)`);
    await inspectTwice(pair, survivor, result, evidence);
  }
  // With both disks unmounted, every request the guest submitted must have completed (or failed).
  const idle = await pair.inspect(survivor).catch(() => undefined);
  for (const [key, raw] of Object.entries(idle?.machine?.devices ?? {})) {
    const disk = raw as unknown as DiskInspection;
    if (disk.inFlight.length > 0)
      result.problems.push(`${key}: ${disk.inFlight.length} request(s) still in flight after the unmount: ${JSON.stringify(disk.inFlight)}`);
    if (disk.isr !== 0 && disk.intx?.lineHigh === false)
      result.problems.push(`${key}: ISR ${disk.isr} set while IRQ ${disk.intx.irq} is low (a lost interrupt)`);
  }
  if (finish.unmounted) {
    const checks = await Promise.all(survivor.disks.map((image) => fsckImage(image)));
    result.fsckClean = checks.every((check) => check.clean);
    checks.forEach((check, i) => !check.clean && result.problems.push(`e2fsck of ${survivor.disks[i]}: ${check.detail}`));
  }
}

/**
 * Runs the finish script on the survivor with the deadline. On a timeout: inspects the
 * survivor twice, then keeps waiting (bounded) for the answer in its console to tell a slow
 * guest from a hung one. Resolves with the report, or undefined when there was none.
 */
async function finishLine(
  pair: Pair,
  survivor: PairNode,
  watchdogSeconds: number,
  deadlineMs: number,
  faultAt: number,
  result: StressRoundResult,
  evidence: Record<string, unknown>,
): Promise<FinishReport | undefined> {
  try {
    const { output } = await pair.exec(`sh ${FINISH} ${watchdogSeconds}`, { timeoutMs: deadlineMs });
    result.faultToAnswerMs = performance.now() - faultAt;
    evidence.finishOutput = output;
    const report = parseFinish(output);
    if (report === undefined) result.problems.push(`the finish line printed no ${DONE_MARKER}: ${output.slice(-500)}`);
    return report;
  } catch (error) {
    result.problems.push(`no answer within ${deadlineMs / 1000} s: ${(error as Error).message.split("\n")[0]}`);
  }
  await inspectTwice(pair, survivor, result, evidence);
  // A late answer still lands in the console transcript, which inspections carry.
  const until = performance.now() + LATE_GRACE_MS;
  while (performance.now() < until) {
    const inspection = await pair.inspect(survivor).catch(() => undefined);
    const tail = inspection?.machine?.consoleTail ?? "";
    const report = parseFinish(tail);
    if (report !== undefined) {
      result.faultToAnswerMs = performance.now() - faultAt;
      result.problems[result.problems.length - 1] = `late: answered after ${(result.faultToAnswerMs / 1000).toFixed(1)} s (deadline ${deadlineMs / 1000} s)`;
      evidence.lateConsoleTail = tail;
      return report;
    }
    if (!survivor.running) break;
    await sleep(2000);
  }
  const last = await pair.inspect(survivor).catch(() => undefined);
  evidence.finalInspection = last;
  if (last?.machine?.consoleTail.includes(WATCHDOG_MARKER) === true)
    result.diagnosis.push("the guest's watchdog printed (its console works): see the console tail");
  return undefined;
}

async function inspectTwice(pair: Pair, survivor: PairNode, result: StressRoundResult, evidence: Record<string, unknown>): Promise<void> {
  try {
    const first: NodeInspection = await pair.inspect(survivor);
    await sleep(INSPECT_GAP_MS);
    const second: NodeInspection = await pair.inspect(survivor);
    evidence.inspections = [first, second];
    result.diagnosis.push(...diagnose(first, second));
  } catch (error) {
    result.diagnosis.push(`could not inspect ${survivor.name}: ${(error as Error).message.split("\n")[0]}`);
  }
}

/** When the finish marker shows up in the survivor's released console output. */
function releasedAt(pair: Pair, survivor: PairNode): { at: Promise<number>; stop(): void } {
  let text = "";
  let stop = () => {};
  const at = new Promise<number>((resolve) => {
    stop = pair.onEvent((event) => {
      if (event.type !== "console" || event.node !== survivor.name) return;
      text = (text + event.text).slice(-4096);
      if (new RegExp(`${DONE_MARKER} \\d+`).test(text)) resolve(performance.now());
    });
  });
  return { at, stop: () => stop() };
}

/** When the survivor's primary engine is protected by a fresh secondary (read `at` once stopped). */
function protectedAt(pair: Pair, survivor: PairNode): { at: number | undefined; stop(): void } {
  const watch: { at: number | undefined; stop(): void } = { at: undefined, stop: () => {} };
  if (survivor.primaryState === "protected") watch.at = performance.now();
  const stop = pair.onEvent((event) => {
    if (event.type === "state" && event.node === survivor.name && event.engine === "primary" && event.state === "protected") watch.at ??= performance.now();
  });
  watch.stop = stop;
  return watch;
}

async function writeEvidence(pair: Pair, result: StressRoundResult, evidence: Record<string, unknown>): Promise<void> {
  await writeFile(join(pair.dir, "round.json"), JSON.stringify({ ...result, evidence }, null, 2));
  await writeFile(join(pair.dir, "pair.txt"), `${pair.describe()}\n`);
}
