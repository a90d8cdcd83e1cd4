// State without memory: capture, restore, encoding and deltas between captures.
export {
  captureMemorylessState,
  restoreMemorylessState,
  encodeMemorylessState,
  decodeMemorylessState,
  type MemorylessState,
} from "./memoryless-state.ts";
export { encodeDelta, applyDelta, readDeltaInfo, DELTA_BLOCK_SIZE, type DeltaInfo } from "./state-delta.ts";
export { contentHash } from "./content-hash.ts";
