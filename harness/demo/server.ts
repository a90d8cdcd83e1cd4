// Serves the built demo (a folder of static files) over HTTP. The page needs a secure
// context for WebCrypto, which plain http has only on loopback: hence 127.0.0.1 by default.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, normalize, sep } from "node:path";

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".wasm": "application/wasm",
  ".png": "image/png",
};

export interface DemoServer {
  url: string;
  close(): Promise<void>;
}

export async function serveDemo(dir: string, options: { host?: string; port?: number } = {}): Promise<DemoServer> {
  const root = normalize(dir.endsWith(sep) ? dir : dir + sep);
  const server = createServer((request, response) => {
    void respond(root, request.url ?? "/", request.method ?? "GET").then(({ status, path, size }) => {
      if (path === undefined) {
        response.writeHead(status, { "content-type": "text/plain; charset=utf-8" }).end(status === 405 ? "method not allowed\n" : "not found\n");
        return;
      }
      response.writeHead(status, {
        "content-type": CONTENT_TYPES[extname(path)] ?? "application/octet-stream",
        "content-length": String(size),
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
      });
      if (request.method === "HEAD") response.end();
      else createReadStream(path).pipe(response);
    });
  });
  const host = options.host ?? "127.0.0.1";
  await listen(server, host, options.port ?? 0);
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}/`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()).closeAllConnections()),
  };
}

async function respond(root: string, url: string, method: string): Promise<{ status: number; path?: string; size?: number }> {
  if (method !== "GET" && method !== "HEAD") return { status: 405 };
  let pathname: string;
  try {
    pathname = decodeURIComponent(new URL(url, "http://x").pathname);
  } catch {
    return { status: 404 };
  }
  const path = normalize(join(root, pathname.endsWith("/") ? `${pathname}index.html` : pathname));
  if (!path.startsWith(root)) return { status: 404 };
  const info = await stat(path).catch(() => undefined);
  return info?.isFile() ? { status: 200, path, size: info.size } : { status: 404 };
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
