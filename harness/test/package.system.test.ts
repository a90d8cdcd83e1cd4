// The package as a user gets it: `npm pack` (which builds dist/ through prepack), the
// tarball installed into an empty project offline (from the tarball and the local
// npm cache, pinned by a lockfile made from ours), then, in that project and with no
// TypeScript loader installed: the CLI's --help, a type-check of a file that uses the
// test API, the browser entry's imports, and the example test file run with
// node:test against the real guest (start, write, kill the primary, verify, stop).
// Nothing the example started may be left running.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], cwd: string, timeoutMs = 120_000): Promise<Ran> {
  return new Promise((resolvePromise) => {
    execFile(
      command,
      args,
      { cwd, timeout: timeoutMs, maxBuffer: 64 << 20, env: { ...process.env, npm_config_update_notifier: "false" } },
      (error, stdout, stderr) => {
        resolvePromise({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr: stderr || (error?.message ?? "") });
      },
    );
  });
}

interface LockPackage {
  version?: string;
  resolved?: string;
  integrity?: string;
  dependencies?: Record<string, string>;
  dev?: boolean;
  [key: string]: unknown;
}

/** A lockfile for a project that depends only on the tarball: its runtime dependencies as our lockfile pins them. */
function consumerLockfile(tarball: string): object {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, LockPackage> };
  const root = lock.packages[""]!;
  const integrity = `sha512-${createHash("sha512").update(readFileSync(tarball)).digest("base64")}`;
  const packages: Record<string, LockPackage> = {
    "": { name: "consumer", dependencies: { twinvm: `file:${tarball}` } },
    "node_modules/twinvm": {
      version: root.version!,
      resolved: `file:${tarball}`,
      integrity,
      dependencies: root.dependencies!,
      bin: root.bin,
      engines: root.engines,
    },
  };
  const todo = Object.keys(root.dependencies ?? {});
  while (todo.length > 0) {
    const name = todo.pop()!;
    const key = `node_modules/${name}`;
    if (packages[key] !== undefined) continue;
    const { dev: _, ...entry } = lock.packages[key]!;
    packages[key] = entry;
    todo.push(...Object.keys(entry.dependencies ?? {}));
  }
  return { name: "consumer", lockfileVersion: 3, requires: true, packages };
}

/** Relative imports reachable from `entry`, and the bare (package or node:) specifiers among them. */
function importGraph(entry: string): { files: number; external: string[] } {
  const seen = new Set<string>();
  const external = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const code = readFileSync(file, "utf8").replace(/\/\/.*$/gm, "");
    for (const match of code.matchAll(/(?:^|[;\s])(?:import|export)\s[^;]*?from\s*"([^"]+)"|import\(\s*"([^"]+)"\s*\)/gm)) {
      const specifier = (match[1] ?? match[2])!;
      if (specifier.startsWith(".")) visit(resolve(dirname(file), specifier));
      else external.add(specifier);
    }
  };
  visit(entry);
  return { files: seen.size, external: [...external].sort() };
}

/** Processes whose command line mentions `text` (other than this one). */
function processesMentioning(text: string): string[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid)
    .flatMap((pid) => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
        return cmdline.includes(text) ? [`${pid}: ${cmdline}`] : [];
      } catch {
        return [];
      }
    });
}

