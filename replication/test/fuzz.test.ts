// Hostile input, generated from a fixed seed: every decoder either returns a
// value or throws ProtocolError — never a TypeError, RangeError or a hang.
import { expect } from "chai";
import { decodeControl, encodeControl } from "../protocol/control-codec.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { FRAME_HEADER_BYTES, writeFrameHeader, FrameFlag } from "../protocol/frame-header.ts";
import { decodeFrame, encodeFrame } from "../protocol/frame-codec.ts";
import { MAX_FRAME_BYTES } from "../protocol/limits.ts";
import { SAMPLE_MESSAGES, sampleFrames, seededRandom } from "./fixtures.ts";

const random = seededRandom(0x7717);
const int = (below: number): number => Math.floor(random() * below);

async function outcomeOfFrame(bytes: Uint8Array): Promise<string> {
  try {
    await decodeFrame(bytes);
    return "ok";
  } catch (error) {
    if (error instanceof ProtocolError) return error.code;
    throw new Error(`decodeFrame threw a non-ProtocolError: ${String(error)}`, { cause: error });
  }
}

function outcomeOfControl(text: string): string {
  try {
    decodeControl(text);
    return "ok";
  } catch (error) {
    if (error instanceof ProtocolError) return error.code;
    throw new Error(`decodeControl threw a non-ProtocolError on ${text.slice(0, 80)}: ${String(error)}`, { cause: error });
  }
}

/** A header followed by `body`, with the given fields, for hand-made hostile frames. */
function frameWith(kind: number, flags: number, body: Uint8Array, bodyLength = body.length): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.length);
  writeFrameHeader(new DataView(out.buffer), { kind: kind as 1, flags, seq: 1, epoch: 1, bodyLength });
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

function u32s(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((value, i) => view.setUint32(i * 4, value, true));
  return out;
}

