// The `twinvm` command as a user runs it: a child process with piped stdin.
// Help and usage errors are cheap; one `twinvm pair` run (one boot) covers the
// console, `status --json` against running nodes, the takeover after the
// documented kill key with the console continuing on the secondary, `exec` over
// the control socket, and re-protection by a fresh secondary.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import type { NodeStatus } from "../control-socket.ts";
import type { NodeInspection } from "../control-request.ts";
import { LAUNCHER, eventually, twinvm } from "./cli-helpers.ts";

describe("twinvm command line", function () {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "twinvm-cli-"));
    writeFileSync(join(dir, "secret"), "cli-test-secret-0123456789abcdef", { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe("--help and usage errors", function () {
    const expectedOptions: Record<string, string[]> = {
      run: ["--memory", "--images", "--disk", "--forward"],
      pair: [
        "--mode",
        "--disk",
        "--disk-size",
        "--secondary-disk",
        "--run-dir",
        "--memory",
        "--images",
        "--snapshot",
        "--no-reprotect",
        "--no-arbiter",
        "--sync-mode",
        "--sync-interval-ms",
        "--forward",
        "--json",
        "--guest-overlay",
        "--guest-startup",
      ],
      primary: [
        "--connect",
        "--disk",
        "--mode",
        "--secret-file",
        "--snapshot",
        "--run-dir",
        "--memory",
        "--sync-mode",
        "--sync-interval-ms",
        "--forward",
        "--gateway",
        "--witness",
      ],
      secondary: ["--listen", "--allow-non-loopback", "--disk", "--secret-file", "--run-dir", "--no-takeover", "--gateway", "--witness"],
      status: ["--json", "--node", "--run-dir"],
      promote: ["--node", "--run-dir"],
      exec: ["--node", "--timeout", "--json", "--run-dir"],
      verify: ["--node", "--repair", "--json", "--run-dir"],
      migrate: ["--to", "--node", "--stop-and-copy", "--json", "--run-dir"],
      gateway: ["--listen", "--secret-file", "--forward", "--allow-non-loopback", "--dns", "--witness", "--json"],
      witness: ["--listen", "--secret-file", "--allow-non-loopback", "--lease-ms", "--json"],
      inspect: ["--node", "--run-dir"],
    };

    it("every subcommand's --help exits 0 and lists its options", async function () {
      const results = await Promise.all(Object.keys(expectedOptions).map((name) => twinvm([name, "--help"])));
      for (const [i, [name, options]] of Object.entries(expectedOptions).entries()) {
        const result = results[i]!;
        expect(result.code, `${name}: ${result.stderr}`).to.equal(0);
        expect(result.stdout).to.contain(`Usage: twinvm ${name}`);
        for (const option of options) expect(result.stdout, `${name} --help`).to.contain(option);
      }
    });

    it("names the bad option, value or file and exits non-zero", async function () {
      const secret = join(dir, "secret");
      const [unknown, badMode, missingDisk, missingConnect, exposed, badSize, noSecondary, badInterval] = await Promise.all([
        twinvm(["pair", "--bogus"]),
        twinvm(["primary", "--mode", "fast", "--connect", "ws://127.0.0.1:9"]),
        twinvm(["primary", "--connect", "ws://127.0.0.1:9", "--secret-file", secret, "--disk", join(dir, "no-such.img")]),
        twinvm(["primary", "--secret-file", secret]),
        twinvm(["secondary", "--listen", "0.0.0.0:7000", "--secret-file", secret]),
        twinvm(["pair", "--disk-size", "lots"]),
        twinvm(["promote", "--run-dir", join(dir, "empty-run-dir")]),
        twinvm(["pair", "--sync-interval-ms", "0"]),
      ]);
      expect(unknown.code).to.equal(2);
      expect(unknown.stderr).to.contain("--bogus");
      expect(badMode.code).to.equal(2);
      expect(badMode.stderr).to.match(/--mode: .*logging-replay.*"fast"/);
      expect(missingDisk.code).to.equal(1);
      expect(missingDisk.stderr).to.contain(`--disk ${join(dir, "no-such.img")}: no such file`);
      expect(missingConnect.code).to.equal(2);
      expect(missingConnect.stderr).to.contain("--connect is required");
      expect(exposed.code).to.equal(2);
      expect(exposed.stderr).to.contain("--allow-non-loopback");
      expect(badSize.code).to.equal(2);
      expect(badSize.stderr).to.contain("--disk-size");
      expect(noSecondary.code).to.equal(1);
      expect(noSecondary.stderr).to.contain("no running secondary");
      expect(badInterval.code).to.equal(2);
      expect(badInterval.stderr).to.contain('--sync-interval-ms: expected a whole number of milliseconds from 1 to 10000, got "0"');
    });
  });

  describe("twinvm pair with piped stdin", function () {
    let pair: ChildProcessWithoutNullStreams | undefined;
    let stdout = "";
    let stderr = "";

    afterEach(() => {
      if (pair && pair.exitCode === null) pair.kill("SIGTERM");
    });

    it("boots, syncs, answers, reports status, and keeps answering after the primary is killed", async function () {
      this.timeout(150_000);
      const runDir = join(dir, "run");
      pair = spawn(process.execPath, [LAUNCHER, "pair", "--run-dir", runDir, "--disk-size", "8M", "--no-status-line"]);
      pair.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
      pair.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => pair!.on("exit", resolve));

      pair.on("exit", (code) => (stderr += `\n[twinvm pair exited with ${code}]`));
      await eventually(() => stderr, /console attached|twinvm pair exited/, 120_000, "attached console");
      expect(stderr).to.contain("console attached");
      expect(stderr).to.match(/guest booted in [\d.]+ s/);
      expect(stderr).to.match(/initial sync done/);
      // The progress line between the two: the primary answers its metrics while it syncs.
      expect(stderr).to.match(/twinvm: initial sync: [\d.]+ (B|KiB|MiB) sent \(~\d+% of [\d.]+ MiB RAM\+disks\)/);
      pair.stdin.write("uname -r\n");
      await eventually(() => stdout, /6\.1\.0-\d+-686/, 20_000, "uname -r answer from the primary");

      expect(statSync(join(runDir, "pair-primary.sock")).mode & 0o777).to.equal(0o600);
      const status = await twinvm(["status", "--json", "--run-dir", runDir, "--node", "pair-primary"]);
      expect(status.code, status.stderr).to.equal(0);
      const primary = JSON.parse(status.stdout) as NodeStatus;
      expect(primary).to.include({ name: "pair-primary", role: "primary" });
      expect(primary.metrics?.state).to.equal("protected");
      expect(primary.metrics?.syncs).to.be.greaterThan(0);
      expect(primary.metrics?.initialSync?.bytes).to.be.greaterThan(0);
      const all = JSON.parse((await twinvm(["status", "--json", "--run-dir", runDir])).stdout) as NodeStatus[];
      expect(all.map((s) => `${s.name}:${s.metrics?.state}`)).to.deep.equal(["pair-primary:protected", "pair-secondary:replicating"]);

      pair.stdin.write("\x1dk\n"); // Ctrl-] k: SIGKILL the primary
      await eventually(() => stderr, /secondary: active/, 30_000, "takeover");
      pair.stdin.write("echo answered-by-$((6*7))\n");
      await eventually(() => stdout, /answered-by-42/, 20_000, "an answer from the secondary");
      const after = JSON.parse((await twinvm(["status", "--json", "--run-dir", runDir, "--node", "pair-secondary"])).stdout) as NodeStatus;
      expect(after.role).to.equal("primary");
      expect(after.runsGuest).to.equal(true);
      expect(after.metrics?.failoverMs ?? after.metrics?.initialSync).to.not.equal(undefined);

      // Over the control socket: the one node that runs the guest answers.
      const exec = await twinvm(["exec", "--run-dir", runDir, "--", "echo", "via-control-$((2*21));", "false"]);
      expect(exec.stdout, exec.stderr).to.equal("via-control-42\n");
      expect(exec.code).to.equal(1);
      const json = await twinvm(["exec", "--json", "--node", "pair-secondary", "--run-dir", runDir, "--", "uname", "-m"]);
      expect(JSON.parse(json.stdout)).to.deep.equal({ output: "i686\n", exitCode: 0 });
      // What the survivor's guest is doing, for a guest that would not answer.
      const inspect = await twinvm(["inspect", "--run-dir", runDir]);
      expect(inspect.code, inspect.stderr).to.equal(0);
      const inspection = JSON.parse(inspect.stdout) as NodeInspection;
      expect(inspection.name).to.equal("pair-secondary");
      expect(inspection.machine?.state).to.equal("running");
      expect(inspection.machine?.devices["virtio-blk:vda"]).to.include.keys("isr", "queues", "inFlight", "intx");
      // The pair heals: a fresh secondary protects the survivor's guest.
      await eventually(() => stderr, /pair-secondary is protected by pair-secondary-2/, 120_000, "re-protection");

      pair.stdin.end();
      expect(await exited, stderr).to.equal(0);
      expect(stderr).to.contain("twinvm: stopped");
    });
  });
});
