// End to end: primary and secondary in separate processes over a real WebSocket on
// loopback, each with its own disk image files. The guest writes files and syncs;
// the primary process is killed with SIGKILL; the secondary takes over, answers on
// its console, holds every synced file, and its disk image passes e2fsck. Both disk
// modes run the same workload and must leave identical raw-disk contents.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Machine } from "../../emulator/machine.ts";
import { FileBackend } from "../../emulator/node/file-backend.ts";
import { defaultGuest } from "../../emulator/node/images.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import { handshake } from "../../replication/channel/handshake.ts";
import { connectReplication } from "../../replication/node/ws-transport.ts";
import { NodeProcess } from "../node-process.ts";

const FS_DISK_BYTES = 48 << 20;
const RAW_DISK_BYTES = 8 << 20;
const SECRET = "pair-failover-test-secret-0123456789";

describe("replicated pair in two processes (ws, SIGKILL)", function () {
  let dir: string;
  let snapshotPath: string;
  const nodes: NodeProcess[] = [];
  const rawDiskDigests = new Map<string, string>();

  before(async function () {
    // Boot once: format vda with the guest's mke2fs and mount it; vdb stays raw.
    dir = mkdtempSync(join(tmpdir(), "twinvm-pair-"));
    writeFileSync(join(dir, "secret"), SECRET, { mode: 0o600 });
    const [fsDisk, rawDisk] = await Promise.all([
      FileBackend.open(join(dir, "template-vda.img"), { createSizeBytes: FS_DISK_BYTES }),
      FileBackend.open(join(dir, "template-vdb.img"), { createSizeBytes: RAW_DISK_BYTES }),
    ]);
    const machine = new Machine({
      ...defaultGuest(),
      devices: [virtioBlkDisk({ backend: fsDisk, id: "vda" }), virtioBlkDisk({ backend: rawDisk, id: "vdb" })],
    });
    await machine.boot();
    const format = await machine.exec("mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt && sync", { timeoutMs: 60_000 });
    expect(format.exitCode, format.output).to.equal(0);
    snapshotPath = join(dir, "booted.snap");
    writeFileSync(snapshotPath, await machine.snapshot());
    await machine.destroy(); // closes (and so flushes) the template images
  });

  afterEach(async function () {
    // A failed run says what each node did: a hang's cause is in their states and logs.
    if (this.currentTest?.state === "failed") for (const node of nodes) console.log(node.describe(6000));
    await Promise.all(nodes.splice(0).map((node) => node.kill()));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function imagesFor(label: string): { primary: string[]; secondary: string[] } {
    const primary = ["vda", "vdb"].map((disk) => join(dir, `${label}-primary-${disk}.img`));
    const secondary = ["vda", "vdb"].map((disk) => join(dir, `${label}-secondary-${disk}.img`));
    copyFileSync(join(dir, "template-vda.img"), primary[0]!);
    copyFileSync(join(dir, "template-vdb.img"), primary[1]!);
    // The secondary starts with empty disks of the right size: the initial sync copies them.
    for (const [i, path] of secondary.entries()) {
      writeFileSync(path, "");
      truncateSync(path, i === 0 ? FS_DISK_BYTES : RAW_DISK_BYTES);
    }
    return { primary, secondary };
  }

  async function startPair(mode: "logging-replay" | "dirty-block-copy", label: string) {
    const images = imagesFor(label);
    const secretFile = join(dir, "secret");
    const secondary = new NodeProcess({ role: "secondary", disks: images.secondary, mode, secretFile, peerTimeoutMs: 2000 });
    nodes.push(secondary);
    const url = await secondary.listeningUrl(60_000);
    expect(url).to.match(/^ws:\/\/127\.0\.0\.1:\d+/);
    const primary = new NodeProcess({ role: "primary", disks: images.primary, mode, secretFile, snapshotPath, connect: url, peerTimeoutMs: 5000 });
    nodes.push(primary);
    await primary.waitForState("protected", 120_000);
    await secondary.waitForState("replicating", 10_000);
    return { primary, secondary, images, url };
  }

  for (const mode of ["logging-replay", "dirty-block-copy"] as const) {
    it(`${mode}: the secondary takes over after SIGKILL with every synced file`, async function () {
      const { primary, secondary, images } = await startPair(mode, mode);

      const sums = new Map<string, string>();
      for (let i = 0; i < 3; i++) {
        const result = await primary.exec(`dd if=/dev/urandom of=/mnt/f${i} bs=4k count=${32 * (i + 1)} 2>/dev/null && sync && sha256sum /mnt/f${i}`);
        expect(result.exitCode, result.output).to.equal(0);
        sums.set(`f${i}`, result.output.split(" ")[0]!);
      }
      // A deterministic raw write: both modes must leave the same bytes on vdb.
      const raw = await primary.exec("seq 1 200000 > /tmp/det && dd if=/tmp/det of=/dev/vdb bs=64k oflag=direct conv=notrunc 2>/dev/null && sync");
      expect(raw.exitCode, raw.output).to.equal(0);
      const metrics = await primary.request<{ syncs: number; diskSyncBytes: number; bytes: Record<string, number> }>({ type: "metrics" });
      expect(metrics.syncs).to.be.greaterThan(0);

      await primary.kill("SIGKILL");
      await secondary.waitForState("active", 30_000);
      expect((await secondary.exec("echo alive-after-takeover")).output).to.equal("alive-after-takeover\n");
      for (const [name, sum] of sums) {
        const check = await secondary.exec(`sha256sum /mnt/${name}`);
        expect(check.output.split(" ")[0], name).to.equal(sum);
      }
      expect((await secondary.exec("umount /mnt && sync")).exitCode).to.equal(0);
      execFileSync("e2fsck", ["-fn", images.secondary[0]!], { stdio: "pipe" }); // throws unless clean
      rawDiskDigests.set(mode, createHash("sha256").update(readFileSync(images.secondary[1]!)).digest("hex"));
    });
  }

  it("both disk modes leave byte-identical raw-disk contents", function () {
    if (rawDiskDigests.size < 2) this.skip();
    expect(rawDiskDigests.get("logging-replay")).to.equal(rawDiskDigests.get("dirty-block-copy"));
  });

  it("the secondary refuses a peer with a wrong secret and keeps waiting", async function () {
    const { secondary } = await (async () => {
      const images = imagesFor("auth");
      const node = new NodeProcess({ role: "secondary", disks: images.secondary, mode: "logging-replay", secretFile: join(dir, "secret") });
      nodes.push(node);
      return { secondary: node };
    })();
    const url = await secondary.listeningUrl(60_000);
    const transport = await connectReplication(url);
    const error = await handshake(transport, "primary", new TextEncoder().encode("not-the-secret-at-all-0000")).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error?.message).to.match(/secret/i);
    const deadline = Date.now() + 5000;
    while (!/refused a peer/.test(secondary.stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(secondary.stderr).to.match(/refused a peer/);
    expect(secondary.states).to.deep.equal([]);
  });
});
