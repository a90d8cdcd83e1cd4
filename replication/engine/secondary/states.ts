// The secondary's states and the only transitions between them.
//
//   waiting: no replica yet. initial-sync: a copy in progress (not usable). replicating: a
//   primary attached, the replica consistent as of the last commit. standby: a consistent
//   replica and no primary (it left, or its input was refused): `promote` to run it. failed:
//   the replica is not consistent (see `failure`); only a new initial sync repairs it.
//   promoting -> active: the guest runs here now.

export type SecondaryState = "waiting" | "initial-sync" | "replicating" | "standby" | "promoting" | "active" | "failed" | "closed";

export const SECONDARY_TRANSITIONS = {
  waiting: ["initial-sync", "closed"],
  "initial-sync": ["replicating", "waiting", "failed", "closed"],
  replicating: ["promoting", "standby", "failed", "closed"],
  standby: ["promoting", "initial-sync", "failed", "closed"],
  failed: ["initial-sync", "closed"],
  promoting: ["active", "failed", "closed"],
  active: ["closed"],
  closed: [],
} as const satisfies Record<SecondaryState, readonly SecondaryState[]>;
