// Dirty-page tracking on the default guest, booted once for this file.
import { createHash, randomBytes } from "node:crypto";
import { expect } from "chai";
import { Machine } from "../machine.ts";
import { defaultGuest } from "../node/images.ts";
import { MachineStateError } from "../errors.ts";
import { whilePaused } from "../paused.ts";
import { allocateInV86Heap } from "../v86-internals.ts";
import { DirtyPageTracker, applyPages, simdAvailable } from "../memory/index.ts";
import { MemoryBackend } from "../block/memory-backend.ts";
import { virtioBlkDisk } from "../virtio-blk/disk.ts";
import { readFileSync } from "node:fs";
import { patchDirtyMap, WasmPatchError } from "../wasm-patch/dirty-map-patch.ts";
import { CHUNK_EXPORT, TLB_ENTRIES_EXPORT, TRACK_EXPORT, VERSION_EXPORT, WRITE_PROTECT_EXPORT, YIELD_EXPORT } from "../wasm-patch/dirty-map-abi.ts";
import { trackedWasmBytes, v86WasmPath } from "../node/tracked-wasm.ts";
import { pageScanModuleBytes } from "../memory/page-scan-wasm.ts";
import { PAGE_SIZE } from "../units.ts";

const ramHash = (machine: Machine) => createHash("sha256").update(machine.ram.bytes).digest("hex");

