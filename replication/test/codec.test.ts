// Every control message and binary frame kind survives encode → decode unchanged,
// and the encoders refuse what the decoders would refuse; run deltas rebuild their target.
import { expect } from "chai";
import { decodeControl, encodeControl, jsonNestingDepth } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { type BinaryFrame } from "../protocol/frames.ts";
import { decodeFrame, encodeFrame } from "../protocol/frame-codec.ts";
import { MAX_OUTPUTS_PER_FRAME, MAX_PAGES_PER_FRAME } from "../protocol/limits.ts";
import { applyRunDelta, encodeRunDelta } from "../protocol/run-delta.ts";
import { SAMPLE_MESSAGES, rejectionOf, sampleFrames, seededRandom } from "./fixtures.ts";
import { PAGE_SIZE } from "../../emulator/units.ts";

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
    [
      "duplicate disk ids",
      JSON.stringify({
        ...SAMPLE_MESSAGES["init-begin"],
        disks: [
          { id: 0, name: "a", sizeBytes: 512 },
          { id: 0, name: "b", sizeBytes: 512 },
        ],
      }),
      "inconsistent",
    ],
    ["memory not a page multiple", JSON.stringify({ ...SAMPLE_MESSAGES["init-begin"], memoryBytes: 5000 }), "inconsistent"],
    ["a bad nonce", JSON.stringify({ ...SAMPLE_MESSAGES.challenge, nonce: "short" }), "schema"],
    ["a __proto__ key", '{"type":"welcome","version":1,"__proto__":{"polluted":1}}', "schema"],
  ];
  for (const [what, text, code] of rejects) {
    it(`rejects ${what} with ${code}`, () => {
      expect(() => decodeControl(text))
        .to.throw(ProtocolError)
        .with.property("code", code);
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
      {
        kind: "page-updates",
        seq: 1,
        epoch: 1,
        updates: [
          { page: 2, encoding: "zero", bytes: new Uint8Array(0) },
          { page: 2, encoding: "zero", bytes: new Uint8Array(0) },
        ],
      },
      { kind: "page-updates", seq: 1, epoch: 1, updates: [{ page: 2, encoding: "full", bytes: new Uint8Array(100) }] },
      { kind: "page-updates", seq: 1, epoch: 1, updates: [{ page: 2, encoding: "runs", bytes: Uint8Array.of(5, 1, 9) }] },
      { kind: "state-changes", seq: 1, epoch: 1, partCount: 2, changes: [{ index: 2, encoding: "full", length: 1, bytes: Uint8Array.of(1) }] },
      // More released than numbered before the frame; numbering past 2^53; an unknown output kind.
      { kind: "held-output", seq: 1, epoch: 1, first: 3, released: 4, outputs: [] },
      { kind: "held-output", seq: 1, epoch: 1, first: Number.MAX_SAFE_INTEGER, released: 0, outputs: [{ kind: "frame", bytes: Uint8Array.of(1) }] },
      { kind: "held-output", seq: 1, epoch: 1, first: 0, released: 0, outputs: [{ kind: "sound" as "frame", bytes: Uint8Array.of(1) }] },
      {
        kind: "sync-commit",
        seq: 1,
        epoch: 1,
        pageUpdates: 0,
        stateChanges: 0,
        blockFrames: 0,
        outputFrames: 0,
        log: [{ type: "write", disk: 0, sector: 0, sectors: 2, segments: [{ gpa: 0, length: 512 }] }],
      },
      {
        kind: "sync-commit",
        seq: 1,
        epoch: 1,
        pageUpdates: 0,
        stateChanges: 0,
        blockFrames: 0,
        outputFrames: 0,
        log: [{ type: "write", disk: 0, sector: 0, sectors: 1, segments: [{ gpa: 0, length: 512 }], inline: true }],
      },
    ];
    for (const frame of cases) {
      expect(await rejectionOf(encodeFrame(frame))).to.be.instanceOf(ProtocolError);
    }
  });
});

describe("held-output frames from a hostile peer", () => {
  const good = async () =>
    encodeFrame({ kind: "held-output", seq: 3, epoch: 1, first: 5, released: 5, outputs: [{ kind: "frame", bytes: Uint8Array.of(1, 2, 3) }] });
  // Kind header at 24: count u32, data bytes u32, first u64, released u64; an entry: kind u8, two reserved, length u32.
  const patched = async (patch: (view: DataView) => void) => {
    const bytes = await good();
    patch(new DataView(bytes.buffer));
    return decodeFrame(bytes);
  };

  it("rejects an unknown output kind, set reserved bytes, a count over the limit, more released than numbered, and a length past the data", async () => {
    const cases: [string, (view: DataView) => void][] = [
      ["unknown kind", (view) => view.setUint8(48, 9)],
      ["reserved byte", (view) => view.setUint8(49, 1)],
      ["count over the limit", (view) => view.setUint32(24, MAX_OUTPUTS_PER_FRAME + 1, true)],
      ["released beyond numbered", (view) => view.setBigUint64(40, 6n, true)],
      ["numbering beyond 2^53", (view) => view.setBigUint64(32, 2n ** 60n, true)],
      ["entry length past the data", (view) => view.setUint32(52, 4, true)],
      ["a second entry announced", (view) => view.setUint32(24, 2, true)],
    ];
    for (const [what, patch] of cases) {
      const error = await rejectionOf(patched(patch));
      expect(error, what).to.be.instanceOf(ProtocolError);
    }
    expect((await patched(() => undefined)).kind).to.equal("held-output");
  });
});

