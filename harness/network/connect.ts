// A TCP connection to a forwarded port, bounded in time: what the network checks and
// benchmarks open to reach a service in the guest.
import { connect, type Socket } from "node:net";

/** Connects to HOST:PORT (default 127.0.0.1); rejects with the socket's error, or after `timeoutMs`. */
export function connectWithin(port: number, timeoutMs = 10_000, host = "127.0.0.1"): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => socket.destroy(new Error(`no connection to port ${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}
