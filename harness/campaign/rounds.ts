// One campaign round: start a pair, run the workload, inject the fault after the
// planned delay, then check the survivor(s): the guest answers, every file its log
// names is intact (in the guest and on the image), and the image passes e2fsck.
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import type { NodeProcess } from "../node-process.ts";
import {
  committedLogCountCommand,
  committedLogCounts,
  logLineCount,
  nodeShell,
  startWorkload,
  stopWorkload,
  unmount,
  verifyInGuest,
} from "./guest-workload.ts";
import { fsckImage, verifyLogOnImage } from "./host-disk-check.ts";
import { Pair, type CampaignFixture } from "./pair-fixture.ts";
import { emptyResult, judge, type EngineFeatures, type NodeVerdict, type OptionalCheck, type RoundPlan, type RoundResult } from "./round-result.ts";

const TAKEOVER_TIMEOUT_MS = 30_000;
const ANSWER_ATTEMPTS = 3;
const ANSWER_TIMEOUT_MS = 20_000;
/** How long the log must keep growing to count as "writes keep completing". */
const PROGRESS_WINDOW_MS = 3000;
const REPROTECT_TIMEOUT_MS = 120_000;
/** Nothing in a round may take longer than this; past it the round fails and is torn down. */
const ROUND_TIMEOUT_MS = 6 * 60_000;