/** Typed arrays compare by content once turned into plain arrays. */
function normalise(frame: BinaryFrame): unknown {
  return JSON.parse(JSON.stringify(frame, (_key, value: unknown) => (ArrayBuffer.isView(value) ? Array.from(value as Uint8Array) : value)));
}

describe("run deltas", () => {
  /** The format's rules byte by byte: keep runs of >= 3 equal bytes inside the base, literals between. */
  function referenceDelta(base: Uint8Array, target: Uint8Array, limit: number): number[] | undefined {
    const common = Math.min(base.length, target.length);
    const equal = (i: number) => i < common && base[i] === target[i];
    const out: number[] = [];
    const varint = (value: number) => {
      for (; value >= 0x80; value = Math.floor(value / 128)) out.push((value & 0x7f) | 0x80);
      out.push(value);
    };
    let at = 0;
    while (at < target.length) {
      let scan = at;
      while (scan < target.length && equal(scan)) scan++;
      let end = scan;
      while (end < target.length) {
        if (!equal(end)) {
          end++;
          continue;
        }
        let same = end;
        while (same < end + 3 && equal(same)) same++;
        if (same - end >= 3 || same >= target.length) break;
        end = same;
      }
      varint(scan - at);
      varint(end - scan);
      out.push(...target.subarray(scan, end));
      if (out.length >= Math.min(limit, target.length + 16)) return undefined;
      at = end;
    }
    return out;
  }

  /** A version of `base` with up to `runs` changed runs, maybe shorter or longer. */
  function changed(random: () => number, base: Uint8Array, runs: number, resize: boolean): Uint8Array {
    const length = resize ? Math.max(0, base.length + Math.floor(random() * 200) - 100) : base.length;
    const target = new Uint8Array(length);
    target.set(base.subarray(0, length));
    for (let i = base.length; i < length; i++) target[i] = Math.floor(random() * 256);
    for (let r = 0; r < runs && length > 0; r++) {
      const at = Math.floor(random() * length);
      for (let i = at; i < Math.min(length, at + 1 + Math.floor(random() * 40)); i++) target[i] = (target[i]! + 1 + Math.floor(random() * 255)) & 0xff;
    }
    return target;
  }

  it("encodes what the format's rules say, byte for byte, and the delta rebuilds the target", () => {
    const random = seededRandom(64);
    for (let round = 0; round < 400; round++) {
      const size = round % 4 === 0 ? 1 + Math.floor(random() * 300) : PAGE_SIZE;
      const base = Uint8Array.from({ length: size }, () => Math.floor(random() * 256));
      const target = changed(random, base, round % 13, round % 4 === 0);
      const limit = round % 5 === 0 ? 64 : target.length;
      const delta = encodeRunDelta(base, target, limit);
      const expected = referenceDelta(base, target, limit);
      expect(delta === undefined ? undefined : Array.from(delta), `round ${round}`).to.deep.equal(expected);
      if (delta === undefined) continue;
      const rebuilt = new Uint8Array(target.length);
      rebuilt.set(base.subarray(0, target.length));
      applyRunDelta(delta, base.length, rebuilt, "test");
      expect(Buffer.compare(rebuilt, target), `round ${round}`).to.equal(0);
    }
  });

  it("works on unaligned views, and on a target the size of the whole base or empty", () => {
    const backing = new Uint8Array(PAGE_SIZE + 3).map((_, i) => i & 0xff);
    const base = backing.subarray(1, PAGE_SIZE + 1);
    const target = base.slice();
    target[77] = target[77]! ^ 1;
    const unaligned = new Uint8Array(PAGE_SIZE + 3);
    unaligned.set(target, 2);
    const view = unaligned.subarray(2, PAGE_SIZE + 2);
    expect(Array.from(encodeRunDelta(base, view)!)).to.deep.equal(referenceDelta(base, view, PAGE_SIZE));
    expect(Array.from(encodeRunDelta(base, base.slice())!)).to.deep.equal([0x80, 0x20, 0]); // keep 4096, copy 0
    expect(Array.from(encodeRunDelta(base, new Uint8Array(0), 16)!)).to.deep.equal([]);
  });
});
