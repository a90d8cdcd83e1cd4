// The gateway as a whole with real passt and fake nodes (a miniature TCP "guest" behind a
// NetworkUplink, egress held until a simulated sync as the engine's output commit does):
// a host client's SYN reaches the attached node; a SYN made while no node is attached is
// logged and delivered to the next one; a TCP exchange survives a takeover, the new primary
// being given again the frames its replica had not seen; the old primary is refused; passt
// dying is reported; close() leaves no process.
import { expect } from "chai";
import { connect, type Socket } from "node:net";
import { DEFAULT_GUEST_NETWORK as NET } from "../../replication/network/guest-network.ts";
import type { NetworkUplink } from "../../replication/network/uplink.ts";
import { startGateway, type Gateway, type GatewayEvent } from "../network/gateway.ts";
import { createNodeUplink } from "../network/node-uplink.ts";
import { FakeTcpGuest, TCP_FLAGS, parseTcp, type FakeGuestState } from "./fake-tcp-guest.ts";

const SECRET = new TextEncoder().encode("gateway end-to-end test secret");
const GUEST_PORT = 7777;

async function eventually<T>(read: () => T | undefined | false, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A node running the fake guest: egress frames wait for sync() (or go at once with autoSync), as output commit holds them. */
class SimulatedNode {
  readonly uplink: NetworkUplink;
  readonly guest: FakeTcpGuest;
  readonly held: Uint8Array[] = [];
  readonly frames: Array<{ id: number; frame: Uint8Array }> = [];
  autoSync = true;

  constructor(gateway: Gateway, epoch: number, replica?: FakeGuestState) {
    this.uplink = createNodeUplink({ url: gateway.url, secret: SECRET, nodeId: `node-epoch-${epoch}`, minRetryMs: 20, maxRetryMs: 200 });
    this.guest = new FakeTcpGuest({ mac: NET.guestMac, ip: NET.guestIp, port: GUEST_PORT }, (frames) => this.held.push(...frames), replica);
    this.uplink.onFrame((frame, id) => {
      this.frames.push({ id, frame });
      this.guest.receive(frame, id);
      if (this.autoSync) this.sync();
    });
    this.uplink.attach(epoch, this.guest.state.lastIngressId);
  }

  /** An acknowledged sync: the secondary's copy is this state; what the guest sent may leave. */
  sync(): FakeGuestState {
    const replica = structuredClone(this.guest.state);
    this.uplink.send(this.held.splice(0));
    this.uplink.committed(replica.lastIngressId);
    return replica;
  }
}

class Client {
  readonly socket: Socket;
  text = "";
  constructor(port: number) {
    this.socket = connect(port, "127.0.0.1");
    this.socket.setEncoding("utf8");
    this.socket.on("data", (chunk: string) => (this.text += chunk));
    this.socket.on("error", () => undefined);
  }
}

describe("network gateway (real passt, fake nodes)", function () {
  this.timeout(30_000);
  let gateway: Gateway;
  let events: GatewayEvent[];
  const cleanup: Array<() => unknown> = [];

  beforeEach(async function () {
    gateway = await startGateway({ forwards: [{ port: 0, guestPort: GUEST_PORT }], secret: SECRET });
    events = [];
    gateway.onEvent((event) => events.push(event));
  });

  afterEach(async function () {
    for (const step of cleanup.splice(0).reverse()) await step();
    await gateway.close();
  });

  function node(epoch: number, replica?: FakeGuestState): SimulatedNode {
    const created = new SimulatedNode(gateway, epoch, replica);
    cleanup.push(() => created.uplink.close());
    return created;
  }

  function client(): Client {
    const created = new Client(gateway.hostPort(GUEST_PORT));
    cleanup.push(() => created.socket.destroy());
    return created;
  }

  it("relays a host client's SYN towards 10.0.2.15 to the attached node", async function () {
    const a = node(1);
    await eventually(() => a.uplink.state.kind === "connected", "attach");
    client();
    const syn = await eventually(
      () => a.frames.map((f) => ({ id: f.id, tcp: parseTcp(f.frame) })).find((f) => f.tcp && f.tcp.flags & TCP_FLAGS.SYN),
      "a SYN at the node",
    );
    expect(syn.tcp).to.deep.include({ dstIp: NET.guestIp, dstPort: GUEST_PORT, dstMac: NET.guestMac, srcIp: NET.gatewayIp });
    expect(gateway.counters().nodeId).to.equal("node-epoch-1");
    expect(gateway.counters().nodes.current).to.deep.include({ epoch: 1 });
  });

  it("logs a SYN that arrives while no node is attached and delivers it to the next node, whose answer reaches the client", async function () {
    const c = client();
    await eventually(() => gateway.counters().ingress.heldWhileDetached >= 1, "the SYN logged");
    const b = node(2);
    await eventually(() => b.frames.some((f) => (parseTcp(f.frame)?.flags ?? 0) & TCP_FLAGS.SYN), "the logged SYN at the node");
    expect(gateway.counters().ingress.replayed).to.be.at.least(1);
    c.socket.write("late hello");
    await eventually(() => c.text === "late hello", `the echo (got ${JSON.stringify(c.text)})`);
  });

  it("keeps a TCP connection across a takeover: the new primary gets the frames its replica had not seen, the old one is refused", async function () {
    const a = node(1);
    await eventually(() => a.uplink.state.kind === "connected", "attach");
    const c = client();
    c.socket.write("hello ");
    await eventually(() => c.text === "hello ", "the first echo");

    // The secondary's copy as of this sync; then the guest receives more, but no sync covers it.
    const replica = a.sync();
    a.autoSync = false;
    c.socket.write("world");
    await eventually(() => a.guest.state.received[replica.connections[0]!.peerPort]?.endsWith("world"), "the primary's guest saw the data");
    expect(a.held.length, "its echo is held by output commit").to.be.greaterThan(0);
    a.uplink.close(); // the primary dies; what it held is never sent

    const takeoverAt = performance.now();
    const b = node(2, replica);
    await eventually(() => c.text === "hello world", `the echo from the new primary (got ${JSON.stringify(c.text)})`);
    const echoMs = performance.now() - takeoverAt;
    // passt would resend the data only after its 2 s timer: the log's replay is what answered this fast.
    expect(echoMs, "echo after the takeover").to.be.below(1500);
    expect(gateway.counters().ingress.replayed).to.be.at.least(1);
    expect(b.frames[0]!.id).to.equal(replica.lastIngressId + 1);

    // The old primary, still alive after all, cannot talk to clients.
    const zombie = node(1, replica);
    await eventually(() => zombie.uplink.state.kind === "down" && zombie.uplink.state.retryInMs === undefined, "the old primary refused");
    expect(zombie.uplink.state.kind === "down" && zombie.uplink.state.reason).to.match(/stale: the gateway serves epoch 2/);
    c.socket.write("!");
    await eventually(() => c.text === "hello world!", "the connection still served by epoch 2");
  });

  it("keeps its log bounded under a flood of connections while no node is attached, counting what it drops", async function () {
    const small = await startGateway({ forwards: [{ port: 0, guestPort: GUEST_PORT }], secret: SECRET, log: { maxFrames: 8, maxBytes: 1 << 20 } });
    const clients: Socket[] = [];
    try {
      for (let i = 0; i < 30; i++) clients.push(connect(small.hostPort(GUEST_PORT), "127.0.0.1").on("error", () => undefined));
      const counters = await eventually(() => {
        const now = small.counters();
        return now.ingress.frames + now.ingress.dropped.noNode >= 30 ? now : undefined;
      }, "30 SYNs seen");
      expect(counters.log.frames).to.equal(8);
      expect(counters.ingress.dropped.noNode).to.be.at.least(22);
      expect(counters.ingress.heldWhileDetached).to.equal(8);
    } finally {
      for (const socket of clients) socket.destroy();
      await small.close();
    }
  });

  it("refuses a short secret or a bad log bound before starting anything", async function () {
    const short = await startGateway({ forwards: [], secret: new Uint8Array(8) }).catch((e: unknown) => e);
    expect(short).to.be.instanceOf(RangeError);
    expect((short as Error).message).to.equal("the secret is 8 bytes, at least 16 are required");
    const bound = await startGateway({ forwards: [], secret: SECRET, log: { maxFrames: 0 } }).catch((e: unknown) => e);
    expect((bound as Error).message).to.equal("log.maxFrames must be a positive integer, got 0");
    expect(() => createNodeUplink({ url: gateway.url, secret: new Uint8Array(15) })).to.throw(RangeError, /15 bytes, at least 16/);
  });

  it("reports passt dying, and close() leaves no process", async function () {
    const exited = new Promise<GatewayEvent>((resolve) => gateway.onEvent((e) => e.type === "stack-exited" && resolve(e)));
    process.kill(gateway.passtPid, "SIGKILL");
    const event = await exited;
    expect(event.type === "stack-exited" && event.reason).to.match(/killed by SIGKILL/);
    expect(gateway.counters().stack.state).to.equal("down");
    const a = node(1);
    await eventually(() => a.uplink.state.kind === "connected", "nodes still attach");
    a.uplink.send([new Uint8Array(60)]);
    await eventually(() => gateway.counters().egress.dropped.stackDown === 1, "the frame dropped as stack down");

    const other = await startGateway({ forwards: [], secret: SECRET });
    await other.close();
    expect(() => process.kill(other.passtPid, 0)).to.throw();
  });
});
