// State without memory on the default guest, booted once for this file: a second machine
// continues the guest from RAM pages plus the state's parts, and the parts that change
// between two captures are few and small.
import { createHash } from "node:crypto";
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { MachineStateError, SnapshotError } from "../errors.ts";
import { DirtyPageTracker, applyPages } from "../memory/index.ts";
import { DEVICES_PART, StatePartTracker, TREE_PART, captureStateParts, restoreStateParts } from "../state/index.ts";
import { alignedJson } from "../state/aligned-json.ts";
import { encodeRunDelta } from "../../replication/protocol/run-delta.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ramHash = (machine: Machine) => createHash("sha256").update(machine.ram.bytes).digest("hex");

describe("state without memory, as parts", function () {
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

  it("lets a second machine continue the guest from pages plus the parts that changed since a first capture", async () => {
    await machine.exec("(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) >/dev/null 2>&1 &");
    await sleep(1000);
    expect(await counter(machine)).to.be.at.least(3);

    // The copy stays blank and takes pages and changed parts, as a secondary does.
    const copy = await Machine.createBlank(defaultGuest());
    others.push(copy);
    const pages = await machine.atNextBoundary(() => DirtyPageTracker.create(machine));
    const parts = new StatePartTracker(machine);
    const first = await machine.atNextBoundary(() => ({ pages: pages.collect(), state: parts.capture() }));
    applyPages(copy, first.pages);
    const held = first.state.changed.map((part) => part.current);
    expect(held).to.have.length(first.state.partCount);

    await sleep(300);
    const beforeCapture = await counter(machine);
    const second = await machine.atNextBoundary(() => ({ pages: pages.collect(), state: parts.capture(), ramHash: ramHash(machine) }));
    pages.dispose();
    expect(second.pages.indices.length).to.be.lessThan(first.pages.indices.length / 4);
    applyPages(copy, second.pages);
    expect(ramHash(copy)).to.equal(second.ramHash);
    for (const part of second.state.changed) held[part.index] = part.current;
    held.length = second.state.partCount;
    restoreStateParts(copy, held);
    expect(copy.state).to.equal("paused");
    copy.run();

    const carriedOn = await counter(copy);
    expect(carriedOn)
      .to.be.at.least(beforeCapture)
      .and.lessThan(beforeCapture + 30);
    await sleep(1000);
    expect(await counter(copy)).to.be.greaterThan(carriedOn);
    expect((await copy.exec("echo twin")).output).to.equal("twin\n");
    // The original keeps running on its own.
    expect(await counter(machine)).to.be.at.least(beforeCapture);
  });

  it("reports few, small changed parts between two captures 100 ms apart (the big device buffers stay put)", async () => {
    const tracker = new StatePartTracker(machine);
    const first = await machine.atNextBoundary(() => tracker.capture());
    const total = first.changed.reduce((n, part) => n + part.current.length, 0);
    await sleep(100);
    const second = await machine.atNextBoundary(() => tracker.capture());
    const changedBytes = second.changed.reduce((n, part) => n + part.current.length, 0);
    expect(total).to.be.greaterThan(500_000); // VGA, IDE and sound buffers are in there
    expect(second.changed.length)
      .to.be.greaterThan(0)
      .and.lessThan(first.changed.length / 4);
    expect(changedBytes).to.be.lessThan(total / 20);
    // Each change comes with the bytes of the previous capture, for a delta.
    for (const part of second.changed) expect(part.previous).to.not.equal(undefined);
  });

  it("keeps the state tree's text in place between captures, so its delta is small though numbers gain and lose digits", async () => {
    const tree = async () => machine.atNextBoundary(() => captureStateParts(machine)[TREE_PART]!.slice());
    for (let round = 0; round < 5; round++) {
      const before = await tree();
      await sleep(30);
      const after = await tree();
      expect(after.length, "fixed-width numbers keep the length").to.equal(before.length);
      // Plain JSON shifted everything after a number that changed length: ~5 KB a capture.
      expect(encodeRunDelta(before, after)?.length ?? after.length, `round ${round}`).to.be.lessThan(600);
    }
  });

  it("writes the state tree straight to bytes as JSON.stringify would write the walk of v86's state", async () => {
    // A reference walk as v86's save_state does it, turned into text by JSON.stringify.
    let buffers = 0;
    const reference = (value: unknown): unknown => {
      if (typeof value !== "object" || value === null) return value;
      if (Array.isArray(value)) return value.map(reference);
      if (value instanceof Map) return { __state_type__: "Map", args: Array.from(value.entries(), ([k, v]) => [reference(k), reference(v)]) };
      const typed = value as { BYTES_PER_ELEMENT?: number; constructor: { name: string } };
      if (typed.BYTES_PER_ELEMENT !== undefined) return { __state_type__: typed.constructor.name.replace("bound ", ""), buffer_id: buffers++ };
      return (value as { get_state(): unknown[] }).get_state().map(reference);
    };
    const [parts, expected] = await machine.atNextBoundary(() => {
      const captured = captureStateParts(machine);
      // RAM is left out of the tree, as captureStateTree leaves it out.
      const cpu = machine.emulator.cpu as unknown as { pack_memory: () => unknown };
      const own = Object.getOwnPropertyDescriptor(cpu, "pack_memory");
      cpu.pack_memory = () => ({ bitmap: { get_buffer: () => new ArrayBuffer(0) }, packed_memory: new Uint8Array(0) });
      try {
        return [captured.map((part) => part.slice()), JSON.stringify(reference(cpu))] as const;
      } finally {
        if (own !== undefined) Object.defineProperty(cpu, "pack_memory", own);
        else delete (cpu as { pack_memory?: unknown }).pack_memory;
      }
    });
    const text = new TextDecoder().decode(parts[TREE_PART]);
    expect(JSON.parse(text)).to.deep.equal(JSON.parse(expected));
    expect(parts.length - 2, "one part per typed array the walk met").to.equal(buffers);
    // Only the padding of numbers differs from JSON.stringify's text.
    expect(text.replace(/ +/g, "")).to.equal(expected.replace(/ +/g, ""));
  });

  it("writes JSON that parses as JSON.stringify's does, numbers in fixed-width fields", () => {
    const samples: unknown[] = [
      [0, -0, 1, -1, 2147483647, -2147483648, 2147483648, 1.5, -1e-300, 1e21, Number.MAX_VALUE, -Number.MIN_VALUE, NaN, Infinity],
      { a: 1, 'b"c': "x\ny", nested: [[], {}, [null, true, false]], skipped: undefined, f: () => 1 },
      [undefined, () => 1, "\u2028"],
      // eslint-disable-next-line no-sparse-arrays -- a hole is one of the cases under test
      [1, , 3],
    ];
    for (const sample of samples) expect(JSON.parse(alignedJson(sample))).to.deep.equal(JSON.parse(JSON.stringify(sample)));
    expect(alignedJson([7, 700000, 1.25])).to.equal(`[${"7".padStart(11)},${"700000".padStart(11)},${"1.25".padStart(24)}]`);
    expect(() => alignedJson(10n)).to.throw(TypeError, /bigint/);
  });

  it("refuses damaged parts, machines that are not blank, and captures from inside a guest instruction", async () => {
    const parts = await machine.atNextBoundary(() => captureStateParts(machine).map((part) => part.slice()));
    const blank = await Machine.createBlank(defaultGuest());
    others.push(blank);
    const damaged = parts.slice();
    damaged[DEVICES_PART] = new TextEncoder().encode("{not json");
    expect(() => restoreStateParts(blank, damaged)).to.throw(SnapshotError, /devices' part is not JSON/);
    expect(() => restoreStateParts(blank, parts.slice(0, 1))).to.throw(SnapshotError, /1 parts/);
    expect(() => restoreStateParts(machine, parts)).to.throw(MachineStateError, /expected blank/);
    // v86 reports a serial byte from the UART's port handler, inside the guest's OUT instruction.
    let inside: unknown;
    const stop = machine.emulator.onSerialByte(() => {
      if (inside !== undefined) return;
      try {
        captureStateParts(machine);
        inside = "captured";
      } catch (error) {
        inside = error;
      }
    });
    await machine.exec("echo poke");
    stop();
    expect(inside).to.be.instanceOf(MachineStateError);
    expect((inside as Error).message).to.match(/inside a guest instruction/);
  });
});
