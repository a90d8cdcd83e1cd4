// Machine state without RAM, as parts that change independently (see state-parts.ts).
export {
  captureStateParts,
  restoreStateParts,
  StatePartTracker,
  TREE_PART,
  DEVICES_PART,
  FIRST_BUFFER_PART,
  type ChangedPart,
  type StateChanges,
} from "./state-parts.ts";
export { bytesEqual } from "./bytes-equal.ts";
