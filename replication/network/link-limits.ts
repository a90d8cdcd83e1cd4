// Names and hard limits of the network link (node <-> gateway). Decoders reject anything
// over them before allocating; the WebSocket refuses a larger message outright.

/** Named in every challenge and bound into the proofs and keys: a replication peer and a gateway cannot be mistaken for each other. */
export const LINK_PROTOCOL = "twinvm-network";
export const LINK_VERSIONS = { min: 1, max: 1 } as const;

/** A frame's length field is 16 bits; frames over the MTU pass the codec and are dropped (and counted) by the receiver. */
export const MAX_LINK_FRAME_BYTES = 0xffff;
/** Frames are batched into records up to this payload; one frame of any legal size still fits alone. */
export const BATCH_RECORD_BYTES = 64 * 1024;
/** Largest plaintext of one record (type byte excluded). */
export const MAX_LINK_RECORD_PAYLOAD = BATCH_RECORD_BYTES + 1 + 8 + 2 + MAX_LINK_FRAME_BYTES;
/** Largest WebSocket message either side accepts: a record plus its type byte and AES-GCM tag. */
export const MAX_LINK_MESSAGE_BYTES = MAX_LINK_RECORD_PAYLOAD + 1 + 16;
export const MAX_FRAMES_PER_RECORD = 1024;
/** A control message as JSON text. */
export const MAX_LINK_CONTROL_BYTES = 4096;
export const MAX_LINK_TEXT = 512;
export const MAX_LINK_EPOCH = 0xffff_ffff;
/** Ingress ids are exact JavaScript integers. */
export const MAX_INGRESS_ID = Number.MAX_SAFE_INTEGER;

export const DEFAULT_HEARTBEAT_MS = 1000;
/** Silence after which a side counts the link as dead (a host that vanished sends no FIN). */
export const DEFAULT_SILENCE_TIMEOUT_MS = 5000;
export const DEFAULT_LINK_HANDSHAKE_TIMEOUT_MS = 5000;
