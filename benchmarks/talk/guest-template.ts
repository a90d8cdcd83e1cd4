// The guest every pair of the talk benchmark restores: booted once per memory size, a raw
// disk (vda) for block workloads and a file system on vdb mounted at /mnt, then a snapshot
// taken with both disk images at rest (each pair starts from copies of them).
import { join } from "node:path";
import { Machine } from "../../emulator/machine.ts";
import { FileBackend } from "../../emulator/node/file-backend.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import { writeFile } from "node:fs/promises";
import type { GuestTemplate } from "./matrix.ts";

const DISK_BYTES = 64 << 20;

export async function buildGuestTemplate(dir: string, memoryMiB: number): Promise<GuestTemplate> {
  const template: GuestTemplate = {
    memoryMiB,
    snapshot: join(dir, `guest-${memoryMiB}.snapshot`),
    vda: join(dir, `vda-${memoryMiB}.img`),
    vdb: join(dir, `vdb-${memoryMiB}.img`),
  };
  const [vda, vdb] = await Promise.all([template.vda, template.vdb].map((path) => FileBackend.open(path, { createSizeBytes: DISK_BYTES })));
  const machine = new Machine({
    ...defaultGuest(),
    memoryMiB,
    devices: [virtioBlkDisk({ backend: vda!, id: "vda" }), virtioBlkDisk({ backend: vdb!, id: "vdb" })],
  });
  try {
    await machine.boot();
    // ext4 where the guest has mkfs.ext4; otherwise busybox's mke2fs, mounted by the ext4 driver.
    const format = await machine.exec("(mkfs.ext4 -q -F /dev/vdb 2>/dev/null || mke2fs -q -F /dev/vdb) && mkdir -p /mnt && mount /dev/vdb /mnt && sync", {
      timeoutMs: 120_000,
    });
    if (format.exitCode !== 0) throw new Error(`formatting vdb in the guest failed: ${format.output}`);
    await writeFile(template.snapshot, await machine.snapshot());
  } finally {
    await machine.destroy();
  }
  return template;
}
