// State without memory on the default guest, booted once for this file: a second machine
// continues the guest from RAM pages plus CPU and device state, and deltas between captures.
import { createHash } from "node:crypto";
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { MachineStateError, SnapshotError, StateDeltaError } from "../errors.ts";
import { whilePaused } from "../paused.ts";
import { DirtyPageTracker, applyPages } from "../memory/index.ts";
import {
  applyDelta,
  captureMemorylessState,
  decodeMemorylessState,
  encodeDelta,
  encodeMemorylessState,
  restoreMemorylessState,
} from "../state/index.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ramHash = (machine: Machine) => createHash("sha256").update(machine.ram.bytes).digest("hex");

describe("memory-less state", function () {
  let machine: Machine;
  const others: Machine[] = [];

  before(async function () {
    machine = new Machine(defaultGuest());
    await machine.boot();
  });

  after(async () => {
    await Promise.all([machine?.destroy(), ...others.map((m) => m.destroy())]);
  });

  async function counter(on: Machine): Promise<number> {
    const { output, exitCode } = await on.exec("cat /tmp/count");
    expect(exitCode).to.equal(0);
    return Number(output.trim());
  }

  it("lets a second machine continue the guest from RAM pages plus a state rebuilt from a delta", async () => {
    await machine.exec("(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) >/dev/null 2>&1 &");
    await sleep(1000);
    expect(await counter(machine)).to.be.at.least(3);

    // The secondary stays blank and takes epochs of pages; its state is rebuilt from deltas.
    const secondary = await Machine.createBlank(defaultGuest());
    others.push(secondary);
    const tracker = DirtyPageTracker.create(machine);
    const first = await whilePaused(machine, () => ({ pages: tracker.collect(), state: encodeMemorylessState(captureMemorylessState(machine)) }));
    applyPages(secondary, first.pages);

    await sleep(300);
    const beforeCapture = await counter(machine);
    const second = await whilePaused(machine, () => {
      const epoch = { pages: tracker.collect(), state: encodeMemorylessState(captureMemorylessState(machine)), ramHash: ramHash(machine) };
      return epoch;
    });
    tracker.dispose();
    expect(second.pages.indices.length).to.be.lessThan(first.pages.indices.length / 4);
    applyPages(secondary, second.pages);
    expect(ramHash(secondary)).to.equal(second.ramHash);
    const rebuilt = applyDelta(first.state, encodeDelta(first.state, second.state));
    restoreMemorylessState(secondary, decodeMemorylessState(rebuilt));
    expect(secondary.state).to.equal("paused");
    secondary.run();

    const carriedOn = await counter(secondary);
    expect(carriedOn).to.be.at.least(beforeCapture).and.lessThan(beforeCapture + 30);
    await sleep(1000);
    expect(await counter(secondary)).to.be.greaterThan(carriedOn);
    expect((await secondary.exec("echo twin")).output).to.equal("twin\n");
    // The original keeps running on its own.
    expect(await counter(machine)).to.be.at.least(beforeCapture);
  });

  it("round-trips a delta between two captures 100 ms apart, and refuses the wrong base", async () => {
    const a = await whilePaused(machine, () => encodeMemorylessState(captureMemorylessState(machine)));
    await sleep(100);
    const b = await whilePaused(machine, () => encodeMemorylessState(captureMemorylessState(machine)));
    expect(b).to.not.deep.equal(a);

    const delta = encodeDelta(a, b);
    expect(delta.length).to.be.lessThan(b.length / 20);
    expect(applyDelta(a, delta)).to.deep.equal(b);
    expect(() => applyDelta(b, delta)).to.throw(StateDeltaError, /made against base [0-9a-f]{16} \(\d+ bytes\), given base/);

    const damaged = delta.slice();
    damaged[damaged.length - 1]! ^= 0xff;
    expect(() => applyDelta(a, damaged)).to.throw(StateDeltaError, /damaged/);
    expect(() => applyDelta(a, delta.subarray(0, delta.length - 10))).to.throw(StateDeltaError, /truncated/);
    expect(() => applyDelta(a, new Uint8Array(64))).to.throw(StateDeltaError, /bad magic/);
    // Lengths that differ are fine in either direction.
    expect(applyDelta(a, encodeDelta(a, b.subarray(0, 1000)))).to.deep.equal(b.subarray(0, 1000));
    expect(applyDelta(a.subarray(0, 999), encodeDelta(a.subarray(0, 999), b))).to.deep.equal(b);
  });

  it("refuses states that do not fit the machine, and machines that are not blank", async () => {
    const bytes = await whilePaused(machine, () => encodeMemorylessState(captureMemorylessState(machine)));
    const state = decodeMemorylessState(bytes);
    const small = await Machine.createBlank({ ...defaultGuest(), memoryMiB: 64 });
    others.push(small);
    expect(() => restoreMemorylessState(small, state)).to.throw(SnapshotError, /memoryMiB 128, the machine has 64/);
    expect(() => restoreMemorylessState(machine, state)).to.throw(MachineStateError, /expected blank/);
    expect(() => decodeMemorylessState(bytes.subarray(0, bytes.length - 1))).to.throw(SnapshotError, /truncated or damaged/);
    expect(() => decodeMemorylessState(new Uint8Array(32))).to.throw(SnapshotError, /bad magic/);
    expect(() => captureMemorylessState(machine)).to.throw(MachineStateError, /running/);
  });
});
