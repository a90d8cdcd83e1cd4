// What happens to each kind of guest I/O, decided in one table by the engine's state and its
// loss policy (as QEMU's replication_get_io_status decides by stage and mode), instead of
// checks scattered over the event handlers.
import type { PrimaryState, SecondaryLossPolicy, SyncMode } from "./states.ts";

export interface IoPolicy {
  /**
   * A disk write's completion. `hold`: the write is logged by the next sync (or covered by the
   * next initial copy) and the guest sees it complete once that is acknowledged. `speculate`:
   * complete at once and logged by a capture at the interval's end (the speculative mode; while
   * too much waits unlogged, the write completes at the capture that logs it instead).
   * `pass`: the disk completes it alone (nothing protects the guest).
   */
  write: "hold" | "speculate" | "pass";
  /** A flush: `log` it in the next sync so the secondary makes its copy durable too (the guest does not wait: it covers completed writes only); `pass`: not logged. */
  flush: "log" | "pass";
  /** A read: `track` it as a read-replay candidate, or `pass`. */
  read: "track" | "pass";
  /** Console bytes and network frames: `hold` until a sync covers them and is acknowledged; `pass` at once; `drop` (a fenced primary's guest is not the real one). */
  output: "hold" | "pass" | "drop";
  /** Whether syncs are captured and sent. */
  capture: boolean;
}

const PASS: IoPolicy = { write: "pass", flush: "pass", read: "pass", output: "pass", capture: false };
const PROTECTING: IoPolicy = { write: "hold", flush: "log", read: "track", output: "hold", capture: true };
/** A secondary is being set up, or lost under `stall`: nothing escapes, nothing is logged (the next initial copy covers it). */
const WAITING: IoPolicy = { write: "hold", flush: "pass", read: "pass", output: "hold", capture: false };

const TABLE: Record<PrimaryState, Record<SecondaryLossPolicy, IoPolicy>> = {
  idle: { continue: PASS, stall: PASS },
  "initial-sync": { continue: WAITING, stall: WAITING },
  protected: { continue: PROTECTING, stall: PROTECTING },
  // The guest is stopped for the last sync; anything it submitted before waits for that sync.
  "handing-over": { continue: { ...PROTECTING, flush: "pass", read: "pass" }, stall: { ...PROTECTING, flush: "pass", read: "pass" } },
  unprotected: { continue: PASS, stall: WAITING },
  // Stopped for good: what the guest waits for never completes, and what it says goes nowhere.
  fenced: { continue: { ...WAITING, output: "drop" }, stall: { ...WAITING, output: "drop" } },
  // The engine let the guest go: it runs on unprotected.
  closed: { continue: PASS, stall: PASS },
};

/**
 * Protecting with a new secondary, before its copy's last boundary, under `continue`: the copy will hold the
 * guest as of that boundary, and no other copy exists that a takeover could resume from, so
 * console bytes and frames go out at once (a takeover cannot un-say them). Writes still wait:
 * the syncs after the copy replay them from the guest's buffers, which must stay as they were.
 */
const COPYING: IoPolicy = { ...WAITING, output: "pass" };

/** The speculative mode differs in one cell: a protected guest's writes complete before the secondary has them. */
const SPECULATIVE_PROTECTING: IoPolicy = { ...PROTECTING, write: "speculate" };

export interface PolicyInputs {
  /**
   * Whether an arbiter's witness lets this primary run its guest without a secondary now
   * (undefined when no lease is kept: no witness, or none needed yet). Under an arbiter,
   * `continue` lets I/O through only while the lease holds; without it the guest's writes and
   * output wait, as under `stall`.
   */
  lease?: boolean;
  /** In `initial-sync`: the copy has not yet taken its last boundary (see COPYING). */
  copying?: boolean;
}

export function ioPolicy(state: PrimaryState, onLoss: SecondaryLossPolicy, mode: SyncMode = "synchronous", inputs: PolicyInputs = {}): IoPolicy {
  if (mode === "speculative" && state === "protected") return SPECULATIVE_PROTECTING;
  if (onLoss === "continue" && inputs.lease === false && (state === "unprotected" || state === "initial-sync")) return WAITING;
  if (state === "initial-sync" && onLoss === "continue" && inputs.copying === true) return COPYING;
  return TABLE[state][onLoss];
}
