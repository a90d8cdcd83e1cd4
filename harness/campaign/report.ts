// Campaign output: one line per round, a summary, the same as JSON, and JUnit XML
// (one test case per round) for CI systems.
import { lostWrites, networkNotJudged, TAKEOVER_FAULTS, type RoundResult } from "./round-result.ts";

export interface Spread {
  min: number;
  median: number;
  /** The nearest-rank 99th percentile (the max below 100 values). */
  p99: number;
  max: number;
  count: number;
}

export interface CampaignSummary {
  rounds: number;
  passed: number;
  /** Takeovers over all rounds (a second-failover round has two). */
  failovers: number;
  /** Rounds in which a secondary took over (an arbitrated cut the primary won is not one). */
  takeoverRounds: number;
  /** Arbitrated link cuts after which the primary kept the guest and the secondary stood by. */
  cutsKeptByPrimary: number;
  lostWrites: number;
  fsckFailures: number;
  takeoverFailures: number;
  /** Link cuts after which both guests answered, without an arbiter (documented) and with one (a failure). */
  splitBrains: number;
  splitBrainsWithArbiter: number;
  /** Link-cut and primary-freeze rounds run with an arbiter (where two guests could run afterwards). */
  arbitratedCuts: number;
  logLinesVerified: number;
  failoverMs: Spread | null;
  faultToAnswerMs: Spread | null;
  /** Silent faults (a link cut that drops packets without closing, a frozen primary) with an arbiter: what the short peer timeout buys. */
  silentFaultToAnswerMs: Spread | null;
  /**
   * From the fault to the guest's echo service answering again, in rounds under `continue`
   * (under `stall` the guest's output waits for a new secondary on purpose); and the same
   * for the silent faults with an arbiter. Rounds recorded before this was measured have none.
   */
  faultToServiceMs: Spread | null;
  silentFaultToServiceMs: Spread | null;
  /** Rounds whose TCP stream came through whole, of those that had one. */
  networkStreams: { complete: number; checked: number; brokenNotJudged: number };
  /** The longest stall each round's stream saw. */
  networkStallMs: Spread | null;
  optionalChecks: Record<string, { passed: number; failed: number; skipped: number }>;
}

export function spread(values: number[]): Spread | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  const p99 = sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
  return { min: sorted[0]!, median, p99, max: sorted.at(-1)!, count: sorted.length };
}

/** A failure no socket reports, with an arbiter: a silent link cut, or a frozen primary. */
const isArbitratedSilentFault = (r: RoundResult) =>
  r.plan.arbiter && ((r.plan.fault === "link-cut" && r.plan.cutKind === "silent") || r.plan.fault === "primary-freeze");

export function summarize(results: RoundResult[]): CampaignSummary {
  const takeovers = results.filter((r) => TAKEOVER_FAULTS.includes(r.plan.fault) && r.guestKeptBy !== "primary");
  const optionalChecks: CampaignSummary["optionalChecks"] = {};
  for (const check of results.flatMap((r) => r.optionalChecks)) {
    const counts = (optionalChecks[check.name] ??= { passed: 0, failed: 0, skipped: 0 });
    counts[check.outcome]++;
  }
  return {
    rounds: results.length,
    passed: results.filter((r) => r.passed).length,
    failovers: takeovers.reduce((sum, r) => sum + r.failovers, 0),
    takeoverRounds: takeovers.length,
    cutsKeptByPrimary: results.filter((r) => r.plan.arbiter && r.plan.fault.startsWith("link-cut") && r.guestKeptBy === "primary").length,
    lostWrites: results.reduce((sum, r) => sum + lostWrites(r), 0),
    fsckFailures: results.reduce((sum, r) => sum + r.verdicts.filter((v) => !v.fsckClean).length, 0),
    takeoverFailures: results.filter((r) => !r.survived).length,
    splitBrains: results.filter((r) => r.splitBrain === true && !r.plan.arbiter).length,
    splitBrainsWithArbiter: results.filter((r) => r.splitBrain === true && r.plan.arbiter).length,
    arbitratedCuts: results.filter((r) => r.plan.arbiter && (r.plan.fault.startsWith("link-cut") || r.plan.fault === "primary-freeze")).length,
    logLinesVerified: results.reduce((sum, r) => sum + r.verdicts.reduce((s, v) => s + v.logLines, 0), 0),
    failoverMs: spread(results.flatMap((r) => (r.failoverMs === null ? [] : [r.failoverMs]))),
    faultToAnswerMs: spread(results.flatMap((r) => (r.faultToAnswerMs === null ? [] : [r.faultToAnswerMs]))),
    silentFaultToAnswerMs: spread(results.flatMap((r) => (isArbitratedSilentFault(r) && r.faultToAnswerMs !== null ? [r.faultToAnswerMs] : []))),
    faultToServiceMs: spread(results.flatMap((r) => (r.plan.policy === "continue" && typeof r.faultToServiceMs === "number" ? [r.faultToServiceMs] : []))),
    silentFaultToServiceMs: spread(
      results.flatMap((r) =>
        isArbitratedSilentFault(r) && r.plan.policy === "continue" && typeof r.faultToServiceMs === "number" ? [r.faultToServiceMs] : [],
      ),
    ),
    networkStreams: {
      complete: results.filter((r) => r.network?.outcome === "complete" && networkNotJudged(r) === undefined).length,
      checked: results.filter((r) => r.network !== null && networkNotJudged(r) === undefined).length,
      brokenNotJudged: results.filter((r) => r.network !== null && r.network.outcome !== "complete" && networkNotJudged(r) !== undefined).length,
    },
    networkStallMs: spread(results.flatMap((r) => (r.network === null || r.network.outcome !== "complete" ? [] : [r.network.longestStallMs]))),
    optionalChecks,
  };
}

