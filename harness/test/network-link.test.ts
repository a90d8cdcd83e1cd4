// The network link between a node (NetworkUplink) and the gateway (link server + core),
// over real WebSockets on loopback, with a fake stack in place of passt: the handshake
// with the right and the wrong secret, a replication peer refused either way round,
// reconnecting, epoch gating over the wire, and hostile or oversized input refused
// without harm to the gateway.
import { expect } from "chai";
import { WebSocket } from "ws";
import { handshake } from "../../replication/channel/handshake.ts";
import { RecordType } from "../../replication/channel/record-layer.ts";
import { GatewayCore } from "../../replication/network/gateway-core.ts";
import { linkHandshake, type AuthenticatedLink } from "../../replication/network/link-handshake.ts";
import { MAX_LINK_MESSAGE_BYTES } from "../../replication/network/link-limits.ts";
import { encodeControl, encodeEgressBatches, type LinkControl } from "../../replication/network/link-messages.ts";
import { LinkSession } from "../../replication/network/link-session.ts";
import type { NetworkUplink, UplinkState } from "../../replication/network/uplink.ts";
import { ProtocolError } from "../../replication/protocol/errors.ts";
import { connectReplication, listenReplication, type ReplicationServer } from "../../replication/node/ws-transport.ts";
import { createMemoryPair } from "../../replication/transport/memory-pair.ts";
import { startLinkServer, type LinkServer, type LinkServerEvent } from "../network/link-server.ts";
import { createNodeUplink } from "../network/node-uplink.ts";
import { ManualClock } from "../../test/support/manual-clock.ts";
import { waitFor } from "../../test/support/wait.ts";

const SECRET = new TextEncoder().encode("network link test secret");
const WRONG = new TextEncoder().encode("not the network link secret");
const FIRST = 5000;

function frame(tag: number, length = 60): Uint8Array {
  const bytes = new Uint8Array(length);
  bytes[14] = tag;
  return bytes;
}

