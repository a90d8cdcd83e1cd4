// Read-replay on the real guest: after read-heavy work with a cold page cache (file reads,
// tar, fio random reads), the secondary's replica RAM equals the primary's page for page,
// in both disk modes, although the pages the reads filled did not travel as pages.
import { expect } from "chai";
import type { Machine } from "../../emulator/machine.ts";
import { PAGE_SIZE } from "../../emulator/units.ts";
import { PrimaryEngine, type DiskMode } from "../engine/primary/engine.ts";
import { linkSecondary } from "../../test/support/engine-link.ts";
import { blankReplica, MOUNT_FRESH_EXT2, prepareGuest, restoreGuest, type PreparedGuest } from "../../test/support/guest-snapshot.ts";

const DISK_BYTES = 48 << 20;
const READS =
  "echo 3 > /proc/sys/vm/drop_caches && md5sum /mnt/f* > /dev/null && " +
  "echo 3 > /proc/sys/vm/drop_caches && tar cf - /mnt 2>/dev/null | md5sum > /dev/null && " +
  "fio --name=r --filename=/mnt/big --rw=randread --bs=4k --size=4m --ioengine=psync --direct=1 --randrepeat=1 > /dev/null";

describe("read-replay (real guest, in-memory link)", function () {
  let guest: PreparedGuest;
  const machines: Machine[] = [];

  before(async function () {
    guest = await prepareGuest(
      DISK_BYTES,
      MOUNT_FRESH_EXT2 +
        " && for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/f$i bs=64k count=8 2>/dev/null; done && " +
        "dd if=/dev/urandom of=/mnt/big bs=1M count=4 2>/dev/null && sync",
    );
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
      for (let page = 0; page < ours.length / PAGE_SIZE; page++) {
        const at = page * PAGE_SIZE;
        if (Buffer.compare(ours.subarray(at, at + PAGE_SIZE), theirs.subarray(at, at + PAGE_SIZE)) !== 0) differing.push(page);
      }
      expect(differing, `pages that differ: ${differing.slice(0, 20).join(", ")}`).to.deep.equal([]);
      const metrics = engine.metrics.snapshot();
      expect(metrics.readReplayedPages).to.be.greaterThan(500);
      primary.run();
      await engine.close();
    });
  }

  async function startPair(mode: DiskMode): Promise<{ primary: Machine; engine: PrimaryEngine; replica: Machine }> {
    const { machine: primary, hook } = await restoreGuest(guest);
    const { machine: replica } = await blankReplica(guest.disk);
    machines.push(primary, replica);
    const engine = new PrimaryEngine(primary, { mode, hook });
    const { channel } = await linkSecondary(engine, replica, { secondary: { peerTimeoutMs: 5000 } });
    await engine.protect(channel);
    expect(engine.state).to.equal("protected");
    return { primary, engine, replica };
  }
});
