// Hard limits of protocol version 4. Decoders reject anything over them before
// allocating, so a hostile peer cannot make us buffer or inflate unbounded data.

export const PROTOCOL_NAME = "twinvm-replication";
export const PROTOCOL_VERSION = 4;
/** Versions this build can speak; the handshake picks the highest both sides share. */
export const SUPPORTED_VERSIONS = { min: 4, max: 4 } as const;

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Largest binary frame (header + payload); also the WebSocket `maxPayload`. */
export const MAX_FRAME_BYTES = 16 * MiB;
/** Largest control message, as UTF-8 text. */
export const MAX_CONTROL_BYTES = 1 * MiB;
/** Deepest JSON nesting a control message may have (the deepest legal one is 5). */
export const MAX_JSON_DEPTH = 8;

/** Pages per memory frame: 4000 × 4 KiB plus indices stays under MAX_FRAME_BYTES. */
export const MAX_PAGES_PER_FRAME = 4000;
/** Guest memory up to 64 GiB; page indices must be below memory / PAGE_SIZE anyway. */
export const MAX_MEMORY_BYTES = 64 * 1024 * MiB;

/** Sectors in one dirty-block frame (8 MiB); larger writes are split over frames. */
export const MAX_SECTORS_PER_BLOCK_FRAME = 16384;
/** Bytes in one initial-sync disk chunk. */
export const MAX_DISK_CHUNK_BYTES = 8 * MiB;
/** Device state (full or delta) in one frame, uncompressed. */
export const MAX_DEVICE_STATE_BYTES = 15 * MiB;
/** Largest disk image: 2 TiB, which keeps every byte offset an exact JS number. */
export const MAX_DISK_BYTES = 2 * 1024 * 1024 * MiB;

export const MAX_DISKS = 16;
/** I/O log entries in one sync-commit (a virtio queue is at most 1024 deep). */
export const MAX_IO_LOG_ENTRIES = 1024;
/** Entries of one page-updates frame; a full page each stays under MAX_FRAME_BYTES. */
export const MAX_PAGE_UPDATES_PER_FRAME = 3900;
/** Device-state parts (v86's buffers number ~60). */
export const MAX_STATE_PARTS = 4096;
/**
 * Disk data (inline writes, copied blocks) one sync may carry; a primary with more pending
 * leaves the rest to the next sync, so every sync stays within what a secondary must stage.
 */
export const MAX_SYNC_DISK_BYTES = 64 * MiB;
/** One consistency check covers at most this much, in at most MAX_VERIFY_CHUNKS chunks. */
export const MAX_VERIFY_RANGE_BYTES = 64 * MiB;
export const MAX_VERIFY_CHUNKS = 4096;
/** Guest-physical segments of one logged request (virtio-blk seg_max is usually 126 or 254). */
export const MAX_SEGMENTS_PER_ENTRY = 256;
/** Sectors one logged request may cover (32 MiB). */
export const MAX_SECTORS_PER_REQUEST = 65536;

/** Console chunks and Ethernet frames in one held-output frame (a primary holds at most 4 MiB of them). */
export const MAX_OUTPUTS_PER_FRAME = 65536;

/** Sequence numbers and byte counts stay exact in JSON (IEEE double). */
export const MAX_SAFE = Number.MAX_SAFE_INTEGER;
export const MAX_EPOCH = 0xffff_ffff;

export const NONCE_BYTES = 32;
export const MIN_SECRET_BYTES = 16;
export const MAX_TEXT_FIELD = 512;
