// A machine's CPU and device state without RAM, as a list of byte parts: v86's state tree
// (JSON), our devices' states (JSON), then each of v86's binary buffers. Most parts do not
// change between two syncs (VGA, sound and IDE buffers are ~1 MB of the ~1.3 MB), so a
// tracker reports only the parts that changed, with their previous bytes for a delta.
import { SnapshotError } from "../errors.ts";
import { requireBoundary } from "../paused.ts";
import { captureStateTree, stateTreeToParts } from "../v86-internals.ts";
import type { JsonValue } from "../config.ts";
import type { Machine } from "../machine.ts";
import { bytesEqual } from "./bytes-equal.ts";

/** Index of v86's state tree (JSON) among the parts. */
export const TREE_PART = 0;
/** Index of our devices' states (JSON). */
export const DEVICES_PART = 1;
/** v86's buffers follow, buffer_id i at part FIRST_BUFFER_PART + i. */
export const FIRST_BUFFER_PART = 2;

const utf8 = new TextEncoder();

/**
 * The parts at the current instruction boundary. Buffer parts are views of live device
 * memory: copy what you keep before the guest runs again.
 */
export function captureStateParts(machine: Machine): Uint8Array[] {
  requireBoundary(machine, "captureStateParts");
  const { tree, buffers } = captureStateTree(machine.emulator);
  return [tree, utf8.encode(JSON.stringify(machine.saveDeviceStates())), ...buffers];
}

/**
 * Loads parts into a blank machine whose RAM already holds the guest's pages. The machine is
 * left paused; `run()` continues the guest. Throws SnapshotError on damaged parts.
 */
export function restoreStateParts(machine: Machine, parts: readonly Uint8Array[]): void {
  if (parts.length < FIRST_BUFFER_PART) throw new SnapshotError(`state: ${parts.length} parts, at least ${FIRST_BUFFER_PART} expected`);
  let devices: Record<string, JsonValue>;
  try {
    devices = JSON.parse(new TextDecoder().decode(parts[DEVICES_PART])) as Record<string, JsonValue>;
  } catch (error) {
    throw new SnapshotError("state: our devices' part is not JSON", { cause: error });
  }
  if (typeof devices !== "object" || devices === null || Array.isArray(devices)) throw new SnapshotError("state: our devices' part is not an object");
  const tree = new TextDecoder().decode(parts[TREE_PART]);
  machine.restoreWithoutMemory(stateTreeToParts(tree, parts.slice(FIRST_BUFFER_PART)), devices);
}

/** One part that differs from the previous capture. */
export interface ChangedPart {
  index: number;
  /** The bytes at the previous capture (undefined for a part that did not exist). */
  previous: Uint8Array | undefined;
  /** A copy of the bytes now. */
  current: Uint8Array;
}

export interface StateChanges {
  /** How many parts the state has now. */
  partCount: number;
  changed: ChangedPart[];
}

/** Remembers the last captured parts of one machine and reports what changed since. */
export class StatePartTracker {
  #last: Uint8Array[] = [];

  constructor(private readonly machine: Machine) {}

  /** Changes since the previous call (all parts on the first). Call at an instruction boundary. */
  capture(): StateChanges {
    const parts = captureStateParts(this.machine);
    const changed: ChangedPart[] = [];
    parts.forEach((part, index) => {
      const previous = this.#last[index];
      if (previous !== undefined && bytesEqual(previous, part)) return;
      const current = part.slice();
      this.#last[index] = current;
      changed.push({ index, previous, current });
    });
    this.#last.length = parts.length;
    return { partCount: parts.length, changed };
  }

  /** The parts as of the last capture (shared: do not modify). */
  get lastParts(): readonly Uint8Array[] {
    return this.#last;
  }
}
