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
  /** Uncompressed size of the one full device-state frame. */
  stateBytes: number;
}

export interface InitAckMessage {
  type: "init-ack";
  seq: 0;
  epoch: number;
}

// ---- event-driven sync (seq >= 1) ----

export interface GuestSegment {
  /** Guest-physical address of the data the guest wrote. */
  gpa: number;
  length: number;
}

export interface IoLogWrite {
  disk: number;
  type: "write";
  sector: number;
  sectors: number;
  segments: GuestSegment[];
  /**
   * The guest changed the data pages between submitting the write and the sync's
   * capture, so memory no longer holds what the primary's disk got: the data
   * travels in this seq's next disk-blocks frame instead of being replayed from memory.
   */
  inline?: true;
}

export interface IoLogFlush {
  disk: number;
  type: "flush";
}

export type IoLogEntry = IoLogWrite | IoLogFlush;

/** A dirty-block-copy write; its data follows in the block frame at the same position. */
export interface BlockWriteAnnouncement {
  disk: number;
  sector: number;
  sectors: number;
}

export interface SyncCommitMessage {
  type: "sync-commit";
  seq: number;
  epoch: number;
  /** Pages sent for this seq in memory frames (zero pages included). */
  pageCount: number;
  /** Uncompressed size of this seq's device-state delta frame; 0 = none sent. */
  stateDeltaBytes: number;
  /** io-log mode: the disk requests to replay, in guest order. */
  ioLog?: IoLogEntry[];
  /** dirty-block-copy mode: one entry per block frame of this seq, in frame order. */
  blockWrites?: BlockWriteAnnouncement[];
}

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

export interface HeartbeatAckMessage {
  type: "heartbeat-ack";
  epoch: number;
  id: number;
}

export interface PromotedMessage {
  type: "promoted";
  epoch: number;
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
  | SyncCommitMessage
  | SyncAckMessage
  | HeartbeatMessage
  | HeartbeatAckMessage
  | PromotedMessage
  | ErrorMessage
  | GoodbyeMessage;

export type ControlType = ControlMessage["type"];