describe("the npm package, installed into an empty project", function () {
  this.timeout(10 * 60_000);
  let dir: string;
  let project: string;
  let tarball: string;

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), "twinvm-package-"));
    const packed = await run("npm", ["pack", "--pack-destination", dir, "--json"], ROOT, 300_000);
    expect(packed.code, packed.stderr).to.equal(0);
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as { filename: string; files: { path: string }[] }[];
    tarball = join(dir, info!.filename);
    const files = info!.files.map((file) => file.path);
    // Compiled code and declarations, the guest, the example; no TypeScript sources, tests or build scripts.
    expect(files).to.include.members([
      "dist/index.js",
      "dist/index.d.ts",
      "dist/browser.js",
      "dist/harness/testing/index.js",
      "dist/harness/twinvm.js",
      "dist/images/initramfs.cpio.gz",
      "dist/images/vmlinuz",
      "dist/images/bios.bin",
      "examples/failover.test.mjs",
    ]);
    expect(files.filter((path) => /\.ts$/.test(path) && !path.endsWith(".d.ts"))).to.deep.equal([]);
    expect(files.filter((path) => /\/test\//.test(path))).to.deep.equal([]);

    project = join(dir, "project");
    rmSync(project, { recursive: true, force: true });
    await run("mkdir", ["-p", project], dir);
    writeFileSync(
      join(project, "package.json"),
      JSON.stringify({ name: "consumer", private: true, type: "module", dependencies: { twinvm: `file:${tarball}` } }, null, 2),
    );
    writeFileSync(join(project, "package-lock.json"), JSON.stringify(consumerLockfile(tarball), null, 2));
    const installed = await run("npm", ["ci", "--offline", "--no-audit", "--no-fund"], project, 300_000);
    expect(installed.code, installed.stderr).to.equal(0);
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("installs without a TypeScript loader, and its bin runs the compiled CLI", async function () {
    expect(existsSync(join(project, "node_modules/tsx"))).to.equal(false);
    expect(existsSync(join(project, "node_modules/typescript"))).to.equal(false);
    const help = await run(join(project, "node_modules/.bin/twinvm"), ["--help"], project);
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout).to.match(/^Usage: twinvm <command>/);
    for (const command of ["pair", "exec", "status"]) {
      const sub = await run(join(project, "node_modules/.bin/twinvm"), [command, "--help"], project);
      expect(sub.code, sub.stderr).to.equal(0);
      expect(sub.stdout).to.contain(`Usage: twinvm ${command}`);
    }
  });

  it("resolves every export, and the browser entry imports no Node module", async function () {
    const script = `
      const entries = ["twinvm", "twinvm/browser", "twinvm/testing", "twinvm/cli"];
      for (const entry of entries) { const m = await import(entry); if (Object.keys(m).length === 0) throw new Error(entry + " exports nothing"); }
      const { startPair, createGuestTemplate } = await import("twinvm/testing");
      const { main } = await import("twinvm/cli");
      const { Machine, PrimaryEngine } = await import("twinvm");
      if (![startPair, createGuestTemplate, main, Machine, PrimaryEngine].every((f) => typeof f === "function")) throw new Error("missing export");
      console.log(import.meta.resolve("twinvm/images/manifest.json"));`;
    const resolved = await run(process.execPath, ["--input-type=module", "-e", script], project);
    expect(resolved.code, resolved.stderr).to.equal(0);
    expect(resolved.stdout.trim()).to.match(/node_modules\/twinvm\/dist\/images\/manifest\.json$/);
    const graph = importGraph(join(project, "node_modules/twinvm/dist/browser.js"));
    expect(graph.files).to.be.greaterThan(20);
    expect(graph.external, "bare imports of the browser entry").to.deep.equal(["ajv", "v86"]);
  });

  it("type-checks a test file written against the test API", async function () {
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, skipLibCheck: true, types: [] },
      }),
    );
    writeFileSync(
      join(project, "check.ts"),
      `import { startPair, type Pair, type PairOptions, type PairEvent } from "twinvm/testing";
       const options: PairOptions = { memoryMiB: 128, mode: "logging-replay", onSecondaryLoss: "stall", overlay: { files: { "/etc/app.conf": "x=1\\n" }, startup: "true" } };
       export async function use(): Promise<number> {
         const pair: Pair = await startPair(options, (event: PairEvent) => void event.type);
         const { exitCode } = await pair.exec("true");
         await pair.cutLink("silent");
         const node = await pair.waitForTakeover({ timeoutMs: 1000 });
         await pair.stop({ keepFiles: false });
         return exitCode + node.name.length;
       }
       // @ts-expect-error: not a disk mode
       export const bad: PairOptions = { mode: "fast" };\n`,
    );
    const checked = await run(process.execPath, [join(ROOT, "node_modules/typescript-native/bin/tsc"), "-p", project], project);
    expect(checked.code, checked.stdout + checked.stderr).to.equal(0);
  });

  it("runs the example test file against the real guest and leaves nothing running", async function () {
    const example = join(project, "failover.test.mjs");
    writeFileSync(example, readFileSync(join(project, "node_modules/twinvm/examples/failover.test.mjs")));
    const tested = await run(process.execPath, ["--test", "--test-reporter=tap", example], project, 9 * 60_000);
    expect(tested.code, `${tested.stdout}\n${tested.stderr}`).to.equal(0);
    expect(tested.stdout).to.match(/# pass 1/);
    // The example's step timings (node:test diagnostics), for the record.
    for (const line of tested.stdout.split("\n").filter((l) => /^\s*# .*: [\d.]+ s$/.test(l))) process.stdout.write(`      ${line.trim()}\n`);
    expect(processesMentioning(project)).to.deep.equal([]);
    expect(processesMentioning("node_modules/twinvm/dist/harness/replica-node.js")).to.deep.equal([]);
  });
});
