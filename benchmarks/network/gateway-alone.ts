// Part of `npm run bench -- network`: what the network gateway costs, without a guest: real passt, the link over loopback
// WebSockets (authenticated, encrypted), and a node whose "guest" is the tests' miniature
// TCP (harness/test/fake-tcp-guest.ts) with egress released at once (no sync: the gateway's
// own share of the latency, not output commit's). Measured: starting a gateway; a host
// client's connect() to the SYN at the node; a small echo's round trip from a host client;
// frames per second through the link each way (core to node, node to stack, 1514-byte
// frames, no passt); and a takeover: from the new node's attach() to the client reading
// the echo of data that only the log still held.
import { connect, type Socket } from "node:net";
import { GatewayCore } from "../../replication/network/gateway-core.ts";
import { DEFAULT_GUEST_NETWORK as NET } from "../../replication/network/guest-network.ts";
import type { NetworkUplink } from "../../replication/network/uplink.ts";
import { startGateway, type Gateway } from "../../harness/network/gateway.ts";
import { resolveForwards } from "../../harness/network/forwards.ts";
import { startLinkServer } from "../../harness/network/link-server.ts";
import { PasstStack } from "../../harness/network/passt.ts";
import { createNodeUplink } from "../../harness/network/node-uplink.ts";
import { FakeTcpGuest, TCP_FLAGS, parseTcp, type FakeGuestState } from "../../harness/test/fake-tcp-guest.ts";
import { median } from "../stats.ts";

const SECRET = new TextEncoder().encode("network benchmark secret value");
const PORT = 7000;

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function node(
  gateway: Gateway,
  epoch: number,
  replica?: FakeGuestState,
): { uplink: NetworkUplink; guest: FakeTcpGuest; synAt: number[]; held: Uint8Array[]; release: { now: boolean } } {
  const uplink = createNodeUplink({ url: gateway.url, secret: SECRET, minRetryMs: 20 });
  const held: Uint8Array[] = [];
  const release = { now: true };
  const guest = new FakeTcpGuest(
    { mac: NET.guestMac, ip: NET.guestIp, port: PORT },
    (frames) => (release.now ? uplink.send(frames) : held.push(...frames)),
    replica,
  );
  const synAt: number[] = [];
  uplink.onFrame((frame, id) => {
    if ((parseTcp(frame)?.flags ?? 0) & TCP_FLAGS.SYN) synAt.push(performance.now());
    guest.receive(frame, id);
  });
  uplink.attach(epoch, guest.state.lastIngressId);
  return { uplink, guest, synAt, held, release };
}

function client(port: number): { socket: Socket; text: () => string } {
  let text = "";
  const socket = connect(port, "127.0.0.1");
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => (text += chunk));
  socket.on("error", () => undefined);
  return { socket, text: () => text };
}

export interface GatewayAloneReport {
  description: string;
  table: string;
  data: Record<string, unknown>;
}

