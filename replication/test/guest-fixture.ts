// One boot per test file: a guest with one virtio disk, set up by a shell command, then
// snapshotted so every test restores the same machine and disk.
import { expect } from "chai";
import { Machine } from "../../emulator/machine.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";

export const MOUNT_FRESH_EXT2 = "mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt && sync";

export interface PreparedGuest {
  /** The machine's snapshot after the set-up command. */
  snapshot: Uint8Array;
  /** The disk's bytes at the same moment. */
  disk: Uint8Array;
}

/** Boots once, runs `setup` (it must exit 0), and returns the snapshot and disk. The machine is pushed onto `machines` for the caller to destroy. */
export async function prepareGuest(diskBytes: number, setup: string, machines: Machine[], timeoutMs = 120_000): Promise<PreparedGuest> {
  const backend = new MemoryBackend(diskBytes);
  const machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend, id: "vda", keepBackendOpen: true })] });
  machines.push(machine);
  await machine.boot();
  const result = await machine.exec(setup, { timeoutMs });
  expect(result.exitCode, result.output).to.equal(0);
  return { snapshot: await machine.snapshot(), disk: backend.bytes.slice() };
}
