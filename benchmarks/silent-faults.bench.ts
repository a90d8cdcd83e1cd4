// How fast a pair with an arbiter finds a failure that closes no socket, and what a shorter
// peer timeout costs. For each peer timeout (TWINVM_BENCH_PEER_TIMEOUTS, ms, comma-separated):
//   - faults: a fresh pair (the test API, the test process as the witness) whose guest writes
//     in a loop; the primary is frozen (SIGSTOP: a host that hangs, sockets open), or its link
//     stalls (bytes stop, nothing closes); measured from the fault to the takeover, to the
//     first answer of `echo` typed on whichever node then runs the guest, and to the first
//     byte a TCP client streaming through an echo service in the guest gets back; and, for a
//     takeover, its stages: the witness's grant, the guest running, the gateway's attach, the
//     first frame the new primary's guest sends;
//   - false failovers: one protected pair whose guest writes in a loop while two busy-loop
//     processes keep both cores loaded, for TWINVM_BENCH_LOAD_SECONDS; every takeover there
//     is a false one (nothing failed).
// `npm run bench -- silent-faults`.
import { loadavg } from "node:os";
import { EchoStream, FAULT_SLACK_MS, stallAfter } from "../harness/network/echo-stream.ts";
import { startLoad } from "../harness/stress/load.ts";
import { createGuestTemplate, startPair, type GuestTemplate, type Pair } from "../harness/testing/index.ts";
import { distribution, type Distribution } from "../harness/stress/report.ts";
import type { BenchContext, BenchReport } from "./run.ts";

const PEER_TIMEOUTS = (process.env.TWINVM_BENCH_PEER_TIMEOUTS ?? "400,250,200").split(",").map(Number);
const ROUNDS = Number(process.env.TWINVM_BENCH_ROUNDS ?? 6);
const LOAD_SECONDS = Number(process.env.TWINVM_BENCH_LOAD_SECONDS ?? 180);
const LOAD_PROCESSES = 2;
/** The guest's echo service (one `cat` per connection) and the client's pace (the campaign's). */
const ECHO_PORT = 7;
const STREAM_BYTES_PER_SECOND = 32 << 10;
/** A write loop in the guest: syncs keep flowing while the fault strikes. */
const WRITE_LOOP = "(while true; do dd if=/dev/urandom of=/dev/vda bs=4k count=16 seek=$((RANDOM % 3000)) oflag=direct 2>/dev/null; done) >/dev/null 2>&1 &";

type FaultKind = "freeze" | "stall";
const FAULT_LABELS: Record<FaultKind, string> = { freeze: "primary frozen (SIGSTOP)", stall: "link stalled, both alive" };

interface FaultRound {
  peerTimeoutMs: number;
  fault: FaultKind;
  /** Which node ran the guest afterwards. */
  winner: "secondary" | "primary";
  faultToTakeoverMs: number | null;
  /** Null when the primary kept the guest (it never stopped running it). */
  faultToAnswerMs: number | null;
  /**
   * From the fault to the first byte the service echoed after the stall the fault caused
   * (whichever node runs the guest afterwards); null if the stream broke.
   */
  faultToServiceMs: number | null;
  /** The stream's outcome at the end of the round: every byte back in order ("complete"), or how it failed. */
  stream: string;
  /** A takeover's stages, ms from the fault; absent when the primary kept the guest. */
  stages?: TakeoverStages;
}

/** Where a takeover's time goes, each stage in ms from the fault. */
interface TakeoverStages {
  /** The witness granted the secondary's claim: the silence was noticed and arbitrated. */
  claimGranted: number;
  /** The survivor's guest runs (its engine reports `active`). */
  guestRunning: number;
  /** The gateway took the survivor as the node of the new epoch. */
  attached: number;
  /** The first egress frame after the attach (the survivor's guest answering, or its carried output). */
  firstEgress: number;
}

/** How often the gateway's counters are read to time the attach and the first frame after it. */
const STAGE_POLL_MS = 2;

