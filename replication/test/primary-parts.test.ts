// The primary engine's small parts on their own: the I/O policy table, the capture
// scheduler, the pending I/O's batches and read-replay rule, syncNow's waiters, liveness
// against a manual clock, and the sync encoder's pages.
import { expect } from "chai";
import type { BlockIoEvent } from "../../emulator/block/hook.ts";
import type { PageChangeViews } from "../../emulator/memory/index.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";
import { Liveness } from "../engine/liveness.ts";
import { CaptureScheduler, type CaptureWant } from "../engine/primary/capture-scheduler.ts";
import { ioPolicy } from "../engine/primary/io-policy.ts";
import { PendingIo } from "../engine/primary/pending-io.ts";
import { PRIMARY_TRANSITIONS, type PrimaryState } from "../engine/primary/states.ts";
import { SyncWaiters } from "../engine/primary/sync-waiters.ts";
import { encodeSync } from "../engine/primary/sync-encoder.ts";
import { applyRunDelta } from "../protocol/run-delta.ts";
import { MAX_IO_LOG_ENTRIES, MAX_SYNC_DISK_BYTES } from "../protocol/limits.ts";
import { ManualClock, settle } from "../../test/support/manual-clock.ts";

const STATES = Object.keys(PRIMARY_TRANSITIONS) as PrimaryState[];

function write(sector: number, sectors = 8): BlockIoEvent {
  return {
    disk: "vda",
    type: "write",
    sector,
    sectors,
    segments: [{ gpa: 0x1000, length: sectors * SECTOR_SIZE }],
    data: new Uint8Array(sectors * SECTOR_SIZE),
  };
}

function read(sector: number, sectors = 8): BlockIoEvent {
  return { disk: "vda", type: "read", sector, sectors, segments: [{ gpa: 0x8000, length: sectors * SECTOR_SIZE }] };
}

describe("the primary's I/O policy table", () => {
  it("holds and logs while a secondary protects the guest, and captures only then (and for a handover's last sync)", () => {
    expect(ioPolicy("protected", "continue")).to.deep.equal({ write: "hold", flush: "log", read: "track", output: "hold", capture: true });
    expect(STATES.filter((state) => ioPolicy(state, "continue").capture)).to.deep.equal(["protected", "handing-over"]);
  });

  it("differs by loss policy only while unprotected: continue lets everything through, stall holds writes and output", () => {
    for (const state of STATES.filter((s) => s !== "unprotected")) expect(ioPolicy(state, "stall"), state).to.deep.equal(ioPolicy(state, "continue"));
    expect(ioPolicy("unprotected", "continue")).to.include({ write: "pass", output: "pass" });
    expect(ioPolicy("unprotected", "stall")).to.include({ write: "hold", output: "hold", capture: false });
  });

  it("never lets a fenced primary's output out, nor completes its writes", () => {
    for (const policy of ["continue", "stall"] as const) expect(ioPolicy("fenced", policy)).to.include({ write: "hold", output: "drop", capture: false });
  });

  it("holds writes during an initial copy without logging flushes (the copy covers them)", () => {
    expect(ioPolicy("initial-sync", "continue")).to.deep.equal({ write: "hold", flush: "pass", read: "pass", output: "hold", capture: false });
  });

  it("lets output out during a copy until its last boundary, under continue and a lease (if one is kept) only", () => {
    expect(ioPolicy("initial-sync", "continue", "synchronous", { copying: true })).to.deep.equal({
      write: "hold",
      flush: "pass",
      read: "pass",
      output: "pass",
      capture: false,
    });
    expect(ioPolicy("initial-sync", "continue", "synchronous", { copying: true, lease: true })).to.include({ output: "pass" });
    expect(ioPolicy("initial-sync", "continue", "synchronous", { copying: true, lease: false })).to.include({ output: "hold", write: "hold" });
    expect(ioPolicy("initial-sync", "stall", "synchronous", { copying: true })).to.include({ output: "hold" });
    expect(ioPolicy("unprotected", "continue", "synchronous", { lease: false })).to.include({ output: "hold", write: "hold" });
    expect(ioPolicy("unprotected", "continue", "synchronous", { lease: true })).to.include({ output: "pass", write: "pass" });
  });
});

