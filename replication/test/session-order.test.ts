// The receiving side's order checker accepts a well-ordered session and rejects
// each kind of out-of-order input with a ProtocolError naming the problem.
import { expect } from "chai";
import { ProtocolError } from "../protocol/errors.ts";
import type { BinaryFrame, IoLogEntry, SyncCommitFrame } from "../protocol/frames.ts";
import type { ControlMessage, InitBeginMessage, NodeRole } from "../protocol/messages.ts";
import type { SessionOrder } from "../protocol/session-order.ts";
import { sessionOrderFor } from "../protocol/session-order-for.ts";
import { SAMPLE_MESSAGES } from "./fixtures.ts";

const EPOCH = 1;
const initBegin = (diskMode: InitBeginMessage["diskMode"] = "io-log"): InitBeginMessage => ({
  type: "init-begin",
  seq: 0,
  epoch: EPOCH,
  memoryBytes: 1024 * 4096,
  pageSize: 4096,
  diskMode,
  disks: [{ id: 0, name: "vda", sizeBytes: 8192 }],
});
/** Initial-sync pages (seq 0). */
const pages = (seq: number, ...indices: number[]): BinaryFrame => ({
  kind: "memory-pages",
  seq,
  epoch: EPOCH,
  indices: Uint32Array.from(indices),
  data: new Uint8Array(indices.length * 4096),
  zeroIndices: new Uint32Array(0),
});
/** Sync N's page updates (all zero pages here: order is what these tests check). */
const updates = (seq: number, ...indices: number[]): BinaryFrame => ({
  kind: "page-updates",
  seq,
  epoch: EPOCH,
  updates: indices.map((page) => ({ page, encoding: "zero" as const, bytes: new Uint8Array(0) })),
});
const parts = (count: number): BinaryFrame => ({ kind: "state-parts", seq: 0, epoch: EPOCH, parts: Array.from({ length: count }, () => new Uint8Array(5)) });
const changes = (seq: number, epoch = EPOCH): BinaryFrame => ({
  kind: "state-changes",
  seq,
  epoch,
  partCount: 2,
  changes: [{ index: 0, encoding: "full", length: 1, bytes: Uint8Array.of(7) }],
});
const chunk = (offset: number, length: number, disk = 0): BinaryFrame => ({ kind: "disk-chunk", seq: 0, epoch: EPOCH, disk, offset, length, data: "zeros" });
const blocks = (seq: number, sector: number, sectors: number): BinaryFrame => ({
  kind: "disk-blocks",
  seq,
  epoch: EPOCH,
  disk: 0,
  sector,
  data: new Uint8Array(sectors * 512),
});
const commit = (seq: number, extra: Partial<SyncCommitFrame> = {}): SyncCommitFrame => ({
  kind: "sync-commit",
  seq,
  epoch: EPOCH,
  pageUpdates: 0,
  stateChanges: 0,
  blockFrames: 0,
  outputFrames: 0,
  log: [],
  ...extra,
});
const held = (seq: number, first: number, released: number, count: number): BinaryFrame => ({
  kind: "held-output",
  seq,
  epoch: EPOCH,
  first,
  released,
  outputs: Array.from({ length: count }, () => ({ kind: "frame" as const, bytes: new Uint8Array(60) })),
});
const write = (sector: number, gpa: number): IoLogEntry => ({ type: "write", disk: 0, sector, sectors: 1, segments: [{ gpa, length: 512 }] });
const inline = (sector: number, sectors = 1): IoLogEntry => ({ type: "write", disk: 0, sector, sectors, segments: [], inline: true });

type Step = ControlMessage | BinaryFrame;

function feed(order: SessionOrder, step: Step): void {
  order.receive("kind" in step ? { channel: "frame", frame: step } : { channel: "control", message: step });
}

function authenticatedOrder(role: NodeRole): SessionOrder {
  const order = sessionOrderFor(role);
  for (const type of ["challenge", "auth"] as const) feed(order, SAMPLE_MESSAGES[type]);
  order.authenticated(EPOCH);
  return order;
}

