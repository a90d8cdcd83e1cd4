// `twinvm gateway` as a user runs it: --help, option errors (exit 2, naming the option),
// a host port in use (exit 2, naming the port), passt missing (exit 1, naming the Debian
// package), and a real run: JSON events as a node attaches, then SIGTERM stops it with
// exit 0 and no passt left behind.
import { expect } from "chai";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createNodeUplink } from "../network/node-uplink.ts";
import { LAUNCHER, eventually, twinvm } from "./cli-helpers.ts";

const SECRET = "cli gateway test secret, 16+ bytes";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("twinvm gateway", function () {
  this.timeout(60_000);
  let dir: string;
  let secretFile: string;
  before(function () {
    dir = mkdtempSync(join(tmpdir(), "twinvm-gateway-cli-"));
    secretFile = join(dir, "secret");
    writeFileSync(secretFile, SECRET, { mode: 0o600 });
  });
  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it("prints its help and exits 0", async function () {
    const run = await twinvm(["gateway", "--help"]);
    expect(run.code).to.equal(0);
    for (const option of ["--listen", "--secret-file", "--forward", "--allow-non-loopback", "--dns", "--json", "--no-status-line"])
      expect(run.stdout).to.include(option);
  });

  it("exits 2 naming a bad option, a bad forward, a non-loopback listen address or a port in use", async function () {
    const cases: Array<[string[], RegExp]> = [
      [["gateway", "--secret-file", secretFile], /--listen is required/],
      [["gateway", "--listen", "0", "--secret-file", secretFile, "--forward", "80"], /--forward "80": expected \[HOST:\]PORT:GUESTPORT/],
      [["gateway", "--listen", "10.1.2.3:0", "--secret-file", secretFile], /10\.1\.2\.3 is not a loopback address; add --allow-non-loopback/],
    ];
    const runs = await Promise.all(cases.map(([args]) => twinvm(args)));
    for (const [i, [args, message]] of cases.entries()) {
      expect(runs[i]!.code, args.join(" ")).to.equal(2);
      expect(runs[i]!.stderr, args.join(" ")).to.match(message);
    }
    const taken: Server = await new Promise((resolve) => {
      const server = createServer().listen({ host: "127.0.0.1", port: 0 }, () => resolve(server));
    });
    try {
      const port = (taken.address() as { port: number }).port;
      const [forward, listen] = await Promise.all([
        twinvm(["gateway", "--listen", "0", "--secret-file", secretFile, "--forward", `${port}:80`]),
        twinvm(["gateway", "--listen", String(port), "--secret-file", secretFile]),
      ]);
      expect(forward.code).to.equal(2);
      expect(forward.stderr).to.include(`host port 127.0.0.1:${port} (forwarded to guest port 80) is in use by another program`);
      expect(listen.code).to.equal(2);
      expect(listen.stderr).to.match(new RegExp(`--listen: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    } finally {
      taken.close();
    }
  });

  it("exits 1 naming the Debian package when passt is not installed", async function () {
    const run = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [LAUNCHER, "gateway", "--listen", "0", "--secret-file", secretFile], {
        env: { ...process.env, PATH: "/nonexistent" },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      child.on("exit", (code) => resolve({ code, stderr }));
    });
    expect(run.code).to.equal(1);
    expect(run.stderr).to.match(/passt not found on PATH: .*install the Debian package passt/);
  });

  it("runs: reports the listening address and picked ports, a node attaching, and stops on SIGTERM leaving no process", async function () {
    const child = spawn(process.execPath, [LAUNCHER, "gateway", "--listen", "127.0.0.1:0", "--secret-file", secretFile, "--forward", "0:8080", "--json"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    try {
      await eventually(() => stdout, /"type":"listening"/, 30_000, `the listening event (stderr: ${stderr})`);
      const listening = JSON.parse(stdout.split("\n")[0]!) as {
        url: string;
        passtPid: number;
        forwards: Array<{ host: string; port: number; guestPort: number }>;
      };
      expect(listening.forwards).to.have.length(1);
      expect(listening.forwards[0]).to.deep.include({ host: "127.0.0.1", guestPort: 8080 });
      expect(listening.forwards[0]!.port).to.be.greaterThan(0);
      expect(isAlive(listening.passtPid)).to.equal(true);

      const node = createNodeUplink({ url: listening.url, secret: new TextEncoder().encode(SECRET), nodeId: "cli-test" });
      node.attach(3, 0);
      await eventually(() => stdout, /"type":"attached","epoch":3/, 10_000, "the attached event");
      node.close();

      child.kill("SIGTERM");
      expect(await exited).to.equal(0);
      expect(stdout).to.match(/"type":"stopped","reason":"SIGTERM"/);
      expect(isAlive(listening.passtPid), "passt stopped with the gateway").to.equal(false);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
