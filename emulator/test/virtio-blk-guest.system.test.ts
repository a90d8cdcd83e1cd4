// Linux's own virtio_blk driver on our device: two disks, a file system that
// survives a power cycle and passes the host's e2fsck, and a snapshot taken
// while the guest writes that restores into a machine whose disk keeps working.
// The default guest boots once; later machines come from snapshots.
//
// A guest reboot is not used: v86 0.5.462 panics ("Unimplemented: #GP handler")
// when this bzimage guest reboots, with or without our disks. The power cycle
// instead destroys the machine after `sync` and restores a snapshot taken right
// after boot onto the same image: a fresh kernel that must read everything back.
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBackend } from "../block/memory-backend.ts";
import { Machine } from "../machine.ts";
import { FileBackend } from "../node/file-backend.ts";
import { defaultGuest } from "../node/images.ts";
import { VirtioBlkDisk, virtioBlkDisk } from "../virtio-blk/disk.ts";

const DISK_BYTES = 32 << 20;
const dir = mkdtempSync(join(tmpdir(), "twinvm-vblk-"));

function e2fsck(path: string): { clean: boolean; output: string } {
  try {
    return { clean: true, output: execFileSync("e2fsck", ["-fn", path], { encoding: "utf8", stdio: "pipe" }) };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    return { clean: false, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

async function run(machine: Machine, command: string, timeoutMs = 60_000): Promise<string> {
  const { output, exitCode } = await machine.exec(command, { timeoutMs });
  expect(exitCode, `${command}\n${output}`).to.equal(0);
  return output;
}

function disk(machine: Machine, id: string): VirtioBlkDisk {
  const found = machine.devices.find((d): d is VirtioBlkDisk => d instanceof VirtioBlkDisk && d.id === id);
  if (found === undefined) throw new Error(`no disk ${id}`);
  return found;
}

describe("virtio-blk with Linux's driver", function () {
  const imagePath = join(dir, "vda.img");
  let machine: Machine;
  let justBooted: Uint8Array;
  const others: Machine[] = [];
  const config = (vda: FileBackend) => ({
    ...defaultGuest(),
    devices: [virtioBlkDisk({ backend: vda, id: "vda" }), virtioBlkDisk({ backend: new MemoryBackend(8 << 20), id: "vdb", serial: "scratch-disk" })],
  });

  before(async function () {
    machine = new Machine(config(await FileBackend.open(imagePath, { createSizeBytes: DISK_BYTES })));
    await machine.boot();
    justBooted = await machine.snapshot();
  });

  after(async () => {
    await Promise.all([machine?.destroy(), ...others.map((m) => m.destroy())]);
    rmSync(dir, { recursive: true, force: true });
  });

  it("binds both disks as /dev/vda and /dev/vdb with their sizes and serials", async () => {
    expect(await run(machine, "cat /sys/block/vda/size /sys/block/vdb/size")).to.equal(`${DISK_BYTES / 512}\n${(8 << 20) / 512}\n`);
    expect(await run(machine, "cat /sys/block/vdb/serial; echo")).to.equal("scratch-disk\n");
    expect(await run(machine, "cat /sys/block/vda/queue/logical_block_size /sys/block/vda/ro")).to.equal("512\n0\n");
    expect(await run(machine, "ls /sys/bus/virtio/drivers/virtio_blk | grep -c virtio")).to.equal("2\n");
  });

  it("formats a disk, and synced files survive a power cycle", async () => {
    await run(machine, "mke2fs -q /dev/vda >/dev/null && mount /dev/vda /mnt");
    await run(machine, "dd if=/dev/urandom of=/mnt/data bs=64k count=32 2>/dev/null && echo kept > /mnt/note && sync");
    const before = await run(machine, "sha256sum /mnt/data /mnt/note");
    expect(disk(machine, "vda").metrics.writes).to.be.greaterThan(0);
    expect(disk(machine, "vda").metrics.flushes).to.be.greaterThan(0);
    expect(disk(machine, "vda").metrics.errors).to.equal(0);
    await machine.destroy(); // pulls the plug: no unmount; the disk closes its image

    machine = await Machine.fromSnapshot(justBooted, config(await FileBackend.open(imagePath)));
    await run(machine, "mount /dev/vda /mnt");
    expect(await run(machine, "sha256sum /mnt/data /mnt/note")).to.equal(before);
    await run(machine, "umount /mnt");
  });

  it("leaves an image the host's e2fsck finds clean", () => {
    const { clean, output } = e2fsck(imagePath);
    expect(clean, output).to.equal(true);
  });

  it("restores a snapshot taken mid-write into a machine whose disks keep working", async () => {
    await run(machine, "mount /dev/vda /mnt && mke2fs -q /dev/vdb >/dev/null");
    machine.send("dd if=/dev/urandom of=/mnt/big bs=64k count=128 conv=fsync 2>/dev/null; echo WROTE'-'BIG\n");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await machine.pause();
    const snapshot = await machine.snapshot();
    const copyPath = join(dir, "vda-copy.img");
    copyFileSync(imagePath, copyPath);
    const vdbCopy = new MemoryBackend(disk(machine, "vdb").device.capacitySectors * 512);
    vdbCopy.bytes.set((disk(machine, "vdb").backend as MemoryBackend).bytes);
    machine.run();

    const copy = await Machine.fromSnapshot(snapshot, {
      ...defaultGuest(),
      devices: [virtioBlkDisk({ backend: await FileBackend.open(copyPath), id: "vda" }), virtioBlkDisk({ backend: vdbCopy, id: "vdb" })],
    });
    others.push(copy);
    await copy.waitFor("WROTE-BIG", { from: 0, timeoutMs: 120_000 });
    await run(copy, "ls -l /mnt/big | grep -q ' 8388608 ' && sha256sum /mnt/big > /tmp/sum && umount /mnt");
    await run(copy, "mount /dev/vda /mnt && sha256sum -c /tmp/sum && umount /mnt");
    await run(copy, "mount /dev/vdb /mnt && echo fresh > /mnt/f && sync && cat /mnt/f && umount /mnt");
    const { clean, output } = e2fsck(copyPath);
    expect(clean, output).to.equal(true);
    // The original carries on independently.
    await machine.waitFor("WROTE-BIG", { from: 0, timeoutMs: 120_000 });
    await run(machine, "umount /mnt");
  });
});
