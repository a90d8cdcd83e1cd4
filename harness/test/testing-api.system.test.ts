// The test API against the real guest, one boot for the file: a pair booted with a
// guest overlay (a folder with a file and a script, and a start-up command that
// leaves a daemon running) on an ext4 disk; the overlay is in the guest on the
// primary and, after a takeover, on the survivor; the pair heals, and a second
// failover in a row loses nothing either (e2fsck -fn clean in the guest and on the
// host); a real node shrugs off garbage on its control socket; a short link stall
// causes no failover; stop() leaves no process and, on request, the files.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { startPair, type Pair, type PairEvent } from "../testing/index.ts";

// The heartbeat is replaced whole (mv): a takeover can resume the guest between a plain
// redirect's truncation and `date`'s write, and the check below would read an empty file.
const STARTUP =
  "echo started-$((6*7)) > /run/startup-ran; (while true; do date +%s > /tmp/heartbeat.new; mv /tmp/heartbeat.new /tmp/heartbeat; sleep 1; done) &";

function sendRaw(socketPath: string, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    let received = "";
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(data));
    socket.on("data", (chunk: string) => {
      received += chunk;
      if (received.includes("\n")) socket.end();
    });
    socket.on("close", () => resolve(received));
    socket.on("error", reject);
  });
}

