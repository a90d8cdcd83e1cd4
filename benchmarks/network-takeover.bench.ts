// How long a client's TCP connection stalls when the primary dies: a host client streams
// seeded bytes through the guest's echo service (via the gateway's forward) as fast as the
// connection takes them, and the primary is SIGKILLed at a random moment of steady
// streaming, again and again on one pair: after each takeover the pair re-protects the
// survivor with a fresh secondary (its initial sync), the stream settles, and the next
// kill comes. The stall is the longest time the client waited, bytes outstanding, for the
// next byte, over the window from the kill until the stream moved on; every byte must come
// back in order on the same connection (a broken stream is counted and replaced).
// Both disk modes, 20 takeovers each (TWINVM_BENCH_TAKEOVERS overrides, for trials).
// `npm run bench -- network-takeover`; the figures also go into results/network.md.
import { loadavg } from "node:os";
import { EchoStream, type EchoStreamReport } from "../harness/network/echo-stream.ts";
import { startPair, type Pair } from "../harness/testing/pair.ts";
import type { GuestTemplate } from "../harness/testing/template.ts";
import { DEFAULT_SYNC_MODE, type DiskMode } from "../replication/engine/primary/engine.ts";
import { Prng } from "../harness/campaign/prng.ts";
import type { BenchContext, BenchReport } from "./run.ts";
import { ECHO_PORT, networkTemplate } from "./network/guest.ts";
import { median } from "./stats.ts";

const TAKEOVERS = Number(process.env.TWINVM_BENCH_TAKEOVERS ?? 20);
/** Set (to anything): passt records the guest's frames, and each pair's folder is kept (its path is logged). */
const CAPTURE = process.env.TWINVM_BENCH_PCAP !== undefined;
const MODES: readonly DiskMode[] = ["logging-replay", "dirty-block-copy"];
/** Bytes in flight at most: enough to keep the guest busy, little enough that a stall shows at once. */
const OUTSTANDING_BYTES = 256 << 10;
const SEED = 20261202;

export interface Takeover {
  mode: DiskMode;
  index: number;
  /** The longest wait for the next byte from the kill until the stream moved on (it starts at the last byte before the kill). */
  stallMs: number;
  /** From the kill (SIGKILL sent) to the first byte after that wait. */
  killToResumeMs: number;
  /** The survivor's own measure: loss detected to guest running. */
  failoverMs: number | null;
  /** The longest wait in the 2 s of steady streaming before the kill (what syncs alone cost). */
  steadyLongestGapMs: number;
  /** The longest wait while the survivor was re-protected by a fresh secondary (its initial sync holds output). */
  reprotectStallMs: number | null;
  load: number;
}

export interface BrokenStream {
  mode: DiskMode;
  /** The takeover during or after which it broke. */
  afterTakeover: number;
  report: Omit<EchoStreamReport, "gaps">;
}

