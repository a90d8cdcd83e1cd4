// The block hook on real guest I/O: the guest-physical buffers an event names
// hold, at event time, exactly the bytes that reach the backend; and a gate
// holds the guest's write completion until it resolves.
import { expect } from "chai";
import type { BlockBackend } from "../block/backend.ts";
import { BlockHook, type BlockIoEvent } from "../block/hook.ts";
import { MemoryBackend } from "../block/memory-backend.ts";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { virtioBlkDisk } from "../virtio-blk/disk.ts";

interface LoggedWrite {
  sector: number;
  bytes: Uint8Array;
}

/** A backend that remembers every write it received, in order. */
class RecordingBackend extends MemoryBackend implements BlockBackend {
  readonly writes: LoggedWrite[] = [];

  override async write(offsetSectors: number, data: Uint8Array): Promise<void> {
    this.writes.push({ sector: offsetSectors, bytes: data.slice() });
    await super.write(offsetSectors, data);
  }
}

describe("block hook on guest I/O", function () {
  const hook = new BlockHook();
  const backend = new RecordingBackend(32 << 20);
  const warnings: string[] = [];
  let machine: Machine;

  before(async function () {
    machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend, hook, log: (line) => warnings.push(line) })] });
    await machine.boot();
  });

  after(async () => machine?.destroy());

  /** Logs every write event with the bytes its segments hold at that moment. */
  function logWrites(): { logged: LoggedWrite[]; events: BlockIoEvent[]; stop: () => void } {
    const logged: LoggedWrite[] = [];
    const events: BlockIoEvent[] = [];
    const stop = hook.subscribe((event) => {
      events.push(event);
      if (event.type !== "write") return;
      const ram = machine.ram.bytes;
      const bytes = new Uint8Array(event.sectors * 512);
      let at = 0;
      for (const { gpa, length } of event.segments) {
        bytes.set(ram.subarray(gpa, gpa + length), at);
        at += length;
      }
      expect(at).to.equal(bytes.length);
      logged.push({ sector: event.sector, bytes });
    });
    return { logged, events, stop };
  }

  it("logs direct and file-system writes whose guest bytes equal what the backend got", async () => {
    backend.writes.length = 0;
    const { logged, events, stop } = logWrites();
    try {
      expect((await machine.exec("dd if=/dev/urandom of=/dev/vda bs=4k count=16 seek=1000 oflag=direct 2>/dev/null")).exitCode).to.equal(0);
      const fs = await machine.exec(
        "mke2fs -q /dev/vda >/dev/null && mount /dev/vda /mnt && dd if=/dev/urandom of=/mnt/f bs=64k count=16 2>/dev/null && sync && umount /mnt",
        { timeoutMs: 60_000 },
      );
      expect(fs.exitCode, fs.output).to.equal(0);
    } finally {
      stop();
    }
    expect(logged.length).to.be.greaterThan(16);
    expect(logged.map((w) => w.sector)).to.deep.equal(backend.writes.map((w) => w.sector));
    logged.forEach((w, i) => expect(w.bytes, `write ${i} at sector ${w.sector}`).to.deep.equal(backend.writes[i]!.bytes));
    expect(events.some((e) => e.type === "flush")).to.equal(true);
    expect(events.some((e) => e.type === "read")).to.equal(true);
  });

  it("holds a direct write's completion until the gate resolves", async () => {
    const GATE_MS = 2000;
    let openedAt = 0;
    const stop = hook.subscribe((event) =>
      event.type === "write" ? new Promise<void>((resolve) => setTimeout(() => ((openedAt = performance.now()), resolve()), GATE_MS)) : undefined,
    );
    try {
      const started = performance.now();
      const result = await machine.exec("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=7 oflag=direct 2>/dev/null");
      const finishedAt = performance.now();
      expect(result.exitCode).to.equal(0);
      expect(openedAt, "the gate opened").to.be.greaterThan(0);
      expect(finishedAt).to.be.greaterThan(openedAt);
      expect(finishedAt - started).to.be.at.least(GATE_MS);
    } finally {
      stop();
    }
  });

  it("fails the guest's write with an I/O error when the gate rejects", async () => {
    const stop = hook.subscribe((event) => (event.type === "write" ? Promise.reject(new Error("secondary unreachable")) : undefined));
    try {
      const result = await machine.exec("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=9 oflag=direct 2>&1");
      expect(result.exitCode).to.not.equal(0);
      expect(result.output).to.match(/I\/O error/i);
      expect(warnings.join("\n")).to.match(/gate failed: secondary unreachable/);
    } finally {
      stop();
    }
    expect((await machine.exec("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=9 oflag=direct 2>/dev/null")).exitCode).to.equal(0);
  });
});