describe("test API: overlay, healing pair, faults, cleanup (real guest)", function () {
  this.timeout(6 * 60_000);
  let overlayDir: string;
  let pair: Pair;
  const events: PairEvent[] = [];

  before(async function () {
    overlayDir = mkdtempSync(join(tmpdir(), "twinvm-overlay-test-"));
    mkdirSync(join(overlayDir, "opt/app"), { recursive: true });
    writeFileSync(join(overlayDir, "opt/app/message.txt"), "from the overlay\n");
    writeFileSync(join(overlayDir, "opt/app/hello.sh"), "#!/bin/sh\necho hello-from-overlay $1\n", { mode: 0o755 });
    pair = await startPair({ disks: [{ sizeBytes: 48 << 20 }], overlay: { dir: overlayDir, startup: STARTUP }, peerTimeoutMs: 3000 }, (event) =>
      events.push(event),
    );
  });

  after(async () => {
    await pair?.stop();
    rmSync(overlayDir, { recursive: true, force: true });
  });

  async function run(command: string): Promise<string> {
    const { output, exitCode } = await pair.exec(command, { timeoutMs: 60_000 });
    expect(exitCode, `${command}\n${output}`).to.equal(0);
    return output;
  }

  async function overlayPresent(): Promise<void> {
    expect(await run("cat /opt/app/message.txt")).to.equal("from the overlay\n");
    expect(await run("/opt/app/hello.sh there")).to.equal("hello-from-overlay there\n");
    expect(await run("cat /run/startup-ran")).to.equal("started-42\n");
    // The start-up command's daemon still runs: its heartbeat is fresh.
    expect(await run("echo $(( $(date +%s) - $(cat /tmp/heartbeat) ))").then(Number)).to.be.at.most(5);
  }

  it("runs the overlay's files and start-up command on the primary", async function () {
    expect(pair.isProtected).to.equal(true);
    expect(events.some((e) => e.type === "protected")).to.equal(true);
    await overlayPresent();
    await run("mkfs.ext4 -q /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt");
  });

  it("moves files both ways", async function () {
    const data = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31 + 7) % 256);
    await pair.writeFile("/mnt/first.bin", data);
    await pair.writeFile("/mnt/notes/first.txt", "first failover\n", { mode: 0o640 });
    expect(await run("stat -c %a /mnt/notes/first.txt")).to.equal("640\n");
    expect(Buffer.from(await pair.readFile("/mnt/first.bin")).equals(Buffer.from(data))).to.equal(true);
    await run("sync");
    // Each acknowledged sync is an event (what --json prints), with the guest writes it carried.
    expect(events.some((e) => e.type === "sync" && e.report.writes > 0 && e.report.seq > 0)).to.equal(true);
  });

  it("a link stall shorter than the peer timeout causes no failover", async function () {
    pair.stallLink();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    pair.resumeLink();
    expect(await run("echo still-protected > /mnt/stall.txt && sync && cat /mnt/stall.txt")).to.equal("still-protected\n");
    expect(pair.failovers).to.equal(0);
    expect(pair.isProtected).to.equal(true);
  });

  it("after a takeover the overlay and the files are on the survivor, and a fresh secondary protects it", async function () {
    const killed = await pair.killPrimary();
    const survivor = await pair.waitForTakeover({ timeoutMs: 30_000 });
    expect(survivor.name).to.not.equal(killed.name);
    await overlayPresent();
    expect(await run("cat /mnt/notes/first.txt")).to.equal("first failover\n");
    // The survivor's console goes out directly until its new primary engine holds it (from the
    // start of the initial sync), then only through that engine: output printed meanwhile, once.
    const deadline = Date.now() + 120_000;
    while (survivor.primaryState !== "initial-sync" && !pair.isProtected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await run("echo during-initial-sync-$((40+2))")).to.equal("during-initial-sync-42\n");
    await pair.waitForProtected({ timeoutMs: 180_000 });
    expect(pair.secondary?.name).to.equal("pair-secondary-2");
    // Released output comes in order: once this is out, so is everything printed before it.
    await run("echo after-protection-$((1+1))");
    while (!survivor.transcript.includes("after-protection-2") && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(survivor.transcript.split("during-initial-sync-42").length - 1, survivor.transcript.slice(-2000)).to.equal(1);
    expect(events.map((e) => e.type)).to.include.members(["takeover", "reprotecting", "protected"]);
    expect((await pair.status()).primary).to.include({ name: survivor.name, role: "primary", startedAs: "secondary", runsGuest: true });
  });

  it("a second failover in a row loses nothing; e2fsck -fn is clean in the guest and on the host", async function () {
    await pair.writeFile("/mnt/second.txt", "second failover\n");
    await run("sync");
    const sums = await run("sha256sum /mnt/first.bin /mnt/notes/first.txt /mnt/stall.txt /mnt/second.txt");
    await pair.killPrimary();
    const last = await pair.waitForTakeover({ timeoutMs: 30_000 });
    expect(pair.failovers).to.equal(2);
    expect(last.name).to.equal("pair-secondary-2");
    expect(await run("sha256sum /mnt/first.bin /mnt/notes/first.txt /mnt/stall.txt /mnt/second.txt")).to.equal(sums);
    await overlayPresent();
    await run("umount /mnt");
    const fsck = await pair.exec("e2fsck -fn /dev/vda");
    expect(fsck.exitCode, fsck.output).to.equal(0);
    execFileSync("e2fsck", ["-fn", last.disks[0]!], { stdio: "pipe" }); // throws unless clean
  });

  it("a real node answers garbage on its control socket with errors and keeps serving", async function () {
    const socketPath = join(pair.dir, "run", `${pair.primary.name}.sock`);
    for (const garbage of ["null\n", "[1,2]\n", '"x"\n', "{}\n"]) expect(await sendRaw(socketPath, garbage)).to.match(/"ok":false/);
    expect(await sendRaw(socketPath, '{"type":"status","id":7}\n')).to.match(/"id":7,"ok":true/);
    expect(pair.primary.running).to.equal(true);
  });

  it("stop() ends every node and keeps the files only when asked", async function () {
    const pids = pair.nodes.map((node) => node.pid!);
    const kept = await pair.stop({ keepFiles: true });
    for (const pid of pids) expect(() => process.kill(pid, 0), `pid ${pid}`).to.throw(/ESRCH/);
    expect(kept?.nodes.map((n) => n.name)).to.deep.equal(["pair-secondary", "pair-primary", "pair-secondary-2", "pair-secondary-3"]);
    for (const node of kept!.nodes) expect(existsSync(node.log) && existsSync(node.console), node.name).to.equal(true);
    expect(kept!.nodes[1]!.console).to.satisfy((path: string) => path.endsWith("pair-primary.console"));
    rmSync(kept!.dir, { recursive: true, force: true });
  });
});