const ms = (value: number | null) => (value === null ? "-" : `${Math.round(value)} ms`);
const orDash = (value: number | null) => (value === null ? "-" : String(value));

export function roundLine(r: RoundResult): string {
  const verdicts = r.verdicts.map((v) => `${v.node}: ${v.logLines} lines, lost ${v.lostWrites}, fsck ${v.fsckClean ? "clean" : "DIRTY"}`).join("; ");
  const extras = [
    r.plan.fault === "link-cut" ? `cut ${r.plan.cutKind}` : "",
    r.cutAfterFrameBytes !== null ? `cut after a ${r.cutAfterFrameBytes}-byte frame` : "",
    r.nextWriteAnswered !== null ? `old primary's next write and command: ${r.nextWriteAnswered ? "answered" : "NO ANSWER"}` : "",
    r.failovers > 1 ? `failovers ${r.failovers}` : "",
    r.writesContinued !== null ? `writes continued: ${r.writesContinued ? "yes" : "NO"}` : "",
    r.splitBrain !== null ? `split brain: ${r.splitBrain ? (r.plan.arbiter ? "YES, with an arbiter" : "yes (documented)") : "no"}` : "",
    r.arbitration ?? "",
    ...r.optionalChecks.filter((c) => c.outcome !== "skipped").map((c) => `${c.name}: ${c.outcome}`),
  ].filter((text) => text !== "");
  return [
    `#${r.plan.index} ${r.passed ? "PASS" : "FAIL"} ${r.plan.mode} ${r.plan.syncMode} ${r.plan.policy}${r.plan.arbiter ? " arbiter" : ""} ${r.plan.fault}`,
    `delay ${r.plan.delayMs} ms`,
    `syncs before ${orDash(r.syncsBeforeFault)}`,
    `committed lines ${orDash(r.committedLinesBeforeFault)}`,
    `${r.plan.fault === "secondary-kill" || r.guestKeptBy === "primary" ? "kept running" : "takeover"} ${r.survived ? "yes" : "NO"}`,
    `failover ${ms(r.failoverMs)}`,
    `fault->answer ${ms(r.faultToAnswerMs)}`,
    ...(typeof r.faultToServiceMs === "number" ? [`fault->service ${ms(r.faultToServiceMs)}`] : []),
    verdicts || "no verdict",
    networkText(r),
    ...extras,
    ...(r.error !== null ? [`error: ${r.error.split("\n")[0]}`] : []),
  ].join(" | ");
}

function networkText(r: RoundResult): string {
  const n = r.network;
  if (n === null) return "network: not checked";
  const bytes = `${(n.verified / 1024).toFixed(0)} of ${(n.sent / 1024).toFixed(0)} KiB back in order`;
  return n.outcome === "complete"
    ? `network: stream intact, ${bytes}, longest stall ${Math.round(n.longestStallMs)} ms`
    : `network: stream ${n.outcome.toUpperCase()}, ${bytes}${networkNotJudged(r) !== undefined ? ` (not judged: ${networkNotJudged(r)})` : ""}`;
}

