// passt for real, spoken to in raw frames over its inherited socket: it answers ARP for
// the gateway, a host client on a forwarded port makes it send a SYN to the guest's
// address and port, the start-up errors name their cause (port in use, passt missing),
// an unexpected exit is reported, and no passt outlives its owner, even a SIGKILLed one.
// Also the stream codec alone: any split of the byte stream, skipped bad frames.
import { expect } from "chai";
import { spawn } from "node:child_process";
import { connect, createServer, type Server, type Socket } from "node:net";
import { arpRequest, readArpReply } from "../../replication/network/arp.ts";
import { DEFAULT_GUEST_NETWORK as NET } from "../../replication/network/guest-network.ts";
import { PortInUseError, resolveForwards, type Forward } from "../network/forwards.ts";
import { PasstError, PasstStack } from "../network/passt.ts";
import { StreamFrameDecoder, encodeStreamFrame } from "../network/stream-frames.ts";
import { TCP_FLAGS, buildTcp, parseTcp } from "./fake-tcp-guest.ts";

/** Frames from a stack, and a way to wait for one that matches. */
class FrameLog {
  readonly frames: Uint8Array[] = [];
  #waiters: Array<() => void> = [];
  readonly add = (frame: Uint8Array): void => {
    this.frames.push(frame);
    for (const wake of this.#waiters.splice(0)) wake();
  };
  async waitFor<T>(find: (frame: Uint8Array) => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const frame of this.frames) {
        const found = find(frame);
        if (found !== undefined) return found;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms (${this.frames.length} frames seen)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port }, () => resolve(server));
  });
}

