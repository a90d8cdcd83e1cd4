// The MessagePort transport (the browser demo's link between two workers), driven
// through Node's MessageChannel: ordered delivery, latency and bandwidth shaping,
// backpressure, a silent cut, close with a reason, silence detection, and the
// watchdog that does not blame the peer for this end's own stall.
import { expect } from "chai";
import { MessageChannel } from "node:worker_threads";
import { MessagePortTransport, type MessagePortTransportOptions, type PortLike } from "../transport/message-port.ts";
import type { InboundMessage, Transport, TransportCloseInfo } from "../transport/transport.ts";
import { rejectionOf } from "./fixtures.ts";
import { ManualClock } from "../../test/support/manual-clock.ts";

const text = (message: InboundMessage): string => (message.kind === "text" ? message.text : `<${message.bytes.length} bytes>`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const closeOf = (end: Transport) => new Promise<TransportCloseInfo>((resolve) => end.onClose(resolve));

function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // the whole thread stands still, as a frozen background tab does
  }
}

describe("MessagePort transport", () => {
  const open: MessagePortTransport[] = [];

  function link(options: MessagePortTransportOptions = {}): { a: MessagePortTransport; b: MessagePortTransport } {
    const channel = new MessageChannel();
    const a = new MessagePortTransport(channel.port1 as unknown as PortLike, { label: "a", ...options });
    const b = new MessagePortTransport(channel.port2 as unknown as PortLike, { label: "b", ...options });
    open.push(a, b);
    return { a, b };
  }

  afterEach(() => {
    for (const end of open.splice(0)) end.close("test over");
  });

  it("delivers text and binary in order, holding messages until a handler is set, and copies binary data", async () => {
    const { a, b } = link();
    const bytes = new Uint8Array([1, 2, 3]);
    a.sendText("one");
    a.sendBinary(bytes);
    bytes[0] = 9;
    a.sendText("two");
    await sleep(30);
    const got: InboundMessage[] = [];
    b.onMessage((message) => got.push(message));
    expect(got.map(text)).to.deep.equal(["one", "<3 bytes>", "two"]);
    expect([...(got[1] as { bytes: Uint8Array }).bytes]).to.deep.equal([1, 2, 3]);
  });

  it("adds the latency one way", async () => {
    const { a, b } = link({ shape: { latencyMs: 80 } });
    const arrived = new Promise<number>((resolve) => b.onMessage(() => resolve(performance.now())));
    const sent = performance.now();
    a.sendText("ping");
    expect((await arrived) - sent).to.be.within(75, 400);
  });

  it("limits bandwidth and reports the queued bytes until they are on the link", async () => {
    const { a, b } = link({ shape: { bandwidthBitsPerSecond: 1_000_000 } });
    const received: number[] = [];
    b.onMessage(() => received.push(performance.now()));
    const sent = performance.now();
    for (let i = 0; i < 5; i++) a.sendBinary(new Uint8Array(5000)); // 200,000 bits: 200 ms at 1 Mbit/s
    expect(a.bufferedAmount).to.equal(25_000);
    await a.whenDrained();
    expect(a.bufferedAmount).to.equal(0);
    expect(performance.now() - sent).to.be.greaterThanOrEqual(190);
    await sleep(20);
    expect(received).to.have.length(5);
    // Spread out by serialization, not delivered in one burst.
    expect(received[4]! - received[0]!).to.be.greaterThanOrEqual(140);
  });

  it("a cut drops everything both ways without closing; the silence then closes both ends", async () => {
    const { a, b } = link({ silenceTimeoutMs: 300, keepaliveMs: 50 });
    const got: string[] = [];
    b.onMessage((message) => got.push(text(message)));
    a.sendText("before");
    await sleep(20);
    a.setShape({ cut: true });
    b.setShape({ cut: true });
    a.sendText("lost");
    expect(a.isOpen).to.equal(true);
    const [infoA, infoB] = await Promise.all([closeOf(a), closeOf(b)]);
    expect(got).to.deep.equal(["before"]);
    expect(infoA.reason).to.match(/^link silent: no word from the peer for \d+ ms$/);
    expect(infoA.byPeer).to.equal(true);
    expect(infoB.reason).to.match(/^link silent/);
    expect(a.stats.dropped).to.be.greaterThan(0);
  });

  it("on a manual clock, a cut link closes exactly when its silence window has passed, not before", async () => {
    const clock = new ManualClock();
    const { a, b } = link({ silenceTimeoutMs: 2000, keepaliveMs: 250, clock });
    a.setShape({ cut: true });
    b.setShape({ cut: true });
    await clock.advance(1950);
    expect(a.isOpen && b.isOpen, "inside the window").to.equal(true);
    await clock.advance(200);
    expect(a.isOpen || b.isOpen, "past the window").to.equal(false);
  });

  it("a cut healed within the silence window leaves the link up", async () => {
    const { a, b } = link({ silenceTimeoutMs: 400, keepaliveMs: 50 });
    const got: string[] = [];
    b.onMessage((message) => got.push(text(message)));
    a.setShape({ cut: true });
    b.setShape({ cut: true });
    a.sendText("dropped");
    await sleep(200);
    a.setShape({ cut: false });
    b.setShape({ cut: false });
    a.sendText("after the heal");
    await sleep(500);
    expect(a.isOpen && b.isOpen).to.equal(true);
    expect(got).to.deep.equal(["after the heal"]);
  });

  it("closes with the reason after what was queued, and refuses sends afterwards", async () => {
    const { a, b } = link({ shape: { latencyMs: 10 } });
    const got: string[] = [];
    b.onMessage((message) => got.push(text(message)));
    const closed = closeOf(b);
    a.sendText("last words");
    a.close("done here");
    expect(() => a.sendText("more")).to.throw(/transport is closed \(done here\)/);
    const info = await closed;
    expect(got).to.deep.equal(["last words"]);
    expect(info).to.deep.include({ reason: "peer closed: done here", byPeer: true });
  });

  it("closes when the other end stops answering (a terminated worker), and rejects pending drains", async () => {
    const channel = new MessageChannel();
    const a = new MessagePortTransport(channel.port1 as unknown as PortLike, {
      silenceTimeoutMs: 200,
      keepaliveMs: 50,
      shape: { bandwidthBitsPerSecond: 8000 },
    });
    open.push(a);
    a.sendBinary(new Uint8Array(10_000)); // 10 s at 8 kbit/s: still queued when the silence ends the link
    const drain = a.whenDrained();
    const started = performance.now();
    const info = await closeOf(a);
    expect(performance.now() - started).to.be.within(190, 1000);
    expect(info.reason).to.match(/^link silent/);
    expect((await rejectionOf(drain)).message).to.match(/transport is closed \(link silent/);
    channel.port2.close();
  });

  it("does not blame the peer for its own stall (a frozen tab): the link stays up", async () => {
    const { a, b } = link({ silenceTimeoutMs: 300, keepaliveMs: 50, stallThresholdMs: 200 });
    await sleep(100);
    busyWait(900);
    await sleep(400);
    expect(a.isOpen && b.isOpen).to.equal(true);
    expect(a.stats.ownStalls).to.be.greaterThanOrEqual(1);
    expect(a.stats.longestOwnStallMs).to.be.greaterThan(600);
    const got = new Promise<InboundMessage>((resolve) => b.onMessage(resolve));
    a.sendText("still here");
    expect(text(await got)).to.equal("still here");
  });

  it("without the stall discount, the same stall would end the link", async () => {
    const { a } = link({ silenceTimeoutMs: 300, keepaliveMs: 50, stallThresholdMs: 1e9 });
    await sleep(100);
    busyWait(900);
    expect((await closeOf(a)).reason).to.match(/^link silent/);
  });

  /** A port that loses everything this end posts: a peer that runs but whose words do not arrive. */
  function muted(port: PortLike): PortLike {
    return {
      postMessage: () => undefined,
      get onmessage() {
        return port.onmessage;
      },
      set onmessage(handler) {
        port.onmessage = handler;
      },
      close: () => port.close(),
    };
  }

  it("waits for a silent peer as long as its window says, narrowed later, and tells the peer why it gave up", async () => {
    const channel = new MessageChannel();
    const a = new MessagePortTransport(channel.port1 as unknown as PortLike, { label: "a", silenceTimeoutMs: 5000, keepaliveMs: 50 });
    const b = new MessagePortTransport(muted(channel.port2 as unknown as PortLike), { label: "b", silenceTimeoutMs: 0, keepaliveMs: 50 });
    open.push(a, b);
    await sleep(600); // three times the window below: a hears nothing from b
    expect(a.isOpen, "the wide window still holds").to.equal(true);
    const closedB = closeOf(b);
    const narrowed = performance.now();
    a.setSilenceTimeout(200);
    expect(a.silenceTimeoutMs).to.equal(200);
    expect((await closeOf(a)).reason).to.match(/^link silent: no word from the peer for \d+ ms$/);
    expect(performance.now() - narrowed, "counted from the last word heard, not from the change").to.be.below(300);
    expect((await closedB).reason).to.match(/^peer closed: link silent: no word from the peer for \d+ ms$/);
    expect(() => a.setSilenceTimeout(-1)).to.throw(RangeError, /silence timeout/);
  });

  it("closes both ends on a message over the size limit, like ws", async () => {
    const { a, b } = link({ maxMessageBytes: 10 });
    const closed = closeOf(b);
    a.sendBinary(new Uint8Array(11));
    expect(a.isOpen).to.equal(false);
    expect((await closed).reason).to.match(/11 bytes over the 10-byte limit/);
  });

  it("ends the link on a malformed message from the port", async () => {
    const channel = new MessageChannel();
    const a = new MessagePortTransport(channel.port1 as unknown as PortLike);
    open.push(a);
    channel.port2.postMessage({ t: "binary", bytes: "not bytes" });
    expect((await closeOf(a)).reason).to.equal("peer sent a malformed link message");
    channel.port2.close();
  });

  it("refuses impossible knob values", () => {
    const { a } = link();
    expect(() => a.setShape({ latencyMs: -1 })).to.throw(RangeError, /latency/);
    expect(() => a.setShape({ bandwidthBitsPerSecond: Number.NaN })).to.throw(RangeError, /bandwidth/);
    expect(a.shape).to.deep.equal({ latencyMs: 0, bandwidthBitsPerSecond: 0, cut: false });
  });
});