/** A secondary that has completed an io-log initial sync. */
function replicatingSecondary(diskMode: InitBeginMessage["diskMode"] = "io-log"): SessionOrder {
  const order = authenticatedOrder("secondary");
  const steps: Step[] = [
    initBegin(diskMode),
    pages(0, 0, 1),
    parts(2),
    chunk(0, 4096),
    chunk(4096, 4096),
    { type: "disk-digest", seq: 0, epoch: EPOCH, disk: 0, sha256: "0".repeat(64) },
    { type: "init-end", seq: 0, epoch: EPOCH, pageCount: 2, stateParts: 2 },
  ];
  for (const step of steps) feed(order, step);
  expect(order.phase).to.equal("replicating");
  return order;
}

function expectRejected(order: SessionOrder, step: Step, code: string, pattern?: RegExp): void {
  expect(() => feed(order, step), JSON.stringify("kind" in step ? step.kind : step))
    .to.throw(ProtocolError, pattern)
    .with.property("code", code);
}

describe("session order", () => {
  it("accepts a whole well-ordered io-log session", () => {
    const order = replicatingSecondary();
    feed(order, { type: "heartbeat", epoch: EPOCH, id: 0 });
    feed(order, updates(1, 5));
    feed(order, updates(1, 7, 9));
    feed(order, changes(1));
    feed(order, commit(1, { pageUpdates: 3, stateChanges: 1, log: [write(15, 5 * 4096), { type: "flush", disk: 0 }] }));
    feed(order, commit(2));
    feed(order, { type: "goodbye", reason: "done" });
    expect(order.phase).to.equal("closed");
  });

  it("accepts dirty-block-copy syncs whose inline writes match their block frames", () => {
    const order = replicatingSecondary("dirty-block-copy");
    feed(order, blocks(1, 0, 2));
    feed(order, blocks(1, 8, 1));
    feed(order, blocks(1, 9, 2)); // one write carried by two frames
    feed(order, commit(1, { blockFrames: 3, outputFrames: 0, log: [inline(0, 2), inline(8, 3)] }));
  });

  describe("before authentication", () => {
    it("rejects data frames and session messages", () => {
      const order = sessionOrderFor("secondary");
      expectRejected(order, pages(0, 1), "unauthenticated");
      expectRejected(order, initBegin(), "unauthenticated");
      expectRejected(order, commit(1), "unauthenticated");
    });

    it("rejects handshake messages out of turn", () => {
      const order = sessionOrderFor("secondary");
      expectRejected(order, SAMPLE_MESSAGES.auth, "order", /expected challenge/);
      feed(order, SAMPLE_MESSAGES.challenge);
      expectRejected(order, SAMPLE_MESSAGES.challenge, "order", /expected auth/);
      feed(order, SAMPLE_MESSAGES.auth);
      expectRejected(order, SAMPLE_MESSAGES.auth, "order");
    });
  });

  describe("initial sync", () => {
    it("rejects sync traffic before init-begin", () => {
      const order = authenticatedOrder("secondary");
      expectRejected(order, pages(0, 1), "order", /before init-begin/);
      expectRejected(order, commit(1), "order");
      expectRejected(order, { type: "init-end", seq: 0, epoch: EPOCH, pageCount: 0, stateParts: 0 }, "order");
    });

    it("rejects out-of-order and out-of-range initial frames", () => {
      const order = authenticatedOrder("secondary");
      feed(order, initBegin());
      expectRejected(order, pages(1, 1), "order", /seq 0/);
      expectRejected(order, pages(0, 1024), "inconsistent", /outside guest memory/);
      expectRejected(order, chunk(4096, 4096), "order", /expected 0/);
      expectRejected(order, chunk(0, 16384), "inconsistent");
      expectRejected(order, changes(0), "order");
      expectRejected(order, updates(0, 1), "order");
      expectRejected(order, blocks(0, 0, 1), "order");
      expectRejected(order, { type: "disk-digest", seq: 0, epoch: EPOCH, disk: 0, sha256: "0".repeat(64) }, "order", /after 0 of 8192/);
      expectRejected(order, chunk(0, 512, 3), "inconsistent", /did not announce/);
      feed(order, parts(3));
      expectRejected(order, parts(3), "order", /second/);
    });

    it("rejects init-end before every disk is copied, or with wrong counts", () => {
      const order = authenticatedOrder("secondary");
      feed(order, initBegin());
      feed(order, parts(5));
      expectRejected(order, { type: "init-end", seq: 0, epoch: EPOCH, pageCount: 0, stateParts: 5 }, "order", /disk 0/);
      feed(order, chunk(0, 8192));
      feed(order, { type: "disk-digest", seq: 0, epoch: EPOCH, disk: 0, sha256: "0".repeat(64) });
      expectRejected(order, { type: "init-end", seq: 0, epoch: EPOCH, pageCount: 3, stateParts: 5 }, "inconsistent", /3 pages/);
      expectRejected(order, { type: "init-end", seq: 0, epoch: EPOCH, pageCount: 0, stateParts: 6 }, "inconsistent");
    });
  });

  describe("event-driven sync", () => {
    it("requires sync-commit seq to be last + 1", () => {
      const order = replicatingSecondary();
      expectRejected(order, commit(2), "order", /expected 1/);
      feed(order, commit(1));
      expectRejected(order, commit(1), "order", /expected 2/);
    });

    it("numbers held output without gaps or repeats, never takes back what was released, and counts it in the commit", () => {
      const order = replicatingSecondary();
      feed(order, held(1, 0, 0, 2));
      feed(order, commit(1, { outputFrames: 1 }));
      expectRejected(order, held(2, 1, 0, 1), "order", /numbered from 1, expected 2/);
      feed(order, held(2, 2, 2, 0));
      expectRejected(order, held(2, 2, 1, 1), "inconsistent", /1 outputs released, an earlier frame said 2/);
      expectRejected(order, commit(2), "inconsistent", /counts 0 held-output frames, 1 arrived/);
    });

    it("requires frames of seq N before sync-commit N, never after", () => {
      const order = replicatingSecondary();
      expectRejected(order, updates(2, 1), "order", /expected 1/);
      feed(order, updates(1, 1));
      feed(order, commit(1, { pageUpdates: 1 }));
      expectRejected(order, updates(1, 2), "order", /expected 2/);
    });

    it("rejects page updates out of order across the frames of a sync, or outside memory", () => {
      const order = replicatingSecondary();
      feed(order, updates(1, 5, 9));
      expectRejected(order, updates(1, 9), "order", /after page 9/);
      expectRejected(order, updates(1, 1024), "inconsistent", /outside guest memory/);
    });

    it("rejects a commit that disagrees with the frames before it", () => {
      const order = replicatingSecondary();
      feed(order, updates(1, 1, 2));
      expectRejected(order, commit(1, { pageUpdates: 1 }), "inconsistent");
      feed(order, changes(1));
      expectRejected(order, commit(1, { pageUpdates: 2, stateChanges: 0 }), "inconsistent");
      expectRejected(order, changes(1), "order", /second/);
      expectRejected(order, parts(2), "order");
      feed(order, blocks(1, 0, 1));
      expectRejected(order, commit(1, { pageUpdates: 2, stateChanges: 1, blockFrames: 0 }), "inconsistent");
    });

    it("rejects extents outside the announced memory and disks", () => {
      const order = replicatingSecondary();
      expectRejected(order, commit(1, { log: [write(16, 0)] }), "inconsistent", /beyond disk 0/);
      expectRejected(order, commit(1, { log: [write(0, 1024 * 4096)] }), "inconsistent", /outside guest memory/);
      expectRejected(order, commit(1, { log: [{ type: "flush", disk: 4 }] }), "inconsistent");
    });

    it("rejects writes to replay from memory in dirty-block-copy mode, and blocks no inline write uses", () => {
      const copy = replicatingSecondary("dirty-block-copy");
      expectRejected(copy, commit(1, { log: [write(0, 0)] }), "inconsistent", /dirty-block-copy/);
      const ioLog = replicatingSecondary("io-log");
      feed(ioLog, blocks(1, 0, 1));
      expectRejected(ioLog, commit(1, { blockFrames: 1 }), "inconsistent", /no inline write uses/);
    });

    it("matches inline writes to their block frames, in order", () => {
      const order = replicatingSecondary("io-log");
      feed(order, blocks(1, 0, 1));
      feed(order, commit(1, { blockFrames: 1, outputFrames: 0, log: [inline(0)] }));
      feed(order, blocks(2, 0, 1));
      expectRejected(order, commit(2, { blockFrames: 1, outputFrames: 0, log: [inline(1)] }), "inconsistent", /inline/);
      expectRejected(order, commit(2, { blockFrames: 1, outputFrames: 0, log: [inline(0, 2)] }), "inconsistent", /inline/);
    });

    it("rejects an epoch that goes down, or up without promoted", () => {
      const order = replicatingSecondary();
      expectRejected(order, { ...commit(1), epoch: 0 }, "stale-epoch");
      expectRejected(order, changes(1, 0), "stale-epoch");
      expectRejected(order, { ...commit(1), epoch: 2 }, "order", /no promoted/);
      expectRejected(order, { type: "heartbeat", epoch: 0, id: 1 }, "stale-epoch");
    });

    it("rejects everything after goodbye", () => {
      const order = replicatingSecondary();
      feed(order, { type: "goodbye", reason: "bye" });
      expectRejected(order, commit(1), "order", /closed/);
      expectRejected(order, { type: "heartbeat", epoch: EPOCH, id: 1 }, "order");
    });
  });

  describe("primary side", () => {
    it("accepts init-ack and in-order sync-acks for what it sent", () => {
      const order = authenticatedOrder("primary");
      expectRejected(order, SAMPLE_MESSAGES["init-ack"], "order", /before init-end/);
      order.sent({ type: "init-end", seq: 0, epoch: EPOCH, pageCount: 0, stateParts: 1 });
      expectRejected(order, SAMPLE_MESSAGES["sync-ack"], "order", /before init-ack/);
      feed(order, SAMPLE_MESSAGES["init-ack"]);
      expectRejected(order, SAMPLE_MESSAGES["sync-ack"], "order", /not sent/);
      order.sentFrame(commit(1));
      order.sentFrame(commit(2));
      expectRejected(order, { type: "sync-ack", seq: 2, epoch: EPOCH }, "order", /expected 1/);
      feed(order, { type: "sync-ack", seq: 1, epoch: EPOCH });
      feed(order, { type: "sync-ack", seq: 2, epoch: EPOCH });
      expectRejected(order, updates(3, 1), "order", /from a secondary/);
      expectRejected(order, commit(3), "order");
    });

    it("takes the secondary's disk digests only before init-end", () => {
      const order = authenticatedOrder("primary");
      const digest = { type: "disk-digest" as const, seq: 0 as const, epoch: EPOCH, disk: 0, sha256: "ab".repeat(32) };
      feed(order, digest);
      expectRejected(order, { ...digest, epoch: EPOCH + 1 }, "order", /no promoted/);
      order.sent({ type: "init-end", seq: 0, epoch: EPOCH, pageCount: 0, stateParts: 1 });
      expectRejected(order, digest, "order", /after init-end/);
    });

    it("takes the secondary's own heartbeats, in increasing order", () => {
      const order = authenticatedOrder("primary");
      feed(order, { type: "heartbeat", epoch: EPOCH, id: 0 });
      feed(order, { type: "heartbeat", epoch: EPOCH, id: 1 });
      expectRejected(order, { type: "heartbeat", epoch: EPOCH, id: 1 }, "order", /after 1/);
      expectRejected(order, { type: "heartbeat-ack", epoch: EPOCH, id: 0 } as unknown as ControlMessage, "order");
    });

    it("is fenced by a higher promoted epoch and refuses a lower one", () => {
      const order = authenticatedOrder("primary");
      expectRejected(order, { type: "promoted", epoch: EPOCH }, "stale-epoch");
      feed(order, { type: "promoted", epoch: EPOCH + 1 });
      expect(order.phase).to.equal("fenced");
      expect(order.epoch).to.equal(EPOCH + 1);
      expectRejected(order, SAMPLE_MESSAGES["init-ack"], "order", /promoted/);
      feed(order, { type: "goodbye", reason: "fenced" });
    });

    it("a secondary refuses promoted", () => {
      expectRejected(replicatingSecondary(), { type: "promoted", epoch: 5 }, "order");
    });
  });
});
