// The mutual handshake over the in-memory pair and over real WebSockets on
// 127.0.0.1: the right secret yields channels on both sides; a wrong secret,
// a role conflict, a stale epoch or an unauthenticated data frame fails both
// sides with a clear ProtocolError.
import { expect } from "chai";
import { WebSocket as WsWebSocket } from "ws";
import { StaleEpochError, handshake, type HandshakeOptions } from "../channel/handshake.ts";
import type { ChannelEvent, ReplicationChannel } from "../channel/channel.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { PROTOCOL_VERSION, SUPPORTED_VERSIONS } from "../protocol/limits.ts";
import { type BinaryFrame } from "../protocol/frames.ts";
import { encodeFrame } from "../protocol/frame-codec.ts";
import { createServer, type Server } from "node:net";
import type { NodeRole } from "../protocol/messages.ts";
import { connectBrowserWebSocket, type BrowserWebSocketConstructor } from "../transport/browser-ws.ts";
import { createMemoryPair } from "../transport/memory-pair.ts";
import type { Transport, TransportCloseInfo } from "../transport/transport.ts";
import { connectReplication, listenReplication, type ReplicationServer } from "../node/ws-transport.ts";
import { rejectionOf } from "./fixtures.ts";
import { randomBytes } from "node:crypto";
import { RecordLayer, RecordType, deriveRecordKeys } from "../channel/record-layer.ts";

const SECRET = new TextEncoder().encode("correct horse battery staple");
const WRONG = new TextEncoder().encode("incorrect horse battery staple");

type Side = { role: NodeRole; secret: Uint8Array; options?: HandshakeOptions };
const primary = (secret = SECRET, options?: HandshakeOptions): Side => ({ role: "primary", secret, options });
const secondary = (secret = SECRET, options?: HandshakeOptions): Side => ({ role: "secondary", secret, options });

function both(
  a: Transport,
  b: Transport,
  sideA: Side,
  sideB: Side,
): Promise<[PromiseSettledResult<ReplicationChannel>, PromiseSettledResult<ReplicationChannel>]> {
  return Promise.all([
    Promise.allSettled([handshake(a, sideA.role, sideA.secret, sideA.options)]).then(([r]) => r),
    Promise.allSettled([handshake(b, sideB.role, sideB.secret, sideB.options)]).then(([r]) => r),
  ]);
}

function failure(result: PromiseSettledResult<unknown>): ProtocolError {
  expect(result.status, "handshake should have failed").to.equal("rejected");
  const reason = (result as PromiseRejectedResult).reason as unknown;
  expect(reason).to.be.instanceOf(ProtocolError);
  return reason as ProtocolError;
}

function channel(result: PromiseSettledResult<ReplicationChannel>): ReplicationChannel {
  if (result.status === "rejected") throw result.reason;
  return result.value;
}

function nextEvent(ch: ReplicationChannel): Promise<ChannelEvent> {
  return new Promise((resolve) => ch.onMessage(resolve));
}