async function eventually<T>(read: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function stateOf(uplink: NetworkUplink, kind: UplinkState["kind"], what: string, timeoutMs = 5000): Promise<UplinkState> {
  return eventually(() => (uplink.state.kind === kind ? uplink.state : undefined), `${what} (state now ${JSON.stringify(uplink.state)})`, timeoutMs);
}

describe("network link", function () {
  this.timeout(20_000);
  let core: GatewayCore;
  let sent: number[];
  let server: LinkServer;
  let events: LinkServerEvent[];
  const cleanup: Array<() => unknown> = [];

  async function startServer(port = 0): Promise<LinkServer> {
    const started = await startLinkServer(
      core,
      { secret: SECRET, listen: { port }, link: { heartbeatMs: 100, silenceTimeoutMs: 1500, attachTimeoutMs: 300 } },
      (e) => events.push(e),
    );
    cleanup.push(() => started.close());
    return started;
  }

  function uplink(secret = SECRET): { node: NetworkUplink; got: Array<{ id: number; tag: number }> } {
    const node = createNodeUplink({ url: server.url, secret, nodeId: "test-node", minRetryMs: 20, maxRetryMs: 200, heartbeatMs: 100, silenceTimeoutMs: 1500 });
    const got: Array<{ id: number; tag: number }> = [];
    node.onFrame((f, id) => got.push({ id, tag: f[14]! }));
    cleanup.push(() => node.close());
    return { node, got };
  }

  /** An authenticated node that sends whatever records a test writes. */
  async function rawNode(): Promise<AuthenticatedLink & { seal(type: 1 | 2, payload: Uint8Array): Promise<void>; closed: Promise<string> }> {
    const transport = await connectReplication(server.url, { maxMessageBytes: MAX_LINK_MESSAGE_BYTES * 4 });
    cleanup.push(() => transport.close());
    const closed = new Promise<string>((resolve) => transport.onClose((info) => resolve(info.reason)));
    const link = await linkHandshake(transport, "node", SECRET);
    return { ...link, closed, seal: async (type, payload) => transport.sendBinary(await link.records.seal(type, payload)) };
  }

  const control = (message: LinkControl) => encodeControl(message);

  beforeEach(async function () {
    sent = [];
    events = [];
    core = new GatewayCore({ send: (f) => (sent.push(f[14]!), true) }, { maxFrames: 100, maxBytes: 1 << 20, maxFrameBytes: 1514, firstIngressId: FIRST });
    server = await startServer();
  });

  afterEach(async function () {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  it("attaches with the right secret, carries frames both ways and commits", async function () {
    const { node, got } = uplink();
    node.attach(1, 0);
    await stateOf(node, "connected", "attach");
    expect(server.currentNodeId()).to.equal("test-node");
    core.ingress(frame(1));
    core.ingress(frame(2));
    await eventually(() => got.length === 2, "two ingress frames");
    expect(got).to.deep.equal([
      { id: FIRST, tag: 1 },
      { id: FIRST + 1, tag: 2 },
    ]);
    node.send([frame(9), frame(10)]);
    await eventually(() => sent.length === 2, "two egress frames");
    expect(sent).to.deep.equal([9, 10]);
    node.committed(FIRST + 1);
    await eventually(() => core.counters().log.frames === 0, "the log trimmed by the commit");
    expect(node.counters()).to.deep.include({ connects: 1, lastIngressId: FIRST + 1, committed: FIRST + 1 });
  });

  it("stands by past the attach timeout, then attaches on the same link, with what arrived meanwhile", async function () {
    const { node, got } = uplink();
    const states: string[] = [];
    node.onState((state) => states.push(state.kind));
    node.standby();
    await stateOf(node, "standby", "standing by");
    await new Promise((resolve) => setTimeout(resolve, 600)); // twice the server's attach timeout
    expect(node.state.kind).to.equal("standby");
    expect(server.currentNodeId(), "standing by is not attached").to.equal(undefined);
    core.ingress(frame(1));
    node.attach(2, 0);
    const attached = await stateOf(node, "connected", "attach");
    expect(attached).to.deep.include({ epoch: 2, replay: 1 });
    expect(states, "no second dial").to.deep.equal(["connecting", "standby", "connected"]);
    await eventually(() => got.length === 1, "the frame logged while standing by");
    expect(got).to.deep.equal([{ id: FIRST, tag: 1 }]);
  });

  it("an attach while the standby still dials attaches that same dial", async function () {
    const { node } = uplink();
    const states: string[] = [];
    node.onState((state) => states.push(state.kind));
    node.standby();
    node.attach(1, 0);
    await stateOf(node, "connected", "attach");
    expect(states).to.deep.equal(["connecting", "connected"]);
    expect(server.currentNodeId()).to.equal("test-node");
  });

  it("a node that neither attaches nor stands by is let go after the attach timeout", async function () {
    const raw = await rawNode();
    expect(await raw.closed).to.match(/no attach within 300 ms/);
  });

  it("refuses a wrong secret, says so on the node and keeps retrying", async function () {
    const { node } = uplink(WRONG);
    node.attach(1, 0);
    const down = await eventually(() => (node.state.kind === "down" && node.state.retryInMs !== undefined ? node.state : undefined), "down after the refusal");
    expect(down.kind === "down" && down.reason).to.match(/auth-failed.*wrong shared secret\?/);
    await eventually(() => server.counters().handshakesFailed >= 2, "a second attempt");
    expect(events.filter((e) => e.type === "link-refused")[0]?.reason).to.match(/auth-failed/);
    expect(core.currentEpoch).to.equal(undefined);
  });

  it("is not mistaken for a replication peer, either way round", async function () {
    // A replication primary dialling the gateway.
    const transport = await connectReplication(server.url);
    const primary = await handshake(transport, "primary", SECRET).catch((e: unknown) => e);
    expect(primary).to.be.instanceOf(ProtocolError);
    expect((primary as Error).message).to.equal(
      "role-conflict: the peer is a twinvm network gateway, not a replication node (twinvm-replication); check the address",
    );
    const refused = await eventually(() => events.find((e) => e.type === "link-refused"), "the gateway's refusal");
    // Whichever side reads the other's challenge first refuses: the gateway names the primary, or the primary's schema refuses the gateway.
    expect(refused.reason).to.match(
      /wrong-peer: the peer is a twinvm replication node, not an end of the network link|refused the handshake: .*network gateway/,
    );

    // A node dialling a replication secondary.
    let secondaryError: unknown;
    const replication: ReplicationServer = await listenReplication({}, (t) =>
      handshake(t, "secondary", SECRET).catch((e: unknown) => {
        secondaryError = e;
      }),
    );
    cleanup.push(() => replication.close());
    const node = createNodeUplink({ url: replication.url, secret: SECRET, minRetryMs: 50 });
    cleanup.push(() => node.close());
    node.attach(1, 0);
    const down = await eventually(() => (node.state.kind === "down" ? node.state : undefined), "the node's refusal");
    expect(down.kind === "down" && down.reason).to.match(/wrong-peer: the peer is a twinvm replication node/);
    await eventually(() => secondaryError, "the secondary's handshake to fail");
    expect(secondaryError).to.be.instanceOf(ProtocolError);
    expect((secondaryError as Error).message).to.match(/the peer is a node's twinvm network uplink, not a replication node|refused the handshake: wrong-peer/);
  });

  it("reconnects by itself when the gateway comes back, and gets the frames that arrived meanwhile", async function () {
    const { node, got } = uplink();
    node.attach(4, 0);
    await stateOf(node, "connected", "first attach");
    core.ingress(frame(1));
    await eventually(() => got.length === 1, "first frame");
    const port = server.port;
    await server.close();
    await eventually(() => node.state.kind !== "connected", "noticing the loss");
    core.ingress(frame(2)); // while no node is attached: logged
    node.send([frame(7), frame(8)]); // released while reconnecting: held (the caller does not wait), sent once attached
    expect(node.counters().egress).to.deep.include({ waiting: 2, frames: 0 });
    server = await startServer(port);
    await stateOf(node, "connected", "re-attach");
    await eventually(() => got.length === 2, "the frame logged meanwhile");
    expect(got[1]).to.deep.equal({ id: FIRST + 1, tag: 2 });
    await eventually(() => sent.length === 2, "the frames held while reconnecting");
    expect(sent).to.deep.equal([7, 8]);
    expect(node.counters().egress).to.deep.include({ waiting: 0, frames: 2 });
    expect(node.counters().egress.dropped.notConnected).to.equal(0);
    expect(node.counters().connects).to.equal(2);
    expect(core.counters().ingress.replayed).to.equal(1);
  });

  it("refuses a stale epoch for good and lets a higher one take over", async function () {
    const a = uplink();
    a.node.attach(2, 0);
    await stateOf(a.node, "connected", "epoch 2");
    const stale = uplink();
    stale.node.attach(1, 0);
    const refused = await eventually(() => (stale.node.state.kind === "down" ? stale.node.state : undefined), "the stale node's refusal");
    expect(refused).to.deep.include({ retryInMs: undefined });
    expect(refused.kind === "down" && refused.reason).to.match(/taken over: epoch 1 is stale: the gateway serves epoch 2/);
    expect(a.node.state.kind).to.equal("connected");

    const c = uplink();
    c.node.attach(3, 0);
    await stateOf(c.node, "connected", "epoch 3");
    const fenced = await eventually(() => (a.node.state.kind === "down" ? a.node.state : undefined), "epoch 2 taken over");
    expect(fenced).to.deep.include({ retryInMs: undefined });
    expect(fenced.kind === "down" && fenced.reason).to.match(/taken over.*epoch 3/);
    core.ingress(frame(5));
    await eventually(() => c.got.length === 1, "frames go to epoch 3");
    expect(a.got).to.deep.equal([]);
    // A node taken over says nothing more: what it releases is dropped, not held.
    a.node.send([frame(6)]);
    expect(a.node.counters().egress).to.deep.include({ waiting: 0 });
    expect(a.node.counters().egress.dropped.notConnected).to.equal(1);
  });

  it("counts what a node releases while not attached instead of waiting", function () {
    const { node } = uplink();
    node.send([frame(1), frame(2), new Uint8Array(3), new Uint8Array(2000)]);
    expect(node.counters().egress.dropped).to.deep.equal({ notConnected: 2, backlog: 0, oversized: 1, malformed: 1 });
  });

  describe("hostile input", function () {
    it("cuts off unauthenticated junk and floods, and goes on serving", async function () {
      const junk = new WebSocket(server.url);
      const junkClosed = new Promise((resolve) => junk.on("close", resolve));
      junk.on("open", () => junk.send(new Uint8Array([1, 2, 3, 4])));
      await junkClosed;
      const flood = new WebSocket(server.url);
      const floodClosed = new Promise((resolve) => flood.on("close", resolve));
      flood.on("error", () => undefined);
      flood.on("open", () => flood.send("x".repeat(100_000)));
      await floodClosed;
      expect(server.counters().handshakesFailed).to.be.at.least(1);
      const { node } = uplink();
      node.attach(1, 0);
      await stateOf(node, "connected", "a good node after the junk");
    });

    it("ends an authenticated node's link over a malformed record, and only that link", async function () {
      const bad = await rawNode();
      await bad.seal(RecordType.control, control({ type: "attach", epoch: 1, lastIngressId: 0 }));
      await eventually(() => core.currentEpoch === 1, "attached");
      const batch = encodeEgressBatches([frame(1)])[0]!;
      await bad.seal(RecordType.frame, batch.subarray(0, batch.length - 5)); // the frame runs past the end
      expect(await bad.closed).to.match(/runs past the batch's end/);
      const error = await eventually(() => events.find((e) => e.type === "link-error"), "link-error");
      expect(error.reason).to.match(/malformed: frame of 60 bytes runs past/);
      expect(sent).to.deep.equal([]);
      const { node } = uplink();
      node.attach(1, 0);
      await stateOf(node, "connected", "the next node");
    });

    it("refuses a message larger than the link's limit", async function () {
      const bad = await rawNode();
      bad.transport.sendBinary(new Uint8Array(MAX_LINK_MESSAGE_BYTES + 1));
      expect(await bad.closed).to.match(/message too big|1009/);
    });

    it("drops and counts bad frames inside a good batch without ending the link", async function () {
      const node = await rawNode();
      await node.seal(RecordType.control, control({ type: "attach", epoch: 1, lastIngressId: 0 }));
      for (const payload of encodeEgressBatches([frame(1), new Uint8Array(2000), new Uint8Array(10), frame(2)])) await node.seal(RecordType.frame, payload);
      await eventually(() => sent.length === 2, "the good frames");
      expect(sent).to.deep.equal([1, 2]);
      expect(core.counters().egress.dropped).to.deep.include({ oversized: 1, malformed: 1 });
      expect(node.transport.isOpen).to.equal(true);
    });

    it("refuses frames before attach and a commit of frames never given", async function () {
      const early = await rawNode();
      for (const payload of encodeEgressBatches([frame(1)])) await early.seal(RecordType.frame, payload);
      expect(await early.closed).to.match(/the first message must be attach/);
      const liar = await rawNode();
      await liar.seal(RecordType.control, control({ type: "attach", epoch: 1, lastIngressId: 0 }));
      await liar.seal(RecordType.control, control({ type: "committed", lastIngressId: FIRST + 10 }));
      expect(await liar.closed).to.match(/committed ingress frame 5010, but the last frame this node was given is 4999/);
      expect(sent).to.deep.equal([]);
    });
  });

  it("ends a session whose peer falls silent, after the silence timeout and not before (manual clock)", async function () {
    const clock = new ManualClock();
    const pair = createMemoryPair();
    const [a, b] = await Promise.all([linkHandshake(pair.a, "node", SECRET), linkHandshake(pair.b, "gateway", SECRET)]);
    void b; // the gateway end never runs a session: no heartbeats come from it
    const session = new LinkSession(a, { heartbeatMs: 50, silenceTimeoutMs: 300, clock });
    let closed: { reason: string; code?: string } | undefined;
    session.onClose((i) => (closed = { reason: i.reason, ...(i.error ? { code: i.error.code } : {}) }));
    await clock.advance(290);
    expect(closed, "silent for less than the timeout").to.equal(undefined);
    await clock.advance(100);
    await waitFor(() => closed !== undefined, "the session to end");
    expect(closed!.code).to.equal("timeout");
    expect(closed!.reason).to.match(/no message from .* for 3\d\d ms/);
    pair.cut();
  });
});
