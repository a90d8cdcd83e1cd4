// The failover test users most want: a client keeps talking to a service in the guest while
// the primary dies. Real guests in two node processes, the real network gateway (passt) in
// this process, a host TCP client on a forwarded port, SIGKILL of the primary mid-stream.
import { createHash, randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { expect } from "chai";
import { startPair, type Pair } from "../testing/index.ts";

/** The guest's services: an echo on port 7 (one cat per connection) and busybox httpd on 80. */
const SERVICES = "mkdir -p /www && echo hello-from-the-guest > /www/index.html && (nc -ll -p 7 -e cat &) && (httpd -p 80 -h /www &)";
const STREAM_BYTES = 8 << 20;

interface StreamResult {
  sentDigest: string;
  receivedDigest: string;
  received: number;
  /** The longest time no byte came back, ms (the takeover's stall as the client sees it). */
  longestGapMs: number;
  error: Error | undefined;
}

/** Streams `bytes` of random data through the echo service and reads it back, calling `midway` once half has come back. */
function streamThroughEcho(port: number, bytes: number, midway: () => void): Promise<StreamResult> {
  const data = randomBytes(bytes);
  const sent = createHash("sha256").update(data).digest("hex");
  const received = createHash("sha256");
  return new Promise((resolve) => {
    let count = 0;
    let lastByteAt = performance.now();
    let longestGapMs = 0;
    let calledMidway = false;
    let error: Error | undefined;
    const socket: Socket = connect({ host: "127.0.0.1", port }, () => {
      // Write in pieces, honouring backpressure: the guest's TCP window paces us.
      let at = 0;
      const pump = () => {
        while (at < bytes) {
          const piece = data.subarray(at, Math.min(bytes, at + 16384));
          at += piece.length;
          if (!socket.write(piece)) return void socket.once("drain", pump);
        }
      };
      pump();
    });
    socket.on("data", (chunk: Buffer) => {
      const now = performance.now();
      longestGapMs = Math.max(longestGapMs, now - lastByteAt);
      lastByteAt = now;
      received.update(chunk);
      count += chunk.length;
      if (!calledMidway && count >= bytes / 2) {
        calledMidway = true;
        midway();
      }
      if (count >= bytes) socket.end();
    });
    socket.on("error", (e) => (error = e));
    socket.on("close", () => resolve({ sentDigest: sent, receivedDigest: received.digest("hex"), received: count, longestGapMs, error }));
  });
}

function httpGet(port: number, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port }, () => socket.write("GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n"));
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (text += chunk));
    socket.on("close", () => resolve(text));
    socket.on("error", reject);
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)));
  });
}

describe("network across a failover (real guests, passt gateway, SIGKILL)", function () {
  this.timeout(600_000);
  let pair: Pair | undefined;

  afterEach(async () => {
    await pair?.stop();
    pair = undefined;
  });

  for (const mode of ["logging-replay", "dirty-block-copy"] as const) {
    it(`${mode}: an 8 MiB echo stream survives the primary's death: no reset, every byte back in order`, async () => {
      pair = await startPair({ mode, forwards: ["0:7"], overlay: { startup: SERVICES }, reprotect: false });
      const current = pair;
      let killed: Promise<unknown> | undefined;
      const result = await streamThroughEcho(current.hostPort(7), STREAM_BYTES, () => {
        killed = current.killPrimary();
      });
      await killed;
      expect(result.error, "the client saw no error (no reset)").to.equal(undefined);
      expect(result.received).to.equal(STREAM_BYTES);
      expect(result.receivedDigest).to.equal(result.sentDigest);
      expect(current.failovers).to.equal(1);
      const network = current.network()!;
      expect(network.nodeId, "the survivor talks to the gateway").to.match(/secondary/);
      console.log(`      ${mode}: longest stall seen by the client ${result.longestGapMs.toFixed(0)} ms; replayed ${JSON.stringify(network.ingress)}`);
    });
  }

  it("an HTTP server answers before and after a takeover on the same port, and a client connecting during the takeover gets its answer", async () => {
    pair = await startPair({ forwards: ["0:80"], overlay: { startup: SERVICES }, reprotect: false });
    const port = pair.hostPort(80);
    expect(await httpGet(port)).to.match(/^HTTP\/1\.[01] 200[\s\S]*hello-from-the-guest/);
    const killed = pair.killPrimary();
    // Connect while the primary dies: the SYN waits in the gateway's log for the new primary.
    const during = httpGet(port);
    await killed;
    expect(await during).to.match(/hello-from-the-guest/);
    await pair.waitForTakeover({ timeoutMs: 30_000 });
    expect(await httpGet(port)).to.match(/hello-from-the-guest/);
  });
});
