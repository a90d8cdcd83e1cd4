// A machine's CPU and device state without guest RAM (v86's devices and ours), for a
// machine whose RAM is copied page by page. Encoded so that consecutive captures differ
// in few bytes: v86's binary buffers sit at a fixed offset, variable-length JSON at the end.
import { SnapshotError } from "../errors.ts";
import { requireStopped } from "../paused.ts";
import { V86_VERSION, saveStateWithoutMemory, type V86StateParts } from "../v86-internals.ts";
import type { JsonValue } from "../config.ts";
import type { Machine } from "../machine.ts";
import { readTag, writeTag, type Tag } from "./tagged-header.ts";

export interface MemorylessState {
  /** v86 build the state came from; states are not portable across v86 versions. */
  v86Version: string;
  memoryMiB: number;
  vgaMemoryKiB: number;
  v86State: V86StateParts;
  /** Our devices' states by `stateKey`. */
  devices: Record<string, JsonValue>;
}

/** Captures at the current instruction boundary; the machine must be stopped (see `whilePaused`). */
export function captureMemorylessState(machine: Machine): MemorylessState {
  requireStopped(machine, "captureMemorylessState");
  return {
    v86Version: V86_VERSION,
    memoryMiB: machine.config.memoryMiB,
    vgaMemoryKiB: machine.config.vgaMemoryKiB,
    v86State: saveStateWithoutMemory(machine.emulator),
    devices: machine.saveDeviceStates(),
  };
}

/**
 * Loads the state into a blank machine (`Machine.createBlank`) whose RAM already holds the
 * guest's pages (`applyPages`). The machine is left paused; `run()` continues the guest.
 */
export function restoreMemorylessState(machine: Machine, state: MemorylessState): void {
  if (state.v86Version !== V86_VERSION) {
    throw new SnapshotError(`state: taken with v86 ${state.v86Version}, this build runs v86 ${V86_VERSION}`);
  }
  for (const key of ["memoryMiB", "vgaMemoryKiB"] as const) {
    if (machine.config[key] !== state[key]) {
      throw new SnapshotError(`state: has ${key} ${state[key]}, the machine has ${machine.config[key]}`);
    }
  }
  machine.restoreWithoutMemory(state.v86State, state.devices);
}

// magic 8, version, buffers length, v86 JSON length, meta length (u32 each)
const HEADER_BYTES = 24;
const TAG: Tag = { magic: "TWVMSTAT", version: 1, headerBytes: HEADER_BYTES, what: "memory-less state" };

type StateMeta = Omit<MemorylessState, "v86State">;

/** Layout: header, v86 buffers (fixed offset), v86 JSON, our meta JSON (versions, sizes, devices). */
export function encodeMemorylessState(state: MemorylessState): Uint8Array {
  const { v86State, ...meta } = state;
  const metaBytes = new TextEncoder().encode(JSON.stringify(meta satisfies StateMeta));
  const { buffers, json } = v86State;
  const out = new Uint8Array(HEADER_BYTES + buffers.length + json.length + metaBytes.length);
  const view = writeTag(out, TAG);
  view.setUint32(12, buffers.length, true);
  view.setUint32(16, json.length, true);
  view.setUint32(20, metaBytes.length, true);
  out.set(buffers, HEADER_BYTES);
  out.set(json, HEADER_BYTES + buffers.length);
  out.set(metaBytes, HEADER_BYTES + buffers.length + json.length);
  return out;
}

export function decodeMemorylessState(bytes: Uint8Array): MemorylessState {
  const view = readTag(bytes, TAG, (message) => new SnapshotError(message));
  const [buffersLength, jsonLength, metaLength] = [12, 16, 20].map((at) => view.getUint32(at, true)) as [number, number, number];
  if (HEADER_BYTES + buffersLength + jsonLength + metaLength !== bytes.length) {
    throw new SnapshotError(`state: truncated or damaged (header says ${HEADER_BYTES + buffersLength + jsonLength + metaLength} bytes, got ${bytes.length})`);
  }
  const jsonStart = HEADER_BYTES + buffersLength;
  const metaStart = jsonStart + jsonLength;
  let meta: StateMeta;
  try {
    meta = JSON.parse(new TextDecoder().decode(bytes.subarray(metaStart))) as StateMeta;
  } catch (error) {
    throw new SnapshotError("state: damaged (meta is not JSON)", { cause: error });
  }
  if (typeof meta?.v86Version !== "string" || !Number.isInteger(meta.memoryMiB) || !Number.isInteger(meta.vgaMemoryKiB) ||
      typeof meta.devices !== "object" || meta.devices === null) {
    throw new SnapshotError("state: damaged (meta fields missing)");
  }
  return {
    ...meta,
    v86State: { buffers: bytes.slice(HEADER_BYTES, jsonStart), json: bytes.slice(jsonStart, metaStart) },
  };
}
