// A node's local control endpoint: a Unix socket (mode 0600, in a 0700 run
// directory) speaking JSON lines, one request and one reply per line. It lets
// `twinvm status` and `twinvm promote` reach a node that another terminal
// started, without any network exposure.
import { chmodSync, unlinkSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";

export type ControlRequest = { id: number; type: "status" } | { id: number; type: "promote" };

export type ControlReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** What `status` answers. */
export interface NodeStatus {
  name: string;
  role: "primary" | "secondary";
  pid: number;
  /** Before the engine exists: "booting", "restoring", "connecting", "listening"... */
  phase: string;
  metrics?: MetricsSnapshot;
}

export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

/** Listens on `path`; a stale socket left by a dead node is replaced, a live one is an error. */
export async function serveControl(path: string, handler: ControlHandler): Promise<Server> {
  if (await isLive(path)) throw new Error(`control socket ${path} is in use by a running node (choose another --name or --run-dir)`);
  try {
    unlinkSync(path);
  } catch {
    // none left over
  }
  const server = createServer((socket) => serveConnection(socket, handler));
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
  socket.setEncoding("utf8");
  socket.on("error", () => socket.destroy());
  socket.on("data", (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      void answer(line).then((reply) => socket.write(JSON.stringify(reply) + "\n"));
    }
  });

  async function answer(line: string): Promise<ControlReply> {
    let request: ControlRequest;
    try {
      request = JSON.parse(line) as ControlRequest;
    } catch {
      return { id: 0, ok: false, error: "not a JSON line" };
    }
    const type: unknown = request.type;
    if (type !== "status" && type !== "promote") return { id: request.id, ok: false, error: `unknown request type ${JSON.stringify(type)}` };
    try {
      return { id: request.id, ok: true, result: await handler(request) };
    } catch (error) {
      return { id: request.id, ok: false, error: (error as Error).message };
    }
  }
}

/** One request to the node behind `path`; rejects with the node's error or a connection error naming the path. */
export function callControl<T>(path: string, type: ControlRequest["type"], timeoutMs = 10_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = createConnection(path);
    let buffered = "";
    const timer = setTimeout(() => fail(new Error(`no answer from ${path} within ${timeoutMs} ms`)), timeoutMs);
    function fail(error: Error): void {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    }
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(JSON.stringify({ id: 1, type } satisfies ControlRequest) + "\n"));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      const why = error.code === "ENOENT" ? "no such socket (is the node running?)" : error.code === "ECONNREFUSED" ? "nobody listening (the node has exited)" : error.message;
      fail(new Error(`control socket ${path}: ${why}`));
    });
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      clearTimeout(timer);
      socket.end();
      const reply = JSON.parse(buffered.slice(0, newline)) as ControlReply;
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
