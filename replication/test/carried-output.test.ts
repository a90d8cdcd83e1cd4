// The secondary's store of the output that came with its applied syncs: it forgets what the
// primary says it let out, gives the rest once, in order, and stays bounded.
import { expect } from "chai";
import { CarriedOutputStore, MAX_CARRIED_OUTPUT_BYTES } from "../engine/secondary/carried-output.ts";
import type { CarriedOutput } from "../protocol/frames.ts";

const out = (text: string): CarriedOutput => ({ kind: "frame", bytes: new TextEncoder().encode(text) });
const texts = (outputs: CarriedOutput[]) => outputs.map((output) => new TextDecoder().decode(output.bytes));

describe("carried output (secondary)", () => {
  it("forgets what the primary let out, and gives the rest once, in order", () => {
    const store = new CarriedOutputStore();
    store.add([{ first: 0, released: 0, outputs: [out("a"), out("b")] }]);
    store.add([{ first: 2, released: 1, outputs: [out("c")] }]);
    expect(store.size.outputs).to.equal(2);
    expect(texts(store.take())).to.deep.equal(["b", "c"]);
    expect(store.take()).to.deep.equal([]);
    // Numbering goes on after a take; what was released before it changes nothing.
    store.add([{ first: 3, released: 3, outputs: [out("d")] }]);
    expect(texts(store.take())).to.deep.equal(["d"]);
  });

  it("starts over with a new session, and keeps at most its bound, forgetting the oldest", () => {
    const store = new CarriedOutputStore();
    store.add([{ first: 0, released: 0, outputs: [out("old")] }]);
    store.reset();
    store.add([{ first: 0, released: 0, outputs: [out("new")] }]);
    expect(texts(store.take())).to.deep.equal(["new"]);
    const big = { kind: "frame" as const, bytes: new Uint8Array(MAX_CARRIED_OUTPUT_BYTES / 2) };
    store.add([{ first: 1, released: 1, outputs: [big, big, out("last")] }]);
    expect(store.size.dropped).to.equal(1);
    expect(store.take().length).to.equal(2);
  });
});