describe("DirtyPageTracker", function () {
  let machine: Machine;
  let tracker: DirtyPageTracker;
  const others: Machine[] = [];

  before(async function () {
    machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: new MemoryBackend(16 << 20) })] });
    await machine.boot();
    tracker = await machine.atNextBoundary(() => DirtyPageTracker.create(machine));
  });

  after(async () => {
    await Promise.all([machine?.destroy(), ...others.map((m) => m.destroy())]);
  });

  it("uses wasm SIMD on this engine, and the write map of the patched v86 module", () => {
    expect(simdAvailable()).to.equal(true);
    expect(tracker.engine).to.equal("simd");
    expect(tracker.mode).to.equal("write-map");
  });

  it("reports every non-zero page on the first collection, then nothing while the guest is paused", async () => {
    await machine.pause();
    try {
      const first = tracker.collect();
      const ram = machine.ram.bytes;
      const nonZero = countNonZeroPages(ram);
      expect(first.indices.length).to.equal(nonZero);
      // Each reported page comes with its contents.
      const k = first.indices.length >> 1;
      const page = first.indices[k]!;
      expect(first.data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE)).to.deep.equal(ram.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
      expect(tracker.collect().indices.length).to.equal(0);
      expect(tracker.collect().indices.length).to.equal(0);
    } finally {
      machine.run();
    }
  });

  it("reports pages written by a program in the guest", async () => {
    await whilePaused(machine, () => tracker.collect());
    const pagesWritten = 1024; // 4 MiB of random data into a tmpfs file
    const { exitCode } = await machine.exec(`dd if=/dev/urandom of=/tmp/x bs=4k count=${pagesWritten} 2>/dev/null`);
    expect(exitCode).to.equal(0);
    const dirty = await whilePaused(machine, () => tracker.collect());
    expect(dirty.indices.length).to.be.at.least(pagesWritten);
    await machine.exec("rm /tmp/x");
  });

  it("re-arms by making the TLB read-only, not by clearing it: the guest keeps its translations across a collection, and its next write is still caught", async () => {
    const exports = (machine.emulator.cpu as unknown as { wm: { exports: Record<string, () => number> } }).wm.exports;
    const tlbEntries = () => exports[TLB_ENTRIES_EXPORT]!();
    await machine.exec("ls -R /bin > /dev/null");
    // A full clear (the re-arm before) left no entry; the guest then walked the page tables again for every page it read.
    expect(await whilePaused(machine, () => (tracker.collect(), tlbEntries())), "TLB entries right after a collection").to.be.greaterThan(100);
    const { exitCode } = await machine.exec("dd if=/dev/urandom of=/tmp/y bs=4k count=64 2>/dev/null");
    expect(exitCode).to.equal(0);
    expect((await whilePaused(machine, () => tracker.collect())).indices.length, "the pages written after it").to.be.at.least(64);
    await machine.exec("rm /tmp/y");
  });

  it("reports exactly the pages a device wrote (DMA through GuestRam.write)", async () => {
    await machine.pause();
    try {
      tracker.collect();
      const base = 40 << 20; // inside RAM the guest sees
      machine.ram.write(base, randomBytes(3 * PAGE_SIZE)); // pages n, n+1, n+2
      machine.ram.write(base + 10 * PAGE_SIZE + PAGE_SIZE - 1, Uint8Array.of(machine.ram.bytes[base + 11 * PAGE_SIZE - 1]! ^ 0xff)); // last byte of n+10
      machine.ram.write(
        base + 20 * PAGE_SIZE - 2,
        Uint8Array.of(
          ~machine.ram.bytes[base + 20 * PAGE_SIZE - 2]! & 0xff,
          ~machine.ram.bytes[base + 20 * PAGE_SIZE - 1]! & 0xff,
          ~machine.ram.bytes[base + 20 * PAGE_SIZE]! & 0xff,
        ),
      ); // straddles n+19 / n+20
      const n = base / PAGE_SIZE;
      expect(Array.from(tracker.collect().indices)).to.deep.equal([n, n + 1, n + 2, n + 10, n + 19, n + 20]);
    } finally {
      machine.run();
    }
    // The guest survived having its free memory scribbled on.
    expect((await machine.exec("echo alive")).output).to.equal("alive\n");
  });

  it("reads and writes single pages; a written page is reported by the next collection", async () => {
    await machine.pause();
    try {
      tracker.collect();
      const index = (48 << 20) / PAGE_SIZE;
      const before = tracker.readPage(index);
      const replacement = randomBytes(PAGE_SIZE);
      tracker.writePage(index, replacement);
      expect(tracker.readPage(index)).to.deep.equal(new Uint8Array(replacement));
      const dirty = tracker.collect();
      expect(Array.from(dirty.indices)).to.deep.equal([index]);
      tracker.writePage(index, before);
      expect(() => tracker.writePage(index, new Uint8Array(100))).to.throw(RangeError, /indices but 100 bytes/);
      expect(() => tracker.readPage(tracker.pageCount)).to.throw(RangeError, /out of range/);
    } finally {
      machine.run();
    }
  });

  it("collects in place: views of RAM now and of what the page held, kept until the next collection, with the copies collect() gives", async () => {
    const index = (52 << 20) / PAGE_SIZE;
    const [first, second] = [randomBytes(PAGE_SIZE), randomBytes(PAGE_SIZE)];
    const views = await whilePaused(machine, () => {
      tracker.collect();
      tracker.writePage(index, first);
      tracker.collect();
      tracker.writePage(index, second);
      const views = tracker.collectInPlace();
      expect(Array.from(views.indices)).to.deep.equal([index]);
      expect(views.now(0)).to.deep.equal(new Uint8Array(second));
      expect(views.before(0)).to.deep.equal(new Uint8Array(first));
      // A view, not a copy: it is RAM itself.
      expect(views.now(0).buffer).to.equal(machine.ram.bytes.buffer);
      return views;
    });
    // The previous contents outlive the guest's running on; the shadow already holds `second`.
    expect((await machine.exec("echo alive")).output).to.equal("alive\n");
    expect(views.before(0)).to.deep.equal(new Uint8Array(first));
    await whilePaused(machine, () => {
      tracker.writePage(index, first);
      const copies = tracker.collect();
      const k = copies.indices.indexOf(index);
      expect(k).to.be.at.least(0);
      expect(copies.previous.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE)).to.deep.equal(new Uint8Array(second));
      expect(copies.data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE)).to.deep.equal(new Uint8Array(first));
    });
  });
  it("works while the guest runs (between its instructions), but refuses from inside one (a device handler)", async () => {
    expect(machine.state).to.equal("running");
    expect(() => tracker.collect()).not.to.throw();
    let inside: unknown;
    const stop = machine.emulator.onSerialByte(() => {
      if (inside !== undefined) return;
      try {
        tracker.collect();
        inside = "collected";
      } catch (error) {
        inside = error;
      }
    });
    await machine.exec("echo poke");
    stop();
    expect(inside).to.be.instanceOf(MachineStateError);
    expect((inside as Error).message).to.match(/use machine.atNextBoundary/);
  });

  it("makes a second machine's RAM byte-identical with the pages collected from a running one", async () => {
    const copy = await Machine.createBlank(defaultGuest());
    others.push(copy);
    const fresh = await machine.atNextBoundary(() => DirtyPageTracker.create(machine, { mode: "scan" })); // a new shadow: the first collection is all of RAM
    try {
      await whilePaused(machine, () => {
        applyPages(copy, fresh.collect());
        expect(ramHash(copy)).to.equal(ramHash(machine));
      });
      await machine.exec("dd if=/dev/urandom of=/tmp/y bs=4k count=64 2>/dev/null; rm /tmp/y");
      await whilePaused(machine, () => {
        const dirty = fresh.collect();
        expect(dirty.indices.length)
          .to.be.greaterThan(0)
          .and.lessThan(fresh.pageCount / 2);
        applyPages(copy, dirty);
        expect(ramHash(copy)).to.equal(ramHash(machine));
      });
    } finally {
      fresh.dispose();
    }
  });

  it("keeps working after v86's wasm memory grows (views re-created)", async () => {
    await machine.pause();
    try {
      const byteLength = machine.ram.wasmMemory.buffer.byteLength;
      // More than the heap can have free: the memory must grow.
      const filler = allocateInV86Heap(machine.emulator, byteLength);
      try {
        expect(machine.ram.wasmMemory.buffer.byteLength).to.be.greaterThan(byteLength);
        tracker.collect();
        const index = (56 << 20) / PAGE_SIZE;
        tracker.writePage(index, randomBytes(PAGE_SIZE));
        expect(Array.from(tracker.collect().indices)).to.deep.equal([index]);
      } finally {
        filler.free();
      }
    } finally {
      machine.run();
    }
  });

  it("SIMD and JS scanners agree on random mutations", async () => {
    const blank = await Machine.createBlank({ ...defaultGuest(), memoryMiB: 64 });
    others.push(blank);
    const simd = DirtyPageTracker.create(blank, { engine: "simd", mode: "scan" });
    const js = DirtyPageTracker.create(blank, { engine: "js", mode: "scan" });
    expect(js.engine).to.equal("js");
    simd.baseline();
    js.baseline();
    const random = seededRandom(86);
    for (let round = 0; round < 5; round++) {
      const expected = new Set<number>();
      for (let i = 0; i < 300; i++) {
        const page = Math.floor(random() * simd.pageCount);
        const offset = Math.floor(random() * PAGE_SIZE);
        const old = blank.ram.bytes[page * PAGE_SIZE + offset]!;
        // Byte patterns that a float compare gets wrong: NaN payloads and -0 versus +0.
        const value = [0x7f, 0xff, 0x80, 0x00][i % 4]! ^ (round === 0 ? 0 : Math.floor(random() * 256));
        if (value === old) continue;
        blank.ram.write(page * PAGE_SIZE + offset, Uint8Array.of(value));
        expected.add(page);
      }
      const fromSimd = simd.collect();
      const fromJs = js.collect();
      expect(Array.from(fromSimd.indices)).to.deep.equal([...expected].sort((a, b) => a - b));
      expect(fromJs.indices).to.deep.equal(fromSimd.indices);
      expect(fromJs.data).to.deep.equal(fromSimd.data);
    }
    // Changing only the sign of a float's zero is a change.
    const negativeZero = new Uint8Array(new Float64Array([-0]).buffer);
    blank.ram.write(8 * PAGE_SIZE, new Uint8Array(new Float64Array([0]).buffer));
    simd.collect();
    js.collect();
    blank.ram.write(8 * PAGE_SIZE, negativeZero);
    expect(Array.from(simd.collect().indices)).to.deep.equal([8]);
    expect(Array.from(js.collect().indices)).to.deep.equal([8]);
    simd.dispose();
    js.dispose();
  });

  it("copies RAM live while the guest writes: the copy overlaid with the next collection is RAM (write map and full scan)", async () => {
    tracker.dispose(); // one write map per machine: the live trackers take it over
    for (const mode of ["write-map", "scan"] as const) {
      const copy = await Machine.createBlank(defaultGuest());
      others.push(copy);
      const live = await machine.atNextBoundary(() => DirtyPageTracker.create(machine, { mode }));
      try {
        await machine.atNextBoundary(() => live.startLiveCopy());
        const writing = machine.exec("for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/tmp/live bs=4k count=512 2>/dev/null; done; rm /tmp/live", {
          timeoutMs: 120_000,
        });
        let ranges = 0;
        for (let done = false; !done; ranges++) {
          await new Promise((resolve) => setTimeout(resolve, 15)); // the guest runs between ranges
          const next = await machine.atNextBoundary(() => {
            expect(() => live.collect()).to.throw(/live copy/);
            return live.copyNext(512);
          });
          applyPages(copy, next.pages);
          done = next.done;
        }
        expect(ranges).to.equal(Math.ceil(live.pageCount / 512));
        expect((await writing).exitCode).to.equal(0);
        await whilePaused(machine, () => {
          const since = live.collect();
          expect(since.indices.length, "the guest wrote while the copy ran").to.be.greaterThan(0);
          applyPages(copy, since);
          expect(ramHash(copy), mode).to.equal(ramHash(machine));
        });
      } finally {
        live.dispose();
      }
    }
  });
});

