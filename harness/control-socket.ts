// A node's local control endpoint: a Unix socket (mode 0600, in a 0700 run
// directory) speaking JSON lines, one request and one reply per line. It lets
// `twinvm status`, `promote` and `exec` reach a node that another terminal
// started, without any network exposure. What a client sends cannot take the
// node down: requests are validated (control-request.ts), a line is bounded, and
// a client that floods gets an error and is disconnected.
import { chmodSync, unlinkSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import {
  MAX_CONTROL_LINE_BYTES,
  parseControlReply,
  parseControlRequest,
  type ControlReply,
  type ControlRequest,
  type ControlRequestBody,
} from "./control-request.ts";

export type { ControlRequest, ControlReply, NodeStatus } from "./control-request.ts";

export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

/** Requests one connection may have unanswered at a time; more is a flood. */
const MAX_IN_FLIGHT = 8;
/** Connections open at once; the socket is private to this user, so this only stops a runaway script. */
const MAX_CONNECTIONS = 32;

/** Listens on `path`; a stale socket left by a dead node is replaced, a live one is an error. */
export async function serveControl(path: string, handler: ControlHandler): Promise<Server> {
  if (await isLive(path)) throw new Error(`control socket ${path} is in use by a running node (choose another --name or --run-dir)`);
  try {
    unlinkSync(path);
  } catch {
    // none left over
  }
  const server = createServer((socket) => serveConnection(socket, handler));
  server.maxConnections = MAX_CONNECTIONS;
  // The socket is created with the umask's mode; narrow the umask so no window exists where others could connect.
  const previousUmask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(previousUmask);
  }
  chmodSync(path, 0o600);
  server.unref();
  process.on("exit", () => {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  });
  return server;
}

function serveConnection(socket: Socket, handler: ControlHandler): void {
  let buffered = "";
  let inFlight = 0;
  let closing = false;
  socket.setEncoding("utf8");
  socket.on("error", () => socket.destroy());

  const reply = (message: ControlReply) => {
    if (!socket.destroyed && socket.writable) socket.write(JSON.stringify(message) + "\n");
  };
  /** Answers a last error and hangs up; what the client sends after that is ignored. */
  const refuse = (error: string) => {
    closing = true;
    buffered = "";
    reply({ id: 0, ok: false, error });
    socket.end();
    // A client that does not read its answer must not keep the connection open.
    setTimeout(() => socket.destroy(), 1000).unref();
  };

  socket.on("data", (chunk: string) => {
    if (closing) return;
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (Buffer.byteLength(line) > MAX_CONTROL_LINE_BYTES) return refuse(`request line longer than ${MAX_CONTROL_LINE_BYTES} bytes`);
      if (line.trim() === "") continue;
      if (inFlight >= MAX_IN_FLIGHT) return refuse(`more than ${MAX_IN_FLIGHT} requests waiting for an answer on one connection`);
      inFlight++;
      void answer(line).then((message) => {
        inFlight--;
        reply(message);
      });
    }
    // A line without its newline may not grow past the limit either.
    if (Buffer.byteLength(buffered) > MAX_CONTROL_LINE_BYTES) refuse(`request line longer than ${MAX_CONTROL_LINE_BYTES} bytes (no newline)`);
  });

  async function answer(line: string): Promise<ControlReply> {
    const request = parseControlRequest(line);
    if ("error" in request) return { id: request.id, ok: false, error: request.error };
    try {
      return { id: request.id, ok: true, result: await handler(request) };
    } catch (error) {
      return { id: request.id, ok: false, error: error instanceof Error ? error.message : String(error) };
    }
  }
}

/** One request to the node behind `path`; rejects with the node's error or a connection error naming the path. */
export function callControl<T>(path: string, body: ControlRequestBody, timeoutMs = 10_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = createConnection(path);
    let buffered = "";
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`no answer from ${path} within ${timeoutMs} ms`)), timeoutMs);
    function fail(error: Error): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    }
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(JSON.stringify({ ...body, id: 1 }) + "\n"));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      const why =
        error.code === "ENOENT"
          ? "no such socket (is the node running?)"
          : error.code === "ECONNREFUSED"
            ? "nobody listening (the node has exited)"
            : error.message;
      fail(new Error(`control socket ${path}: ${why}`));
    });
    socket.on("close", () => fail(new Error(`control socket ${path}: the node closed the connection without answering`)));
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline < 0) {
        if (buffered.length > 64 * MAX_CONTROL_LINE_BYTES) fail(new Error(`control socket ${path}: answer too long`));
        return;
      }
      const reply = parseControlReply(buffered.slice(0, newline));
      if (reply instanceof Error) return fail(new Error(`control socket ${path}: ${reply.message}`));
      settled = true;
      clearTimeout(timer);
      socket.end();
      if (reply.ok) resolve(reply.result as T);
      else reject(new Error(reply.error));
    });
  });
}

function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    socket.on("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}
