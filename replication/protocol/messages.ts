// The control messages (JSON text frames). Field meanings are in PROTOCOL.md;
// the schemas that enforce them are in control-schemas.ts.

export type NodeRole = "primary" | "secondary";
/** How disk writes travel: Kemari I/O-log replay, or the written blocks themselves. */
export type WireDiskMode = "io-log" | "dirty-block-copy";

// ---- handshake ----

export interface ChallengeMessage {
  type: "challenge";
  protocol: "twinvm-replication";
  minVersion: number;
  maxVersion: number;
  role: NodeRole;
  /** The sender's failover generation; a higher epoch wins a role conflict. */
  epoch: number;
  /** Base64 of NONCE_BYTES random bytes. */
  nonce: string;
  /** Free-form name for logs. */
  nodeId: string;
}

export interface AuthMessage {
  type: "auth";
  version: number;
  /** Base64 HMAC-SHA256 over the handshake transcript (see auth.ts). */
  proof: string;
}

export interface WelcomeMessage {
  type: "welcome";
  version: number;
}

export interface RefusedMessage {
  type: "refused";
  code: string;
  message: string;
}

// ---- initial sync (seq 0) ----

export interface DiskDescriptor {
  /** Small integer the binary frames and I/O logs use to name the disk. */
  id: number;
  name: string;
  sizeBytes: number;
  /** When present the secondary already holds this image and must verify it; no chunks follow. */
  sha256?: string;
}

export interface InitBeginMessage {
  type: "init-begin";
  seq: 0;
  epoch: number;
  memoryBytes: number;
  pageSize: number;
  diskMode: WireDiskMode;
  disks: DiskDescriptor[];
}

export interface DiskDigestMessage {
  type: "disk-digest";
  seq: 0;
  epoch: number;
  disk: number;
  sha256: string;
}

export interface InitEndMessage {
  type: "init-end";
  seq: 0;
  epoch: number;
  /** Pages sent in memory frames during the initial sync (zero pages included). */
  pageCount: number;
  /** Parts in the one state-parts frame. */
  stateParts: number;
}

export interface InitAckMessage {
  type: "init-ack";
  seq: 0;
  epoch: number;
}

// ---- event-driven sync (seq >= 1): data and the sync-commit travel as binary frames (frames.ts) ----

export interface SyncAckMessage {
  type: "sync-ack";
  seq: number;
  epoch: number;
}

// ---- liveness, failover, teardown ----

export interface HeartbeatMessage {
  type: "heartbeat";
  epoch: number;
  id: number;
}

export interface PromotedMessage {
  type: "promoted";
  epoch: number;
  /** When the guest resumed on this node (ms since the Unix epoch, fractional), for measuring a handover's downtime. */
  resumedAtMs?: number;
}

/**
 * Consistency check: the secondary digests a range of its replica RAM or of one of its disks
 * as of sync `seq` (it is sent right after that sync, before the next), in chunks.
 */
export interface VerifyRequestMessage {
  type: "verify-request";
  id: number;
  seq: number;
  target: "ram" | "disk";
  /** The disk, for target "disk" (0 for RAM). */
  disk: number;
  offset: number;
  length: number;
  chunkBytes: number;
}

/** The secondary's sha256 (hex) of each chunk of a verify-request's range, in order. */
export interface VerifyDigestsMessage {
  type: "verify-digests";
  id: number;
  digests: string[];
}

/**
 * The primary asks the secondary to take over now (its disk failed, or a planned
 * migration): its guest is stopped and everything it did is acknowledged.
 */
export interface HandoverMessage {
  type: "handover";
  epoch: number;
  reason: string;
}

export interface ErrorMessage {
  type: "error";
  code: string;
  message: string;
}

export interface GoodbyeMessage {
  type: "goodbye";
  reason: string;
}

export type HandshakeMessage = ChallengeMessage | AuthMessage | WelcomeMessage | RefusedMessage;

export type ControlMessage =
  | HandshakeMessage
  | InitBeginMessage
  | DiskDigestMessage
  | InitEndMessage
  | InitAckMessage
  | SyncAckMessage
  | HeartbeatMessage
  | PromotedMessage
  | HandoverMessage
  | VerifyRequestMessage
  | VerifyDigestsMessage
  | ErrorMessage
  | GoodbyeMessage;

export type ControlType = ControlMessage["type"];
