// `twinvm verify` and `twinvm migrate` as a user runs them, against real node
// processes: a primary protected by a secondary; verify finds a sector corrupted in
// the secondary's image file and repairs it; migrate moves the running guest to a
// third node, which then protects it with the released secondary; the source exits 0.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import type { NodeStatus } from "../control-request.ts";
import { LAUNCHER, eventually, twinvm } from "./cli-helpers.ts";

const DISK_BYTES = 16 << 20;
/** Verify and migrate take seconds each, more on a loaded machine. */
const run = (args: string[]) => twinvm(args, 120_000);

/** A long-running node command (`twinvm primary`/`secondary --json`); stdin stays open so its session runs on. */
class NodeCommand {
  readonly child: ChildProcessWithoutNullStreams;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [LAUNCHER, ...args]);
    this.child.stdout.on("data", (chunk: Buffer) => (this.stdout += chunk.toString()));
    this.child.stderr.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on("exit", resolve));
  }

  async listeningUrl(): Promise<string> {
    await eventually(() => this.stdout, /"type":"listening"/, 60_000, "a listening line");
    return (JSON.parse(this.stdout.split("\n").find((line) => line.includes('"listening"'))!) as { url: string }).url;
  }
}

describe("twinvm verify and twinvm migrate (node processes)", function () {
  this.timeout(300_000);
  let dir: string;
  let runDir: string;
  const nodes: NodeCommand[] = [];

  const disk = (name: string) => {
    const path = join(dir, `${name}.img`);
    writeFileSync(path, "");
    truncateSync(path, DISK_BYTES);
    return path;
  };
  const status = async (node: string) => JSON.parse((await run(["status", "--json", "--run-dir", runDir, "--node", node])).stdout) as NodeStatus;
  const secondary = (name: string) => {
    const node = new NodeCommand([
      "secondary",
      "--listen",
      "0",
      "--disk",
      disk(name),
      "--secret-file",
      join(dir, "secret"),
      "--run-dir",
      runDir,
      "--name",
      name,
      "--json",
    ]);
    nodes.push(node);
    return node;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "twinvm-migrate-"));
    runDir = join(dir, "run");
    writeFileSync(join(dir, "secret"), "migrate-test-secret-0123456789ab", { mode: 0o600 });
  });
  after(async () => {
    for (const node of nodes) if (node.child.exitCode === null) node.child.kill("SIGKILL");
    await Promise.all(nodes.map((node) => node.exited));
    rmSync(dir, { recursive: true, force: true });
  });

  it("verify finds and repairs a corrupted sector; migrate moves the guest, which stays protected, and the source exits 0", async function () {
    const standby = secondary("standby");
    const standbyUrl = await standby.listeningUrl();
    const source = new NodeCommand([
      "primary",
      "--connect",
      standbyUrl,
      "--disk",
      disk("source"),
      "--secret-file",
      join(dir, "secret"),
      "--run-dir",
      runDir,
      "--name",
      "source",
      "--json",
    ]);
    nodes.push(source);
    // The console is attached once the first initial sync is done.
    await eventually(() => source.stdout, /"type":"console"/, 120_000, "the primary's console");
    expect((await status("source")).metrics?.state).to.equal("protected");

    const write = await run([
      "exec",
      "--run-dir",
      runDir,
      "--node",
      "source",
      "--",
      "mke2fs -q -F /dev/vda >/dev/null 2>&1 && mount /dev/vda /mnt && dd if=/dev/urandom of=/mnt/f bs=4k count=256 2>/dev/null && sync && md5sum /mnt/f",
    ]);
    expect(write.code, write.stderr).to.equal(0);
    const md5 = write.stdout.split(" ")[0]!;
    expect(md5).to.match(/^[0-9a-f]{32}$/);

    const clean = await run(["verify", "--run-dir", runDir]);
    expect(clean.code, clean.stderr).to.equal(0);
    expect(clean.stdout)
      .to.match(/vda \(16\.0 MiB\): same/)
      .and.match(/the replica matches/);

    // Corrupt one sector of the replica's image file, where the guest is not writing.
    const fd = openSync(join(dir, "standby.img"), "r+");
    writeSync(fd, new Uint8Array(512).fill(0xa5), 0, 512, 12 << 20);
    closeSync(fd);
    const found = await run(["verify", "--run-dir", runDir]);
    expect(found.code, found.stdout + found.stderr).to.equal(1);
    expect(found.stdout).to.contain(`vda (16.0 MiB): differs at ${12 << 20}+`);
    const repaired = await run(["verify", "--repair", "--json", "--run-dir", runDir]);
    expect(repaired.code, repaired.stderr).to.equal(0);
    const report = JSON.parse(repaired.stdout) as { disks: { differing: unknown[]; repaired: { offset: number }[] }[] };
    expect(report.disks[0]!.differing).to.deep.equal([]);
    expect(report.disks[0]!.repaired.map((r) => r.offset)).to.deep.equal([12 << 20]);

    const target = secondary("target");
    const targetUrl = await target.listeningUrl();
    const migrated = await run(["migrate", "--to", targetUrl, "--run-dir", runDir]);
    expect(migrated.code, migrated.stdout + migrated.stderr).to.equal(0);
    console.log(migrated.stdout.trim().replace(/^/gm, "      "));
    expect(migrated.stdout).to.match(/source: the guest runs on target now: .* stopped for \d+ ms/);
    expect(migrated.stdout).to.contain(`target protects the guest with ${standbyUrl}`);
    expect(await source.exited, source.stderr).to.equal(0);

    const after = await status("target");
    expect(after).to.include({ role: "primary", runsGuest: true });
    expect(after.metrics?.state).to.equal("protected");
    const read = await run(["exec", "--run-dir", runDir, "--node", "target", "--", "md5sum /mnt/f"]);
    expect(read.stdout.split(" ")[0], read.stderr).to.equal(md5);
    const again = await run(["verify", "--run-dir", runDir, "--node", "target"]);
    expect(again.code, again.stdout + again.stderr).to.equal(0);
  });
});
