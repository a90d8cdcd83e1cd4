// The in-memory pair behaves like a network pipe: async and ordered, holds
// messages until a handler is set, delivers queued data before a close, reports
// backpressure, and cut() fails both ends at once. Also: the secret loader and
// the page collector that feeds memory frames.
import { expect } from "chai";
import { chmod, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadSecret } from "../node/secret.ts";
import { connectReplication, listenReplication } from "../node/ws-transport.ts";
import { applyPages, pageSetFrames } from "../protocol/page-collect.ts";
import { createMemoryPair } from "../transport/memory-pair.ts";
import type { InboundMessage, TransportCloseInfo } from "../transport/transport.ts";
import { rejectionOf } from "./fixtures.ts";

const text = (message: InboundMessage): string => (message.kind === "text" ? message.text : `<${message.bytes.length} bytes>`);

describe("in-memory transport pair", () => {
  it("delivers asynchronously, in order, after the latency, holding messages until a handler is set", async () => {
    const { a, b } = createMemoryPair({ latencyMs: 30 });
    const started = Date.now();
    a.sendText("one");
    a.sendBinary(new Uint8Array(3));
    a.sendText("two");
    expect(a.bufferedAmount).to.equal(9);
    await a.whenDrained();
    expect(Date.now() - started).to.be.greaterThanOrEqual(25);
    const got: string[] = [];
    b.onMessage((message) => got.push(text(message)));
    expect(got).to.deep.equal(["one", "<3 bytes>", "two"]);
  });

  it("copies binary data on send", async () => {
    const { a, b } = createMemoryPair();
    const bytes = new Uint8Array([1, 2, 3]);
    const received = new Promise<InboundMessage>((resolve) => b.onMessage(resolve));
    a.sendBinary(bytes);
    bytes[0] = 9;
    expect(((await received) as { bytes: Uint8Array }).bytes[0]).to.equal(1);
  });

  it("delivers queued messages before the close, with the reason", async () => {
    const { a, b } = createMemoryPair({ latencyMs: 5 });
    const got: string[] = [];
    b.onMessage((message) => got.push(text(message)));
    const closed = new Promise<TransportCloseInfo>((resolve) => b.onClose(resolve));
    a.sendText("last words");
    a.close("done here");
    expect(a.isOpen).to.equal(false);
    expect(() => a.sendText("more")).to.throw(/transport is closed \(done here\)/);
    const info = await closed;
    expect(got).to.deep.equal(["last words"]);
    expect(info).to.deep.include({ reason: "peer closed: done here", byPeer: true });
  });

  it("cut() drops what is in flight and closes both ends; pending drains reject", async () => {
    const pair = createMemoryPair({ latencyMs: 50 });
    const got: string[] = [];
    pair.b.onMessage((message) => got.push(text(message)));
    pair.a.sendText("lost");
    const drain = pair.a.whenDrained();
    const closes = Promise.all([pair.a, pair.b].map((end) => new Promise<TransportCloseInfo>((resolve) => end.onClose(resolve))));
    pair.cut("switch died");
    expect((await rejectionOf(drain)).message).to.match(/closed \(switch died\)/);
    for (const info of await closes) expect(info.reason).to.equal("switch died");
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(got).to.deep.equal([]);
  });

  it("closes both ends on a message over the size limit, like ws", async () => {
    const { a, b } = createMemoryPair({ maxMessageBytes: 10 });
    const closed = new Promise<TransportCloseInfo>((resolve) => b.onClose(resolve));
    a.sendBinary(new Uint8Array(11));
    expect((await closed).reason).to.match(/11 bytes over the 10-byte limit/);
  });

  it("calls a late onClose handler too", async () => {
    const { a } = createMemoryPair();
    a.close("early");
    expect((await new Promise<TransportCloseInfo>((resolve) => a.onClose(resolve))).reason).to.equal("early");
  });
});

describe("secret loader", () => {
  it("reads TWINVM_SECRET and requires 16 bytes", async () => {
    expect(new TextDecoder().decode(await loadSecret({ env: { TWINVM_SECRET: "0123456789abcdef" } }))).to.equal("0123456789abcdef");
    expect((await rejectionOf(loadSecret({ env: { TWINVM_SECRET: "short" } }))).message).to.equal("TWINVM_SECRET: secret is 5 bytes, at least 16 are required");
    expect((await rejectionOf(loadSecret({ env: {} }))).message).to.match(/no replication secret: set TWINVM_SECRET or give a secret file/);
  });

  it("reads a file, trimming whitespace, and names a missing one or one others can read", async () => {
    const dir = await mkdtemp(join(tmpdir(), "twinvm-secret-"));
    const file = join(dir, "secret");
    await writeFile(file, "  a-long-enough-shared-secret\n", { mode: 0o644 });
    expect((await rejectionOf(loadSecret({ file, env: {} }))).message).to.equal(
      `replication secret file ${file}: readable or writable by others (mode 644); chmod 600 it`,
    );
    await chmod(file, 0o600);
    expect(new TextDecoder().decode(await loadSecret({ file, env: {} }))).to.equal("a-long-enough-shared-secret");
    expect((await rejectionOf(loadSecret({ file: join(dir, "nope"), env: {} }))).message).to.equal(
      `replication secret file ${join(dir, "nope")}: no such file`,
    );
    expect((await rejectionOf(loadSecret({ file: dir, env: {} }))).message).to.match(/is a directory/);
  });
});

describe("page collector", () => {
  it("elides zero pages, splits large sets, and applies back to the same memory", () => {
    const memory = new Uint8Array(5000 * 4096);
    for (let page = 0; page < 5000; page += 2) memory[page * 4096 + 7] = page & 0xff || 1;
    const frames = pageSetFrames({ indices: Uint32Array.from({ length: 5000 }, (_, i) => i), data: memory }, 3, 1);
    expect(frames.map((f) => f.indices.length + f.zeroIndices.length)).to.deep.equal([4000, 1000]);
    expect(frames[0]!.zeroIndices.length).to.equal(2000);
    const copy = new Uint8Array(memory.length).fill(0xee);
    for (const frame of frames) applyPages(frame, copy);
    expect(copy).to.deep.equal(memory);
  });
});

describe("ws transport", () => {
  it("keeps a message the server sends the instant the connection opens", async () => {
    const server = await listenReplication({}, (transport) => transport.sendText("first words"));
    try {
      // Many rounds: the message often shares a packet with the upgrade answer.
      for (let round = 0; round < 20; round++) {
        const client = await connectReplication(server.url);
        const received = await new Promise<InboundMessage>((resolve) => client.onMessage(resolve));
        expect(received).to.deep.equal({ kind: "text", text: "first words" });
        client.close();
      }
    } finally {
      await server.close();
    }
  });
});
