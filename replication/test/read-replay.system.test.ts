// Read-replay on the real guest: after read-heavy work with a cold page cache (file reads,
// tar, fio random reads), the secondary's replica RAM equals the primary's page for page,
// in both disk modes, although the pages the reads filled did not travel as pages.
import { expect } from "chai";
import { BlockHook } from "../../emulator/block/hook.ts";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import { Machine } from "../../emulator/machine.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import { handshake } from "../channel/handshake.ts";
import { PrimaryEngine, type DiskMode } from "../engine/primary/engine.ts";
import { SecondaryEngine } from "../engine/secondary/engine.ts";
import { createMemoryPair } from "../transport/memory-pair.ts";
import { MOUNT_FRESH_EXT2, prepareGuest } from "./guest-fixture.ts";

const SECRET = new TextEncoder().encode("read-replay-test-secret-0123456789");
const DISK_BYTES = 48 << 20;
const READS =
  "echo 3 > /proc/sys/vm/drop_caches && md5sum /mnt/f* > /dev/null && " +
  "echo 3 > /proc/sys/vm/drop_caches && tar cf - /mnt 2>/dev/null | md5sum > /dev/null && " +
  "fio --name=r --filename=/mnt/big --rw=randread --bs=4k --size=4m --ioengine=psync --direct=1 --randrepeat=1 > /dev/null";

describe("read-replay (real guest, in-memory link)", function () {
  let booted: Uint8Array;
  let disk: Uint8Array;
  const machines: Machine[] = [];

  before(async function () {
    ({ snapshot: booted, disk } = await prepareGuest(
      DISK_BYTES,
      MOUNT_FRESH_EXT2 +
        " && for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/f$i bs=64k count=8 2>/dev/null; done && " +
        "dd if=/dev/urandom of=/mnt/big bs=1M count=4 2>/dev/null && sync",
      machines,
    ));
  });

  after(async () => {
    await Promise.all(machines.map((m) => m.destroy()));
  });

  for (const mode of ["logging-replay", "dirty-block-copy"] as const) {
    it(`${mode}: the replica's RAM equals the primary's, page for page, and read-filled pages did not travel`, async function () {
      const { primary, engine, replica } = await startPair(mode);
      expect((await primary.exec(READS, { timeoutMs: 300_000 })).exitCode).to.equal(0);
      await engine.syncNow();
      await primary.pause();
      await engine.syncNow(); // whatever changed up to the pause
      const ours = primary.ram.bytes;
      const theirs = replica.ram.bytes;
      const differing: number[] = [];
      for (let page = 0; page < ours.length / 4096; page++) {
        if (Buffer.compare(ours.subarray(page * 4096, (page + 1) * 4096), theirs.subarray(page * 4096, (page + 1) * 4096)) !== 0) differing.push(page);
      }
      expect(differing, `pages that differ: ${differing.slice(0, 20).join(", ")}`).to.deep.equal([]);
      const metrics = engine.metrics.snapshot();
      expect(metrics.readReplayedPages).to.be.greaterThan(500);
      primary.run();
      await engine.close();
    });
  }

  async function startPair(mode: DiskMode): Promise<{ primary: Machine; engine: PrimaryEngine; replica: Machine }> {
    const hook = new BlockHook();
    const primary = await Machine.fromSnapshot(booted, {
      ...defaultGuest(),
      devices: [virtioBlkDisk({ backend: new MemoryBackend(disk.slice()), id: "vda", hook })],
    });
    const replica = await Machine.createBlank({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: new MemoryBackend(disk.slice()), id: "vda" })] });
    machines.push(primary, replica);
    const link = createMemoryPair();
    const [a, b] = await Promise.all([handshake(link.a, "primary", SECRET), handshake(link.b, "secondary", SECRET)]);
    const secondary = new SecondaryEngine(replica, { peerTimeoutMs: 5000 });
    void secondary.attach(b);
    const engine = new PrimaryEngine(primary, { mode, hook });
    await engine.protect(a);
    expect(engine.state).to.equal("protected");
    return { primary, engine, replica };
  }
});
