// Real machines as the engines' guests: a running Machine with its virtio-blk disks and block
// hook (primary), and a blank Machine that holds the replica (secondary).
import type { BlockHook } from "../../emulator/block/hook.ts";
import type { Machine } from "../../emulator/machine.ts";
import { DirtyPageTracker, type TrackerOptions } from "../../emulator/memory/index.ts";
import { StatePartTracker, restoreStateParts } from "../../emulator/state/state-parts.ts";
import { VirtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import type { GuestDisk, PrimaryGuest, ReplicaGuest } from "./guest.ts";

function disksOf(machine: Machine): GuestDisk[] {
  return machine.devices
    .filter((device): device is VirtioBlkDisk => device instanceof VirtioBlkDisk)
    .map((disk) => ({ name: disk.id, backend: disk.backend, idle: () => disk.device.backendIdle() }));
}

export interface MachineGuestOptions {
  /** How dirty pages are found (default: the patched module's write map where present). */
  tracking?: TrackerOptions["mode"];
}

/** `hook` must be the BlockHook the machine's disks were built with. */
export function primaryGuestOf(machine: Machine, hook: BlockHook, options: MachineGuestOptions = {}): PrimaryGuest {
  let pages: DirtyPageTracker | undefined;
  let state: StatePartTracker | undefined;
  return {
    memoryBytes: machine.ram.size,
    disks: disksOf(machine),
    atNextBoundary: (work) => machine.atNextBoundary(work),
    eagerYield: (on) => {
      machine.eagerYield = on;
    },
    onIdle: (listener) => machine.onHalt(listener),
    beginFullCopy() {
      pages?.dispose();
      state = undefined;
      pages = DirtyPageTracker.create(machine, { mode: options.tracking ?? "auto" });
      pages.startLiveCopy();
    },
    copyPages(maxPages) {
      if (pages === undefined) throw new Error("copyPages before beginFullCopy");
      return pages.copyNext(maxPages);
    },
    finishFullCopy() {
      if (pages === undefined) throw new Error("finishFullCopy before beginFullCopy");
      state = new StatePartTracker(machine);
      return { pages: pages.collect(), state: state.capture().changed.map((part) => part.current) };
    },
    collectPages() {
      if (pages === undefined) throw new Error("collectPages before beginFullCopy");
      return pages.collectInPlace();
    },
    captureState() {
      if (state === undefined) throw new Error("captureState before finishFullCopy");
      return state.capture();
    },
    ram: () => machine.ram.bytes,
    onBlockRequest: (listener) => hook.subscribe(listener),
    onBlockCompleted: (listener) => hook.onCompleted(listener),
    onBackendFailure: (handler) => hook.onBackendFailure(handler),
    pause: () => machine.pause(),
    resume: () => machine.run(),
    onOutput: (listener) => machine.console.onOutput(listener),
    onFrame: (listener) => machine.network.onTransmit(listener),
    ingressWatermark: () => machine.network.lastIngressId,
    halt: () => void machine.pause(),
    get trackerStats() {
      return pages?.stats;
    },
    dispose() {
      pages?.dispose();
      pages = undefined;
      state = undefined;
    },
  };
}

/**
 * How long a replica that took over runs in short slices. Measured on a frozen primary's
 * takeover (a client streaming through an echo service in the guest): the gateway's first
 * frames reached the restored guest 44-103 ms after they were sent with v86's slices, 13-43 ms
 * with short ones; the client's first byte back came 108 ms after the takeover against 139
 * (median of 12 rounds each, on a loaded machine).
 */
const RESTORED_EAGER_YIELD_MS = 2000;

/** `machine` comes from `Machine.createBlank` with the same disks (by name and size) as the primary's. */
export function replicaGuestOf(machine: Machine): ReplicaGuest {
  if (machine.state !== "blank") throw new Error(`the replica machine must be blank, it is ${machine.state}`);
  return {
    memoryBytes: machine.ram.size,
    disks: disksOf(machine),
    // The replica never ran, so it has no compiled code to drop: plain stores are enough.
    ram: () => machine.ram.bytes,
    start(parts) {
      restoreStateParts(machine, parts);
      machine.run();
      // Its clients are waiting (a takeover): serve their frames and lines between short slices
      // while v86 compiles the guest's code again.
      machine.eagerYieldFor(RESTORED_EAGER_YIELD_MS);
    },
  };
}
