// The stress run's summary: rounds by outcome, takeovers, and the time from the fault to the
// answer (on the survivor's console, and as released to the outside) as min/median/p99/max.
import type { StressRoundResult } from "./round.ts";

export interface Distribution {
  n: number;
  min: number;
  median: number;
  p99: number;
  max: number;
}

export interface StressSummary {
  rounds: number;
  /** Rounds whose pair had to be started twice (the first start failed before any fault). */
  restarted: number;
  passed: number;
  slow: number;
  failed: number;
  takeovers: number;
  faultToTakeoverMs: Distribution | null;
  failoverMs: Distribution | null;
  faultToAliveMs: Distribution | null;
  faultToReprotectedMs: Distribution | null;
  faultToAnswerMs: Distribution | null;
  faultToReleasedMs: Distribution | null;
}

export function distribution(values: readonly number[]): Distribution | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  // Nearest rank: the smallest value with at least p of the samples at or below it.
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
  return { n: sorted.length, min: sorted[0]!, median: rank(0.5), p99: rank(0.99), max: sorted.at(-1)! };
}

export function summarize(results: readonly StressRoundResult[]): StressSummary {
  const takeovers = results.flatMap((result) => result.takeovers);
  const numbers = (values: (number | null)[]) => values.filter((v): v is number => v !== null);
  return {
    rounds: results.length,
    restarted: results.filter((r) => r.startAttempts > 1).length,
    passed: results.filter((r) => r.outcome === "passed").length,
    slow: results.filter((r) => r.outcome === "slow").length,
    failed: results.filter((r) => r.outcome === "failed").length,
    takeovers: takeovers.length,
    faultToTakeoverMs: distribution(takeovers.map((t) => t.faultToTakeoverMs)),
    failoverMs: distribution(numbers(takeovers.map((t) => t.failoverMs))),
    faultToAliveMs: distribution(numbers(results.map((r) => r.faultToAliveMs))),
    faultToReprotectedMs: distribution(numbers(results.map((r) => r.faultToReprotectedMs))),
    faultToAnswerMs: distribution(numbers(results.map((r) => r.faultToAnswerMs))),
    faultToReleasedMs: distribution(numbers(results.map((r) => r.faultToReleasedMs))),
  };
}

const ms = (d: Distribution | null) =>
  d === null ? "no samples" : `min ${d.min.toFixed(0)} / median ${d.median.toFixed(0)} / p99 ${d.p99.toFixed(0)} / max ${d.max.toFixed(0)} ms (n=${d.n})`;

export function summaryText(summary: StressSummary): string {
  return [
    `rounds ${summary.rounds}: passed ${summary.passed}, slow ${summary.slow}, failed ${summary.failed}; takeovers ${summary.takeovers}; pairs started twice ${summary.restarted}`,
    `fault to takeover (wall):            ${ms(summary.faultToTakeoverMs)}`,
    `takeover (survivor's failoverMs):    ${ms(summary.failoverMs)}`,
    `fault to first answer (echo):        ${ms(summary.faultToAliveMs)}`,
    `fault to re-protected:               ${ms(summary.faultToReprotectedMs)}`,
    `fault to answer (survivor console):  ${ms(summary.faultToAnswerMs)}`,
    `fault to answer released (output):   ${ms(summary.faultToReleasedMs)}`,
  ].join("\n");
}

export function roundLine(result: StressRoundResult): string {
  const { plan } = result;
  const seconds = (value: number | null) => (value === null ? "-" : `${(value / 1000).toFixed(1)} s`);
  const steps = result.finish?.stepSeconds;
  const files =
    result.finish === null
      ? ""
      : ` files ${result.finish.files.a.ok}+${result.finish.files.b.ok}${steps ? ` (guest: stop ${steps.stop.toFixed(1)} s, check ${steps.check.toFixed(1)} s, umount ${steps.unmount.toFixed(1)} s)` : ""}`;
  const head = `round ${plan.index} ${plan.mode} ${plan.policy}${plan.reprotect ? "" : " no-reprotect"} ${plan.killDelaysMs.length} takeover(s) at ${plan.killDelaysMs.join("/")} ms: ${result.outcome.toUpperCase()}`;
  const times = `takeover ${result.takeovers.map((t) => `${t.failoverMs?.toFixed(0) ?? "?"} ms`).join("/")}, alive ${seconds(result.faultToAliveMs)}, re-protected ${seconds(result.faultToReprotectedMs)}, answer ${seconds(result.faultToAnswerMs)}, released ${seconds(result.faultToReleasedMs)}${files} (${seconds(result.wallMs)})`;
  const details = [
    ...result.problems,
    ...result.diagnosis.map((line) => `diagnosis: ${line}`),
    ...(result.artifacts ? [`artifacts: ${result.artifacts}`] : []),
  ];
  return [`${head}; ${times}`, ...details.map((line) => `    ${line.replaceAll("\n", "\n    ")}`)].join("\n");
}
