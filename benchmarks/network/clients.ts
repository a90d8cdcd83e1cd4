// The host side of the network benchmarks: a 1-byte ping-pong through the guest's echo
// service, a stream into the guest's sink and one out of its source. Each checks what
// came back (the echoed byte, the sink's count, the source's length), so a broken path is
// an error, not a fast number.
import type { Socket } from "node:net";
import { connectWithin } from "../../harness/network/connect.ts";

async function open(port: number, timeoutMs = 10_000): Promise<Socket> {
  const socket = await connectWithin(port, timeoutMs);
  socket.setNoDelay(true);
  return socket;
}

/** Rejects after `ms` with a message naming `what`; the caller races it. */
function deadline(ms: number, what: string): { promise: Promise<never>; cancel(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * Round trips of one byte through the echo service, one at a time: `count` of them, or as
 * many as fit in `budgetMs`. The first (connection warm-up) is not counted. Milliseconds each.
 */
export async function pingPong(port: number, count: number, budgetMs: number): Promise<number[]> {
  const socket = await open(port);
  const samples: number[] = [];
  let waiting: ((byte: number) => void) | undefined;
  let failure: Error | undefined;
  socket.on("data", (chunk: Buffer) => {
    // One byte is in flight at a time: a chunk of more is a broken echo.
    if (chunk.length !== 1) failure ??= new Error(`echo returned ${chunk.length} bytes for 1`);
    waiting?.(chunk[0]!);
  });
  socket.on("error", (error) => (failure ??= error));
  const limit = deadline(Math.max(budgetMs * 3, 30_000), "ping-pong");
  try {
    const started = performance.now();
    for (let i = 0; i <= count && performance.now() - started < budgetMs; i++) {
      const byte = i & 0xff;
      const t0 = performance.now();
      const answer = new Promise<number>((resolve) => (waiting = resolve));
      socket.write(Buffer.of(byte));
      const got = await Promise.race([answer, limit.promise]);
      if (failure !== undefined) throw failure;
      if (got !== byte) throw new Error(`echo returned byte ${got} for ${byte}`);
      if (i > 0) samples.push(performance.now() - t0);
    }
  } finally {
    limit.cancel();
    socket.destroy();
  }
  return samples;
}

/** Sends `bytes` into the sink and half-closes; resolves when the sink's count (which must match) came back. */
export async function pushInto(port: number, bytes: number, timeoutMs: number): Promise<{ ms: number }> {
  const socket = await open(port);
  const limit = deadline(timeoutMs, `stream of ${bytes} bytes into the guest`);
  try {
    const started = performance.now();
    const answer = new Promise<{ text: string; at: number }>((resolve, reject) => {
      let text = "";
      let at = 0;
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        if (text === "") at = performance.now();
        text += chunk;
      });
      socket.on("error", reject);
      socket.on("close", () => resolve({ text, at }));
    });
    const piece = Buffer.alloc(64 << 10, 0x5a);
    for (let sent = 0; sent < bytes;) {
      const n = Math.min(piece.length, bytes - sent);
      sent += n;
      if (!socket.write(n === piece.length ? piece : piece.subarray(0, n))) await new Promise((resolve) => socket.once("drain", resolve));
    }
    socket.end();
    const { text, at } = await Promise.race([answer, limit.promise]);
    const counted = Number(text.trim());
    if (counted !== bytes) throw new Error(`the sink counted ${JSON.stringify(text.trim())} bytes of ${bytes}`);
    return { ms: at - started };
  } finally {
    limit.cancel();
    socket.destroy();
  }
}

/** Asks the source for `bytes` and reads them to the end; resolves when the last arrived. */
export async function pullFrom(port: number, bytes: number, timeoutMs: number): Promise<{ ms: number }> {
  const socket = await open(port);
  const limit = deadline(timeoutMs, `stream of ${bytes} bytes out of the guest`);
  try {
    const started = performance.now();
    const done = new Promise<number>((resolve, reject) => {
      let received = 0;
      let nonZero = false;
      socket.on("data", (chunk: Buffer) => {
        received += chunk.length;
        nonZero ||= chunk.some((b) => b !== 0);
        if (received >= bytes) settle();
      });
      const settle = () =>
        received === bytes && !nonZero
          ? resolve(performance.now())
          : reject(new Error(`the source sent ${received} of ${bytes} bytes${nonZero ? " (not all zero)" : ""}`));
      socket.on("error", reject);
      socket.on("close", settle);
    });
    socket.write(`${bytes}\n`);
    const at = await Promise.race([done, limit.promise]);
    return { ms: at - started };
  } finally {
    limit.cancel();
    socket.destroy();
  }
}