/** Times a takeover's stages from the pair's events and the gateway's counters. */
function watchStages(pair: Pair, faultAt: number): { stop(): TakeoverStages | undefined } {
  const at: Partial<TakeoverStages> = {};
  const since = () => performance.now() - faultAt;
  const unsubscribe = pair.onEvent((event) => {
    if (event.type === "witness" && event.op === "claim" && event.granted) at.claimGranted ??= since();
    if (event.type === "takeover") at.guestRunning ??= since();
  });
  let last = pair.network()!;
  const poll = setInterval(() => {
    const now = pair.network()!;
    if (now.nodes.attached > last.nodes.attached) at.attached ??= since();
    // Frames counted in the same read as the attach count as the first: the survivor sends its
    // carried output right after attaching, within one read.
    if (at.attached !== undefined && now.egress.frames > last.egress.frames) at.firstEgress ??= since();
    last = now;
  }, STAGE_POLL_MS);
  return {
    stop() {
      unsubscribe();
      clearInterval(poll);
      const { claimGranted, guestRunning, attached, firstEgress } = at;
      if (claimGranted === undefined || guestRunning === undefined || attached === undefined || firstEgress === undefined) return undefined;
      return { claimGranted, guestRunning, attached, firstEgress };
    },
  };
}

interface LoadRun {
  peerTimeoutMs: number;
  seconds: number;
  falseFailovers: number;
  loadAverage: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The stall the fault caused, as the client saw it: of the stalls (bytes outstanding, none
 * back) that began by one piece after the fault, the one that ended last. Ordinary output
 * holds (tens of ms) end sooner; in-flight bytes arriving just after the fault end a gap that
 * the fault's own stall then follows.
 */
async function faultRound(template: GuestTemplate, peerTimeoutMs: number, fault: FaultKind): Promise<FaultRound> {
  const pair = await startPair({ template, arbiter: true, peerTimeoutMs, reprotect: false, forwards: [{ port: 0, guestPort: ECHO_PORT }] });
  let stream: EchoStream | undefined;
  let stages: ReturnType<typeof watchStages> | undefined;
  try {
    await pair.exec(WRITE_LOOP);
    stream = await EchoStream.open({ port: pair.hostPort(ECHO_PORT), bytesPerSecond: STREAM_BYTES_PER_SECOND });
    if (!(await stream.progress(1, 20_000))) throw new Error("the guest's echo service did not answer within 20 s");
    await sleep(1000);
    const started = performance.now();
    stages = watchStages(pair, started);
    if (fault === "freeze") pair.freezePrimary();
    else pair.stallLink();
    // A stalled link with both nodes alive may leave the guest where it was: whichever node
    // the witness lets run it answers, the other refuses.
    const takeover = pair.waitForTakeover({ timeoutMs: 30_000 }).then(() => performance.now());
    let faultToTakeoverMs: number | null = null;
    let winner: FaultRound["winner"];
    if (fault === "freeze") {
      faultToTakeoverMs = (await takeover) - started;
      winner = "secondary";
    } else {
      takeover.catch(() => undefined);
      const outcome = await Promise.race([takeover.then(() => "takeover" as const), sleep(peerTimeoutMs * 4 + 2000).then(() => "kept" as const)]);
      if (outcome === "takeover") faultToTakeoverMs = (await takeover) - started;
      winner = outcome === "takeover" ? "secondary" : "primary";
    }
    const answer = await pair.exec("echo alive", { timeoutMs: 30_000 });
    if (answer.output !== "alive\n") throw new Error(`the guest answered ${JSON.stringify(answer.output)}`);
    const faultToAnswerMs = winner === "secondary" ? performance.now() - started : null;
    // The service answered after the fault once the stream moved on past it.
    await stream.progress(STREAM_BYTES_PER_SECOND / 4, 30_000);
    const stall = stallAfter(stream.gapsBetween(started, started + FAULT_SLACK_MS), started);
    const report = await stream.finish(10_000);
    const takeoverStages = stages.stop();
    const faultToServiceMs = report.outcome === "complete" && stall !== undefined ? stall.endMs - started : null;
    return {
      peerTimeoutMs,
      fault,
      winner,
      faultToTakeoverMs,
      faultToAnswerMs,
      faultToServiceMs,
      stream: report.outcome === "complete" ? "complete" : `${report.outcome}: ${report.error ?? ""}`,
      ...(winner === "secondary" && takeoverStages !== undefined && { stages: takeoverStages }),
    };
  } finally {
    stages?.stop();
    stream?.destroy();
    await pair.stop();
  }
}

async function loadRun(template: GuestTemplate, peerTimeoutMs: number, log: (line: string) => void): Promise<LoadRun> {
  const pair: Pair = await startPair({ template, arbiter: true, peerTimeoutMs, reprotect: false });
  const load = startLoad(LOAD_PROCESSES);
  try {
    await pair.exec(WRITE_LOOP);
    const before = pair.failovers;
    await sleep(LOAD_SECONDS * 1000);
    const falseFailovers = pair.failovers - before;
    if (falseFailovers > 0) log(`peer timeout ${peerTimeoutMs} ms: ${falseFailovers} false failover(s)\n${pair.describe()}`);
    return { peerTimeoutMs, seconds: LOAD_SECONDS, falseFailovers, loadAverage: loadavg()[0]! };
  } finally {
    load.stop();
    await pair.stop();
  }
}

function cell(d: Distribution | null): string {
  return d === null ? "-" : `${d.median.toFixed(0)} / ${d.p99.toFixed(0)} (${d.min.toFixed(0)}-${d.max.toFixed(0)})`;
}

export default async function silentFaults({ log }: BenchContext): Promise<BenchReport> {
  const template = await createGuestTemplate({ disks: [{ sizeBytes: 16 << 20 }], overlay: { startup: `(nc -ll -p ${ECHO_PORT} -e cat &)` } });
  const rounds: FaultRound[] = [];
  const loads: LoadRun[] = [];
  try {
    for (let i = 0; i < ROUNDS; i++) {
      for (const peerTimeoutMs of PEER_TIMEOUTS) {
        for (const fault of ["freeze", "stall"] as const) {
          const round = await faultRound(template, peerTimeoutMs, fault);
          rounds.push(round);
          log(
            `round ${i + 1}/${ROUNDS} peer ${peerTimeoutMs} ms ${fault}: ${round.winner} runs the guest, takeover ${round.faultToTakeoverMs?.toFixed(0) ?? "-"} ms, console answer ${round.faultToAnswerMs?.toFixed(0) ?? "-"} ms, service answer ${round.faultToServiceMs?.toFixed(0) ?? "-"} ms, stream ${round.stream}`,
          );
        }
      }
    }
    for (const peerTimeoutMs of PEER_TIMEOUTS) {
      log(`peer timeout ${peerTimeoutMs} ms: ${LOAD_SECONDS} s loaded (${LOAD_PROCESSES} busy processes), counting false failovers`);
      loads.push(await loadRun(template, peerTimeoutMs, log));
    }
  } finally {
    await template.dispose();
  }
  const rows = PEER_TIMEOUTS.flatMap((peerTimeoutMs) =>
    (["freeze", "stall"] as const).map((fault) => {
      const mine = rounds.filter((r) => r.peerTimeoutMs === peerTimeoutMs && r.fault === fault);
      const kept = mine.filter((r) => r.winner === "primary").length;
      const of = (pick: (r: FaultRound) => number | null) => cell(distribution(mine.map(pick).filter((ms): ms is number => ms !== null)));
      const broken = mine.filter((r) => r.stream !== "complete").length;
      return `| ${peerTimeoutMs} | ${FAULT_LABELS[fault]} | ${mine.length} | ${of((r) => r.faultToTakeoverMs)} | ${of((r) => r.faultToAnswerMs)} | ${of((r) => (r.winner === "secondary" ? r.faultToServiceMs : null))} | ${of((r) => (r.winner === "primary" ? r.faultToServiceMs : null))} | ${kept} | ${broken} |`;
    }),
  );
  const stageRows = PEER_TIMEOUTS.flatMap((peerTimeoutMs) =>
    (["freeze", "stall"] as const).flatMap((fault) => {
      const timed = rounds.filter((r) => r.peerTimeoutMs === peerTimeoutMs && r.fault === fault && r.stages !== undefined);
      if (timed.length === 0) return [];
      const of = (pick: (s: TakeoverStages, r: FaultRound) => number | null) =>
        cell(distribution(timed.map((r) => pick(r.stages!, r)).filter((ms): ms is number => ms !== null)));
      return [
        `| ${peerTimeoutMs} | ${FAULT_LABELS[fault]} | ${timed.length} | ${of((s) => s.claimGranted)} | ${of((s) => s.guestRunning - s.claimGranted)} | ${of((s) => s.attached - s.guestRunning)} | ${of((s) => s.firstEgress - s.attached)} | ${of((s, r) => (r.faultToServiceMs === null ? null : r.faultToServiceMs - s.firstEgress))} |`,
      ];
    }),
  );
  const loadRows = loads.map((l) => `| ${l.peerTimeoutMs} | ${l.seconds} | ${l.falseFailovers} | ${l.loadAverage.toFixed(1)} |`);
  return {
    description:
      `A pair of the test API with an arbiter (the benchmark's process is the witness and runs the fault proxy), 128 MiB default guest restored from a template, its guest writing 64 KiB bursts to its disk in a loop (O_DIRECT), speculative sync mode, no re-protection. ` +
      `Faults: the primary frozen with SIGSTOP (a host that hangs: nothing closes) or its replication link stalled (bytes stop, both nodes alive: the witness lets exactly one run the guest, and since 86c7545 the primary's hold keeps it where it ran); ` +
      `fault to the survivor's takeover; to the first answer of \`echo\` typed on its serial console (a new command line: a restored guest runs in v86's interpreter until its JIT has compiled it again, which costs the first command 100-150 ms when the guest is idle and 250-450 ms while it writes); and to the first byte back of a TCP stream (32 KiB/s, the campaign's) that a host client keeps sending through an echo service in the guest (\`nc -ll -p 7 -e cat\`, via the test API's network gateway), which is what a client of a running service sees: the end of the stall the fault caused. Rounds where the primary kept the guest have no takeover and no console figure; their service figure is how long the primary held its output before the witness let it go on. ` +
      `${ROUNDS} rounds per cell, peer timeouts interleaved; ms as median / p99 (min-max). ` +
      `Then, per peer timeout, one protected pair writing for ${LOAD_SECONDS} s while ${LOAD_PROCESSES} busy-loop processes keep both cores loaded: every takeover there is a false failover.`,
    table:
      `### Fault to takeover and to an answering guest\n\n| peer timeout (ms) | fault | rounds | fault to takeover | fault to console answer | fault to service answer, after a takeover | the same, the primary kept the guest | the primary kept the guest | streams broken |\n|---|---|---|---|---|---|---|---|---|\n${rows.join("\n")}\n\n` +
      `### Where a takeover's time goes (ms; each stage from the end of the one before)\n\nThe witness grants the survivor's claim (the fault noticed after the peer timeout, and arbitrated); its guest runs (every acknowledged sync applied and its disk operations run, the disks flushed, the state loaded); the gateway takes it as the node of the new epoch (and replays the ingress its copy had not seen); the first frame out after that; the client's first echoed byte. The gateway's counters are read every ${STAGE_POLL_MS} ms.\n\n| peer timeout (ms) | fault | takeovers | fault to the witness's grant | to the guest running | to the gateway's attach | to the first frame out | to the client's first byte back |\n|---|---|---|---|---|---|---|---|\n${stageRows.join("\n")}\n\n` +
      `### False failovers on a loaded machine\n\n| peer timeout (ms) | seconds | false failovers | load average at the end |\n|---|---|---|---|\n${loadRows.join("\n")}`,
    data: { rounds, loads },
  };
}