/** Details worth printing under a failed round. */
export function failureDetail(r: RoundResult): string[] {
  return [
    ...(r.error !== null ? r.error.split("\n").map((line) => `    ${line}`) : []),
    ...(r.nextWriteAnswered === false ? ["    the old primary's guest did not complete its next write and command after the cut"] : []),
    ...(r.network !== null && r.network.outcome !== "complete"
      ? [`    network: the stream through the guest's echo service ended ${r.network.outcome}: ${r.network.error ?? "no detail"}`]
      : []),
    ...r.verdicts.flatMap((v) => [...v.lostDetail, ...(v.fsckClean ? [] : v.fsckDetail.split("\n"))].map((line) => `    ${v.node}: ${line}`)),
    ...r.optionalChecks.filter((c) => c.outcome === "failed").map((c) => `    ${c.name}: ${c.detail}`),
    ...(r.artifacts !== null
      ? [`    files kept in ${r.artifacts.dir}:`, ...[...r.artifacts.logs, ...r.artifacts.consoles, ...r.artifacts.disks].map((path) => `      ${path}`)]
      : []),
  ];
}

const xml = (text: string) =>
  text
    // Characters XML 1.0 cannot carry at all (console transcripts have terminal escapes).
    // eslint-disable-next-line no-control-regex -- control characters are what this removes
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, "?")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");

/** JUnit XML: a test suite of one test case per round; a failed round carries its details and kept files. */
export function junitXml(results: RoundResult[], meta: { seed: number; policy: string; bootMs: number }): string {
  const failures = results.filter((r) => !r.passed).length;
  const seconds = (ms: number) => (ms / 1000).toFixed(3);
  const total = results.reduce((sum, r) => sum + r.wallMs, 0);
  const cases = results.map((r) => {
    const name = `round ${r.plan.index}: ${r.plan.fault}, ${r.plan.mode}, fault after ${r.plan.delayMs} ms`;
    const line = roundLine(r);
    const failure = r.passed
      ? ""
      : `\n      <failure message="${xml(r.error?.split("\n")[0] ?? line)}" type="${r.error !== null ? "error" : "check"}">${xml([line, ...failureDetail(r)].join("\n"))}</failure>`;
    return `    <testcase classname="twinvm.campaign.${xml(r.plan.fault)}" name="${xml(name)}" time="${seconds(r.wallMs)}">${failure}\n      <system-out>${xml(line)}</system-out>\n    </testcase>`;
  });
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites name="twinvm failover campaign" tests="${results.length}" failures="${failures}" time="${seconds(total)}">`,
    `  <testsuite name="twinvm failover campaign (seed ${meta.seed}, policy ${xml(meta.policy)})" tests="${results.length}" failures="${failures}" errors="0" skipped="0" time="${seconds(total)}">`,
    `    <properties><property name="seed" value="${meta.seed}"/><property name="policy" value="${xml(meta.policy)}"/><property name="bootMs" value="${Math.round(meta.bootMs)}"/></properties>`,
    ...cases,
    `  </testsuite>`,
    `</testsuites>`,
    ``,
  ].join("\n");
}

const spreadText = (s: Spread | null) =>
  s === null ? "-" : `min ${Math.round(s.min)} / median ${Math.round(s.median)} / p99 ${Math.round(s.p99)} / max ${Math.round(s.max)} ms (n=${s.count})`;

export function summaryText(s: CampaignSummary): string {
  const checks = Object.entries(s.optionalChecks).map(([name, c]) => `  ${name}: ${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`);
  return [
    `rounds ${s.rounds}, passed ${s.passed}, failovers ${s.failovers}, lost writes ${s.lostWrites}, fsck failures ${s.fsckFailures}, takeover failures ${s.takeoverFailures}`,
    `log lines verified ${s.logLinesVerified}, split brains after a link cut: ${s.splitBrains} without an arbiter (documented limitation, not a failure), ${s.splitBrainsWithArbiter} of ${s.arbitratedCuts} cuts and freezes with one (the primary kept the guest after ${s.cutsKeptByPrimary} of them)`,
    `failover time (secondary's failoverMs): ${spreadText(s.failoverMs)}`,
    `fault to console answer (wall):        ${spreadText(s.faultToAnswerMs)}`,
    `silent fault to answer, arbiter:       ${spreadText(s.silentFaultToAnswerMs)}`,
    `fault to service answer (continue):    ${spreadText(s.faultToServiceMs)}`,
    `silent fault to service, arbiter:      ${spreadText(s.silentFaultToServiceMs)}`,
    `network: ${s.networkStreams.complete} of ${s.networkStreams.checked} TCP streams intact (every byte back in order, same connection)${s.networkStreams.brokenNotJudged > 0 ? `, ${s.networkStreams.brokenNotJudged} more broken where not judged (a split brain without an arbiter, or a stall)` : ""}; longest stall per round: ${spreadText(s.networkStallMs)}`,
    ...(checks.length > 0 ? ["checks that wait for engine features:", ...checks] : []),
  ].join("\n");
}
