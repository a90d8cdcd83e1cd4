// What one campaign round records, and when it counts as passed.
import type { DiskMode, SecondaryLossPolicy, SyncMode } from "../../replication/engine/primary/engine.ts";
import type { CutKind } from "../fault-proxy.ts";
import type { EchoStreamOutcome } from "../network/echo-stream.ts";

/**
 * primary-kill: SIGKILL the primary. second-failover: the same, then (once a fresh
 * secondary protects the survivor) SIGKILL the survivor too. secondary-kill: SIGKILL
 * the secondary. link-cut: break the link through the fault proxy. link-cut-mid-sync:
 * break it between two frames of a sync burst while the guest writes. primary-freeze:
 * SIGSTOP the primary (a host that hangs, its sockets open: a silent failure), then, after
 * the takeover, SIGCONT it; always with an arbiter, the only thing that can tell a host that
 * comes back that it was replaced.
 */
export type FaultKind = "primary-kill" | "second-failover" | "secondary-kill" | "link-cut" | "link-cut-mid-sync" | "primary-freeze";
export const FAULT_KINDS: readonly FaultKind[] = ["primary-kill", "second-failover", "secondary-kill", "link-cut", "link-cut-mid-sync", "primary-freeze"];

/** Faults after which a secondary takes over. */
export const TAKEOVER_FAULTS: readonly FaultKind[] = ["primary-kill", "second-failover", "link-cut", "link-cut-mid-sync", "primary-freeze"];

/**
 * Engine behaviour checked beyond takeover and lost writes (re-protection, the stall
 * policy, epoch fencing). All are on by default; `--expect` narrows them.
 */
export interface EngineFeatures {
  /** A running primary that lost its secondary protects itself again when a new one appears at its connect URL. */
  reprotect: boolean;
  /** `onSecondaryLoss: "stall"` holds the guest's writes while no secondary acknowledges them. */
  stall: boolean;
  /** An old primary that reaches the promoted secondary hears `promoted` and is fenced. */
  fencing: boolean;
}

export const NO_FEATURES: EngineFeatures = { reprotect: false, stall: false, fencing: false };
export const ALL_FEATURES: EngineFeatures = { reprotect: true, stall: true, fencing: true };

export interface RoundPlan {
  index: number;
  mode: DiskMode;
  fault: FaultKind;
  /** How long the workload ran before the fault. */
  delayMs: number;
  cutKind: CutKind;
  policy: SecondaryLossPolicy;
  /** When the guest's write completes: at the secondary's ack (synchronous) or at capture (speculative). */
  syncMode: SyncMode;
  /** The test process is the witness: a node runs the guest only while the witness grants it (no split brain). */
  arbiter: boolean;
}

export interface OptionalCheck {
  name: string;
  outcome: "passed" | "failed" | "skipped";
  detail: string;
}

export interface NodeVerdict {
  node: "primary" | "secondary";
  /** Log lines whose files were checked (in the guest, then again on the image from the host). */
  logLines: number;
  lostWrites: number;
  lostDetail: string[];
  fsckClean: boolean;
  fsckDetail: string;
}

/**
 * The round's TCP stream: a host client streaming seeded bytes through the guest's echo
 * service (via the gateway's forward) from the pair's start to the end of the round's
 * checks, across the fault. Every fault kind leaves a node running the guest, so in every
 * round every byte must come back, in order, on the same connection.
 */
export interface NetworkVerdict {
  /** "complete": every byte came back in order and the connection is intact. */
  outcome: EchoStreamOutcome;
  sent: number;
  /** Bytes that came back equal to what was sent, in order. */
  verified: number;
  /** The longest time the client waited, bytes outstanding, for the next one (the fault's stall). */
  longestStallMs: number;
  /** Stalls over a second, in ms, in order. */
  stallsOverSecondMs: number[];
  error: string | null;
}

export interface RoundArtifacts {
  dir: string;
  logs: string[];
  consoles: string[];
  disks: string[];
}