export interface RoundContext {
  fixture: CampaignFixture;
  features: EngineFeatures;
  echoStderr: boolean;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function runRound(plan: RoundPlan, context: RoundContext): Promise<RoundResult> {
  const result = emptyResult(plan);
  const started = performance.now();
  let pair: Pair | undefined;
  try {
    await bounded(
      (async () => {
        pair = await Pair.start(context.fixture, {
          mode: plan.mode,
          label: `round${plan.index}`,
          viaProxy: plan.fault !== "primary-kill",
          policy: plan.policy,
          echoStderr: context.echoStderr,
        });
        await FAULTS[plan.fault](pair, plan, result, context);
      })(),
      ROUND_TIMEOUT_MS,
      `round ${plan.index}`,
    );
  } catch (error) {
    result.error = (error as Error).message.split("\n").slice(0, 6).join("\n");
  } finally {
    await pair?.close();
  }
  result.passed = judge(result);
  result.wallMs = performance.now() - started;
  return result;
}

type FaultRunner = (pair: Pair, plan: RoundPlan, result: RoundResult, context: RoundContext) => Promise<void>;

const FAULTS: Record<RoundPlan["fault"], FaultRunner> = {
  "primary-kill": async (pair, plan, result) => {
    const tag = await runWorkloadUntilFault(pair.primary, plan, result);
    const faultAt = performance.now();
    await pair.primary.kill("SIGKILL");
    // Released output that reached us before the process died was acknowledged by the secondary.
    result.committedLinesBeforeFault = maxOrNull(committedLogCounts(pair.primary.output, tag));
    await takeover(pair.secondary, faultAt, result);
    result.verdicts.push(await checkSurvivor(pair.secondary, "secondary", pair.secondaryImage, result.committedLinesBeforeFault, pair));
  },

  "secondary-kill": async (pair, plan, result, context) => {
    const tag = await runWorkloadUntilFault(pair.primary, plan, result);
    const faultAt = performance.now();
    result.committedLinesBeforeFault = maxOrNull(committedLogCounts(pair.primary.output, tag));
    await pair.secondary.kill("SIGKILL");
    if (plan.policy === "continue") {
      await pair.primary.waitForState("unprotected", TAKEOVER_TIMEOUT_MS);
      result.survived = true;
      result.faultToAnswerMs = await answerTime(pair.primary, faultAt);
      result.answered = result.faultToAnswerMs !== null;
      result.writesContinued = await logGrows(pair.primary);
    } else {
      result.optionalChecks.push(await stallCheck(pair.primary, context.features));
      result.survived = pair.primary.running;
      result.answered = true; // a stalled guest is not required to answer; the stall check judged it
    }
    result.optionalChecks.push(await reprotectCheck(pair, context.features));
    result.verdicts.push(await checkSurvivor(pair.primary, "primary", pair.primaryImage, result.committedLinesBeforeFault, pair));
  },

  "link-cut": async (pair, plan, result, context) => {
    const tag = await runWorkloadUntilFault(pair.primary, plan, result);
    const faultAt = performance.now();
    pair.proxy!.cut(plan.cutKind);
    const committedAtCut = maxOrNull(committedLogCounts(pair.primary.output, tag));
    result.committedLinesBeforeFault = committedAtCut;
    await takeover(pair.secondary, faultAt, result);
    // The primary cannot tell either: with `continue` it runs on unprotected. Both guests live.
    let primaryAnswers = false;
    if (plan.policy === "continue") {
      await pair.primary.waitForState("unprotected", TAKEOVER_TIMEOUT_MS);
      primaryAnswers = (await answerTime(pair.primary, faultAt)) !== null;
    }
    result.splitBrain = result.answered && primaryAnswers;
    const fencing = await fencingCheck(pair, context.features);
    result.optionalChecks.push(fencing);
    result.verdicts.push(await checkSurvivor(pair.secondary, "secondary", pair.secondaryImage, committedAtCut, pair));
    // The old primary's guest is a separate (diverged) machine now; its own disk must still be consistent.
    if (primaryAnswers && fencing.outcome !== "passed") result.verdicts.push(await checkSurvivor(pair.primary, "primary", pair.primaryImage, committedAtCut, pair));
  },
};

/**
 * Starts the workload, and until the planned fault time keeps asking the primary for
 * its log's length through released output. Returns the probe's tag. Right before the
 * fault it reads the primary's sync count.
 */
async function runWorkloadUntilFault(primary: NodeProcess, plan: RoundPlan, result: RoundResult): Promise<string> {
  const tag = `CAMPAIGN-COMMITTED-${plan.index}`;
  await startWorkload(nodeShell(primary));
  const faultAt = performance.now() + plan.delayMs;
  const probing = (async () => {
    while (performance.now() < faultAt - 50) {
      // Not awaited to completion past the fault: a probe in flight dies with its node.
      await Promise.race([primary.exec(committedLogCountCommand(tag), ANSWER_TIMEOUT_MS).catch(() => undefined), sleep(faultAt - performance.now())]);
      await sleep(Math.min(150, faultAt - performance.now()));
    }
  })();
  await sleep(faultAt - performance.now() - 20);
  const metrics = await bounded(primary.request<MetricsSnapshot>({ type: "metrics" }), 2000, "primary metrics").catch(() => undefined);
  result.syncsBeforeFault = metrics?.syncs ?? null;
  await sleep(faultAt - performance.now());
  void probing;
  return tag;
}

async function takeover(secondary: NodeProcess, faultAt: number, result: RoundResult): Promise<void> {
  await secondary.waitForState("active", TAKEOVER_TIMEOUT_MS);
  result.survived = true;
  result.faultToAnswerMs = await answerTime(secondary, faultAt);
  result.answered = result.faultToAnswerMs !== null;
  const metrics = await bounded(secondary.request<MetricsSnapshot>({ type: "metrics" }), 5000, "secondary metrics");
  result.failoverMs = metrics.failoverMs ?? null;
}

/**
 * Milliseconds from the fault to the guest's first answer, or null. Retried: the first
 * line typed after a takeover may land on half a line the old primary's shell had read.
 */
async function answerTime(node: NodeProcess, faultAt: number): Promise<number | null> {
  for (let attempt = 1; attempt <= ANSWER_ATTEMPTS; attempt++) {
    const token = `campaign-alive-${attempt}`;
    const reply = await node.exec(`echo ${token}`, ANSWER_TIMEOUT_MS).catch(() => undefined);
    if (reply?.output.includes(token)) return performance.now() - faultAt;
  }
  return null;
}

async function logGrows(node: NodeProcess): Promise<boolean> {
  const shell = nodeShell(node);
  const before = await logLineCount(shell);
  await sleep(PROGRESS_WINDOW_MS);
  return (await logLineCount(shell)) > before;
}

/** Stops the workload, checks the log's files in the guest, unmounts, then e2fsck and the same check from the host. */
async function checkSurvivor(node: NodeProcess, role: NodeVerdict["node"], image: string, committedLines: number | null, pair: Pair): Promise<NodeVerdict> {
  const shell = nodeShell(node);
  await stopWorkload(shell);
  const inGuest = await verifyInGuest(shell);
  await unmount(shell);
  const fsck = await fsckImage(image);
  const onImage = await verifyLogOnImage(image, pair.scratchDir);
  const lostDetail = [...inGuest.failures, ...onImage.lost];
  // Lines the primary printed through output commit must all be in this log.
  const missingCommitted = committedLines === null ? 0 : Math.max(0, committedLines - inGuest.logLines);
  if (missingCommitted > 0) lostDetail.push(`${missingCommitted} log lines the primary had released are missing`);
  if (onImage.logLines !== inGuest.logLines) lostDetail.push(`log has ${inGuest.logLines} lines in the guest but ${onImage.logLines} on the image`);
  return {
    node: role,
    logLines: inGuest.logLines,
    lostWrites: Math.max(inGuest.lost, onImage.lost.length) + missingCommitted + Math.max(0, inGuest.logLines - onImage.logLines),
    lostDetail,
    fsckClean: fsck.clean,
    fsckDetail: fsck.detail,
  };
}

// ------------------------------------------------------------ checks that wait for the engine

function skipped(name: string, feature: keyof EngineFeatures): OptionalCheck {
  return { name, outcome: "skipped", detail: `engine feature "${feature}" not enabled (--expect ${feature})` };
}

async function checked(name: string, check: () => Promise<string>): Promise<OptionalCheck> {
  try {
    return { name, outcome: "passed", detail: await check() };
  } catch (error) {
    return { name, outcome: "failed", detail: (error as Error).message.split("\n")[0]! };
  }
}

/** With `stall`, the guest's writes must not complete while unprotected: the log stands still. */
function stallCheck(primary: NodeProcess, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.stall) return Promise.resolve(skipped("stall holds writes", "stall"));
  return checked("stall holds writes", async () => {
    const shell = nodeShell(primary);
    const before = await logLineCount(shell, 5000).catch(() => undefined);
    await sleep(PROGRESS_WINDOW_MS);
    const after = await logLineCount(shell, 5000).catch(() => undefined);
    if (before !== undefined && after !== undefined && after > before) throw new Error(`log grew from ${before} to ${after} lines while stalled`);
    return before === undefined ? "guest stalled entirely" : `log stayed at ${before} lines`;
  });
}

