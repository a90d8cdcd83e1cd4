// One campaign round on the test API: start a pair from the campaign template, open a
// TCP stream through the guest's echo service, run the workload, inject the fault after
// the planned delay, then check the survivor(s): the guest answers, every file its log
// names is intact (in the guest and on the image), the image passes e2fsck, and every
// byte of the stream came back in order on the connection opened before the fault. A
// failed round keeps the pair's files (each node's log and console transcript, the disk
// images) in the artifacts folder.
import { access, mkdir, rename } from "node:fs/promises";
import { join } from "node:path";
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import type { Pair } from "../testing/pair.ts";
import type { PairNode } from "../testing/pair-node.ts";
import type { GuestTemplate } from "../testing/template.ts";
import { EchoStream, stallAfter, type EchoStreamReport } from "../network/echo-stream.ts";
import { ECHO_PORT, startRoundPair } from "./fixture.ts";
import {
  committedLogCountCommand,
  committedLogCounts,
  logLineCount,
  MOUNT_POINT,
  nodeShell,
  startWorkload,
  stopWorkload,
  unmount,
  verifyInGuest,
} from "./guest-workload.ts";
import { fsckImage, verifyLogOnImage } from "./host-disk-check.ts";
import {
  emptyResult,
  judge,
  type EngineFeatures,
  type NetworkVerdict,
  type NodeVerdict,
  type OptionalCheck,
  type RoundArtifacts,
  type RoundPlan,
  type RoundResult,
} from "./round-result.ts";

const TAKEOVER_TIMEOUT_MS = 30_000;
const ANSWER_ATTEMPTS = 3;
const ANSWER_TIMEOUT_MS = 20_000;
/** How long the log must keep growing to count as "writes keep completing". */
const PROGRESS_WINDOW_MS = 3000;
const REPROTECT_TIMEOUT_MS = 150_000;
/** Re-protection after a lost secondary waits this long, so the stall check (up to two 5 s probes and the window) sees only the unprotected time. */
const REPROTECT_DELAY_MS = PROGRESS_WINDOW_MS + 12_000;
/** Nothing in a round may take longer than this; past it the round fails and is torn down. */
const ROUND_TIMEOUT_MS = 8 * 60_000;
/**
 * The network check's stream: steady and light (it must not crowd out the disk workload on
 * a 2-core machine), so that every sync window has frames in it both ways.
 */
const STREAM_BYTES_PER_SECOND = 32 << 10;
/** After the round's checks, how long the stream's last bytes may take to come back (passt resends every 2 s). */
const STREAM_DRAIN_MS = 30_000;

/** When each round's (last) fault struck, for the service's answer after it. */
const faultTimes = new WeakMap<RoundResult, number>();

function faultNow(result: RoundResult): number {
  const now = performance.now();
  faultTimes.set(result, now);
  return now;
}