describe("the capture scheduler", () => {
  const INTERVAL_MS = 20;
  const COALESCE_MS = 2;

  function scheduler(host: { wanted: () => CaptureWant; allowed: () => boolean }, clock = new ManualClock()) {
    const captures: (() => void)[] = [];
    const scheduler = new CaptureScheduler(
      {
        ...host,
        capture: () => new Promise<void>((resolve) => captures.push(resolve)),
        failed: () => undefined,
      },
      { clock, syncIntervalMs: INTERVAL_MS, coalesceMs: COALESCE_MS },
    );
    return { scheduler, captures, clock };
  }

  it("asks for one capture at a time, only with work and room, and looks again when it is taken", async () => {
    let work = 0;
    let room = true;
    const { scheduler: s, captures } = scheduler({ wanted: () => (work > 0 ? "now" : undefined), allowed: () => room });
    s.wake();
    expect(captures.length, "no work").to.equal(0);
    work = 2;
    room = false;
    s.wake();
    expect(captures.length, "no room").to.equal(0);
    room = true;
    s.wake();
    s.wake();
    expect(captures.length, "one at a time").to.equal(1);
    expect(s.state).to.equal("at-boundary");
    work--;
    captures[0]!();
    await settle();
    expect(captures.length, "the remaining work asks for the next").to.equal(2);
    work--;
    captures[1]!();
    await settle();
    expect(s.state).to.equal("idle");
    expect(captures.length).to.equal(2);
  });

  it("captures deferred work at the interval's end, at once when urgent work joins it, and when room comes after the interval ran out", async () => {
    let want: CaptureWant = "later";
    let room = true;
    const { scheduler: s, captures, clock } = scheduler({ wanted: () => want, allowed: () => room });
    s.wake();
    expect(s.state).to.equal("deferred");
    await clock.advance(INTERVAL_MS - 1);
    s.wake();
    expect(captures.length, "before the interval's end").to.equal(0);
    await clock.advance(1);
    expect(captures.length, "at the interval's end").to.equal(1);
    want = undefined;
    captures[0]!();
    await settle();
    expect(s.state).to.equal("idle");

    want = "later";
    s.wake();
    want = "now";
    s.wake();
    expect(captures.length, "urgent work does not wait for the interval").to.equal(2);
    want = "later";
    room = false;
    captures[1]!();
    await settle();
    expect(s.state, "a new epoch for what is left").to.equal("deferred");
    await clock.advance(INTERVAL_MS);
    expect(s.state, "no room when it ran out").to.equal("due");
    room = true;
    s.wake();
    expect(captures.length, "the next chance takes it").to.equal(3);
  });

  it("lets output wait for the rest of its burst: captured at the coalescing bound, or as soon as the guest idles", async () => {
    let want: CaptureWant = "soon";
    const { scheduler: s, captures, clock } = scheduler({ wanted: () => want, allowed: () => true });
    s.wake();
    s.wake();
    expect(s.state, "more output of the burst does not move the bound").to.equal("deferred");
    await clock.advance(COALESCE_MS - 1);
    expect(captures.length, "within the bound").to.equal(0);
    await clock.advance(1);
    expect(captures.length, "at the bound").to.equal(1);
    want = undefined;
    captures[0]!();
    await settle();

    want = "soon";
    s.wake();
    s.guestIdle();
    expect(captures.length, "the guest idles: its burst is over").to.equal(2);
    captures[1]!();
    await settle();

    want = "soon";
    s.wake();
    want = "now";
    s.wake();
    expect(captures.length, "a completion the guest waits for does not wait for the bound").to.equal(3);
  });

  it("captures output within the coalescing bound even when deferred writes wait for the interval, and idling captures only output", async () => {
    let want: CaptureWant = "later";
    const { scheduler: s, captures, clock } = scheduler({ wanted: () => want, allowed: () => true });
    s.wake();
    s.guestIdle();
    expect(captures.length, "an idle guest with deferred writes only waits for the interval").to.equal(0);
    await clock.advance(INTERVAL_MS / 2);
    want = "soon";
    s.wake();
    await clock.advance(COALESCE_MS);
    expect(captures.length, "output joining deferred writes shortens their wait").to.equal(1);
  });

  it("captures output at once when coalescing is off", () => {
    const captures: number[] = [];
    const s = new CaptureScheduler(
      { wanted: () => "soon", allowed: () => true, capture: () => (captures.push(1), new Promise<void>(() => undefined)), failed: () => undefined },
      { clock: new ManualClock(), syncIntervalMs: INTERVAL_MS, coalesceMs: 0 },
    );
    s.wake();
    expect(captures.length).to.equal(1);
  });

  it("forgets an interval whose work went away (a lost secondary clears it)", async () => {
    let want: CaptureWant = "later";
    const { scheduler: s, captures, clock } = scheduler({ wanted: () => want, allowed: () => true });
    s.wake();
    want = undefined;
    s.wake();
    expect(s.state).to.equal("idle");
    await clock.advance(INTERVAL_MS * 2);
    expect(captures.length).to.equal(0);
  });

  it("reports a capture that fails and is ready for the next", async () => {
    const failures: string[] = [];
    let calls = 0;
    const s = new CaptureScheduler(
      {
        wanted: () => "now",
        allowed: () => calls === 0,
        capture: () => {
          calls++;
          return Promise.reject(new Error("boom"));
        },
        failed: (error) => failures.push(error.message),
      },
      { clock: new ManualClock(), syncIntervalMs: INTERVAL_MS, coalesceMs: COALESCE_MS },
    );
    s.wake();
    await settle();
    expect(failures).to.deep.equal(["boom"]);
    expect(s.state).to.equal("idle");
  });
});

