// One boot per test file (or benchmark): the default guest with one virtio disk, set up by a
// shell command, then snapshotted, so every test restores the same machine and disk bytes.
import { BlockHook } from "../../emulator/block/hook.ts";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import type { BlockBackend } from "../../emulator/block/backend.ts";
import { Machine } from "../../emulator/machine.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";

export const MOUNT_FRESH_EXT2 = "mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt && sync";

export interface PreparedGuest {
  /** The machine's snapshot after the set-up command. */
  snapshot: Uint8Array;
  /** The disk's bytes at the same moment. */
  disk: Uint8Array;
}

/** Boots once, runs `setup` (it must exit 0: else this throws with its output), snapshots, and destroys the machine. */
export async function prepareGuest(diskBytes: number, setup: string, timeoutMs = 120_000): Promise<PreparedGuest> {
  const backend = new MemoryBackend(diskBytes);
  const machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend, id: "vda", keepBackendOpen: true })] });
  try {
    await machine.boot();
    const result = await machine.exec(setup, { timeoutMs });
    if (result.exitCode !== 0) throw new Error(`guest set-up failed (exit ${result.exitCode}): ${result.output}`);
    return { snapshot: await machine.snapshot(), disk: backend.bytes.slice() };
  } finally {
    await machine.destroy();
  }
}

export interface RestoredNode {
  machine: Machine;
  disk: MemoryBackend;
  /** The hook the disk was built with (a primary engine needs it). */
  hook: BlockHook;
}

/** A machine restored from the prepared snapshot on a copy of its disk; `wrap` may put a backend between device and disk (a fault injector). */
export async function restoreGuest(guest: PreparedGuest, wrap?: (disk: MemoryBackend) => BlockBackend): Promise<RestoredNode> {
  const hook = new BlockHook();
  const disk = new MemoryBackend(guest.disk.slice());
  const machine = await Machine.fromSnapshot(guest.snapshot, {
    ...defaultGuest(),
    devices: [virtioBlkDisk({ backend: wrap?.(disk) ?? disk, id: "vda", hook, keepBackendOpen: true })],
  });
  return { machine, disk, hook };
}

/** A blank machine (a replica to be) with a disk of these bytes, or an empty one of this size. */
export async function blankReplica(disk: Uint8Array | number): Promise<{ machine: Machine; disk: MemoryBackend }> {
  const backend = new MemoryBackend(typeof disk === "number" ? disk : disk.slice());
  const machine = await Machine.createBlank({ ...defaultGuest(), devices: [virtioBlkDisk({ backend, id: "vda", keepBackendOpen: true })] });
  return { machine, disk: backend };
}
