// What one sync carried, as both engines report it after it is acknowledged (primary) or
// applied (secondary): for live views, `--json` events and the demo's charts.
import type { ByteCategory } from "../protocol/frames.ts";

/** How a logged request reaches the secondary's disk; for metrics and live views. */
export type IoDelivery = "replayed" | "inline" | "block-copy" | "flush" | "read-replayed";

/** One logged request and how it reached (or reaches) the secondary's disk. */
export interface LoggedIo {
  disk: number;
  type: "write" | "flush" | "read";
  sector: number;
  sectors: number;
  segments: readonly { gpa: number; length: number }[];
  delivery: IoDelivery;
}

export interface SyncEvent {
  role: "primary" | "secondary";
  seq: number;
  /** Guest page numbers the sync carried. */
  pages: Uint32Array;
  bytes: Record<ByteCategory, number>;
  io: readonly LoggedIo[];
  pauseMs: number;
  roundTripMs: number;
  /** What the acknowledgement let out (primary): network frames and console bytes. */
  released: { frames: number; frameBytes: number; consoleBytes: number };
}

/** Zero bytes in every category. */
export function emptyByteCounts(): Record<ByteCategory, number> {
  return { memoryPages: 0, deviceState: 0, ioLog: 0, diskBlocks: 0, diskCopy: 0, output: 0, control: 0 };
}