describe("network: passt as the gateway's stack", function () {
  this.timeout(20_000);
  const stacks: PasstStack[] = [];
  const sockets: Socket[] = [];
  afterEach(async function () {
    for (const socket of sockets.splice(0)) socket.destroy();
    for (const stack of stacks.splice(0)) await stack.stop();
  });

  async function start(forwards: Forward[] = []): Promise<{ stack: PasstStack; frames: FrameLog }> {
    const frames = new FrameLog();
    const stack = await PasstStack.start({ forwards, onFrame: frames.add });
    stacks.push(stack);
    return { stack, frames };
  }

  it("answers an ARP request for the gateway sent from the guest side", async function () {
    const { stack, frames } = await start();
    expect(stack.send(arpRequest(NET.guestMac, NET.guestIp, NET.gatewayIp))).to.equal(true);
    const reply = await frames.waitFor(readArpReply, 3000, "ARP reply");
    expect(reply).to.deep.equal({ senderMac: NET.gatewayMac, senderIp: NET.gatewayIp, targetMac: NET.guestMac, targetIp: NET.guestIp });
    expect(frames.frames, "the start-up probe's own reply is not passed on").to.have.length(1);
  });

  it("turns a host client's connect to a forwarded port into a SYN to the guest's address and port", async function () {
    const [forward] = await resolveForwards([{ port: 0, guestPort: 8080 }]);
    expect(forward!.port).to.be.greaterThan(0);
    const { frames } = await start([forward!]);
    const client = connect(forward!.port, "127.0.0.1");
    sockets.push(client);
    client.on("error", () => undefined);
    const syn = await frames.waitFor(
      (f) => {
        const s = parseTcp(f);
        return s && s.flags & TCP_FLAGS.SYN ? s : undefined;
      },
      3000,
      "SYN",
    );
    expect(syn).to.deep.include({ dstMac: NET.guestMac, srcMac: NET.gatewayMac, dstIp: NET.guestIp, srcIp: NET.gatewayIp, dstPort: 8080 });
    expect(syn.flags & TCP_FLAGS.ACK).to.equal(0);
  });

  it("keeps the guest off the host's loopback through the gateway address, unless asked", async function () {
    const service = await listenOn(0);
    const port = (service.address() as { port: number }).port;
    let connections = 0;
    service.on("connection", (socket: Socket) => {
      connections++;
      socket.destroy();
    });
    const syn = buildTcp({
      srcMac: NET.guestMac,
      dstMac: NET.gatewayMac,
      srcIp: NET.guestIp,
      dstIp: NET.gatewayIp,
      srcPort: 40000,
      dstPort: port,
      seq: 1,
      ack: 0,
      flags: TCP_FLAGS.SYN,
      payload: new Uint8Array(0),
    });
    try {
      const closed = await PasstStack.start({ forwards: [], onFrame: () => undefined });
      stacks.push(closed);
      closed.send(syn);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(connections, "default: no way to the host's loopback").to.equal(0);
      const open = await PasstStack.start({ forwards: [], onFrame: () => undefined, mapGatewayToHost: true });
      stacks.push(open);
      open.send(syn);
      await waitUntil(() => connections === 1, 3000, "mapGatewayToHost: the guest's SYN to 10.0.2.2 did not reach the host's loopback service");
    } finally {
      service.close();
    }
  });

  it("names a host port in use before passt starts, and when passt finds it taken", async function () {
    const taken = await listenOn(0);
    const port = (taken.address() as { port: number }).port;
    try {
      const early = await resolveForwards([{ port, guestPort: 22 }]).catch((e: unknown) => e);
      expect(early).to.be.instanceOf(PortInUseError);
      expect((early as Error).message).to.equal(`host port 127.0.0.1:${port} (forwarded to guest port 22) is in use by another program`);
      // The same port handed to passt directly (as if taken between the check and the start).
      const late = await PasstStack.start({ forwards: [{ host: "127.0.0.1", port, guestPort: 22 }], onFrame: () => undefined }).catch((e: unknown) => e);
      expect(late).to.be.instanceOf(PortInUseError);
      expect((late as Error).message).to.match(new RegExp(`host port 127\\.0\\.0\\.1:${port} \\(forwarded to guest port 22\\) is in use`));
    } finally {
      taken.close();
    }
  });

  it("says passt is missing and names the Debian package when it is not on PATH", async function () {
    const error = await PasstStack.start({ forwards: [], onFrame: () => undefined, env: { PATH: "/nonexistent" } }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(PasstError);
    expect((error as PasstError).code).to.equal("missing");
    expect((error as Error).message).to.match(/passt not found on PATH.*install the Debian package passt/);
  });

  it("reports passt dying under it and takes no more frames; stop() leaves no process", async function () {
    const { stack } = await start();
    const exited = new Promise<string>((resolve) => stack.onExit((exit) => resolve(exit.reason)));
    process.kill(stack.pid, "SIGKILL");
    expect(await exited).to.match(/passt \(pid \d+\) was killed by SIGKILL/);
    expect(stack.send(arpRequest(NET.guestMac, NET.guestIp, NET.gatewayIp))).to.equal(false);
    const { stack: other } = await start();
    const pid = other.pid;
    await other.stop();
    expect(isAlive(pid)).to.equal(false);
  });

  it("leaves no passt behind when its owner is SIGKILLed", async function () {
    // A Node process that starts passt, prints its pid and waits.
    const script = `
      import { PasstStack } from ${JSON.stringify(new URL("../network/passt.ts", import.meta.url).href)};
      const stack = await PasstStack.start({ forwards: [], onFrame: () => {} });
      process.stdout.write(stack.pid + "\\n");
      setInterval(() => {}, 1000);`;
    const owner = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const pid = await new Promise<number>((resolve, reject) => {
        owner.stdout.on("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
        owner.once("exit", (code) => reject(new Error(`owner exited with ${code} before starting passt`)));
      });
      expect(isAlive(pid)).to.equal(true);
      owner.kill("SIGKILL");
      await waitUntil(() => !isAlive(pid), 3000, "passt did not exit after its owner was killed");
    } finally {
      owner.kill("SIGKILL");
    }
  });
});

describe("network: passt's frame stream codec", function () {
  const frames = [new Uint8Array(60).fill(1), new Uint8Array(1514).fill(2), new Uint8Array(14).fill(3)];
  const stream = new Uint8Array(frames.flatMap((f) => [...encodeStreamFrame(f)]));

  function decode(chunks: Uint8Array[], max = 1514): { got: Uint8Array[]; drops: string[] } {
    const got: Uint8Array[] = [];
    const drops: string[] = [];
    const decoder = new StreamFrameDecoder(
      max,
      14,
      (f) => got.push(f),
      (reason, length) => drops.push(`${reason}:${length}`),
    );
    for (const chunk of chunks) decoder.push(chunk);
    return { got, drops };
  }

  it("reassembles frames from any split of the stream", function () {
    for (const size of [1, 2, 3, 5, 7, 64, 1000, stream.length]) {
      const chunks: Uint8Array[] = [];
      for (let at = 0; at < stream.length; at += size) chunks.push(stream.subarray(at, at + size));
      const { got, drops } = decode(chunks);
      expect(got, `chunks of ${size}`).to.deep.equal(frames);
      expect(drops).to.deep.equal([]);
    }
  });

  it("skips oversized and too-short frames without losing its place", function () {
    const bad = new Uint8Array([...encodeStreamFrame(new Uint8Array(1515)), ...encodeStreamFrame(new Uint8Array(5)), ...encodeStreamFrame(new Uint8Array(0))]);
    const whole = new Uint8Array([...bad, ...stream]);
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < whole.length; at += 3) chunks.push(whole.subarray(at, at + 3));
    const { got, drops } = decode(chunks);
    expect(got).to.deep.equal(frames);
    expect(drops).to.deep.equal(["oversized:1515", "malformed:5", "malformed:0"]);
  });
});