/** A new secondary behind the proxy: the primary must be protected again and its writes keep completing. */
function reprotectCheck(pair: Pair, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.reprotect) return Promise.resolve(skipped("re-protection", "reprotect"));
  return checked("re-protection", async () => {
    const protectedBefore = countState(pair.primary, "protected");
    const secondary = await pair.replaceSecondary();
    await secondary.waitForState("replicating", REPROTECT_TIMEOUT_MS);
    await until(() => countState(pair.primary, "protected") > protectedBefore, REPROTECT_TIMEOUT_MS, "primary protected again");
    if (!(await logGrows(pair.primary))) throw new Error("re-protected, but the log stopped growing");
    return "protected again by a fresh secondary; writes complete";
  });
}

/** After the cut heals, the old primary reaches the promoted secondary and must be fenced. */
function fencingCheck(pair: Pair, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.fencing) return Promise.resolve(skipped("old primary fenced after heal", "fencing"));
  return checked("old primary fenced after heal", async () => {
    pair.proxy!.heal();
    await pair.primary.waitForState("fenced", REPROTECT_TIMEOUT_MS);
    return "fenced";
  });
}

function countState(node: NodeProcess, state: string): number {
  return node.states.filter((seen) => seen === state).length;
}

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

function maxOrNull(values: number[]): number | null {
  return values.length === 0 ? null : Math.max(...values);
}
