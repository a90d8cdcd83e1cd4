// The fault proxy's link delay, on real loopback sockets: each direction's bytes arrive the
// given time later, in order.
import { createServer, connect, type Server, type Socket } from "node:net";
import { expect } from "chai";
import { FaultProxy } from "../fault-proxy.ts";

async function echoServer(): Promise<Server> {
  const server = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return server;
}

function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("not listening");
  return address.port;
}

describe("fault proxy (loopback)", () => {
  let server: Server;
  let client: Socket | undefined;

  beforeEach(async () => {
    server = await echoServer();
  });

  afterEach(async () => {
    client?.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("delays each direction by delayMs and keeps the bytes in order", async () => {
    const proxy = await FaultProxy.start(portOf(server), { delayMs: 60 });
    const socket = connect({ host: "127.0.0.1", port: proxy.port });
    client = socket;
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    let received = "";
    const started = performance.now();
    const whole = new Promise<number>((resolve) =>
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString();
        if (received.length === 30) resolve(performance.now() - started);
      }),
    );
    for (let i = 0; i < 3; i++) {
      socket.write("0123456789");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const roundTripMs = await whole;
    socket.destroy();
    await proxy.close();
    expect(received).to.equal("012345678901234567890123456789");
    // There and back: at least twice the delay; and not held much longer than that.
    expect(roundTripMs).to.be.within(120, 600);
  });

  it("refuses a negative or non-finite delay", async () => {
    for (const delayMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const error = await FaultProxy.start(portOf(server), { delayMs }).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error, String(delayMs)).to.be.instanceOf(RangeError);
    }
  });
});
