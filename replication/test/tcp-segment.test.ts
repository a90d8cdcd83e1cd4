import { expect } from "chai";
import { DuplicateAckPacer } from "../network/duplicate-acks.ts";
import { tcpSegmentKey } from "../network/tcp-segment.ts";

/** An Ethernet + IPv4 + TCP frame with `payload` bytes after a 20-byte TCP header. */
function segment(options: {
  seq: number;
  ack?: number;
  window?: number;
  payload?: number;
  flags?: number;
  srcPort?: number;
  protocol?: number;
  etherType?: number;
}): Uint8Array {
  const payload = options.payload ?? 0;
  const frame = new Uint8Array(14 + 20 + 20 + payload);
  const view = new DataView(frame.buffer);
  view.setUint16(12, options.etherType ?? 0x0800);
  frame[14] = 0x45;
  view.setUint16(16, 20 + 20 + payload);
  frame[14 + 9] = options.protocol ?? 6;
  view.setUint32(26, 0x0a000202);
  view.setUint32(30, 0x0a00020f);
  view.setUint16(34, options.srcPort ?? 40000);
  view.setUint16(36, 7);
  view.setUint32(38, options.seq);
  view.setUint32(42, options.ack ?? 1);
  frame[46] = 5 << 4;
  frame[47] = options.flags ?? 0x10;
  view.setUint16(48, options.window ?? 1000);
  return frame;
}

describe("TCP segment keys (a receive queue keeps one copy of a retransmitted segment)", () => {
  it("gives a retransmission the key of the original, whatever its acknowledgement", () => {
    expect(tcpSegmentKey(segment({ seq: 1000, ack: 5, payload: 1460 }))).to.equal(tcpSegmentKey(segment({ seq: 1000, ack: 9000, payload: 1460 })));
  });

  it("tells segments apart by sequence number, length, stream and SYN/FIN/RST", () => {
    const base = tcpSegmentKey(segment({ seq: 1000, payload: 1460 }));
    expect(base).to.be.a("string");
    for (const other of [
      segment({ seq: 2460, payload: 1460 }),
      segment({ seq: 1000, payload: 100 }),
      segment({ seq: 1000, payload: 1460, srcPort: 40001 }),
      segment({ seq: 1000, payload: 1460, flags: 0x11 }),
    ]) {
      expect(tcpSegmentKey(other)).to.not.equal(base);
    }
  });

  it("has no key for pure ACKs, other protocols, ARP and truncated frames", () => {
    expect(tcpSegmentKey(segment({ seq: 1000 }))).to.equal(undefined);
    expect(tcpSegmentKey(segment({ seq: 1000, flags: 0x02 }))).to.be.a("string"); // a SYN carries no data but counts
    expect(tcpSegmentKey(segment({ seq: 1000, payload: 10, protocol: 17 }))).to.equal(undefined);
    expect(tcpSegmentKey(segment({ seq: 1000, payload: 10, etherType: 0x0806 }))).to.equal(undefined);
    expect(tcpSegmentKey(segment({ seq: 1000, payload: 10 }).subarray(0, 40))).to.equal(undefined);
    expect(tcpSegmentKey(new Uint8Array(0))).to.equal(undefined);
  });
});

describe("duplicate ACK pacing (passt answers each duplicate ACK with its whole window again)", () => {
  it("lets one of a run of identical pure ACKs through per interval, and every other kind of frame at once", () => {
    const pacer = new DuplicateAckPacer({ intervalMs: 250 });
    const ack = segment({ seq: 1, ack: 5000 });
    expect(pacer.pass(ack, 0)).to.equal(true);
    expect(pacer.pass(ack, 10)).to.equal(false);
    expect(pacer.pass(ack, 200)).to.equal(false);
    expect(pacer.pass(ack, 260)).to.equal(true); // a real loss still reaches passt, paced
    expect(pacer.pass(ack, 270)).to.equal(false);
    expect(pacer.withheld).to.equal(3);
    // Data, a new acknowledgement, a window update, another stream, FIN: never held.
    expect(pacer.pass(segment({ seq: 1, ack: 5000, payload: 100 }), 280)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 5000, payload: 100 }), 281)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 6460 }), 282)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 6460, window: 2000 }), 283)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 5000, srcPort: 40001 }), 284)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 6460, window: 2000, flags: 0x11 }), 285)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 6460, window: 2000, flags: 0x11 }), 286)).to.equal(true);
    expect(pacer.pass(segment({ seq: 1, ack: 1, payload: 10, etherType: 0x0806 }), 287)).to.equal(true);
    expect(pacer.withheld).to.equal(3);
  });
});
