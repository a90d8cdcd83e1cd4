// The talk's future work on the real guest (one boot for the file): a live migration under a
// disk-writing workload, a primary disk that fails (on writes, then on reads) without the
// guest ever seeing an error, and a consistency check that finds and repairs a sector
// corrupted in the secondary's image.
import { expect } from "chai";
import { FaultyBackend } from "../../emulator/block/faulty-backend.ts";
import type { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import type { Machine } from "../../emulator/machine.ts";
import type { ReplicationChannel } from "../channel/channel.ts";
import { PrimaryEngine } from "../engine/primary/engine.ts";
import type { SecondaryEngine } from "../engine/secondary/engine.ts";
import { expectCleanFileSystem } from "../../test/support/disk-check.ts";
import { linkSecondary } from "../../test/support/engine-link.ts";
import { blankReplica, MOUNT_FRESH_EXT2, prepareGuest, restoreGuest, type PreparedGuest } from "../../test/support/guest-snapshot.ts";
import { waitForValue } from "../../test/support/wait.ts";

const DISK_BYTES = 32 << 20;
/** Writes files, logging each one's digest only once it is durable; a marker in tmpfs says it finished. */
const WRITER =
  "(i=0; while [ $i -lt 30 ]; do i=$((i+1)); dd if=/dev/urandom of=/mnt/w$i bs=4k count=8 2>/dev/null && sync && " +
  "sha256sum /mnt/w$i >> /mnt/log && sync; done; echo done > /tmp/writer.done) > /dev/null 2>&1 &";

describe("handover, migration and verification (real guest, in-memory link)", function () {
  let guest: PreparedGuest;
  const machines: Machine[] = [];

  before(async function () {
    guest = await prepareGuest(DISK_BYTES, MOUNT_FRESH_EXT2, 60_000);
  });

  after(async () => {
    await Promise.all(machines.map((m) => m.destroy()));
  });

  interface Node {
    machine: Machine;
    disk: MemoryBackend;
  }

  async function primaryNode(wrap?: (backend: MemoryBackend) => FaultyBackend): Promise<Node & { engine: PrimaryEngine; faulty: FaultyBackend | undefined }> {
    let faulty: FaultyBackend | undefined;
    const { machine, disk, hook } = await restoreGuest(guest, wrap && ((backend) => (faulty = wrap(backend))));
    machines.push(machine);
    return { machine, disk, faulty, engine: new PrimaryEngine(machine, { mode: "logging-replay", hook }) };
  }

  /** A node with its own disk (a stale copy: the initial sync must bring it up to date). */
  async function secondaryNode(engine: PrimaryEngine): Promise<Node & { engine: SecondaryEngine; channel: ReplicationChannel }> {
    const { machine, disk } = await blankReplica(guest.disk);
    machines.push(machine);
    const { secondary, channel } = await linkSecondary(engine, machine, { secondary: { peerTimeoutMs: 3000 } });
    return { machine, disk, engine: secondary, channel };
  }

  async function waitFor(machine: Machine, file: string, timeoutMs = 120_000): Promise<void> {
    await waitForValue(async () => (await machine.exec(`cat ${file} 2>/dev/null`)).output.trim() !== "", `${file} to appear`, timeoutMs, 250);
  }

  async function expectFilesVerify(machine: Machine, disk: MemoryBackend): Promise<void> {
    const check = await machine.exec("sha256sum -c /mnt/log 2>&1 | grep -vc ': OK$'; wc -l < /mnt/log", { timeoutMs: 60_000 });
    const [bad, count] = check.output.trim().split("\n").map(Number);
    expect(bad, check.output).to.equal(0);
    expect(count).to.be.greaterThan(5);
    expect((await machine.exec("umount /mnt")).exitCode).to.equal(0);
    await expectCleanFileSystem(disk.bytes);
  }

  it("migrates a guest that is writing files: the writer goes on on the target, every file verifies, e2fsck is clean", async function () {
    const source = await primaryNode();
    const first = await secondaryNode(source.engine);
    await source.engine.protect(first.channel);
    expect(source.engine.state).to.equal("protected");
    expect((await source.machine.exec(WRITER)).exitCode).to.equal(0);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const target = await secondaryNode(source.engine);
    const report = await source.engine.migrate(target.channel);
    expect(source.engine.state).to.equal("fenced");
    expect(target.engine.state).to.equal("active");
    expect(first.engine.state).to.equal("standby"); // told goodbye: it did not take over
    expect(report.downtimeMs).to.be.a("number").and.lessThan(report.totalMs);
    // The console continues on the target, and so does the writer.
    expect((await target.machine.exec("echo here")).output).to.equal("here\n");
    await waitFor(target.machine, "/tmp/writer.done");
    await expectFilesVerify(target.machine, target.disk);
  });

  for (const operation of ["write", "read"] as const) {
    it(`a primary disk that fails on ${operation}s: the guest never sees an error, the secondary takes over, the files verify`, async function () {
      const primary = await primaryNode((disk) => new FaultyBackend(disk));
      const secondary = await secondaryNode(primary.engine);
      await primary.engine.protect(secondary.channel);
      expect(
        (
          await primary.machine.exec(
            "for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/mnt/r$i bs=4k count=8 2>/dev/null; done; sync; sha256sum /mnt/r* > /mnt/log; sync",
          )
        ).exitCode,
      ).to.equal(0);
      // Reads must reach the disk: drop the page cache first.
      await primary.machine.exec("echo 3 > /proc/sys/vm/drop_caches");
      primary.faulty!.failAfter(operation, 3);
      void primary.machine
        .exec(operation === "write" ? WRITER : "cat /mnt/r* > /dev/null; echo done > /tmp/writer.done", { timeoutMs: 120_000 })
        .catch(() => undefined);
      const deadline = Date.now() + 60_000;
      // The secondary resumes first and then tells the primary, which fences itself on receipt.
      while ((secondary.engine.state !== "active" || primary.engine.state !== "fenced") && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 100));
      expect(primary.faulty!.failures).to.be.greaterThan(0);
      expect(secondary.engine.state).to.equal("active");
      expect(primary.engine.state).to.equal("fenced");
      await waitFor(secondary.machine, "/tmp/writer.done");
      // No I/O error reached the guest's kernel.
      expect((await secondary.machine.exec("dmesg | grep -ci 'i/o error'")).output.trim()).to.equal("0");
      await expectFilesVerify(secondary.machine, secondary.disk);
    });
  }

  it("verify finds a sector corrupted in the secondary's image, repairs it, and then finds nothing", async function () {
    const primary = await primaryNode();
    const secondary = await secondaryNode(primary.engine);
    await primary.engine.protect(secondary.channel);
    expect((await primary.machine.exec("dd if=/dev/urandom of=/mnt/v bs=64k count=16 2>/dev/null; sync")).exitCode).to.equal(0);
    await primary.engine.syncNow();
    // Plant corruption: a sector in the middle of the replica's disk.
    const sector = 20_000;
    secondary.disk.bytes[sector * 512 + 100] = secondary.disk.bytes[sector * 512 + 100]! ^ 0x5a;
    const found = await primary.engine.verify({ ram: false });
    expect(found.disks[0]!.differing.map((r) => r.offset)).to.deep.equal([Math.floor((sector * 512) / (64 << 10)) * (64 << 10)]);
    const repaired = await primary.engine.verify({ repair: true });
    expect(repaired.disks[0]!.repaired).to.have.length(1);
    expect(repaired.disks[0]!.differing).to.deep.equal([]);
    expect(repaired.ram!.differing).to.deep.equal([]);
    expect(
      Buffer.compare(secondary.disk.bytes.subarray(sector * 512, sector * 512 + 512), primary.disk.bytes.subarray(sector * 512, sector * 512 + 512)),
    ).to.equal(0);
    await primary.engine.close();
  });
});
