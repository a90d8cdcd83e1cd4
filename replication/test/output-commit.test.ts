// The output-commit queue on its own: one rule for completions, console bytes and frames.
import { expect } from "chai";
import { MAX_HELD_OUTPUT_BYTES, OutputCommitQueue, type HeldOutput } from "../engine/primary/output-commit.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (chunks: Uint8Array[]) => chunks.map((chunk) => new TextDecoder().decode(chunk)).join("");

function queueWithLog(): {
  queue: OutputCommitQueue;
  console: Uint8Array[];
  frames: Uint8Array[];
  completed: string[];
  completion: (name: string) => HeldOutput;
} {
  const queue = new OutputCommitQueue();
  const console: Uint8Array[] = [];
  const frames: Uint8Array[] = [];
  const completed: string[] = [];
  queue.onRelease("console", (chunk) => console.push(chunk));
  queue.onRelease("frame", (frame) => frames.push(frame));
  return { queue, console, frames, completed, completion: (name) => ({ kind: "completion", release: () => completed.push(name) }) };
}

describe("output-commit queue", () => {
  it("tells when each released console chunk or frame was held (the hold-time metric), and nothing of completions", () => {
    const released: [string, number][] = [];
    const queue = new OutputCommitQueue({ released: (kind, heldAt) => released.push([kind, heldAt]) });
    queue.hold({ kind: "console", bytes: bytes("a") }, 10);
    queue.hold({ kind: "completion", release: () => undefined }, 11);
    queue.hold({ kind: "frame", bytes: bytes("F") }, 12);
    queue.cover(1, new Set());
    expect(released, "nothing before the ack").to.deep.equal([]);
    queue.hold({ kind: "console", bytes: bytes("b") }, 13);
    queue.acknowledged(1);
    expect(released).to.deep.equal([["console", 10]]);
    queue.releaseAll();
    expect(released).to.deep.equal([
      ["console", 10],
      ["frame", 12],
      ["console", 13],
    ]);
  });

  it("holds output until the sync that covers it is acknowledged, and releases it in order", () => {
    const { queue, console, frames } = queueWithLog();
    queue.hold({ kind: "console", bytes: bytes("a") }, 0);
    queue.hold({ kind: "frame", bytes: bytes("F1") }, 0);
    expect(queue.hasUncoveredOutput).to.equal(true);
    queue.cover(1, new Set());
    expect(queue.hasUncoveredOutput).to.equal(false);
    queue.hold({ kind: "console", bytes: bytes("b") }, 1);
    queue.cover(2, new Set());
    queue.acknowledged(1);
    expect(text(console)).to.equal("a");
    expect(text(frames)).to.equal("F1");
    queue.acknowledged(2);
    expect(text(console)).to.equal("ab");
    expect(queue.heldBytes).to.equal(0);
  });

  it("covers a completion only by the sync that logs its request, and keeps later output behind it", () => {
    const { queue, console, completed, completion } = queueWithLog();
    const a = completion("write A");
    const b = completion("write B");
    queue.hold(a, 0);
    queue.hold(b, 0);
    queue.hold({ kind: "console", bytes: bytes("x") }, 0);
    // Sync 1's batch took A only (a size limit left B for later); the console bytes are covered.
    queue.cover(1, new Set([a]));
    queue.acknowledged(1);
    expect(completed).to.deep.equal(["write A"]);
    expect(text(console), "output held behind a write not yet logged").to.equal("");
    expect(queue.heldCompletions).to.equal(1);
    queue.cover(2, new Set([b]));
    queue.acknowledged(2);
    expect(completed).to.deep.equal(["write A", "write B"]);
    expect(text(console)).to.equal("x");
  });

  it("after a loss, what unacknowledged syncs covered waits again; an initial copy covers all of it", () => {
    const { queue, console, completed, completion } = queueWithLog();
    const a = completion("A");
    queue.hold(a, 0);
    queue.hold({ kind: "console", bytes: bytes("1") }, 0);
    queue.cover(1, new Set([a]));
    queue.uncoverAfter(0);
    expect(queue.hasUncoveredOutput).to.equal(true);
    queue.acknowledged(1);
    expect(completed, "an ack of a lost session releases nothing").to.deep.equal([]);
    queue.coverAll(0);
    queue.acknowledged(0);
    expect(completed).to.deep.equal(["A"]);
    expect(text(console)).to.equal("1");
  });

  it("numbers the console bytes and frames each capture covers, for the sync to carry, and tells how many are out", () => {
    const { queue, completion } = queueWithLog();
    const carried = () => {
      const batch = queue.takeCarried();
      return batch === undefined
        ? undefined
        : { first: batch.first, released: batch.released, outputs: batch.outputs.map((output) => `${output.kind}:${text([output.bytes])}`) };
    };
    queue.coverAll(0);
    queue.hold({ kind: "console", bytes: bytes("a") }, 0);
    const write = completion("w");
    queue.hold(write, 0);
    queue.hold({ kind: "frame", bytes: bytes("F") }, 0);
    queue.cover(1, new Set([write]));
    expect(carried(), "completions do not travel").to.deep.equal({ first: 0, released: 0, outputs: ["console:a", "frame:F"] });
    expect(carried(), "nothing new, nothing more released").to.equal(undefined);
    queue.acknowledged(1);
    queue.hold({ kind: "console", bytes: bytes("b") }, 0);
    queue.cover(2, new Set());
    expect(carried()).to.deep.equal({ first: 2, released: 2, outputs: ["console:b"] });
    // The secondary is lost before sync 2's ack: "b" waits for a new cover, and a new secondary's copy numbers from 0.
    queue.uncoverAfter(1);
    queue.coverAll(0);
    queue.hold({ kind: "frame", bytes: bytes("G") }, 0);
    queue.cover(1, new Set());
    expect(carried(), "the initial copy holds b; G is the new session's first").to.deep.equal({ first: 0, released: 0, outputs: ["frame:G"] });
    queue.acknowledged(1);
    expect(carried()).to.deep.equal({ first: 1, released: 1, outputs: [] });
  });

  it("releases everything at once when nothing protects the guest, and passes output straight through then", () => {
    const { queue, console, completed, completion } = queueWithLog();
    queue.hold(completion("A"), 0);
    queue.hold({ kind: "console", bytes: bytes("held ") }, 0);
    queue.releaseAll();
    queue.pass({ kind: "console", bytes: bytes("passed") });
    expect(completed).to.deep.equal(["A"]);
    expect(text(console)).to.equal("held passed");
    expect(queue.counters("console")).to.include({ held: 1, released: 2, dropped: 0 });
  });

  it("a fenced primary drops what its guest said and never completes what it waits for", () => {
    const { queue, console, frames, completed, completion } = queueWithLog();
    queue.hold(completion("A"), 0);
    queue.hold({ kind: "console", bytes: bytes("lost") }, 0);
    queue.hold({ kind: "frame", bytes: bytes("frame") }, 0);
    queue.cover(1, new Set());
    queue.discardOutput();
    queue.acknowledged(1);
    expect(console).to.deep.equal([]);
    expect(frames).to.deep.equal([]);
    expect(completed).to.deep.equal([]);
    expect(queue.heldCompletions).to.equal(1);
    expect(queue.counters("frame")).to.include({ dropped: 1, droppedBytes: 5 });
  });

  it("bounds the bytes it holds: output over the bound is dropped and counted, completions are always held", () => {
    const { queue, completion } = queueWithLog();
    expect(queue.hold({ kind: "frame", bytes: new Uint8Array(MAX_HELD_OUTPUT_BYTES) }, 0)).to.equal(true);
    expect(queue.hold({ kind: "console", bytes: bytes("x") }, 0)).to.equal(false);
    expect(queue.hold(completion("A"), 0)).to.equal(true);
    expect(queue.counters("console")).to.include({ dropped: 1, droppedBytes: 1 });
    expect(queue.heldBytes).to.equal(MAX_HELD_OUTPUT_BYTES);
  });

  it("says since when uncovered output waits (for the capture-delay metric)", () => {
    const { queue, completion } = queueWithLog();
    queue.hold(completion("A"), 5);
    expect(queue.oldestUncoveredAt, "completions wait for their request's sync, not for output's").to.equal(undefined);
    queue.hold({ kind: "console", bytes: bytes("x") }, 7);
    queue.hold({ kind: "console", bytes: bytes("y") }, 9);
    expect(queue.oldestUncoveredAt).to.equal(7);
  });
});
