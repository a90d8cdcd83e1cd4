// The primary's states and the only transitions between them (StateMachine refuses others).
//
//   idle --protect--> initial-sync --init-ack--> protected --handOver--> handing-over --promoted--> fenced
//                         |                          |                        |
//                         +--------- loss ----------> unprotected <---- failed+
//   any state but closed --the peer took over--> fenced;  any --close--> closed

export type PrimaryState = "idle" | "initial-sync" | "protected" | "handing-over" | "unprotected" | "fenced" | "closed";

export const PRIMARY_TRANSITIONS = {
  idle: ["initial-sync", "fenced", "closed"],
  "initial-sync": ["protected", "unprotected", "fenced", "closed"],
  protected: ["handing-over", "unprotected", "fenced", "closed"],
  "handing-over": ["fenced", "unprotected", "closed"],
  unprotected: ["initial-sync", "fenced", "closed"],
  fenced: ["closed"],
  closed: [],
} as const satisfies Record<PrimaryState, readonly PrimaryState[]>;

/**
 * What the primary does when it loses its secondary (it cannot tell a dead secondary from a
 * cut link). `continue`: the guest runs on unprotected, writes complete and output flows, and
 * the engine says so. `stall`: guest writes and output are held until a secondary protects
 * the guest again (the guest waits on its disk).
 */
export type SecondaryLossPolicy = "continue" | "stall";

/**
 * When the guest sees a disk write complete. `synchronous` (Kemari): once the secondary
 * acknowledged the sync that logs it. `speculative` (Remus's idea on Kemari's sync points):
 * at once; a capture logs it within the sync interval, or sooner when output asks for one,
 * and only what the outside world sees (console bytes, network frames) waits for the
 * acknowledgement. Either way nothing anyone outside saw is lost in a
 * failover: the secondary resumes from the last acknowledged sync.
 */
export type SyncMode = "synchronous" | "speculative";

/**
 * The mode an engine, a node and the test API use unless told otherwise: speculative, measured
 * faster (benchmarks/results/sync-modes.md, network.md) with the same promise to the outside.
 */
export const DEFAULT_SYNC_MODE: SyncMode = "speculative";

/**
 * Speculative mode: how long a completed write may wait, unlogged, for a capture. Remus's
 * epochs were 25 ms; 20 ms keeps a takeover's rollback and the unlogged data small
 * (benchmarks/results/sync-intervals.md: 5, 20, 50 and 100 ms compared).
 */
export const DEFAULT_SYNC_INTERVAL_MS = 20;

/**
 * How long output may wait for the rest of its burst, the guest running, before a capture
 * covers it (one that goes idle is captured at once). A command line typed on the console comes
 * back in about twenty pieces a fraction of a millisecond apart, and each capture pauses the guest
 * for one to two milliseconds: see benchmarks/results/output-coalescing.md.
 */
export const DEFAULT_OUTPUT_COALESCE_MS = 2;