describe("pending I/O", () => {
  it("knows whether the guest waits on a request not logged yet, and the write data held, across batches and clear()", () => {
    const pending = new PendingIo();
    const deferred = write(0, 8);
    pending.add({ event: deferred, submittedAt: 0, order: pending.submitted(deferred) });
    expect([pending.holdsCompletion, pending.dataBytes]).to.deep.equal([false, 8 * SECTOR_SIZE]);
    const held = write(8, 2);
    pending.add({ event: held, submittedAt: 1, order: pending.submitted(held), completion: { kind: "completion", release: () => undefined } });
    expect([pending.holdsCompletion, pending.dataBytes]).to.deep.equal([true, 10 * SECTOR_SIZE]);
    pending.takeBatch(false);
    expect([pending.holdsCompletion, pending.dataBytes]).to.deep.equal([false, 0]);
    pending.add({ event: held, submittedAt: 2, order: pending.submitted(held), completion: { kind: "completion", release: () => undefined } });
    pending.clear();
    expect([pending.holdsCompletion, pending.dataBytes]).to.deep.equal([false, 0]);
  });

  it("takes every request in one batch unless the log or the disk data would be too large", () => {
    const pending = new PendingIo();
    for (let i = 0; i < MAX_IO_LOG_ENTRIES + 3; i++) {
      const event = write(i * 8);
      pending.add({ event, submittedAt: i, order: pending.submitted(event) });
    }
    expect(pending.takeBatch(false).length).to.equal(MAX_IO_LOG_ENTRIES);
    expect(pending.takeBatch(false).length).to.equal(3);
    const sectors = MAX_SYNC_DISK_BYTES / SECTOR_SIZE / 2;
    for (let i = 0; i < 3; i++) {
      const event = write(i * sectors, sectors);
      pending.add({ event, submittedAt: i, order: pending.submitted(event) });
    }
    expect(pending.takeBatch(true).length, "carrying data, two fill a sync").to.equal(2);
    expect(pending.oldestSubmittedAt).to.equal(2);
  });

  it("replays a read only if no write submitted after it and already logged touches its sectors", () => {
    const pending = new PendingIo();
    const early = read(0);
    const late = read(100);
    pending.submitted(early);
    pending.readStarted(early);
    pending.submitted(late);
    pending.readStarted(late);
    // A write after both reads, to the first read's sectors, is logged before they complete.
    const overwrite = write(0);
    pending.noteLogged([{ event: overwrite, submittedAt: 0, order: pending.submitted(overwrite) }]);
    pending.readCompleted(early, new Uint8Array(8 * SECTOR_SIZE));
    pending.readCompleted(late, new Uint8Array(8 * SECTOR_SIZE));
    expect(pending.takeReplayableReads().map((r) => r.event.sector)).to.deep.equal([100]);
  });

  it("forgets a read that was not tracked from its start, and everything on clear()", () => {
    const pending = new PendingIo();
    const untracked = read(0);
    pending.submitted(untracked);
    pending.readCompleted(untracked, new Uint8Array(8 * SECTOR_SIZE));
    expect(pending.takeReplayableReads()).to.deep.equal([]);
    const event = write(8);
    pending.add({ event, submittedAt: 0, order: pending.submitted(event) });
    pending.clear();
    expect(pending.count).to.equal(0);
  });
});

describe("syncNow's waiters", () => {
  it("are answered by the ack of the first capture after they asked, or told why not", async () => {
    const waiters = new SyncWaiters();
    const answered: string[] = [];
    void waiters.add(0).then(() => answered.push("first"));
    waiters.captured(4);
    const second = waiters.add(1).then(
      () => answered.push("second"),
      (error: Error) => answered.push(`second: ${error.message}`),
    );
    expect(waiters.wantCapture).to.equal(true);
    waiters.acknowledged(4);
    await settle();
    expect(answered).to.deep.equal(["first"]);
    const failures: string[] = [];
    const third = waiters.add(2).catch((error: Error) => failures.push(error.message));
    waiters.rejectAll(new Error("lost"));
    await Promise.all([second, third]);
    expect(failures).to.deep.equal(["lost"]);
    expect(answered).to.deep.equal(["first", "second: lost"]);
    expect(waiters.wantCapture).to.equal(false);
  });
});

