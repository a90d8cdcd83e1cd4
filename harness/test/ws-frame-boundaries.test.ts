// The fault proxy's frame finder against a real `ws` client: everything the client
// sends (the HTTP upgrade request, then masked frames of every length encoding) is
// recorded through a tap and fed back in random chunks; the frame ends found must be
// exactly the messages the server received.
import { createServer, connect, type Server } from "node:net";
import { expect } from "chai";
import { WebSocket, WebSocketServer } from "ws";
import { WsFrameBoundaries } from "../ws-frame-boundaries.ts";
import { Prng } from "../campaign/prng.ts";

describe("WebSocket frame boundaries", function () {
  let server: WebSocketServer;
  let tap: Server;
  const recorded: Buffer[] = [];
  const received: number[] = [];
  const sizes = [0, 5, 125, 126, 127, 200, 65_535, 65_536, 70_000, 1 << 20, 3];

  before(async () => {
    server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await new Promise((resolve) => server.once("listening", resolve));
    server.on("connection", (socket) => socket.on("message", (data: Buffer) => received.push(data.length)));
    const target = (server.address() as { port: number }).port;
    tap = createServer((client) => {
      const upstream = connect(target, "127.0.0.1");
      client.on("data", (chunk: Buffer) => {
        recorded.push(chunk);
        upstream.write(chunk);
      });
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => tap.listen(0, "127.0.0.1", () => resolve()));
    const client = new WebSocket(`ws://127.0.0.1:${(tap.address() as { port: number }).port}`);
    await new Promise((resolve) => client.once("open", resolve));
    sizes.forEach((size, i) => client.send(i % 2 ? "x".repeat(size) : Buffer.alloc(size, i)));
    const deadline = Date.now() + 10_000;
    while (received.length < sizes.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    client.terminate();
  });

  after(() => {
    tap.close();
    server.close();
  });

  it("finds every frame end in the client's stream, however it is chunked", function () {
    expect(received).to.deep.equal(sizes);
    const stream = Buffer.concat(recorded);
    const prng = new Prng(99);
    for (let trial = 0; trial < 20; trial++) {
      const finder = new WsFrameBoundaries();
      const found: { opcode: number; payloadBytes: number }[] = [];
      for (let offset = 0; offset < stream.length;) {
        const length = trial === 0 ? 1 : prng.int(1, 100_000);
        found.push(...finder.push(stream.subarray(offset, offset + length)).map(({ opcode, payloadBytes }) => ({ opcode, payloadBytes })));
        offset += length;
      }
      expect(found, `trial ${trial}`).to.deep.equal(sizes.map((size, i) => ({ opcode: i % 2 ? 1 : 2, payloadBytes: size })));
    }
  });
});
