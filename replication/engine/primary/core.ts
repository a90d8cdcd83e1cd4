// The primary engine's parts as its staged operations (protect, hand over, migrate) see them:
// the engine owns them and lends this view; the operations change state only through it.
import type { ReplicationChannel } from "../../channel/channel.ts";
import type { Clock } from "../../clock.ts";
import type { PrimaryGuest } from "../guest.ts";
import type { ReplicationMetrics } from "../metrics.ts";
import type { StateMachine } from "../transitions.ts";
import type { IoPolicy } from "./io-policy.ts";
import type { OutputCommitQueue } from "./output-commit.ts";
import type { PendingIo } from "./pending-io.ts";
import type { PrimarySession } from "./session.ts";
import type { PrimaryState, SecondaryLossPolicy, SyncMode } from "./states.ts";
import type { DiskMode } from "./sync-encoder.ts";
import type { Witness } from "../../arbiter/witness.ts";

export interface ResolvedPrimaryOptions {
  mode: DiskMode;
  epoch: number;
  heartbeatIntervalMs: number;
  peerTimeoutMs: number;
  ackTimeoutMs: number;
  onSecondaryLoss: SecondaryLossPolicy;
  syncMode: SyncMode;
  /** The arbiter's witness, if one is configured, and this node's name there. */
  witness: Witness | undefined;
  nodeName: string;
  initialSyncTimeoutMs: number;
  syncWindow: number;
  syncIntervalMs: number;
  outputCoalesceMs: number;
  compressSyncs: boolean;
  readReplay: boolean;
  clock: Clock;
  log: ((line: string) => void) | undefined;
}

export interface PrimaryCore {
  readonly guest: PrimaryGuest;
  readonly options: ResolvedPrimaryOptions;
  readonly fsm: StateMachine<PrimaryState>;
  readonly metrics: ReplicationMetrics;
  readonly outputs: OutputCommitQueue;
  readonly pending: PendingIo;
  /** The session with the secondary now, if there is one. */
  readonly session: PrimarySession | undefined;
  /** What guest I/O does in the state the engine is in now. */
  policy(): IoPolicy;
  /** Starts a session with a secondary on `channel`; heartbeats run from the start. */
  openSession(channel: ReplicationChannel): PrimarySession;
  /** The secondary is gone or let go: the loss policy decides what the guest's I/O does now. */
  lose(session: PrimarySession, reason: string): void;
  /** Asks for a capture when there is work and room. */
  wake(): void;
  /** Captures now and resolves once that sync is acknowledged. */
  syncNow(): Promise<void>;
  /** Every ingress frame up to `id` is in the secondary's copy, or nothing protects the guest: the gateway may forget them. */
  ingressCommitted(id: number | null): void;
  /** Protecting with a new secondary started (true), or its copy took its last boundary or failed (false): see io-policy's COPYING. */
  copying(running: boolean): void;
  /** A secondary protects the guest (again): no witness lease is needed. */
  protectedAgain(): void;
  /** The guest is about to be handed to the secondary: give the witness's hold back, so its first lease is not refused. */
  releaseHold(): void;
  /** The peer took over: never acknowledge another guest write. */
  fence(reason: string): void;
}