export interface TakeoverRun {
  takeovers: Takeover[];
  broken: BrokenStream[];
  /** Every stream's end: each must be complete. */
  streams: { mode: DiskMode; outcome: string; verified: number; sent: number }[];
  failures: string[];
  syncMode: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runTakeovers(template: GuestTemplate, takeovers: number, log: (line: string) => void): Promise<TakeoverRun> {
  const run: TakeoverRun = { takeovers: [], broken: [], streams: [], failures: [], syncMode: DEFAULT_SYNC_MODE };
  const prng = new Prng(SEED);
  for (const mode of MODES) {
    let pair: Pair | undefined;
    let stream: EchoStream | undefined;
    const openStream = async () => {
      stream = await EchoStream.open({ port: pair!.hostPort(ECHO_PORT), maxOutstandingBytes: OUTSTANDING_BYTES, seed: prng.int(1, 2 ** 31) });
      // Warm: v86 compiles the guest's network path as it meets it (a fresh survivor starts cold, too).
      if (!(await stream.progress(2 << 20, 120_000))) throw new Error("the new stream did not carry 2 MiB within 120 s");
    };
    const replaceBroken = async (afterTakeover: number) => {
      const { gaps: _gaps, ...report } = await stream!.finish(1000);
      run.broken.push({ mode, afterTakeover, report });
      run.streams.push({ mode, outcome: report.outcome, verified: report.verified, sent: report.sent });
      log(`${mode}: the stream broke (${report.outcome}: ${report.error}); opening another`);
      await openStream();
    };
    try {
      pair = await startPair({ template, mode, forwards: [{ port: 0, guestPort: ECHO_PORT }], startTimeoutMs: 300_000, capturePackets: CAPTURE });
      if (CAPTURE) log(`${mode}: frames recorded in ${pair.dir}/capture/network.pcap`);
      await openStream();
      for (let index = 1; index <= takeovers; index++) {
        const protectedFrom = performance.now();
        await pair.waitForProtected({ timeoutMs: 300_000 });
        // The initial sync of re-protection holds the guest's output; the stream must resume after it.
        if (!(await stream!.progress(256 << 10, 120_000))) await replaceBroken(index - 1);
        const reprotectStallMs = index === 1 ? null : longest(stream!, protectedFrom - 1, performance.now());
        const steadyFrom = performance.now();
        await sleep(2000 + prng.int(0, 2000));
        if (stream!.broken) await replaceBroken(index - 1);
        const killAt = performance.now();
        if (CAPTURE) log(`${mode} takeover ${index}: kill at ${new Date().toISOString()}`);
        const steadyLongestGapMs = longest(stream!, Math.max(steadyFrom, killAt - 2000), killAt);
        await pair.killPrimary();
        await pair.waitForTakeover({ timeoutMs: 60_000 });
        const failoverMs = (await pair.metrics().catch(() => undefined))?.failoverMs ?? null;
        const resumed = await stream!.progress(64 << 10, 60_000);
        if (!resumed) {
          run.failures.push(`${mode} takeover ${index}: the stream did not resume within 60 s`);
          await replaceBroken(index);
          continue;
        }
        const gaps = stream!.gapsBetween(killAt, performance.now());
        const stall = gaps.reduce((a, b) => (b.endMs - b.startMs > a.endMs - a.startMs ? b : a), { startMs: killAt, endMs: killAt });
        const takeover: Takeover = {
          mode,
          index,
          stallMs: stall.endMs - stall.startMs,
          killToResumeMs: stall.endMs - killAt,
          failoverMs,
          steadyLongestGapMs,
          reprotectStallMs,
          load: loadavg()[0]!,
        };
        run.takeovers.push(takeover);
        log(
          `${mode} takeover ${index}: stall ${takeover.stallMs.toFixed(0)} ms (kill to resume ${takeover.killToResumeMs.toFixed(0)} ms, failover ${failoverMs?.toFixed(0) ?? "?"} ms; steady gaps up to ${steadyLongestGapMs.toFixed(0)} ms${reprotectStallMs === null ? "" : `, re-protection stall ${reprotectStallMs.toFixed(0)} ms`})`,
        );
      }
      const report = await stream!.finish(60_000);
      run.streams.push({ mode, outcome: report.outcome, verified: report.verified, sent: report.sent });
      if (report.outcome !== "complete") run.failures.push(`${mode}: the last stream ended ${report.outcome}: ${report.error}`);
      stream = undefined;
    } catch (error) {
      run.failures.push(`${mode}: ${(error as Error).message.split("\n")[0]}`);
      log(`FAILED ${mode}: ${(error as Error).message}`);
    } finally {
      stream?.destroy();
      await pair?.stop({ keepFiles: CAPTURE });
    }
  }
  return run;
}

/** The longest wait for a byte within [from, to] (0: none). */
function longest(stream: EchoStream, from: number, to: number): number {
  return Math.max(0, ...stream.gapsBetween(from, to).map((gap) => Math.min(gap.endMs, to) - Math.max(gap.startMs, from)));
}

function spread(values: number[]): { median: number; max: number; min: number; n: number } | undefined {
  if (values.length === 0) return undefined;
  return { median: median(values), max: Math.max(...values), min: Math.min(...values), n: values.length };
}

export function takeoverTable(run: TakeoverRun): string {
  const cell = (values: number[]) => {
    const s = spread(values);
    return s === undefined ? "–" : `${s.median.toFixed(0)} / ${s.max.toFixed(0)}`;
  };
  const rows = MODES.map((mode) => {
    const t = run.takeovers.filter((x) => x.mode === mode);
    const broken = run.broken.filter((b) => b.mode === mode).length;
    return (
      `| ${mode} | ${t.length} | **${cell(t.map((x) => x.stallMs))}** | ${cell(t.map((x) => x.killToResumeMs))} | ${cell(t.flatMap((x) => (x.failoverMs === null ? [] : [x.failoverMs])))} | ` +
      `${cell(t.map((x) => x.steadyLongestGapMs))} | ${cell(t.flatMap((x) => (x.reprotectStallMs === null ? [] : [x.reprotectStallMs])))} | ${broken} |`
    );
  });
  return (
    `| disk mode | takeovers | client stall, median / max (ms) | kill to first byte after (ms) | survivor's failoverMs | longest wait in the 2 s before the kill | longest wait during re-protection | streams broken |\n` +
    `|---|---|---|---|---|---|---|---|\n${rows.join("\n")}`
  );
}

export const TAKEOVER_DESCRIPTION =
  `A host client streams seeded bytes through the guest's echo service (busybox \`nc -ll -p 7 -e cat\`) on a forwarded port, as fast as the connection ` +
  `takes them (at most ${OUTSTANDING_BYTES >> 10} KiB outstanding), through the real gateway (passt); the primary is SIGKILLed 2-4 s into steady streaming ` +
  `(seeded), the secondary takes over, the pair re-protects the survivor with a fresh secondary, and the next kill follows, on the same pair and connection. ` +
  `The client stall is the longest wait (bytes outstanding) for the next echoed byte around the kill; every byte must come back in order ` +
  `(a stream that breaks is counted and replaced). Sync mode: the default (${DEFAULT_SYNC_MODE}).`;

export default async function networkTakeover(context: BenchContext): Promise<BenchReport> {
  context.log(`booting the guest template; then ${TAKEOVERS} takeovers per disk mode`);
  const template = await networkTemplate();
  try {
    const loadBefore = loadavg()[0]!;
    const run = await runTakeovers(template, TAKEOVERS, context.log);
    const loadAfter = loadavg()[0]!;
    const notes = [
      `Load average (1 min): ${loadBefore.toFixed(1)} at the start, ${loadAfter.toFixed(1)} at the end (2 cores).`,
      ...run.failures.map((f) => `Failure: ${f}`),
    ];
    return { description: TAKEOVER_DESCRIPTION, table: `${takeoverTable(run)}\n\n${notes.join("\n\n")}`, data: run };
  } finally {
    await template.dispose();
  }
}
