// The default guest booted once for this file; later tests restore from it.
import { readFileSync } from "node:fs";
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { DEFAULT_IMAGES_DIR, defaultGuest } from "../node/images.ts";
import { SnapshotError } from "../errors.ts";

const manifest = JSON.parse(readFileSync(DEFAULT_IMAGES_DIR + "manifest.json", "utf8")) as { kernel_release: string };

describe("Machine on the default guest", function () {
  let machine: Machine;
  const restored: Machine[] = [];

  before(async function () {
    machine = new Machine(defaultGuest());
    const { bootMs } = await machine.boot();
    expect(bootMs).to.be.greaterThan(0);
    expect(machine.state).to.equal("running");
  });

  after(async () => {
    await Promise.all([machine?.destroy(), ...restored.map((m) => m.destroy())]);
  });

  it("runs a command and returns the kernel release", async () => {
    const { output, exitCode } = await machine.exec("uname -r");
    expect(exitCode).to.equal(0);
    expect(output.trim()).to.equal(manifest.kernel_release);
  });

  it("reports non-zero exit codes", async () => {
    expect((await machine.exec("false")).exitCode).to.not.equal(0);
    expect((await machine.exec("sh -c 'exit 7'")).exitCode).to.equal(7);
  });

  it("answers a command the shell cannot expand or parse with its error, and the shell lives on", async () => {
    // An interactive shell drops the rest of its line after such errors: without the subshell these never finished.
    const arithmetic = await machine.exec("echo $(( 1 + ))", { timeoutMs: 10_000 });
    expect(arithmetic.exitCode).to.not.equal(0);
    expect(arithmetic.output).to.match(/arithmetic/);
    const syntax = await machine.exec("echo 'unbalanced", { timeoutMs: 10_000 });
    expect(syntax.exitCode).to.not.equal(0);
    expect(syntax.output).to.match(/unterminated|syntax/i);
    expect((await machine.exec("exit 5")).exitCode).to.equal(5);
    await machine.exec("cd /proc");
    expect((await machine.exec('pwd; echo "it\'s $((6*7))"')).output).to.equal("/\nit's 42\n");
  });

  it("returns multi-line output and stderr, free of terminal escapes", async () => {
    const { output, exitCode } = await machine.exec("seq 1 5; ls /nonexistent");
    expect(exitCode).to.not.equal(0);
    expect(output).to.match(/^1\n2\n3\n4\n5\n/);
    expect(output).to.match(/nonexistent/);
    expect(output).to.not.include("\x1b");
    expect(output).to.not.include("\r");
  });

  it("has the modules and tools later work needs", async () => {
    const modules = await machine.exec("cat /proc/modules");
    for (const name of ["virtio_blk", "virtio_pci", "ext4"]) expect(modules.output).to.include(name);
    for (const tool of ["mke2fs", "sha256sum", "sync", "dd", "fio"]) {
      expect((await machine.exec(`command -v ${tool}`)).exitCode, tool).to.equal(0);
    }
    expect((await machine.exec("fio --version")).output).to.match(/^fio-\d/);
  });

  it("pauses between instructions and resumes", async () => {
    await machine.pause();
    expect(machine.state).to.equal("paused");
    expect(machine.emulator.isRunning).to.equal(false);
    const counted = machine.emulator.instructionCounter;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(machine.emulator.instructionCounter).to.equal(counted);
    machine.run();
    expect((await machine.exec("echo back")).output).to.equal("back\n");
    expect(machine.emulator.instructionCounter).to.be.greaterThan(counted);
  });

  it("with eagerYield on (or for a while), ends each slice of a busy guest after a short chunk, and the guest runs on", async () => {
    const cpu = machine.emulator.cpu;
    const mainLoop = cpu.main_loop.bind(cpu);
    let slices = 0;
    cpu.main_loop = () => {
      slices++;
      return mainLoop();
    };
    const busy = (await machine.exec("(while true; do :; done) > /dev/null 2>&1 & echo $!")).output.trim();
    try {
      // Guest instructions per slice, not slices per second: the latter grows as v86's JIT and
      // V8 warm up to the busy loop (measured: 73 slices in 600 ms, then 396 with the same setting).
      const instructionsPerSlice = async (eager: boolean | "for 700 ms") => {
        if (eager === "for 700 ms") machine.eagerYieldFor(700);
        else machine.eagerYield = eager;
        await new Promise((resolve) => setTimeout(resolve, 50)); // the slice running at the switch ends
        slices = 0;
        const counted = machine.emulator.instructionCounter;
        await new Promise((resolve) => setTimeout(resolve, 500));
        return (machine.emulator.instructionCounter - counted) / Math.max(1, slices);
      };
      const before = await instructionsPerSlice(false);
      const eager = await instructionsPerSlice(true);
      const after = await instructionsPerSlice(false);
      // A window of short slices (a restored guest's), then v86's own again.
      const windowed = await instructionsPerSlice("for 700 ms");
      await new Promise((resolve) => setTimeout(resolve, 200)); // the window ends
      const afterWindow = await instructionsPerSlice(false);
      const report = `guest instructions per slice: ${before.toFixed(0)} off, ${eager.toFixed(0)} on, ${after.toFixed(0)} off, ${windowed.toFixed(0)} in a window, ${afterWindow.toFixed(0)} after it`;
      console.log(`      ${report}`);
      // v86 alone runs whole chunks of 100003 instructions until a millisecond is up (at least
      // one a slice, more once warm); eagerly, one chunk of 25k a slice.
      expect(Math.min(before, after, afterWindow), report).to.be.at.least(90_000);
      expect(Math.max(eager, windowed), report).to.be.below(50_000);
      machine.eagerYield = true;
      expect((await machine.exec("echo eager")).output).to.equal("eager\n");
    } finally {
      machine.eagerYield = false;
      cpu.main_loop = mainLoop;
      await machine.exec(`kill ${busy}`);
    }
    expect((await machine.exec("echo calm")).output).to.equal("calm\n");
  });

  it("tells when the guest's CPU halts: often while the guest idles, not while it computes", async () => {
    let halts = 0;
    const haltsWithin = async (ms: number) => {
      halts = 0;
      await new Promise((resolve) => setTimeout(resolve, ms));
      return halts;
    };
    const stop = machine.onHalt(() => {
      halts++;
      expect(machine.emulator.atInstructionBoundary, "called outside the guest's instructions").to.equal(true);
    });
    try {
      const idle = await haltsWithin(500);
      const busy = (await machine.exec("(while true; do :; done) > /dev/null 2>&1 & echo $!")).output.trim();
      let computing: number;
      try {
        await new Promise((resolve) => setTimeout(resolve, 100));
        computing = await haltsWithin(500);
      } finally {
        await machine.exec(`kill ${busy}`);
      }
      const report = `halts in 500 ms: ${idle} idle, ${computing} computing`;
      console.log(`      ${report}`);
      expect(idle, report).to.be.at.least(10);
      expect(computing, report).to.be.below(idle / 4);
      stop();
      expect(await haltsWithin(200), "no calls after unsubscribing").to.equal(0);
    } finally {
      stop();
    }
  });

  it("makes every pause() caller wait for the stop, and survives a run() that races a pause", async () => {
    const first = machine.pause();
    const second = machine.pause(); // returned early before: the CPU was still running
    await second;
    expect(machine.emulator.isRunning).to.equal(false);
    await first;
    // run() right after pause() was asked: the stop lands first, then the guest runs again.
    const pausing = machine.pause();
    machine.run();
    await pausing;
    machine.run();
    expect((await machine.exec("echo raced", { timeoutMs: 20_000 })).output).to.equal("raced\n");
    const again = machine.pause();
    machine.run();
    machine.run();
    await again;
    expect((await machine.exec("echo still", { timeoutMs: 20_000 })).output).to.equal("still\n");
  });

  it("restores a snapshot into a second machine that keeps the guest's files", async () => {
    const content = `snapshot-${Date.now()}`;
    expect((await machine.exec(`echo ${content} > /tmp/marker && sync`)).exitCode).to.equal(0);
    const bytes = await machine.snapshot();
    expect(machine.state).to.equal("running");

    const copy = await Machine.fromSnapshot(bytes, defaultGuest());
    restored.push(copy);
    expect((await copy.exec("cat /tmp/marker")).output).to.equal(`${content}\n`);
    // The copy is a machine of its own: a change there does not reach the original.
    await copy.exec("echo copy-only > /tmp/marker");
    expect((await machine.exec("cat /tmp/marker")).output).to.equal(`${content}\n`);
    expect((await copy.exec("cat /tmp/marker")).output).to.equal("copy-only\n");
  });

  it("refuses damaged snapshots and mismatched configs with a clear error", async () => {
    const bytes = await machine.snapshot();
    const damaged = bytes.slice(0, 100);
    await expectRejection(Machine.fromSnapshot(damaged, defaultGuest()), SnapshotError, /truncated|damaged/);
    await expectRejection(Machine.fromSnapshot(new Uint8Array(64), defaultGuest()), SnapshotError, /not a twinvm snapshot/);
    await expectRejection(Machine.fromSnapshot(bytes, { ...defaultGuest(), memoryMiB: 256 }), SnapshotError, /memoryMiB 128, config asks for 256/);
  });
});

async function expectRejection(promise: Promise<unknown>, type: new (...args: never[]) => Error, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).to.be.instanceOf(type);
  expect((error as Error).message).to.match(message);
}