describe("liveness", () => {
  /** A started watch on a manual clock, with the silences it reported. */
  function watch(timeoutMs: number): { clock: ManualClock; silences: number[]; liveness: Liveness } {
    const clock = new ManualClock();
    const silences: number[] = [];
    const liveness = new Liveness({ timeoutMs, clock, onSilent: (ms) => silences.push(ms) });
    liveness.start();
    return { clock, silences, liveness };
  }

  it("calls a peer silent only after the timeout, and discounts time this process stood still", async () => {
    const { clock, silences, liveness } = watch(1000);
    await clock.advance(900);
    liveness.heard();
    await clock.advance(900);
    expect(silences).to.deep.equal([]);
    await clock.jump(10_000); // a stall: every timer late at once
    expect(silences, "our own stall is not the peer's silence").to.deep.equal([]);
    expect(liveness.stalledMs).to.be.greaterThan(9000);
    await clock.advance(1200);
    expect(silences.length).to.equal(1);
    expect(silences[0]).to.be.at.least(1000);
    liveness.stop();
    expect(clock.pending).to.equal(0);
  });

  it("finds the silence at the timeout itself, not at the next periodic check", async () => {
    const { clock, silences, liveness } = watch(250);
    for (let i = 0; i < 10; i++) {
      await clock.advance(40);
      liveness.heard();
    }
    await clock.advance(249);
    expect(silences).to.deep.equal([]);
    await clock.advance(1); // the deadline, and the turn after it that reads the socket first
    expect(silences).to.deep.equal([250]);
    expect(clock.pending).to.equal(0);
  });

  it("reads what arrived during its own short stall before calling the peer silent", async () => {
    const { clock, silences, liveness } = watch(250);
    await clock.advance(200);
    // Busy for 80 ms (under the stall allowance): the deadline's timer runs first, late, while
    // the peer's heartbeat still waits in the socket; the loop reads it before the verdict.
    await clock.jump(80);
    liveness.heard();
    await clock.advance(1);
    expect(silences).to.deep.equal([]);
    await clock.advance(260);
    expect(silences).to.deep.equal([250]);
  });

  it("takes a new timeout from the last word heard", async () => {
    const { clock, silences, liveness } = watch(5000);
    await clock.advance(100);
    liveness.heard();
    await clock.advance(200);
    liveness.setTimeoutMs(250);
    await clock.advance(49);
    expect(silences).to.deep.equal([]);
    await clock.advance(1);
    expect(silences).to.deep.equal([250]);
  });
});

describe("the sync encoder's pages", () => {
  /** Views over `ram` and `before` as a tracker hands them out (no copies). */
  function views(ram: Uint8Array, before: Uint8Array, pages: number[]): PageChangeViews {
    return {
      indices: Uint32Array.from(pages),
      now: (k) => ram.subarray(pages[k]! * PAGE_SIZE, (pages[k]! + 1) * PAGE_SIZE),
      before: (k) => before.subarray(pages[k]! * PAGE_SIZE, (pages[k]! + 1) * PAGE_SIZE),
    };
  }

  it("encodes from views of RAM, and what its frames keep does not change when the guest writes on", () => {
    const before = new Uint8Array(4 * PAGE_SIZE).map((_, i) => (i * 7) & 0xff);
    const ram = before.slice();
    for (let i = 0; i < PAGE_SIZE; i++) ram[i] = (i * 13 + 1) & 0xff; // page 0: rewritten whole
    ram.set([1, 2, 3], PAGE_SIZE + 100); // page 1: a few bytes
    ram.fill(0, 2 * PAGE_SIZE, 3 * PAGE_SIZE); // page 2: zeroed
    const atCapture = ram.slice();
    const encoded = encodeSync({
      seq: 1,
      epoch: 1,
      mode: "logging-replay",
      pages: views(ram, before, [0, 1, 2]),
      state: { partCount: 0, changed: [] },
      requests: [],
      reads: [],
      forcedPages: new Map(),
      ram,
      diskNumber: () => 0,
    });
    // The guest runs on and scribbles over every page before the frames are sent.
    ram.fill(0xee);
    const updates = encoded.frames.flatMap(({ frame }) => (frame.kind === "page-updates" ? frame.updates : []));
    expect(updates.map(({ page, encoding }) => [page, encoding])).to.deep.equal([
      [0, "full"],
      [1, "runs"],
      [2, "zero"],
    ]);
    expect(updates[0]!.bytes).to.deep.equal(atCapture.subarray(0, PAGE_SIZE));
    const rebuilt = before.slice(PAGE_SIZE, 2 * PAGE_SIZE);
    applyRunDelta(updates[1]!.bytes, PAGE_SIZE, rebuilt, "page 1");
    expect(rebuilt).to.deep.equal(atCapture.subarray(PAGE_SIZE, 2 * PAGE_SIZE));
    expect([encoded.fullPages, encoded.deltaPages, encoded.zeroPages]).to.deep.equal([1, 1, 1]);
  });
});