export interface RoundResult {
  plan: RoundPlan;
  /** Replication syncs the primary had done when the fault hit. */
  syncsBeforeFault: number | null;
  /** Log lines the primary had printed through output commit before the fault (so the secondary must hold them). */
  committedLinesBeforeFault: number | null;
  /** primary-kill, link-cut: the secondary went active. secondary-kill: the primary kept the guest. */
  survived: boolean;
  /** Which node ran the guest after the fault: the secondary after a takeover, the primary after a secondary-kill or an arbitrated cut it won. */
  guestKeptBy: "primary" | "secondary" | null;
  /** The surviving guest answered on its console. */
  answered: boolean;
  /** Secondary's own measure (loss detected -> guest running), from its metrics. */
  failoverMs: number | null;
  /** Wall time from the fault to the first console answer of the survivor. */
  faultToAnswerMs: number | null;
  /**
   * From the fault to the first byte the guest's echo service sent back after the stall the
   * fault caused (0: the stream did not stall); null when the stream did not come through
   * whole. What a client of a service in the guest sees. Absent in rounds recorded before it.
   */
  faultToServiceMs: number | null;
  verdicts: NodeVerdict[];
  /** secondary-kill with `continue`: the log kept growing on the unprotected primary. */
  writesContinued: boolean | null;
  /** link-cut: both guests answered (without an arbiter the documented limitation, reported; with one a failure). */
  splitBrain: boolean | null;
  /** A link cut with an arbiter: which node kept the guest, and what the other did. */
  arbitration: string | null;
  /** link-cut-mid-sync: bytes of the burst's frame that reached the secondary before the cut. */
  cutAfterFrameBytes: number | null;
  /** link-cut-mid-sync: the old primary's guest completed its next write and answered its next command. */
  nextWriteAnswered: boolean | null;
  /** Takeovers in the round (2 for second-failover). */
  failovers: number;
  /** The network check; null only if the round failed before the stream could be opened. */
  network: NetworkVerdict | null;
  /** A failed round's files: the pair's folder with each node's log, console transcript and disk images. */
  artifacts: RoundArtifacts | null;
  optionalChecks: OptionalCheck[];
  error: string | null;
  passed: boolean;
  wallMs: number;
}

export function emptyResult(plan: RoundPlan): RoundResult {
  return {
    plan,
    syncsBeforeFault: null,
    committedLinesBeforeFault: null,
    survived: false,
    guestKeptBy: null,
    answered: false,
    failoverMs: null,
    faultToAnswerMs: null,
    faultToServiceMs: null,
    verdicts: [],
    writesContinued: null,
    splitBrain: null,
    arbitration: null,
    cutAfterFrameBytes: null,
    nextWriteAnswered: null,
    failovers: 0,
    network: null,
    artifacts: null,
    optionalChecks: [],
    error: null,
    passed: false,
    wallMs: 0,
  };
}

export function lostWrites(result: RoundResult): number {
  return result.verdicts.reduce((sum, verdict) => sum + verdict.lostWrites, 0);
}

/**
 * Why the round's TCP stream is reported but not judged, if it is not. A link cut without an
 * arbiter under `continue`: both guests run; the old primary, on losing its secondary, released
 * its held output and sent more, which the guest the secondary resumed never produced, and
 * passt resets the connection (every such round so far): the arbiter is the cure. A secondary
 * lost under `stall`: the guest's output (its TCP acknowledgements too) is held until a new
 * secondary holds its copy, which the campaign delays on purpose; passt resets a flow whose
 * data goes unacknowledged through 7 resends 2 s apart, so a longer hold ends the connection.
 */
export function networkNotJudged(result: RoundResult): string | undefined {
  if (result.splitBrain === true && !result.plan.arbiter) return "split brain without an arbiter";
  if (result.plan.fault === "secondary-kill" && result.plan.policy === "stall") return "stall holds its acknowledgements";
  return undefined;
}

export function judge(result: RoundResult): boolean {
  return (
    result.error === null &&
    result.survived &&
    result.answered &&
    result.verdicts.length > 0 &&
    result.verdicts.every((verdict) => verdict.lostWrites === 0 && verdict.fsckClean) &&
    result.writesContinued !== false &&
    !(result.plan.arbiter && result.splitBrain === true) &&
    result.nextWriteAnswered !== false &&
    (result.network?.outcome === "complete" || networkNotJudged(result) !== undefined) &&
    result.optionalChecks.every((check) => check.outcome !== "failed")
  );
}