export async function gatewayAlone(context: { log: (line: string) => void }): Promise<GatewayAloneReport> {
  // Starting a gateway (forward resolution, passt up and answering ARP, listener).
  const startMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    const gateway = await startGateway({ forwards: [{ port: 0, guestPort: PORT }], secret: SECRET });
    startMs.push(performance.now() - started);
    await gateway.close();
  }
  context.log(`start: median ${median(startMs).toFixed(0)} ms`);

  // The same at passt's own socket, without the gateway: what passt itself takes.
  const [forward] = await resolveForwards([{ port: 0, guestPort: PORT }]);
  let passtSynAt = 0;
  const bare = await PasstStack.start({
    forwards: [forward!],
    onFrame: (f) => void ((parseTcp(f)?.flags ?? 0) & TCP_FLAGS.SYN && (passtSynAt = performance.now())),
  });
  const passtSynMs: number[] = [];
  for (let i = 0; i < 20; i++) {
    passtSynAt = 0;
    const started = performance.now();
    const c = client(forward!.port);
    await until(() => passtSynAt !== 0, "SYN out of passt");
    passtSynMs.push(passtSynAt - started);
    c.socket.destroy();
  }
  await bare.stop();
  context.log(`connect to SYN out of passt: median ${median(passtSynMs).toFixed(2)} ms`);

  const gateway = await startGateway({ forwards: [{ port: 0, guestPort: PORT }], secret: SECRET });
  const a = node(gateway, 1);
  await until(() => a.uplink.state.kind === "connected", "attach");

  // connect() to the SYN at the node.
  const synMs: number[] = [];
  for (let i = 0; i < 20; i++) {
    const before = a.synAt.length;
    const started = performance.now();
    const c = client(gateway.hostPort(PORT));
    await until(() => a.synAt.length > before, "SYN");
    synMs.push(a.synAt[before]! - started);
    c.socket.destroy();
  }
  context.log(`connect to SYN: median ${median(synMs).toFixed(2)} ms`);

  // Echo round trips on one connection.
  const c = client(gateway.hostPort(PORT));
  c.socket.write("warm");
  await until(() => c.text() === "warm", "first echo");
  const echoMs: number[] = [];
  for (let i = 0; i < 200; i++) {
    const expected = c.text().length + 16;
    const started = performance.now();
    c.socket.write("0123456789abcdef");
    await until(() => c.text().length === expected, "echo");
    echoMs.push(performance.now() - started);
  }
  context.log(`echo round trip: median ${median(echoMs).toFixed(2)} ms`);

  // Takeover: data the dead primary's guest saw after the replica was taken, replayed to the new one.
  const takeoverMs: number[] = [];
  let current = a;
  for (let epoch = 2; epoch <= 6; epoch++) {
    const replica = structuredClone(current.guest.state);
    current.uplink.committed(replica.lastIngressId);
    current.release.now = false;
    const expected = c.text() + "after-sync";
    c.socket.write("after-sync");
    await until(() => Object.values(current.guest.state.received).some((text) => text.endsWith("after-sync")), "the old primary saw the data");
    current.uplink.close();
    const started = performance.now();
    current = node(gateway, epoch, replica);
    await until(() => c.text() === expected, "echo after the takeover");
    takeoverMs.push(performance.now() - started);
  }
  context.log(`takeover to echo: median ${median(takeoverMs).toFixed(1)} ms`);
  const replayed = gateway.counters().ingress.replayed;
  c.socket.destroy();
  current.uplink.close();
  await gateway.close();

  // Frames through the link alone (no passt): the core feeding a node, a node feeding a stack.
  let toStack = 0;
  const core = new GatewayCore({ send: () => (toStack++, true) }, { maxFrames: 65536, maxBytes: 256 << 20, maxFrameBytes: 1514, firstIngressId: 1 });
  const server = await startLinkServer(core, { secret: SECRET }, () => undefined);
  const bulk = createNodeUplink({ url: server.url, secret: SECRET });
  let received = 0;
  bulk.onFrame(() => received++);
  bulk.attach(1, 0);
  await until(() => bulk.state.kind === "connected", "bulk attach");
  const FRAMES = 20_000;
  const frame = new Uint8Array(1514);
  let started = performance.now();
  for (let i = 0; i < FRAMES; i++) core.ingress(frame);
  await until(() => received === FRAMES, "ingress frames", 60_000);
  const ingressSeconds = (performance.now() - started) / 1000;
  started = performance.now();
  for (let sent = 0; sent < FRAMES; sent += 64) {
    await until(() => bulk.state.kind === "connected", "still connected");
    bulk.send(Array.from({ length: 64 }, () => frame));
    // At most ~128 frames in flight: below the link's high-water mark, where send() would drop (and count) instead of waiting.
    await until(() => toStack >= sent + 64 - 128, "egress window", 60_000);
  }
  await until(() => toStack + bulk.counters().egress.dropped.backlog >= FRAMES, "egress frames", 60_000);
  const egressSeconds = (performance.now() - started) / 1000;
  const egressDropped = bulk.counters().egress.dropped.backlog;
  bulk.close();
  await server.close();
  const mib = (frames: number) => (frames * 1514) / (1 << 20);
  context.log(`link: ${(FRAMES / ingressSeconds).toFixed(0)} frames/s to the node, ${(toStack / egressSeconds).toFixed(0)} frames/s from it`);

  const data = {
    startMs: median(startMs),
    connectToSynMs: median(synMs),
    connectToSynOutOfPasstMs: median(passtSynMs),
    echoRoundTripMs: median(echoMs),
    takeoverToEchoMs: median(takeoverMs),
    takeoverRuns: takeoverMs,
    replayedFrames: replayed,
    ingressFramesPerSecond: FRAMES / ingressSeconds,
    ingressMiBPerSecond: mib(FRAMES) / ingressSeconds,
    egressFramesPerSecond: toStack / egressSeconds,
    egressMiBPerSecond: mib(toStack) / egressSeconds,
    egressDroppedForBacklog: egressDropped,
  };
  const table =
    "| measure | median |\n|---|---|\n" +
    `| start a gateway (free port, passt up and answering ARP, listener) | ${data.startMs.toFixed(0)} ms (n=5) |\n` +
    `| host connect() to the SYN out of passt (passt alone, no gateway) | ${data.connectToSynOutOfPasstMs.toFixed(2)} ms (n=20) |\n` +
    `| host connect() to the SYN at the attached node | ${data.connectToSynMs.toFixed(2)} ms (n=20) |\n` +
    `| 16-byte echo round trip, host client to fake guest and back (no output commit) | ${data.echoRoundTripMs.toFixed(2)} ms (n=200) |\n` +
    `| takeover: new node's attach() to the client reading the echo of replayed data | ${data.takeoverToEchoMs.toFixed(1)} ms (n=5; ${takeoverMs.map((ms) => ms.toFixed(0)).join(", ")}) |\n` +
    `| link, gateway to node, 1514-byte frames | ${data.ingressFramesPerSecond.toFixed(0)} frames/s (${data.ingressMiBPerSecond.toFixed(0)} MiB/s) |\n` +
    `| link, node to gateway, 1514-byte frames in batches of 64 | ${data.egressFramesPerSecond.toFixed(0)} frames/s (${data.egressMiBPerSecond.toFixed(0)} MiB/s; ${egressDropped} dropped as backlog) |`;
  return {
    description:
      "The network gateway without a guest: real passt (Debian 0.0~git20230309), the link over loopback WebSockets with AES-GCM records, and a node " +
      "whose guest is a miniature TCP echo (harness/test/fake-tcp-guest.ts) whose frames are released at once (output commit's wait is not included). " +
      "The link rows use the gateway core and link server with a counting stack instead of passt.",
    table,
    data,
  };
}