/** Runs the shared cases against a way of making a connected transport pair. */
function handshakeCases(connect: () => Promise<[Transport, Transport]>): void {
  it("authenticates both sides with the right secret and then carries traffic", async () => {
    const [a, b] = await connect();
    const [ra, rb] = await both(a, b, primary(SECRET, { nodeId: "alpha", epoch: 3 }), secondary(SECRET, { nodeId: "beta", epoch: 2 }));
    const p = channel(ra);
    const s = channel(rb);
    expect([p.peerRole, p.peerNodeId, s.peerRole, s.peerNodeId]).to.deep.equal(["secondary", "beta", "primary", "alpha"]);
    expect([p.version, p.epoch, s.epoch]).to.deep.equal([PROTOCOL_VERSION, 3, 3]);
    // The secondary's first event is what the primary sends right after the handshake.
    const received = nextEvent(s);
    await p.send({ type: "heartbeat", epoch: 3, id: 0 });
    expect((await received).channel).to.equal("control");
    await p.close("test over");
  });

  it("refuses a wrong secret, and both sides say why", async () => {
    const [a, b] = await connect();
    const [ra, rb] = await both(a, b, primary(SECRET), secondary(WRONG));
    for (const error of [failure(ra), failure(rb)]) {
      expect(error.code).to.be.oneOf(["auth-failed", "refused", "closed"]);
      expect(error.message).to.match(/proof does not match; wrong shared secret|refused the handshake: .*wrong shared secret/);
    }
    expect(a.isOpen || b.isOpen).to.equal(false);
  });

  it("refuses two primaries", async () => {
    const [a, b] = await connect();
    const [ra, rb] = await both(a, b, primary(SECRET, { epoch: 1 }), primary(SECRET, { epoch: 2 }));
    expect(failure(ra).message).to.match(/both ends claim to be primary/);
    expect(failure(rb).message).to.match(/both ends claim to be primary/);
  });

  it("refuses a primary with a stale epoch, after both proved the secret (and leaves no unhandled rejection)", async () => {
    const unhandled: unknown[] = [];
    const record = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", record);
    const [a, b] = await connect();
    const [ra, rb] = await both(a, b, primary(SECRET, { epoch: 1 }), secondary(SECRET, { epoch: 2 }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    process.off("unhandledRejection", record);
    expect(unhandled, "a crashed node in production").to.deep.equal([]);
    const error = failure(ra);
    expect(error).to.be.instanceOf(StaleEpochError);
    expect(error.message).to.match(/primary is at epoch 1, but the secondary \(which proved the secret\) has seen epoch 2/);
    expect(failure(rb)).to.be.instanceOf(StaleEpochError);
  });

  it("never reports a stale epoch for a peer without the secret, whatever epoch it claims", async () => {
    const [a, b] = await connect();
    const [ra] = await both(a, b, primary(SECRET, { epoch: 1 }), secondary(WRONG, { epoch: 99 }));
    const error = failure(ra);
    expect(error).not.to.be.instanceOf(StaleEpochError);
    expect(error.code).to.be.oneOf(["refused", "auth-failed", "closed"]);
  });
}

describe("handshake over the in-memory pair", () => {
  handshakeCases(async () => {
    const pair = createMemoryPair({ latencyMs: 1 });
    return [pair.a, pair.b];
  });

  it("refuses when no version is shared", async () => {
    const { a, b } = createMemoryPair();
    const [ra, rb] = await both(a, b, primary(SECRET, { versions: { min: SUPPORTED_VERSIONS.max + 1, max: SUPPORTED_VERSIONS.max + 2 } }), secondary());
    expect(failure(ra).code).to.be.oneOf(["version", "refused"]);
    expect(failure(rb).message).to.match(/no common version/);
  });

  it("rejects a data frame from an unauthenticated peer, undecoded", async () => {
    const { a, b } = createMemoryPair();
    const pending = handshake(b, "secondary", SECRET);
    const seenByIntruder: string[] = [];
    a.onMessage((message) => seenByIntruder.push(message.kind === "text" ? message.text : "binary"));
    a.sendBinary(await encodeFrame({ kind: "state-parts", seq: 0, epoch: 1, parts: [new Uint8Array(8)] }));
    const intruderClosed = new Promise((resolve) => a.onClose(resolve));
    const error = await rejectionOf(pending);
    expect(error).to.be.instanceOf(ProtocolError).with.property("code", "unauthenticated");
    await intruderClosed;
    expect(seenByIntruder.some((text) => text.includes('"refused"') && text.includes("unauthenticated"))).to.equal(true);
    expect(b.isOpen).to.equal(false);
  });

  it("rejects session messages from an unauthenticated peer", async () => {
    const { a, b } = createMemoryPair();
    const pending = handshake(b, "secondary", SECRET);
    a.sendText(JSON.stringify({ type: "init-begin", seq: 0, epoch: 1, memoryBytes: 4096, pageSize: 4096, diskMode: "io-log", disks: [] }));
    expect(await rejectionOf(pending)).to.have.property("code", "unauthenticated");
  });

  it("times out against a silent peer", async () => {
    const { b } = createMemoryPair();
    const error = await rejectionOf(handshake(b, "secondary", SECRET, { timeoutMs: 50 }));
    expect(error).to.have.property("code", "timeout");
    expect(error.message).to.match(/did not finish within 50 ms/);
  });

  it("fails clearly when the link is cut mid-handshake", async () => {
    const pair = createMemoryPair({ latencyMs: 20 });
    const pending = Promise.allSettled([handshake(pair.a, "primary", SECRET), handshake(pair.b, "secondary", SECRET)]);
    setTimeout(() => pair.cut("cable pulled"), 5);
    for (const result of await pending) expect(failure(result).message).to.match(/closed during the handshake: cable pulled/);
  });

  it("refuses a secret shorter than 16 bytes locally", async () => {
    const { a } = createMemoryPair();
    expect(await rejectionOf(handshake(a, "primary", new Uint8Array(8)))).to.be.instanceOf(RangeError);
  });

  it("closes the session with an error when an authenticated peer breaks the order", async () => {
    const { a, b } = createMemoryPair();
    const [ra, rb] = await both(a, b, primary(), secondary());
    const p = channel(ra);
    const s = channel(rb);
    const closed = new Promise<{ reason: string; error?: ProtocolError }>((resolve) => s.onClose(resolve));
    const primaryHeard = new Promise<ChannelEvent>((resolve) => p.onMessage(resolve));
    s.onMessage(() => expect.fail("nothing out of order may reach the engine"));
    await p.sendFrame({ kind: "sync-commit", seq: 1, epoch: 1, pageUpdates: 0, stateChanges: 0, blockFrames: 0, outputFrames: 0, log: [] }); // before init-begin
    const info = await closed;
    expect(info.error).to.be.instanceOf(ProtocolError).with.property("code", "order");
    const told = await primaryHeard;
    expect(told.channel === "control" && told.message.type === "error" && told.message.code).to.equal("order");
  });
});

describe("the accepting side proves nothing before the caller did", () => {
  it("answers a caller with a wrong secret without revealing its own proof", async () => {
    const { a, b } = createMemoryPair();
    const seen: string[] = [];
    a.onMessage((message) => seen.push(message.kind === "text" ? message.text : "binary"));
    // The caller: a primary that does not know the secret, proving with garbage.
    const accepting = Promise.allSettled([handshake(b, "secondary", SECRET)]);
    a.sendText(
      JSON.stringify({
        type: "challenge",
        protocol: "twinvm-replication",
        minVersion: PROTOCOL_VERSION,
        maxVersion: PROTOCOL_VERSION,
        role: "primary",
        epoch: 1,
        nonce: "B".repeat(43) + "=",
        nodeId: "impostor",
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    a.sendText(JSON.stringify({ type: "auth", version: PROTOCOL_VERSION, proof: "C".repeat(43) + "=" }));
    const [result] = await accepting;
    expect(failure(result).code).to.equal("auth-failed");
    expect(seen.some((text) => text.includes('"type":"challenge"'))).to.equal(true);
    expect(
      seen.some((text) => text.includes('"type":"auth"')),
      "the acceptor must not send its proof",
    ).to.equal(false);
  });
});

describe("the record layer after the handshake", () => {
  async function session(): Promise<{ p: ReplicationChannel; s: ReplicationChannel; raw: Transport }> {
    const { a, b } = createMemoryPair();
    const [ra, rb] = await both(a, b, primary(), secondary());
    return { p: channel(ra), s: channel(rb), raw: a };
  }

  const closeOf = (ch: ReplicationChannel) => new Promise<{ reason: string; error?: ProtocolError }>((resolve) => ch.onClose(resolve));

  it("refuses a tampered record: nothing reaches the engine, the session ends with auth-failed", async () => {
    const { p, s, raw } = await session();
    const closed = closeOf(s);
    s.onMessage(() => expect.fail("a tampered record must not reach the engine"));
    const send = raw.sendBinary.bind(raw);
    raw.sendBinary = (bytes) => {
      const copy = bytes.slice();
      copy[copy.length - 20]! ^= 1;
      send(copy);
    };
    await p.send({ type: "heartbeat", epoch: 1, id: 0 });
    expect((await closed).error)
      .to.be.instanceOf(ProtocolError)
      .with.property("code", "auth-failed");
  });

  it("refuses a replayed record", async () => {
    const { p, s, raw } = await session();
    const closed = closeOf(s);
    const events: ChannelEvent[] = [];
    s.onMessage((event) => void events.push(event));
    const send = raw.sendBinary.bind(raw);
    let first: Uint8Array | undefined;
    raw.sendBinary = (bytes) => {
      first ??= bytes.slice();
      send(bytes);
    };
    await p.send({ type: "heartbeat", epoch: 1, id: 0 });
    send(first!);
    expect((await closed).error).to.have.property("code", "auth-failed");
    expect(events).to.have.length(1);
  });

  /** A session in its initial copy (memory-pages frames allowed), with the records the primary put on the transport and the events the secondary got. */
  async function copying(): Promise<{ p: ReplicationChannel; sent: Uint8Array[]; events: ChannelEvent[] }> {
    const { p, s, raw } = await session();
    const sent: Uint8Array[] = [];
    const send = raw.sendBinary.bind(raw);
    raw.sendBinary = (bytes) => {
      sent.push(bytes);
      send(bytes);
    };
    const events: ChannelEvent[] = [];
    s.onMessage((event) => void events.push(event));
    await p.send({ type: "init-begin", seq: 0, epoch: 1, memoryBytes: 64 * 4096, pageSize: 4096, diskMode: "io-log", disks: [] });
    return { p, sent, events };
  }

  const pages = (first: number, fill: number): BinaryFrame => ({
    kind: "memory-pages",
    seq: 0,
    epoch: 1,
    indices: Uint32Array.of(first, first + 1),
    data: new Uint8Array(2 * 4096).fill(fill),
    zeroIndices: new Uint32Array(0),
  });

  /** After init-begin: each frame as [first page, fill byte], each control message by its type. */
  async function delivered(events: ChannelEvent[], count: number): Promise<unknown[]> {
    while (events.length < count + 1) await new Promise((resolve) => setImmediate(resolve));
    return events
      .slice(1)
      .map((e) =>
        e.channel === "frame" && e.frame.kind === "memory-pages" ? [e.frame.indices[0], e.frame.data[0]] : e.channel === "control" ? e.message.type : e.channel,
      );
  }

  it("carries a burst of small frames in one record and delivers them one by one, in order", async () => {
    const { p, sent, events } = await copying();
    const recordsBefore = sent.length;
    const sizes = await p.sendFrames([pages(0, 1), pages(2, 2), pages(4, 3)]);
    expect(sent.length - recordsBefore, "one record for the burst").to.equal(1);
    expect(
      sizes.reduce((n, size) => n + size, 0),
      "the frames' shares add up to the record",
    ).to.equal(sent.at(-1)!.length);
    expect(await delivered(events, 3)).to.deep.equal([
      [0, 1],
      [2, 2],
      [4, 3],
    ]);
  });

  it("sends frames within the call when nothing is queued ahead, and sends nothing while an earlier send is on its way", async () => {
    const { p, sent, events } = await copying();
    const before = sent.length;
    const sizes = p.sendFramesNow([pages(0, 1), pages(2, 2)]);
    expect(sent.length - before, "one record, on the transport before the call returned").to.equal(1);
    expect(
      sizes?.reduce((n, size) => n + size, 0),
      "the frames' shares add up to the record",
    ).to.equal(sent.at(-1)!.length);
    // A compressed send is still encoding, a heartbeat queued behind it: nothing may pass them.
    const compressed = p.sendFrames([pages(4, 3)], { compress: true });
    const heartbeat = p.send({ type: "heartbeat", epoch: 1, id: 7 });
    const recordsWhileQueued = sent.length;
    expect(p.sendFramesNow([pages(6, 4)]), "refused while a send is queued").to.equal(undefined);
    expect(sent.length, "and nothing was sent").to.equal(recordsWhileQueued);
    await Promise.all([compressed, heartbeat]);
    expect(p.sendFramesNow([pages(6, 4)]), "taken once the queue is empty").to.not.equal(undefined);
    expect(await delivered(events, 5)).to.deep.equal([
      [0, 1],
      [2, 2],
      "heartbeat", // not stuck behind the compression (sendFrame)
      [4, 3],
      [6, 4],
    ]);
  });

  it("seals within the call only with Node's AES-GCM; a WebCrypto layer refuses without using up a record number", async () => {
    const secret = randomBytes(32);
    const [i, a] = [randomBytes(32), randomBytes(32)];
    const [nodeSide, webSide] = await Promise.all([deriveRecordKeys(secret, i, a, 2, true), deriveRecordKeys(secret, i, a, 2, false, "webcrypto")]);
    const [node, web] = [new RecordLayer(nodeSide), new RecordLayer(webSide)];
    expect([node.sealsNow, web.sealsNow]).to.deep.equal([true, false]);
    const payload = randomBytes(5000);
    expect(Buffer.from((await web.open(node.sealNow(RecordType.frame, payload))).payload).equals(payload)).to.equal(true);
    expect(() => web.sealNow(RecordType.frame, payload)).to.throw(/asynchronous/);
    expect(Buffer.from((await node.open(await web.seal(RecordType.frame, payload))).payload).equals(payload), "the refused seal took no number").to.equal(true);
  });

  it("ends the session at the first frame of a batched record that breaks the order, delivering none after it", async () => {
    const { p, s } = await session();
    const closed = closeOf(s);
    const events: ChannelEvent[] = [];
    s.onMessage((event) => void events.push(event));
    await p.send({
      type: "init-begin",
      seq: 0,
      epoch: 1,
      memoryBytes: 64 * 4096,
      pageSize: 4096,
      diskMode: "io-log",
      disks: [{ id: 0, name: "vda", sizeBytes: 1 << 20 }],
    });
    const chunk = (offset: number): BinaryFrame => ({
      kind: "disk-chunk",
      seq: 0,
      epoch: 1,
      disk: 0,
      offset,
      length: 4096,
      data: new Uint8Array(4096).fill(9),
    });
    // The chunk at 8192 skips the one at 4096: the receiver refuses it and what follows.
    await p.sendFrames([chunk(0), chunk(8192), chunk(4096)]);
    expect((await closed).error)
      .to.be.instanceOf(ProtocolError)
      .with.property("code", "order");
    expect(events.filter((e) => e.channel === "frame").map((e) => e.channel === "frame" && e.frame.kind === "disk-chunk" && e.frame.offset)).to.deep.equal([0]);
  });

  it("refuses plain text once the session is encrypted", async () => {
    const { s, raw } = await session();
    const closed = closeOf(s);
    s.onMessage(() => expect.fail("plain text must not reach the engine"));
    raw.sendText(JSON.stringify({ type: "promoted", epoch: 9 }));
    expect((await closed).error).to.have.property("code", "unauthenticated");
  });

  it("carries nothing readable: the record bytes do not contain the plaintext", async () => {
    const { p, raw } = await session();
    const sent: Uint8Array[] = [];
    const send = raw.sendBinary.bind(raw);
    raw.sendBinary = (bytes) => {
      sent.push(bytes.slice());
      send(bytes);
    };
    await p.send({ type: "goodbye", reason: "a secret plan about guest memory" });
    expect(Buffer.from(sent[0]!).toString("latin1")).not.to.include("secret plan");
  });

  it("seals with Node's AES-GCM here and WebCrypto's in browsers, in the same bytes: each opens the other's records and refuses altered ones", async () => {
    const secret = randomBytes(32);
    const [i, a] = [randomBytes(32), randomBytes(32)];
    const [nodeSide, webSide] = await Promise.all([deriveRecordKeys(secret, i, a, 2, true), deriveRecordKeys(secret, i, a, 2, false, "webcrypto")]);
    expect(nodeSide.send.implementation).to.equal("node");
    expect(webSide.send.implementation).to.equal("webcrypto");
    const [node, web] = [new RecordLayer(nodeSide), new RecordLayer(webSide)];
    for (const size of [0, 1, 4095, 70_000]) {
      const payload = randomBytes(size);
      const there = await node.seal(RecordType.frame, payload);
      expect(Buffer.from((await web.open(there)).payload).equals(payload)).to.equal(true);
      const back = await web.seal(RecordType.control, payload);
      expect(Buffer.from((await node.open(back)).payload).equals(payload)).to.equal(true);
    }
    const altered = await node.seal(RecordType.frame, randomBytes(100));
    altered[3]! ^= 0x80;
    expect(await rejectionOf(web.open(altered)))
      .to.be.instanceOf(ProtocolError)
      .with.property("code", "auth-failed");
    const forged = await web.seal(RecordType.frame, randomBytes(100));
    forged[forged.length - 1]! ^= 1;
    expect(await rejectionOf(node.open(forged)))
      .to.be.instanceOf(ProtocolError)
      .with.property("code", "auth-failed");
  });
});

describe("handshake over WebSocket on 127.0.0.1", () => {
  let server: ReplicationServer;
  const accepted: Transport[] = [];
  const waiting: Array<(transport: Transport) => void> = [];

  before(async () => {
    server = await listenReplication({}, (transport) => {
      const waiter = waiting.shift();
      if (waiter !== undefined) waiter(transport);
      else accepted.push(transport);
    });
  });
  after(() => server.close());

  const nextAccepted = (): Promise<Transport> => (accepted.length > 0 ? Promise.resolve(accepted.shift()!) : new Promise((resolve) => waiting.push(resolve)));

  it("listens on loopback and an ephemeral port by default", () => {
    expect(server.host).to.equal("127.0.0.1");
    expect(server.port).to.be.greaterThan(0);
  });

  handshakeCases(async () => {
    const client = await connectReplication(server.url);
    return [client, await nextAccepted()];
  });

  it("carries a large compressed frame and reports close reasons", async () => {
    const client = await connectReplication(server.url);
    const [ra, rb] = await both(client, await nextAccepted(), primary(), secondary());
    const p = channel(ra);
    const s = channel(rb);
    const events: ChannelEvent[] = [];
    s.onMessage((event) => void events.push(event));
    await p.send({ type: "init-begin", seq: 0, epoch: 1, memoryBytes: 4096 * 4096, pageSize: 4096, diskMode: "io-log", disks: [] });
    const data = new Uint8Array(3000 * 4096).map((_, i) => (i % 4096 < 100 ? i & 0xff : 0));
    await p.sendFrame(
      { kind: "memory-pages", seq: 0, epoch: 1, indices: Uint32Array.from({ length: 3000 }, (_, i) => i), data, zeroIndices: new Uint32Array(0) },
      { compress: true },
    );
    await p.whenDrained();
    const closed = new Promise<TransportCloseInfo>((resolve) => s.onClose(resolve));
    await p.close("primary shutting down");
    const info = await closed;
    expect(events.map((e) => (e.channel === "control" ? e.message.type : e.frame.kind))).to.deep.equal(["init-begin", "memory-pages", "goodbye"]);
    expect(info.reason).to.match(/primary shutting down/);
  });

  it("works through the browser adapter (driven by ws's WebSocket class)", async () => {
    const client = await connectBrowserWebSocket(server.url, { WebSocket: WsWebSocket as unknown as BrowserWebSocketConstructor });
    const [ra, rb] = await both(client, await nextAccepted(), secondary(), primary());
    expect(channel(ra).peerRole).to.equal("primary");
    await channel(rb).close();
  });
});

describe("WebSocket transport setup", () => {
  it("refuses a non-loopback bind unless explicitly allowed", async () => {
    const error = await rejectionOf(listenReplication({ host: "0.0.0.0" }, () => undefined));
    expect(error.message).to.match(/refusing to listen on 0\.0\.0\.0: not a loopback address; pass allowNonLoopback/);
    const open = await listenReplication({ host: "0.0.0.0", allowNonLoopback: true }, () => undefined);
    expect(open.host).to.equal("0.0.0.0");
    await open.close();
  });

  it("names the URL when nobody listens", async () => {
    const server = await listenReplication({}, () => undefined);
    const url = server.url;
    await server.close();
    const error = await rejectionOf(connectReplication(url));
    expect(error.message).to.equal(`cannot connect to ${url}: connection refused (is the peer listening?)`);
  });

  it("names the URL on a connect timeout", async () => {
    // A local TCP server that accepts and never answers the WebSocket upgrade.
    const silent: Server = createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const url = `ws://127.0.0.1:${(silent.address() as { port: number }).port}`;
    try {
      const error = await rejectionOf(connectReplication(url, { timeoutMs: 100 }));
      expect(error.message).to.match(new RegExp(`^cannot connect to ${url}: (no answer within 100 ms|.*timed out.*)$`));
    } finally {
      silent.close();
    }
  });

  it("bounds connections that have not authenticated, in number and in bytes, and still serves a real peer", async () => {
    const handshakes: Promise<unknown>[] = [];
    const server = await listenReplication({ maxPendingHandshakes: 3 }, (transport) => {
      const pending = handshake(transport, "secondary", SECRET, { timeoutMs: 3000 }).catch((error: Error) => error);
      handshakes.push(pending);
      return pending;
    });
    try {
      // Silent peers take the pending slots; the next one is turned away at once.
      const silent = await Promise.all([1, 2, 3].map(() => connectReplication(server.url)));
      const turnedAway = await connectReplication(server.url);
      const refusal = await new Promise<TransportCloseInfo>((resolve) => turnedAway.onClose(resolve));
      expect(refusal.code).to.equal(1013);
      for (const transport of silent) transport.close("done");
      await Promise.all(handshakes.splice(0));
      // A peer that streams data before proving anything is cut off after the byte limit.
      const flooder = await connectReplication(server.url);
      const cut = new Promise<TransportCloseInfo>((resolve) => flooder.onClose(resolve));
      flooder.sendBinary(new Uint8Array(8 * 1024 * 1024));
      expect((await cut).byPeer).to.equal(true);
      // A real primary still gets in.
      const client = await connectReplication(server.url);
      const channelOf = await handshake(client, "primary", SECRET);
      expect(channelOf.peerRole).to.equal("secondary");
      await channelOf.close();
    } finally {
      await server.close();
    }
  });

  it("closes a connection that sends a message over the frame limit", async () => {
    const server = await listenReplication({}, () => undefined);
    const client = await connectReplication(server.url);
    const closed = new Promise<TransportCloseInfo>((resolve) => client.onClose(resolve));
    client.sendBinary(new Uint8Array(16 * 1024 * 1024 + 1));
    expect((await closed).code).to.equal(1009);
    await server.close();
  });
});
