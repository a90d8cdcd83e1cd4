// Every control message and binary frame kind survives encode → decode unchanged,
// and the encoders refuse what the decoders would refuse.
import { expect } from "chai";
import { decodeControl, encodeControl, jsonNestingDepth } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { decodeFrame, encodeFrame, type BinaryFrame } from "../protocol/frames.ts";
import { MAX_PAGES_PER_FRAME, PAGE_SIZE } from "../protocol/limits.ts";
import { SAMPLE_MESSAGES, rejectionOf, sampleFrames, seededRandom } from "./fixtures.ts";

describe("control messages", () => {
  for (const [type, message] of Object.entries(SAMPLE_MESSAGES)) {
    it(`round-trips ${type}`, () => {
      expect(decodeControl(encodeControl(message))).to.deep.equal(message);
    });
  }

  const rejects: Array<[string, string, string]> = [
    ["an unknown type", '{"type":"reboot"}', "unknown-type"],
    ["an extra property", '{"type":"welcome","version":1,"admin":true}', "schema"],
    ["a missing property", '{"type":"sync-ack","seq":1}', "schema"],
    ["a wrong field type", '{"type":"sync-ack","seq":"1","epoch":1}', "schema"],
    ["a negative seq", '{"type":"sync-ack","seq":-1,"epoch":1}', "schema"],
    ["a fractional seq", '{"type":"sync-ack","seq":1.5,"epoch":1}', "schema"],
    ["a seq beyond 2^53", '{"type":"sync-ack","seq":9007199254740993,"epoch":1}', "schema"],
    ["an over-long string", JSON.stringify({ type: "goodbye", reason: "x".repeat(600) }), "schema"],
    ["a non-object", "[1,2,3]", "schema"],
    ["null", "null", "schema"],
    ["broken JSON", '{"type":', "malformed"],
    ["deep nesting", "[".repeat(100) + "]".repeat(100), "oversized"],
    ["huge text", JSON.stringify({ type: "goodbye", reason: "x".repeat(2 * 1024 * 1024) }), "oversized"],
    ["a sync-commit as JSON (v1; it is a binary frame now)", '{"type":"sync-commit","seq":1,"epoch":1}', "unknown-type"],
    ["duplicate disk ids", JSON.stringify({ ...SAMPLE_MESSAGES["init-begin"], disks: [{ id: 0, name: "a", sizeBytes: 512 }, { id: 0, name: "b", sizeBytes: 512 }] }), "inconsistent"],
    ["memory not a page multiple", JSON.stringify({ ...SAMPLE_MESSAGES["init-begin"], memoryBytes: 5000 }), "inconsistent"],
    ["a bad nonce", JSON.stringify({ ...SAMPLE_MESSAGES.challenge, nonce: "short" }), "schema"],
    ["a __proto__ key", '{"type":"welcome","version":1,"__proto__":{"polluted":1}}', "schema"],
  ];
  for (const [what, text, code] of rejects) {
    it(`rejects ${what} with ${code}`, () => {
      expect(() => decodeControl(text)).to.throw(ProtocolError).with.property("code", code);
    });
  }

  it("refuses to encode an invalid message", () => {
    expect(() => encodeControl({ type: "sync-ack", seq: 0, epoch: 1 })).to.throw(ProtocolError, /schema/);
  });

  it("measures nesting outside strings only", () => {
    expect(jsonNestingDepth('{"a":"[[[[[[[[[[[[[[[[["}')).to.equal(1);
    expect(jsonNestingDepth('{"a":"\\"[[[","b":[[1]]}')).to.equal(3);
  });
});

describe("binary frames", () => {
  const frames = sampleFrames(seededRandom(1));
  for (const compress of [false, true]) {
    for (const frame of frames) {
      it(`round-trips ${frame.kind} seq ${frame.seq}${compress ? " compressed" : ""}`, async () => {
        const decoded = await decodeFrame(await encodeFrame(frame, { compress }));
        expect(normalise(decoded)).to.deep.equal(normalise(frame));
      });
    }
  }

  it("compresses compressible data and sets the flag", async () => {
    const frame = frames[2]!;
    const plain = await encodeFrame(frame);
    const packed = await encodeFrame(frame, { compress: true });
    expect(packed.length).to.be.lessThan(plain.length);
    expect(packed[6]! & 1).to.equal(1);
  });

  it("sends incompressible data uncompressed even when asked to compress", async () => {
    const random = seededRandom(2);
    const data = Uint8Array.from({ length: 4096 }, () => Math.floor(random() * 256));
    const bytes = await encodeFrame({ kind: "state-parts", seq: 0, epoch: 1, parts: [data] }, { compress: true });
    expect(bytes[6]! & 1).to.equal(0);
  });

  it("refuses to encode frames over the limits or inconsistent", async () => {
    const tooMany = new Uint32Array(MAX_PAGES_PER_FRAME + 1).map((_, i) => i);
    const cases: BinaryFrame[] = [
      { kind: "memory-pages", seq: 1, epoch: 1, indices: new Uint32Array(0), data: new Uint8Array(0), zeroIndices: tooMany },
      { kind: "memory-pages", seq: 1, epoch: 1, indices: new Uint32Array([2, 1]), data: new Uint8Array(2 * PAGE_SIZE), zeroIndices: new Uint32Array(0) },
      { kind: "memory-pages", seq: 1, epoch: 1, indices: new Uint32Array([1]), data: new Uint8Array(PAGE_SIZE), zeroIndices: new Uint32Array([1]) },
      { kind: "disk-blocks", seq: 1, epoch: 1, disk: 0, sector: 0, data: new Uint8Array(100) },
      { kind: "disk-chunk", seq: 0, epoch: 1, disk: 99, offset: 0, length: 512, data: "zeros" },
      { kind: "state-parts", seq: -1, epoch: 1, parts: [new Uint8Array(1)] },
      { kind: "page-updates", seq: 1, epoch: 1, updates: [{ page: 2, encoding: "zero", bytes: new Uint8Array(0) }, { page: 2, encoding: "zero", bytes: new Uint8Array(0) }] },
      { kind: "page-updates", seq: 1, epoch: 1, updates: [{ page: 2, encoding: "full", bytes: new Uint8Array(100) }] },
      { kind: "page-updates", seq: 1, epoch: 1, updates: [{ page: 2, encoding: "runs", bytes: Uint8Array.of(5, 1, 9) }] },
      { kind: "state-changes", seq: 1, epoch: 1, partCount: 2, changes: [{ index: 2, encoding: "full", length: 1, bytes: Uint8Array.of(1) }] },
      { kind: "sync-commit", seq: 1, epoch: 1, pageUpdates: 0, stateChanges: 0, blockFrames: 0, log: [{ type: "write", disk: 0, sector: 0, sectors: 2, segments: [{ gpa: 0, length: 512 }] }] },
      { kind: "sync-commit", seq: 1, epoch: 1, pageUpdates: 0, stateChanges: 0, blockFrames: 0, log: [{ type: "write", disk: 0, sector: 0, sectors: 1, segments: [{ gpa: 0, length: 512 }], inline: true }] },
    ];
    for (const frame of cases) {
      expect(await rejectionOf(encodeFrame(frame))).to.be.instanceOf(ProtocolError);
    }
  });
});

/** Typed arrays compare by content once turned into plain arrays. */
function normalise(frame: BinaryFrame): unknown {
  return JSON.parse(JSON.stringify(frame, (_key, value: unknown) => (ArrayBuffer.isView(value) ? Array.from(value as Uint8Array) : value)));
}