describe("the write map (patched v86 module) against a full scan", function () {
  it("misses no page a guest workload changes: CPU, JIT code, page tables and disk DMA (cross-check mode)", async function () {
    const machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend: new MemoryBackend(32 << 20) })] });
    try {
      await machine.boot();
      const tracker = await machine.atNextBoundary(() => DirtyPageTracker.create(machine, { mode: "cross-check" }));
      await machine.atNextBoundary(() => tracker.collect()); // the first collection is a full scan
      let collecting = true;
      const collector = (async () => {
        while (collecting) {
          await new Promise((resolve) => setTimeout(resolve, 15));
          await machine.atNextBoundary(() => tracker.collect());
        }
      })();
      const steps = [
        "mke2fs -q -F /dev/vda && mkdir -p /mnt && mount /dev/vda /mnt",
        "dd if=/dev/urandom of=/mnt/a bs=4k count=300 oflag=direct 2>/dev/null && sync && md5sum /mnt/a",
        "echo 3 > /proc/sys/vm/drop_caches && md5sum /mnt/a && ls -lR /bin > /dev/null",
        "fio --name=w --filename=/mnt/fio --size=2m --bs=4k --rw=randwrite --direct=1 --ioengine=psync --fsync=8 > /dev/null",
        "umount /mnt",
      ];
      for (const step of steps) expect((await machine.exec(step, { timeoutMs: 120_000 })).exitCode, step).to.equal(0);
      collecting = false;
      await collector;
      expect(tracker.stats.collections).to.be.greaterThan(50);
      expect(tracker.stats.changed).to.be.greaterThan(2000);
      expect(tracker.stats.missed, `pages the map missed, e.g. ${tracker.stats.missedExamples.join(", ")}`).to.equal(0);
    } finally {
      await machine.destroy();
    }
  });

  it("is patched deterministically, and refuses a module that is not the pinned build", async () => {
    const input = new Uint8Array(readFileSync(v86WasmPath()));
    const patched = patchDirtyMap(input);
    expect(Buffer.compare(patched, await trackedWasmBytes(input))).to.equal(0); // the cached copy is the same bytes
    const exports = WebAssembly.Module.exports(new WebAssembly.Module(new Uint8Array(patched))).map((e) => e.name);
    expect(exports).to.include.members([TRACK_EXPORT, YIELD_EXPORT, CHUNK_EXPORT, VERSION_EXPORT, WRITE_PROTECT_EXPORT, TLB_ENTRIES_EXPORT]);
    expect(() => patchDirtyMap(patched)).to.throw(WasmPatchError, /already patched/);
    expect(() => patchDirtyMap(pageScanModuleBytes())).to.throw(WasmPatchError, /lacks the exports .*full_clear_tlb/);
  });
});

function countNonZeroPages(ram: Uint8Array): number {
  const words = new Uint32Array(ram.buffer, ram.byteOffset, ram.length / 4);
  let count = 0;
  for (let page = 0; page < ram.length / PAGE_SIZE; page++) {
    for (let w = page * 1024; w < (page + 1) * 1024; w++) {
      if (words[w] !== 0) {
        count++;
        break;
      }
    }
  }
  return count;
}

/** Deterministic mutations, so that a failure can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}
