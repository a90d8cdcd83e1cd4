// The echo-stream client that the campaign's network check and the takeover benchmark rely
// on: it must pass a faithful echo and catch each way an echo can go wrong (a lost, altered
// or repeated byte, a reset, a silent stall, a close with data outstanding).
import { createServer, type Server, type Socket } from "node:net";
import { expect } from "chai";
import { EchoStream } from "../network/echo-stream.ts";

/** A TCP server on a free loopback port whose connections `handle` serves. */
async function server(handle: (socket: Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const s: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    handle(socket);
  });
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as { port: number }).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        s.close(() => resolve());
      }),
  };
}

/** Echoes everything, but passes each piece through `alter` (identity by default). */
const echo =
  (alter: (chunk: Buffer, offset: number) => Buffer = (c) => c) =>
  (socket: Socket) => {
    let offset = 0;
    socket.on("data", (chunk: Buffer) => {
      socket.write(alter(chunk, offset));
      offset += chunk.length;
    });
    socket.on("end", () => socket.end());
  };

describe("EchoStream (the network check's client)", function () {
  this.timeout(20_000);
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  async function serve(handle: (socket: Socket) => void): Promise<number> {
    const s = await server(handle);
    closers.push(() => s.close());
    return s.port;
  }

  it("a faithful echo: complete, every byte verified, paced and unpaced", async () => {
    const port = await serve(echo());
    const fast = await EchoStream.open({ port });
    expect(await fast.progress(4 << 20, 10_000)).to.equal(true);
    const report = await fast.finish(5000);
    expect(report.outcome).to.equal("complete");
    expect(report.verified).to.equal(report.sent);
    expect(report.sent).to.be.greaterThan(4 << 20);

    const paced = await EchoStream.open({ port, bytesPerSecond: 200_000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const pacedReport = await paced.finish(5000);
    expect(pacedReport.outcome).to.equal("complete");
    // About 0.5 s at 200 kB/s; the pacer's first tick comes after 50 ms.
    expect(pacedReport.sent).to.be.within(50_000, 150_000);
  });

  it("a byte altered on the way back is a mismatch at its offset", async () => {
    const port = await serve(
      echo((chunk, offset) => {
        const at = 100_000 - offset;
        if (at < 0 || at >= chunk.length) return chunk;
        const copy = Buffer.from(chunk);
        copy[at] = copy[at]! ^ 0xff;
        return copy;
      }),
    );
    const stream = await EchoStream.open({ port });
    await stream.progress(200_000, 5000);
    const report = await stream.finish(2000);
    expect(report.outcome).to.equal("mismatch");
    expect(report.mismatchAt).to.equal(100_000);
    expect(report.verified).to.equal(100_000);
  });

  it("a lost piece and a repeated piece are mismatches", async () => {
    for (const alter of [
      (chunk: Buffer, offset: number) => (offset > 50_000 && offset < 200_000 ? chunk.subarray(1) : chunk),
      (chunk: Buffer, offset: number) => (offset > 50_000 && offset < 200_000 ? Buffer.concat([chunk, chunk.subarray(0, 1)]) : chunk),
    ]) {
      const port = await serve(echo(alter));
      const stream = await EchoStream.open({ port });
      await stream.progress(300_000, 5000);
      const report = await stream.finish(2000);
      expect(report.outcome).to.equal("mismatch");
      expect(report.mismatchAt).to.be.a("number");
    }
  });

  it("a reset is an error; a close with bytes outstanding is closed-early", async () => {
    const resetting = await serve((socket) => {
      echo()(socket);
      setTimeout(() => socket.resetAndDestroy(), 200);
    });
    const reset = await EchoStream.open({ port: resetting, bytesPerSecond: 100_000 });
    await new Promise((resolve) => setTimeout(resolve, 600));
    const report = await reset.finish(3000);
    expect(report.outcome).to.equal("error");
    expect(report.error).to.match(/ECONNRESET/);

    // Reads but never answers, then closes: the bytes sent are still outstanding.
    const swallowing = await serve((socket) => {
      socket.on("data", () => undefined);
      setTimeout(() => socket.end(), 300);
    });
    const swallowed = await EchoStream.open({ port: swallowing, bytesPerSecond: 100_000 });
    await new Promise((resolve) => setTimeout(resolve, 600));
    const closed = await swallowed.finish(2000);
    expect(closed.outcome).to.equal("closed-early");
    expect(closed.verified).to.equal(0);
  });

  it("a silent stall is a timeout, and the gap it caused is measured", async () => {
    let hold = false;
    const port = await serve((socket) => {
      const held: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => {
        held.push(chunk);
        // In order: what was held goes out before anything newer.
        if (!hold) socket.write(Buffer.concat(held.splice(0)));
      });
      const release = setInterval(() => {
        if (!hold && held.length > 0) socket.write(Buffer.concat(held.splice(0)));
      }, 10);
      socket.on("close", () => clearInterval(release));
    });
    const stream = await EchoStream.open({ port, bytesPerSecond: 100_000 });
    await stream.progress(10_000, 10_000);
    hold = true;
    const heldAt = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 700));
    hold = false;
    // Generous bounds: a loaded machine (CI) delays the timers on both ends.
    expect(await stream.progress(10_000, 10_000)).to.equal(true);
    const gaps = stream.gapsBetween(heldAt, performance.now());
    const longest = Math.max(...gaps.map((g) => g.endMs - g.startMs));
    expect(longest).to.be.within(600, 2500);

    hold = true;
    await new Promise((resolve) => setTimeout(resolve, 200)); // bytes sent meanwhile stay outstanding
    const report = await stream.finish(500);
    expect(report.outcome).to.equal("timeout");
    expect(report.longestGapMs).to.be.at.least(longest);
  });
});
