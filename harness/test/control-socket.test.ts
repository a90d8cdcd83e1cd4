// The control socket against what a careless or hostile local client sends: `null`,
// JSON that is not an object, bad ids and types, huge lines with and without a
// newline, floods, and seeded random garbage. The server must answer an error (or
// hang up) each time, never throw or reject unhandled, and still serve a proper
// request afterwards. No guest: the handler is a stub.
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { MAX_CONTROL_LINE_BYTES, parseControlRequest, type ControlRequest } from "../control-request.ts";
import { callControl, serveControl } from "../control-socket.ts";
import { Prng } from "../campaign/prng.ts";

/** Sends raw bytes, collects what comes back until the server closes, `untilLines` lines came, or `idleMs` of silence. */
function exchange(path: string, data: string | Buffer, idleMs = 300, untilLines = Infinity): Promise<{ lines: string[]; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let received = "";
    let closedByServer = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ lines: received.split("\n").filter((line) => line !== ""), closedByServer });
    };
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(done, idleMs);
    };
    socket.setEncoding("utf8");
    socket.on("connect", () => {
      socket.write(data);
      idle();
    });
    socket.on("data", (chunk: string) => {
      received += chunk;
      if (received.split("\n").length - 1 >= untilLines) return done();
      idle();
    });
    socket.on("end", () => {
      closedByServer = true;
      done();
    });
    socket.on("error", (error: NodeJS.ErrnoException) =>
      error.code === "EPIPE" || error.code === "ECONNRESET" ? ((closedByServer = true), done()) : reject(error),
    );
  });
}

describe("control socket (fuzz)", function () {
  let dir: string;
  let path: string;
  let server: Server;
  const handled: ControlRequest[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  before(async () => {
    process.on("unhandledRejection", onUnhandled);
    dir = mkdtempSync(join(tmpdir(), "twinvm-control-"));
    path = join(dir, "node.sock");
    server = await serveControl(path, async (request) => {
      handled.push(request);
      if (request.type === "promote") throw new Error("not a secondary");
      return { name: "stub", phase: "ready" };
    });
  });

  after(() => {
    process.off("unhandledRejection", onUnhandled);
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  afterEach(() => expect(unhandled, "unhandled rejections").to.deep.equal([]));

  it("answers malformed requests with an error naming the problem", async function () {
    const cases: [string, RegExp][] = [
      ["null", /expected a JSON object, got null/],
      ["42", /got number/],
      ['"status"', /got string/],
      ["[]", /got an array/],
      ["{}", /unknown request type undefined/],
      ['{"type":5}', /unknown request type 5/],
      ['{"type":"status","id":"x"}', /id: expected a non-negative integer/],
      ['{"type":"status","id":-1}', /id: expected/],
      ['{"type":"exec"}', /exec: command must be/],
      ['{"type":"exec","command":"ls","timeoutMs":-5}', /timeoutMs/],
      ['{"type":"exec","command":"a\\nb"}', /single line/],
      ['{"type":"__proto__"}', /unknown request type/],
      ["{not json", /not a JSON line/],
      ['{"a":' + "[".repeat(5000) + "]".repeat(5000) + "}", /unknown request type|not a JSON line/],
    ];
    for (const [line, expected] of cases) {
      const { lines } = await exchange(path, line + "\n", 300, 1);
      expect(lines, line.slice(0, 40)).to.have.length(1);
      const reply = JSON.parse(lines[0]!) as { ok: boolean; error: string };
      expect(reply.ok, line.slice(0, 40)).to.equal(false);
      expect(reply.error, line.slice(0, 40)).to.match(expected);
    }
    expect(handled).to.deep.equal([]);
  });

  it("bounds a line: too long with or without a newline gets an error and a hang-up", async function () {
    const huge = "x".repeat(MAX_CONTROL_LINE_BYTES + 10);
    for (const data of [huge, huge + "\n", '{"type":"status"}\n' + huge]) {
      const { lines, closedByServer } = await exchange(path, data, 2000);
      expect(closedByServer, `${data.length} bytes`).to.equal(true);
      expect(lines.at(-1)).to.match(/longer than 65536 bytes/);
    }
  });

  it("hangs up on a client that floods requests without reading", async function () {
    const flood = '{"type":"status","id":1}\n'.repeat(5000);
    const { lines, closedByServer } = await exchange(path, flood, 2000);
    expect(closedByServer).to.equal(true);
    expect(lines.some((line) => /requests waiting for an answer/.test(line))).to.equal(true);
  });

  it("survives seeded random garbage and still serves a proper request", async function () {
    const prng = new Prng(424242);
    const alphabet = '{}[]":,0123456789 nulltruefalse\\u"typeidstatuspromoteexeccommand\n\x00\xff';
    for (let round = 0; round < 200; round++) {
      const length = prng.int(0, 300);
      let text = "";
      for (let i = 0; i < length; i++) text += alphabet[prng.int(0, alphabet.length - 1)]!;
      const bytes = prng.next() < 0.2 ? Buffer.from(Array.from({ length }, () => prng.int(0, 255))) : Buffer.from(text + "\n");
      await exchange(path, bytes, 30);
    }
    expect(await callControl(path, { type: "status" })).to.deep.equal({ name: "stub", phase: "ready" });
    await callControl(path, { type: "promote" }).then(
      () => expect.fail("promote should have failed"),
      (error: Error) => expect(error.message).to.equal("not a secondary"),
    );
  });

  it("parses the requests it accepts into their typed form", function () {
    expect(parseControlRequest('{"type":"status","id":3}')).to.deep.equal({ id: 3, type: "status" });
    expect(parseControlRequest('{"type":"exec","command":"uname -r","timeoutMs":500,"extra":1}')).to.deep.equal({
      id: 0,
      type: "exec",
      command: "uname -r",
      timeoutMs: 500,
    });
    expect(parseControlRequest('{"type":"verify","id":1}')).to.deep.equal({ id: 1, type: "verify", repair: false });
    expect(parseControlRequest('{"type":"migrate","to":"ws://127.0.0.1:7000","stopAndCopy":true}')).to.deep.equal({
      id: 0,
      type: "migrate",
      to: "ws://127.0.0.1:7000",
      stopAndCopy: true,
    });
    expect(parseControlRequest('{"type":"protect","connect":"wss://h:1/x"}')).to.deep.equal({ id: 0, type: "protect", connect: "wss://h:1/x" });
    expect(parseControlRequest('{"type":"migrate","to":"http://x"}')).to.deep.equal({ id: 0, error: "migrate: to must be a ws:// or wss:// URL" });
    expect(parseControlRequest('{"type":"verify","repair":"yes"}')).to.deep.equal({ id: 0, error: "verify: repair must be true or false" });
  });
});