export interface RoundContext {
  template: GuestTemplate;
  features: EngineFeatures;
  echoStderr: boolean;
  /** Where pairs keep their files while they run. */
  workDir: string;
  /** Where a failed round's files are moved. */
  artifactsDir: string;
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
  let stream: EchoStream | undefined;
  try {
    await bounded(
      (async () => {
        pair = await startRoundPair(context.template, {
          mode: plan.mode,
          policy: plan.policy,
          syncMode: plan.syncMode,
          arbiter: plan.arbiter,
          reprotectDelayMs: plan.fault === "secondary-kill" ? REPROTECT_DELAY_MS : 0,
          workDir: context.workDir,
          echoLogs: context.echoStderr,
        });
        stream = await openStream(pair, plan, result);
        await FAULTS[plan.fault](pair, plan, result, context);
        result.failovers = pair.failovers;
      })(),
      ROUND_TIMEOUT_MS,
      `round ${plan.index}`,
    );
  } catch (error) {
    result.error = (error as Error).message.split("\n").slice(0, 24).join("\n");
  }
  // After everything else: the stream ran through the fault and all of the round's checks.
  if (stream !== undefined) {
    const report = await stream.finish(STREAM_DRAIN_MS);
    result.network = networkVerdict(report);
    result.faultToServiceMs = serviceAnswer(report, faultTimes.get(result));
  }
  result.passed = judge(result);
  if (pair !== undefined) {
    const kept = await pair.stop({ keepFiles: !result.passed });
    if (kept !== undefined) result.artifacts = await keepArtifacts(kept.dir, kept.nodes, plan, context.artifactsDir);
  }
  result.wallMs = performance.now() - started;
  return result;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

async function keepArtifacts(
  dir: string,
  nodes: { log: string; console: string; disks: readonly string[] }[],
  plan: RoundPlan,
  artifactsDir: string,
): Promise<RoundArtifacts> {
  await mkdir(artifactsDir, { recursive: true });
  // A campaign run again with the same seed finds the last run's folders: this run's get a suffix.
  const base = join(artifactsDir, `round-${plan.index}-${plan.fault}-${plan.mode}`);
  let target = base;
  for (let n = 2; await exists(target); n++) target = `${base}-${n}`;
  await rename(dir, target);
  const moved = (path: string) => (path.startsWith(dir) ? target + path.slice(dir.length) : path);
  return { dir: target, logs: nodes.map((n) => moved(n.log)), consoles: nodes.map((n) => moved(n.console)), disks: nodes.flatMap((n) => n.disks.map(moved)) };
}

/** Opens the round's stream; a failure to open it is the network check's failure, and the round goes on without it. */
async function openStream(pair: Pair, plan: RoundPlan, result: RoundResult): Promise<EchoStream | undefined> {
  try {
    const stream = await EchoStream.open({ port: pair.hostPort(ECHO_PORT), bytesPerSecond: STREAM_BYTES_PER_SECOND, seed: plan.index });
    // The service answers before the fault: a stream that never worked would say nothing about the fault.
    if (!(await stream.progress(1, 20_000))) throw new Error("no echo within 20 s of connecting");
    return stream;
  } catch (error) {
    result.network = {
      outcome: "error",
      sent: 0,
      verified: 0,
      longestStallMs: 0,
      stallsOverSecondMs: [],
      error: `the stream did not start: ${(error as Error).message}`,
    };
    return undefined;
  }
}

/** From the fault to the service's first byte after the stall it caused (0: it did not stall); null without a whole stream or a fault. */
function serviceAnswer(report: EchoStreamReport, faultAt: number | undefined): number | null {
  if (report.outcome !== "complete" || faultAt === undefined) return null;
  const stall = stallAfter(report.gaps, faultAt);
  return stall === undefined ? 0 : stall.endMs - faultAt;
}

function networkVerdict(report: EchoStreamReport): NetworkVerdict {
  return {
    outcome: report.outcome,
    sent: report.sent,
    verified: report.verified,
    longestStallMs: report.longestGapMs,
    stallsOverSecondMs: report.gaps.map((gap) => gap.endMs - gap.startMs).filter((ms) => ms > 1000),
    error: report.error ?? (report.mismatchAt !== undefined ? `byte ${report.mismatchAt} came back different` : null),
  };
}

type FaultRunner = (pair: Pair, plan: RoundPlan, result: RoundResult, context: RoundContext) => Promise<void>;

const FAULTS: Record<RoundPlan["fault"], FaultRunner> = {
  "primary-kill": async (pair, plan, result) => {
    const tag = await runWorkloadUntilFault(pair.primary, plan, result);
    const faultAt = faultNow(result);
    const killed = await pair.killPrimary();
    // Released output that reached us before the process died was acknowledged by the secondary.
    result.committedLinesBeforeFault = maxOrNull(committedLogCounts(killed.transcript, tag));
    const survivor = await takeover(pair, faultAt, result);
    result.verdicts.push(await checkSurvivor(survivor, "secondary", result.committedLinesBeforeFault, pair));
  },

  "second-failover": async (pair, plan, result) => {
    const tag = await runWorkloadUntilFault(pair.primary, plan, result);
    const first = await pair.killPrimary();
    const committedFirst = maxOrNull(committedLogCounts(first.transcript, tag));
    const survivor = await takeover(pair, faultNow(result), result);
    // The guest (and its workload) runs on; a fresh secondary protects it, then the survivor dies too.
    const healed = await checked("re-protection after the takeover", async () => {
      await pair.waitForProtected({ timeoutMs: REPROTECT_TIMEOUT_MS });
      if (!(await logGrows(survivor))) throw new Error("re-protected, but the log stopped growing");
      return `protected again by ${pair.secondary!.name}; writes complete`;
    });
    result.optionalChecks.push(healed);
    if (healed.outcome !== "passed") return;
    await probeCommitted(survivor, tag, 1500);
    const faultAt = faultNow(result);
    const second = await pair.killPrimary();
    result.committedLinesBeforeFault = maxOrNull([...committedLogCounts(second.transcript, tag), ...(committedFirst === null ? [] : [committedFirst])]);
    const last = await takeover(pair, faultAt, result);
    result.verdicts.push(await checkSurvivor(last, "secondary", result.committedLinesBeforeFault, pair));
  },

  "secondary-kill": async (pair, plan, result, context) => {
    const primary = pair.primary;
    const tag = await runWorkloadUntilFault(primary, plan, result);
    const faultAt = faultNow(result);
    result.committedLinesBeforeFault = maxOrNull(committedLogCounts(primary.transcript, tag));
    await pair.killSecondary();
    if (plan.policy === "continue") {
      await untilState(primary, "unprotected", TAKEOVER_TIMEOUT_MS);
      guestRunsOn(result, "primary");
      result.faultToAnswerMs = await answerTime(primary, faultAt);
      result.answered = result.faultToAnswerMs !== null;
      result.writesContinued = await logGrows(primary);
    } else {
      result.optionalChecks.push(await stallCheck(primary, context.features));
      guestRunsOn(result, primary.running ? "primary" : null);
      result.answered = true; // a stalled guest is not required to answer; the stall check judged it
    }
    result.optionalChecks.push(await reprotectCheck(pair, primary, context.features));
    result.verdicts.push(await checkSurvivor(primary, "primary", result.committedLinesBeforeFault, pair));
  },

  "link-cut": async (pair, plan, result, context) => {
    const oldPrimary = pair.primary;
    const secondary = pair.secondary!;
    const tag = await runWorkloadUntilFault(oldPrimary, plan, result);
    const faultAt = faultNow(result);
    pair.cutLink(plan.cutKind);
    if (plan.arbiter) await afterArbitratedCut(oldPrimary, secondary, tag, faultAt, result, pair, context);
    else await afterCut(pair, oldPrimary, tag, faultAt, result, context);
  },

  "primary-freeze": async (pair, plan, result, context) => {
    const tag = await runWorkloadUntilFault(pair.primary, plan, result);
    const faultAt = faultNow(result);
    const frozen = pair.freezePrimary();
    result.committedLinesBeforeFault = maxOrNull(committedLogCounts(frozen.transcript, tag));
    const survivor = await takeover(pair, faultAt, result);
    const fenced = await thawedFencedCheck(pair, frozen, context.features);
    result.optionalChecks.push(fenced);
    if (fenced.outcome !== "skipped") {
      // Resumed, the old primary must not run the guest too (one try: a fenced node refuses exec at once).
      const oldAnswers =
        frozen.running &&
        (await frozen.process.exec("echo campaign-loser", ANSWER_TIMEOUT_MS).catch(() => undefined))?.output.includes("campaign-loser") === true;
      result.splitBrain = result.answered && oldAnswers;
    }
    result.verdicts.push(await checkSurvivor(survivor, "secondary", result.committedLinesBeforeFault, pair));
  },

  "link-cut-mid-sync": async (pair, plan, result, context) => {
    const oldPrimary = pair.primary;
    const secondary = pair.secondary!;
    const tag = await runWorkloadUntilFault(oldPrimary, plan, result);
    const faultAt = faultNow(result);
    // The workload writes all the time: the next sync starts within milliseconds.
    result.cutAfterFrameBytes = (await pair.cutLinkMidSync({ timeoutMs: 20_000 })).frameBytes;
    if (plan.arbiter) await afterArbitratedCut(oldPrimary, secondary, tag, faultAt, result, pair, context);
    else await afterCut(pair, oldPrimary, tag, faultAt, result, context);
  },
};

/**
 * After a cut both sides lose their peer. The secondary takes over; the old primary,
 * with `continue`, runs on unprotected, and its guest's next write and next command
 * must complete (a sync interrupted by the cut must not hold them for good). Once the
 * link heals the old primary must be fenced.
 */
async function afterCut(pair: Pair, oldPrimary: PairNode, tag: string, faultAt: number, result: RoundResult, context: RoundContext): Promise<void> {
  const committedAtCut = maxOrNull(committedLogCounts(oldPrimary.transcript, tag));
  result.committedLinesBeforeFault = committedAtCut;
  const survivor = await takeover(pair, faultAt, result);
  let primaryAnswers = false;
  if (result.plan.policy === "continue") {
    await untilState(oldPrimary, "unprotected", TAKEOVER_TIMEOUT_MS);
    primaryAnswers = (await answerTime(oldPrimary, faultAt)) !== null;
    if (result.plan.fault === "link-cut-mid-sync") {
      const write = await nodeShell(oldPrimary.process)
        .exec(`echo after-cut > ${MOUNT_POINT}/after-cut && sync && echo "WRO""TE"`, { timeoutMs: ANSWER_TIMEOUT_MS })
        .catch(() => undefined);
      result.nextWriteAnswered = primaryAnswers && write?.output.includes("WROTE") === true;
    }
  }
  result.splitBrain = result.answered && primaryAnswers;
  const fencing = await fencingCheck(pair, oldPrimary, context.features);
  result.optionalChecks.push(fencing);
  result.verdicts.push(await checkSurvivor(survivor, "secondary", committedAtCut, pair));
  // The old primary's guest is a separate (diverged) machine now; its own disk must still be consistent.
  if (primaryAnswers && fencing.outcome !== "passed") result.verdicts.push(await checkSurvivor(oldPrimary, "primary", committedAtCut, pair));
}

/**
 * After a cut with an arbiter, both nodes live: the primary's hold makes the witness keep
 * the guest with it (its lease, the secondary standing by); should its hold lapse first (a
 * stalled process), the secondary takes over and the old primary, unable to renew its lease,
 * is fenced. Either way is accepted here. Exactly one guest may answer
 * afterwards (a split brain fails the round), and the winner's guest must hold every
 * write it acknowledged; if the primary kept the guest, its next write must complete.
 */
async function afterArbitratedCut(
  oldPrimary: PairNode,
  secondary: PairNode,
  tag: string,
  faultAt: number,
  result: RoundResult,
  pair: Pair,
  context: RoundContext,
): Promise<void> {
  const committedAtCut = maxOrNull(committedLogCounts(oldPrimary.transcript, tag));
  result.committedLinesBeforeFault = committedAtCut;
  const deadline = performance.now() + TAKEOVER_TIMEOUT_MS;
  let winner: PairNode | undefined;
  while (winner === undefined) {
    if (oldPrimary.process.states.includes("fenced") && secondary.process.states.includes("active")) {
      winner = secondary;
      result.arbitration = "the secondary took over, the old primary is fenced";
    } else if (
      secondary.process.states.includes("standby") &&
      oldPrimary.process.states.includes("unprotected") &&
      // A standing-by secondary asks again while the primary's hold lasts: only its lease settles it.
      pair.witness?.holder === oldPrimary.name &&
      pair.witness.leased
    ) {
      winner = oldPrimary;
      result.arbitration = "the primary kept its lease, the secondary stands by";
    } else if (performance.now() > deadline) {
      throw new Error(`no arbitration within ${TAKEOVER_TIMEOUT_MS} ms of the cut: ${pair.describe()}`);
    } else await sleep(50);
  }
  const loser = winner === secondary ? oldPrimary : secondary;
  guestRunsOn(result, winner === secondary ? "secondary" : "primary");
  result.faultToAnswerMs = await answerTime(winner, faultAt);
  result.answered = result.faultToAnswerMs !== null;
  if (winner === secondary) {
    const metrics = await bounded(winner.process.request<MetricsSnapshot>({ type: "metrics" }), 5000, "survivor metrics");
    result.failoverMs = metrics.failoverMs ?? null;
  } else if (result.plan.fault === "link-cut-mid-sync") {
    const write = await nodeShell(winner.process)
      .exec(`echo after-cut > ${MOUNT_POINT}/after-cut && sync && echo "WRO""TE"`, { timeoutMs: ANSWER_TIMEOUT_MS })
      .catch(() => undefined);
    result.nextWriteAnswered = write?.output.includes("WROTE") === true;
  }
  // One try is enough: a fenced or standing-by node refuses exec at once.
  const loserAnswers =
    loser.running && (await loser.process.exec("echo campaign-loser", ANSWER_TIMEOUT_MS).catch(() => undefined))?.output.includes("campaign-loser") === true;
  result.splitBrain = result.answered && loserAnswers;
  result.optionalChecks.push({
    name: "arbiter: one guest runs",
    outcome: loserAnswers ? "failed" : "passed",
    detail: `${result.arbitration}${loserAnswers ? "; yet its guest answers too" : ""}`,
  });
  // Under `stall` a primary that kept the guest holds its writes until a secondary protects
  // it again, which takes a link: heal it, so the standing-by secondary (or a fresh one) can.
  if (winner === oldPrimary && result.plan.policy === "stall") {
    pair.healLink();
    result.optionalChecks.push(await reprotectCheck(pair, oldPrimary, context.features));
  }
  result.verdicts.push(await checkSurvivor(winner, winner === secondary ? "secondary" : "primary", committedAtCut, pair));
}

/**
 * Starts the workload, and until the planned fault time keeps asking the primary for
 * its log's length through released output. Returns the probe's tag. Right before the
 * fault it reads the primary's sync count.
 */
async function runWorkloadUntilFault(primary: PairNode, plan: RoundPlan, result: RoundResult): Promise<string> {
  const tag = `CAMPAIGN-COMMITTED-${plan.index}`;
  await startWorkload(nodeShell(primary.process));
  const faultAt = performance.now() + plan.delayMs;
  const probing = probeCommitted(primary, tag, plan.delayMs);
  await sleep(faultAt - performance.now() - 20);
  const metrics = await bounded(primary.process.request<MetricsSnapshot>({ type: "metrics" }), 2000, "primary metrics").catch(() => undefined);
  result.syncsBeforeFault = metrics?.syncs ?? null;
  await sleep(faultAt - performance.now());
  void probing;
  return tag;
}

/** For `forMs`, asks `node` for its log length through released output (a probe in flight dies with its node). */
async function probeCommitted(node: PairNode, tag: string, forMs: number): Promise<void> {
  const until = performance.now() + forMs;
  while (performance.now() < until - 50) {
    await Promise.race([node.process.exec(committedLogCountCommand(tag), ANSWER_TIMEOUT_MS).catch(() => undefined), sleep(until - performance.now())]);
    await sleep(Math.min(150, until - performance.now()));
  }
}

/** Which node runs the guest after the fault (null: neither); `survived` is its yes or no. */
function guestRunsOn(result: RoundResult, node: "primary" | "secondary" | null): void {
  result.guestKeptBy = node;
  result.survived = node !== null;
}

async function takeover(pair: Pair, faultAt: number, result: RoundResult): Promise<PairNode> {
  const survivor = await pair.waitForTakeover({ timeoutMs: TAKEOVER_TIMEOUT_MS });
  guestRunsOn(result, "secondary");
  result.faultToAnswerMs = await answerTime(survivor, faultAt);
  result.answered = result.faultToAnswerMs !== null;
  const metrics = await bounded(survivor.process.request<MetricsSnapshot>({ type: "metrics" }), 5000, "survivor metrics");
  result.failoverMs = metrics.failoverMs ?? null;
  return survivor;
}

/**
 * Milliseconds from the fault to the guest's first answer, or null. Retried: the first
 * line typed after a takeover may land on half a line the old primary's shell had read.
 */
async function answerTime(node: PairNode, faultAt: number): Promise<number | null> {
  for (let attempt = 1; attempt <= ANSWER_ATTEMPTS; attempt++) {
    const token = `campaign-alive-${attempt}`;
    const reply = await node.process.exec(`echo ${token}`, ANSWER_TIMEOUT_MS).catch(() => undefined);
    if (reply?.output.includes(token)) return performance.now() - faultAt;
  }
  return null;
}

async function logGrows(node: PairNode): Promise<boolean> {
  const shell = nodeShell(node.process);
  const before = await logLineCount(shell);
  await sleep(PROGRESS_WINDOW_MS);
  return (await logLineCount(shell)) > before;
}

function untilState(node: PairNode, state: string, timeoutMs: number): Promise<void> {
  return node.process.waitForState(state, timeoutMs);
}

/** Stops the workload, checks the log's files in the guest, unmounts, then e2fsck and the same check from the host. */
async function checkSurvivor(node: PairNode, role: NodeVerdict["node"], committedLines: number | null, pair: Pair): Promise<NodeVerdict> {
  const shell = nodeShell(node.process);
  await stopWorkload(shell);
  const inGuest = await verifyInGuest(shell);
  await unmount(shell);
  const image = node.disks[0]!;
  const fsck = await fsckImage(image);
  const onImage = await verifyLogOnImage(image, pair.dir);
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

/**
 * With `stall`, the guest's writes must not complete while unprotected: once the primary says
 * it is, no write completion is released and the log stands still. The engine's counts before
 * and after go into the detail either way, so a failure says what the primary was doing.
 */
function stallCheck(primary: PairNode, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.stall) return Promise.resolve(skipped("stall holds writes", "stall"));
  return checked("stall holds writes", async () => {
    await untilState(primary, "unprotected", TAKEOVER_TIMEOUT_MS);
    const shell = nodeShell(primary.process);
    const engineBefore = await completionsOf(primary);
    const before = await logLineCount(shell, 5000).catch(() => undefined);
    await sleep(PROGRESS_WINDOW_MS);
    const after = await logLineCount(shell, 5000).catch(() => undefined);
    const engineAfter = await completionsOf(primary);
    const released = engineAfter.released - engineBefore.released;
    const engine = `primary ${engineBefore.state} then ${engineAfter.state}, ${released} write completion(s) released, ${engineAfter.held - engineAfter.released} held`;
    if (engineBefore.state === "unprotected" && engineAfter.state === "unprotected" && released > 0)
      throw new Error(`write completions released while stalled (${engine})`);
    // The reads of a stalled guest can come back late (round 806: a 3 s window ended 19 s after it began,
    // with the primary protected again and the writes it held let through): growth counts only when the
    // primary was still unprotected at the end of the window.
    if (engineAfter.state !== "unprotected")
      return `re-protected before the window ended: log ${before ?? "?"} then ${after ?? "?"} lines, not judged (${engine})`;
    if (before !== undefined && after !== undefined && after > before) throw new Error(`log grew from ${before} to ${after} lines while stalled (${engine})`);
    return `${before === undefined ? "guest stalled entirely" : `log stayed at ${before} lines`} (${engine})`;
  });
}

/** The primary's state and its output-commit counts of disk-write completions. */
async function completionsOf(node: PairNode): Promise<{ state: string; held: number; released: number }> {
  const metrics = await bounded(node.process.request<MetricsSnapshot>({ type: "metrics" }), 5000, `${node.name} metrics`);
  const counts = metrics.output?.completion;
  if (counts === undefined) throw new Error(`${node.name} reports no output-commit counts (state ${metrics.state})`);
  return { state: metrics.state, held: counts.held, released: counts.released };
}

/** The pair replaces the lost secondary behind the primary's link: the primary must be protected again and its writes keep completing. */
function reprotectCheck(pair: Pair, primary: PairNode, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.reprotect) return Promise.resolve(skipped("re-protection", "reprotect"));
  return checked("re-protection", async () => {
    await pair.waitForProtected({ timeoutMs: REPROTECT_TIMEOUT_MS });
    if (pair.primary !== primary) throw new Error(`the guest moved to ${pair.primary.name}`);
    if (!(await logGrows(primary))) throw new Error("re-protected, but the log stopped growing");
    return `protected again by ${pair.secondary!.name}; writes complete`;
  });
}

/** After the cut heals, the old primary reaches the promoted secondary and must be fenced. */
function fencingCheck(pair: Pair, oldPrimary: PairNode, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.fencing) return Promise.resolve(skipped("old primary fenced after heal", "fencing"));
  return checked("old primary fenced after heal", async () => {
    pair.healLink();
    await untilState(oldPrimary, "fenced", REPROTECT_TIMEOUT_MS);
    return "fenced";
  });
}

/** A frozen old primary, thawed after the takeover, learns from the witness that it was replaced and fences itself. */
function thawedFencedCheck(pair: Pair, oldPrimary: PairNode, features: EngineFeatures): Promise<OptionalCheck> {
  if (!features.fencing) return Promise.resolve(skipped("thawed old primary fenced", "fencing"));
  return checked("thawed old primary fenced", async () => {
    pair.thaw(oldPrimary);
    await untilState(oldPrimary, "fenced", REPROTECT_TIMEOUT_MS);
    return "fenced";
  });
}

function maxOrNull(values: number[]): number | null {
  return values.length === 0 ? null : Math.max(...values);
}
