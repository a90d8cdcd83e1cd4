// The network link's codec alone: frame batches round-trip and split at the batch size;
// every structural fault is a NetworkLinkError naming it; control and handshake messages
// are checked against closed schemas; random bytes never throw anything else.
import { expect } from "chai";
import { NetworkLinkError } from "../network/link-errors.ts";
import { BATCH_RECORD_BYTES, MAX_FRAMES_PER_RECORD } from "../network/link-limits.ts";
import {
  decodeBatch,
  decodeControl,
  decodeHandshake,
  encodeControl,
  encodeEgressBatches,
  encodeIngressBatches,
  type LinkControl,
} from "../network/link-messages.ts";
import { seededRandom } from "./fixtures.ts";

function fails(work: () => unknown, code: string, message: RegExp): void {
  let caught: unknown;
  try {
    work();
  } catch (error) {
    caught = error;
  }
  expect(caught, "should have thrown").to.be.instanceOf(NetworkLinkError);
  expect((caught as NetworkLinkError).code).to.equal(code);
  expect((caught as Error).message).to.match(message);
}

const utf8 = (text: string) => new TextEncoder().encode(text);

describe("network link codec", function () {
  it("round-trips ingress and egress batches, splitting at the batch size", function () {
    const frames = Array.from({ length: 100 }, (_, i) => ({ id: 2 ** 50 + i, frame: new Uint8Array(1514).fill(i) }));
    const payloads = encodeIngressBatches(frames);
    expect(payloads.length).to.equal(Math.ceil(100 / Math.floor((BATCH_RECORD_BYTES - 1) / 1524)));
    for (const payload of payloads) expect(payload.length).to.be.at.most(BATCH_RECORD_BYTES);
    const decoded = payloads.flatMap((p) => {
      const batch = decodeBatch(p);
      return batch.kind === "ingress" ? batch.frames : [];
    });
    expect(decoded).to.deep.equal(frames);
    const egress = [new Uint8Array(60).fill(1), new Uint8Array(0), new Uint8Array(9000).fill(3)];
    const [one] = encodeEgressBatches(egress);
    expect(decodeBatch(one!)).to.deep.equal({ kind: "egress", frames: egress });
  });

  it("names every structural fault of a batch", function () {
    const [good] = encodeIngressBatches([
      { id: 7, frame: new Uint8Array(20) },
      { id: 9, frame: new Uint8Array(20) },
    ]);
    fails(() => decodeBatch(new Uint8Array(0)), "malformed", /empty frame batch/);
    fails(() => decodeBatch(new Uint8Array([9, 0, 0])), "malformed", /unknown kind 9/);
    fails(() => decodeBatch(new Uint8Array([1])), "malformed", /without frames/);
    fails(() => decodeBatch(good!.subarray(0, 6)), "malformed", /ends inside a frame header/);
    fails(() => decodeBatch(good!.subarray(0, good!.length - 1)), "malformed", /runs past the batch's end/);
    const backwards = good!.slice();
    new DataView(backwards.buffer).setBigUint64(1 + 30, 7n);
    fails(() => decodeBatch(backwards), "order", /not increasing within a batch \(7 after 7\)/);
    const huge = good!.slice();
    new DataView(huge.buffer).setBigUint64(1, 2n ** 60n);
    fails(() => decodeBatch(huge), "malformed", /not an exact integer/);
    const many = new Uint8Array(1 + (MAX_FRAMES_PER_RECORD + 1) * 2);
    many[0] = 2;
    fails(() => decodeBatch(many), "oversized", /more than 1024 frames/);
  });

  it("checks control messages against closed schemas", function () {
    const messages: LinkControl[] = [
      { type: "attach", epoch: 2, lastIngressId: 12 },
      { type: "attached", epoch: 2, resumeFrom: 13, replay: 0, missing: 0 },
      { type: "stale-epoch", epoch: 3, message: "taken over" },
      { type: "superseded", epoch: 3 },
      { type: "committed", lastIngressId: 12 },
      { type: "ping" },
      { type: "error", code: "order", message: "x" },
      { type: "goodbye", reason: "bye" },
    ];
    for (const message of messages) expect(decodeControl(encodeControl(message))).to.deep.equal(message);
    fails(() => decodeControl(utf8('{"type":"attach","epoch":1,"lastIngressId":0,"extra":1}')), "malformed", /must NOT have additional properties/);
    fails(() => decodeControl(utf8('{"type":"attach","epoch":-1,"lastIngressId":0}')), "malformed", /epoch must be >= 0/);
    fails(() => decodeControl(utf8('{"type":"committed","lastIngressId":1.5}')), "malformed", /must be integer/);
    fails(() => decodeControl(utf8('{"type":"promote"}')), "malformed", /unknown message type "promote"/);
    fails(() => decodeControl(utf8("[1]")), "malformed", /not a JSON object/);
    fails(() => decodeControl(new Uint8Array([0xff, 0xfe])), "malformed", /not UTF-8/);
    fails(() => decodeControl(utf8(`{"type":"goodbye","reason":"${"x".repeat(5000)}"}`)), "oversized", /limit 4096/);
    expect(() => encodeControl({ type: "attach", epoch: 1, lastIngressId: -1 })).to.throw(NetworkLinkError);
  });

  it("names a replication peer's challenge, and checks the handshake's", function () {
    const replication =
      '{"type":"challenge","protocol":"twinvm-replication","minVersion":3,"maxVersion":3,"role":"primary","epoch":1,"nonce":"x","nodeId":"p"}';
    fails(() => decodeHandshake(replication), "wrong-peer", /the peer is a twinvm replication node, not an end of the network link/);
    const nonce = "A".repeat(43) + "=";
    const ours = { type: "challenge", protocol: "twinvm-network", role: "node", minVersion: 1, maxVersion: 1, nonce, nodeId: "n" };
    expect(decodeHandshake(JSON.stringify(ours))).to.deep.equal(ours);
    fails(() => decodeHandshake(JSON.stringify({ ...ours, role: "primary" })), "malformed", /role must be equal to one of the allowed values/);
    fails(() => decodeHandshake(JSON.stringify({ type: "welcome", version: 1 })), "malformed", /unknown message type/);
  });

  it("throws nothing but NetworkLinkError on random or mutated input", function () {
    const random = seededRandom(17);
    const [seed] = encodeIngressBatches([
      { id: 1, frame: new Uint8Array(60) },
      { id: 2, frame: new Uint8Array(100) },
    ]);
    const control = encodeControl({ type: "attach", epoch: 1, lastIngressId: 3 });
    for (let i = 0; i < 3000; i++) {
      const base = i % 3 === 0 ? seed! : i % 3 === 1 ? control : new Uint8Array(Math.floor(random() * 64));
      const bytes = base.slice();
      for (let flips = 1 + Math.floor(random() * 4); flips > 0 && bytes.length > 0; flips--)
        bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      for (const decode of [decodeBatch, decodeControl]) {
        try {
          decode(bytes);
        } catch (error) {
          if (!(error instanceof NetworkLinkError)) throw new Error(`input ${Buffer.from(bytes).toString("hex")} threw ${String(error)}`, { cause: error });
        }
      }
    }
  });
});
