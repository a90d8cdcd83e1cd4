// `twinvm demo` as a user runs it (help, bad options, a missing build, serving and
// stopping), and the demo's static server on its own (types, 404s, no way out of its folder).
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { serveDemo, type DemoServer } from "../demo/server.ts";

const LAUNCHER = fileURLToPath(new URL("../bin/twinvm.js", import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `twinvm demo ...`; `whileRunning` gets the first stdout line and may stop the process. */
function demo(args: string[], whileRunning?: (firstLine: string, stop: () => void) => Promise<void>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LAUNCHER, "demo", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const output = { stdout: "", stderr: "" };
    let started = false;
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.stderr.on("data", (chunk: Buffer) => (output.stderr += chunk.toString()));
    child.stdout.on("data", (chunk: Buffer) => {
      output.stdout += chunk.toString();
      if (!started && whileRunning !== undefined && output.stdout.includes("\n")) {
        started = true;
        whileRunning(output.stdout.split("\n")[0]!, () => child.kill("SIGINT")).catch(reject);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, ...output });
    });
  });
}

describe("twinvm demo", function () {
  this.timeout(30_000);
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "twinvm-demo-"));
    mkdirSync(join(dir, "guest"));
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>demo</title>");
    writeFileSync(join(dir, "page.js"), "export {};");
    writeFileSync(join(dir, "guest", "v86.wasm"), new Uint8Array([0, 0x61, 0x73, 0x6d]));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("--help exits 0 and lists the options", async () => {
    const run = await demo(["--help"]);
    expect(run.code).to.equal(0);
    expect(run.stdout).to.contain("Usage: twinvm demo");
    for (const option of ["--port", "--host", "--no-build", "--dir"]) expect(run.stdout).to.contain(option);
  });

  it("names a bad option or value (exit 2) and a folder without a build (exit 1)", async () => {
    const [bogus, port, missing] = await Promise.all([
      demo(["--bogus"]),
      demo(["--port", "70000", "--no-build"]),
      demo(["--no-build", "--dir", join(dir, "nope")]),
    ]);
    expect(bogus.code).to.equal(2);
    expect(bogus.stderr).to.match(/Unknown option '--bogus'/);
    expect(port.code).to.equal(2);
    expect(port.stderr).to.contain('--port: expected a port from 0 to 65535, got "70000"');
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.contain(`--no-build: ${join(dir, "nope")} holds no build (run npm run build:web first)`);
  });

  it("serves a build on loopback, prints the URL, and stops on Ctrl-C with exit 0", async () => {
    let page = "";
    const run = await demo(["--no-build", "--dir", dir, "--port", "0"], async (line, stop) => {
      const url = /open (http:\/\/127\.0\.0\.1:\d+\/) in your browser/.exec(line)?.[1];
      expect(url, line).to.be.a("string");
      page = await (await fetch(url!)).text();
      stop();
    });
    expect(run.code, run.stderr).to.equal(0);
    expect(page).to.contain("<title>demo</title>");
  });

  describe("static server", () => {
    let server: DemoServer;
    before(async () => {
      server = await serveDemo(dir);
    });
    after(() => server.close());

    it("serves files with their content types, and index.html for the folder", async () => {
      const [index, script, wasm] = await Promise.all(["", "page.js", "guest/v86.wasm"].map((path) => fetch(server.url + path)));
      expect(index!.headers.get("content-type")).to.equal("text/html; charset=utf-8");
      expect(script!.headers.get("content-type")).to.equal("text/javascript; charset=utf-8");
      expect(wasm!.headers.get("content-type")).to.equal("application/wasm");
      expect(new Uint8Array(await wasm!.arrayBuffer())).to.deep.equal(new Uint8Array([0, 0x61, 0x73, 0x6d]));
    });

    it("answers 404 for missing files and for paths that climb out of its folder, 405 for writes", async () => {
      expect((await fetch(server.url + "missing.js")).status).to.equal(404);
      expect((await fetch(server.url + "guest")).status).to.equal(404);
      expect((await fetch(server.url + "..%2f..%2fetc%2fpasswd")).status).to.equal(404);
      expect((await fetch(server.url + "index.html", { method: "POST" })).status).to.equal(405);
    });
  });
});