describe("fuzzed binary frames", function () {
  this.timeout(60_000);
  let valid: Uint8Array[] = [];
  before(async () => {
    valid = [];
    for (const frame of sampleFrames(seededRandom(5))) {
      valid.push(await encodeFrame(frame), await encodeFrame(frame, { compress: true }));
    }
  });

  it("rejects random bytes", async () => {
    for (let i = 0; i < 2000; i++) {
      const bytes = Uint8Array.from({ length: int(300) }, () => int(256));
      if (i % 2 === 0 && bytes.length >= 6) bytes.set([0x54, 0x57, 0x52, 0x50, 1, 1 + int(5)]); // get past magic and version
      expect(await outcomeOfFrame(bytes)).to.not.equal("ok");
    }
  });

  it("survives bit flips of valid frames", async () => {
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const bytes = valid[i % valid.length]!.slice();
      for (let flips = 1 + int(3); flips > 0; flips--) bytes[int(bytes.length)]! ^= 1 << int(8);
      const outcome = await outcomeOfFrame(bytes);
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    expect(outcomes.size).to.be.greaterThan(3); // reached several different checks
  });

  it("rejects every truncation of valid frames", async () => {
    for (const bytes of valid) {
      for (let length = 0; length < bytes.length; length += 1 + int(7)) {
        expect(await outcomeOfFrame(bytes.subarray(0, length))).to.be.oneOf(["truncated", "malformed", "inconsistent"]);
      }
    }
  });

  it("rejects trailing bytes", async () => {
    const bytes = new Uint8Array(valid[0]!.length + 1);
    bytes.set(valid[0]!);
    expect(await outcomeOfFrame(bytes)).to.equal("malformed");
  });

  it("rejects wrong magic and wrong version", async () => {
    const badMagic = valid[0]!.slice();
    badMagic[0] = 0x55;
    expect(await outcomeOfFrame(badMagic)).to.equal("bad-magic");
    const badVersion = valid[0]!.slice();
    badVersion[4] = 2;
    expect(await outcomeOfFrame(badVersion)).to.equal("version");
    const badKind = valid[0]!.slice();
    badKind[5] = 9;
    expect(await outcomeOfFrame(badKind)).to.equal("unknown-kind");
    const badFlags = valid[0]!.slice();
    badFlags[7] = 0x80;
    expect(await outcomeOfFrame(badFlags)).to.equal("malformed");
  });

  it("rejects oversized lengths before allocating", async () => {
    expect(await outcomeOfFrame(frameWith(2, 0, new Uint8Array(8), MAX_FRAME_BYTES))).to.equal("oversized");
    expect(await outcomeOfFrame(frameWith(2, 0, new Uint8Array(8), 0xffff_ffff))).to.equal("oversized");
    expect(await outcomeOfFrame(frameWith(1, 0, u32s(0xffff_ffff, 0)))).to.equal("oversized"); // page count
    expect(await outcomeOfFrame(frameWith(1, 0, u32s(4000, 1)))).to.equal("oversized");
    expect(await outcomeOfFrame(frameWith(2, 0, u32s(0, 0xffff_ffff)))).to.equal("oversized"); // state length
    expect(await outcomeOfFrame(frameWith(4, 0, u32s(0, 0xffff_ffff, 0, 0)))).to.equal("oversized"); // chunk length
    expect(await outcomeOfFrame(frameWith(3, 0, u32s(0, 0xffff_ffff, 0, 0)))).to.equal("oversized"); // sectors
    expect(await outcomeOfFrame(new Uint8Array(MAX_FRAME_BYTES + 1))).to.equal("oversized");
  });

  it("stops inflating a compression bomb at the declared length", async () => {
    const bomb = await encodeFrame({ kind: "state-parts", seq: 0, epoch: 1, parts: [new Uint8Array(8 * 1024 * 1024)] }, { compress: true });
    new DataView(bomb.buffer).setUint32(FRAME_HEADER_BYTES + 4, 1000, true); // claims 1000 bytes, inflates to 8 MiB
    expect(await outcomeOfFrame(bomb)).to.equal("oversized");
  });

  it("rejects corrupt compressed data and lies about lengths", async () => {
    expect(await outcomeOfFrame(frameWith(2, FrameFlag.compressed, new Uint8Array([1, 0, 0, 0, 10, 0, 0, 0, 0xff, 0xff, 0xff])))).to.equal("malformed");
    const short = await encodeFrame({ kind: "state-parts", seq: 0, epoch: 1, parts: [new Uint8Array(1000)] }, { compress: true });
    new DataView(short.buffer).setUint32(FRAME_HEADER_BYTES + 4, 2000, true);
    expect(await outcomeOfFrame(short)).to.equal("inconsistent");
    expect(await outcomeOfFrame(frameWith(3, FrameFlag.zeroChunk, new Uint8Array(16)))).to.equal("malformed");
  });

  it("rejects page lists out of order or overlapping", async () => {
    expect(await outcomeOfFrame(frameWith(1, 0, u32s(0, 2, 5, 5)))).to.equal("malformed");
    expect(await outcomeOfFrame(frameWith(1, 0, u32s(0, 2, 6, 5)))).to.equal("malformed");
  });

  it("rejects page updates whose run delta does not cover the page, or overruns it", async () => {
    const update = (delta: number[]) => {
      const entry = new Uint8Array(8 + delta.length);
      const view = new DataView(entry.buffer);
      view.setUint32(0, 7, true);
      view.setUint8(4, 2); // runs
      view.setUint16(6, delta.length, true);
      entry.set(delta, 8);
      return frameWith(5, 0, new Uint8Array([...u32s(1, entry.length), ...entry]));
    };
    expect(await outcomeOfFrame(update([10, 1, 0xaa]))).to.equal("inconsistent"); // covers 11 of 4096 bytes
    expect(await outcomeOfFrame(update([0x80, 0x20, 1, 0xaa]))).to.equal("malformed"); // keeps 4096, then one byte past the end
    expect(await outcomeOfFrame(update([0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))).to.equal("malformed"); // a varint longer than 5 bytes
    expect(await outcomeOfFrame(update([5, 200, 1]))).to.equal("truncated"); // a literal run past the end of the delta
  });

  it("rejects I/O log entries that are inconsistent or hostile", async () => {
    const entry = (type: number, flags: number, sectors: number, segments: [number, number][]) => {
      const out = new Uint8Array(20 + segments.length * 12);
      const view = new DataView(out.buffer);
      view.setUint8(0, type);
      view.setUint8(1, flags);
      view.setUint32(4, sectors, true);
      view.setBigUint64(8, 16n, true);
      view.setUint32(16, segments.length, true);
      segments.forEach(([gpa, length], i) => {
        view.setBigUint64(20 + i * 12, BigInt(gpa), true);
        view.setUint32(28 + i * 12, length, true);
      });
      return out;
    };
    const commit = (...entries: Uint8Array[]) => {
      const data = new Uint8Array(entries.reduce((n, e) => n + e.length, 0));
      let at = 0;
      for (const e of entries) {
        data.set(e, at);
        at += e.length;
      }
      return frameWith(7, 0, new Uint8Array([...u32s(0, 0, 0, entries.length, data.length, 0), ...data]));
    };
    expect(await outcomeOfFrame(commit(entry(1, 0, 2, [[0, 512]])))).to.equal("inconsistent"); // segments hold 512 of 1024 bytes
    expect(await outcomeOfFrame(commit(entry(1, 1, 1, [[0, 512]])))).to.equal("malformed"); // inline with segments
    expect(await outcomeOfFrame(commit(entry(2, 0, 1, [])))).to.equal("malformed"); // a flush with an extent
    expect(await outcomeOfFrame(commit(entry(9, 0, 1, [[0, 512]])))).to.equal("malformed"); // unknown type
    expect(await outcomeOfFrame(commit(entry(1, 4, 1, [[0, 512]])))).to.equal("malformed"); // unknown flag
    expect(await outcomeOfFrame(commit(entry(1, 0, 0, [])))).to.equal("malformed"); // no sectors
    expect(await outcomeOfFrame(frameWith(7, 0, u32s(0, 0, 0, 5000, 0, 0)))).to.equal("oversized"); // entry count
  });
});

describe("fuzzed control messages", () => {
  const hostileValues: unknown[] = [null, true, -1, 0.5, 1e308, -0, 2 ** 53, "", "x".repeat(1000), [], {}, [[[[[[[[[[]]]]]]]]]], { type: "welcome" }];

  it("rejects every field replaced by a hostile value", () => {
    let rejected = 0;
    for (const message of Object.values(SAMPLE_MESSAGES)) {
      for (const key of Object.keys(message)) {
        for (const value of hostileValues) {
          if (outcomeOfControl(JSON.stringify({ ...message, [key]: value })) !== "ok") rejected++;
        }
      }
    }
    expect(rejected).to.be.greaterThan(500);
  });

  it("survives random edits of valid messages", () => {
    const texts = Object.values(SAMPLE_MESSAGES).map((message) => encodeControl(message));
    const alphabet = '{}[]",:0123456789-.eE truefalsnul\\u';
    for (let i = 0; i < 5000; i++) {
      const chars = [...texts[i % texts.length]!];
      for (let edits = 1 + int(4); edits > 0; edits--) {
        const at = int(chars.length);
        const choice = int(3);
        if (choice === 0) chars.splice(at, 1);
        else if (choice === 1) chars.splice(at, 0, alphabet[int(alphabet.length)]!);
        else chars[at] = alphabet[int(alphabet.length)]!;
      }
      outcomeOfControl(chars.join(""));
    }
  });

  it("rejects random bytes as text", () => {
    for (let i = 0; i < 2000; i++) {
      const text = String.fromCharCode(...Array.from({ length: int(200) }, () => int(0x10000)));
      expect(outcomeOfControl(text)).to.not.equal("ok");
    }
  });

  it("rejects deep and huge JSON quickly", () => {
    const started = Date.now();
    expect(outcomeOfControl("[".repeat(500_000))).to.equal("oversized");
    expect(outcomeOfControl('{"a":'.repeat(100_000) + "1" + "}".repeat(100_000))).to.equal("oversized");
    expect(outcomeOfControl(JSON.stringify({ ...SAMPLE_MESSAGES["init-begin"], disks: Array(2000).fill({ id: 0, name: "vda", sizeBytes: 512 }) }))).to.equal(
      "schema",
    );
    expect(Date.now() - started).to.be.lessThan(2000);
  });
});
