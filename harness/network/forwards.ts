// Host ports forwarded to guest ports: "[HOST:]PORT:GUESTPORT" parsed, checked and
// resolved before passt starts. Each host port is bound once here first: a port in use is
// named at once (passt would only say "Failed to bind any port"), and port 0 becomes a
// free port that passt is then given (the API and the CLI say which).
import { createServer, type Server } from "node:net";

export interface ForwardSpec {
  /** IPv4 address to listen on; default 127.0.0.1 (loopback unless told otherwise). */
  host?: string;
  /** 0 picks a free port. */
  port: number;
  guestPort: number;
}

export interface Forward {
  host: string;
  port: number;
  guestPort: number;
}

export const DEFAULT_FORWARD_HOST = "127.0.0.1";

/** A forward that cannot be set up as given (the command line exits 2 with it). */
export class ForwardError extends Error {
  override name = "ForwardError";
}

/** The host port is taken by another socket. */
export class PortInUseError extends ForwardError {
  override name = "PortInUseError";
  constructor(
    readonly host: string,
    readonly port: number,
    message: string,
  ) {
    super(message);
  }
}

/** "[HOST:]PORT:GUESTPORT", e.g. "8080:80" or "0.0.0.0:8080:80". */
export function parseForward(text: string): ForwardSpec {
  const match = /^(?:([^:]+):)?(\d{1,5}):(\d{1,5})$/.exec(text.trim());
  if (!match) throw new ForwardError(`forward ${JSON.stringify(text)}: expected [HOST:]PORT:GUESTPORT (an IPv4 HOST; e.g. 8080:80 or 127.0.0.1:0:22)`);
  const spec: ForwardSpec = { port: Number(match[2]), guestPort: Number(match[3]) };
  if (match[1] !== undefined) spec.host = match[1];
  return spec;
}

export function checkForwards(specs: readonly ForwardSpec[]): Forward[] {
  const forwards = specs.map((spec) => {
    const host = spec.host === undefined || spec.host === "localhost" ? DEFAULT_FORWARD_HOST : spec.host;
    if (!isIpv4(host)) throw new ForwardError(`forward host ${JSON.stringify(host)}: expected an IPv4 address (the gateway's stack runs IPv4 only)`);
    if (!Number.isInteger(spec.port) || spec.port < 0 || spec.port > 65535) throw new ForwardError(`forward host port ${spec.port}: expected 0 to 65535`);
    if (!Number.isInteger(spec.guestPort) || spec.guestPort < 1 || spec.guestPort > 65535)
      throw new ForwardError(`forward guest port ${spec.guestPort}: expected 1 to 65535`);
    return { host, port: spec.port, guestPort: spec.guestPort };
  });
  const guestPorts = new Set<number>();
  const hostPorts = new Set<string>();
  for (const forward of forwards) {
    if (guestPorts.has(forward.guestPort)) throw new ForwardError(`guest port ${forward.guestPort} is forwarded twice`);
    guestPorts.add(forward.guestPort);
    const key = `${forward.host}:${forward.port}`;
    if (forward.port !== 0 && hostPorts.has(key)) throw new ForwardError(`host port ${key} is forwarded twice`);
    hostPorts.add(key);
  }
  return forwards;
}

/** Binds each host port once (all at the same time, so two port-0 forwards differ), then lets go. */
export async function resolveForwards(specs: readonly ForwardSpec[]): Promise<Forward[]> {
  const forwards = checkForwards(specs);
  const servers: Server[] = [];
  try {
    const resolved: Forward[] = [];
    for (const forward of forwards) {
      const server = createServer();
      servers.push(server);
      resolved.push({ ...forward, port: await bindOnce(server, forward) });
    }
    return resolved;
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))));
  }
}

function bindOnce(server: Server, forward: Forward): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => {
      const where = `${forward.host}:${forward.port}`;
      const what = `host port ${where} (forwarded to guest port ${forward.guestPort})`;
      if (error.code === "EADDRINUSE") reject(new PortInUseError(forward.host, forward.port, `${what} is in use by another program`));
      else if (error.code === "EACCES") reject(new ForwardError(`${what}: permission denied (ports below 1024 need privileges)`));
      else if (error.code === "EADDRNOTAVAIL") reject(new ForwardError(`${what}: ${forward.host} is not an address of this host`));
      else reject(new ForwardError(`${what}: ${error.message}`));
    });
    server.listen({ host: forward.host, port: forward.port, exclusive: true }, () => {
      const address = server.address();
      resolve(typeof address === "object" && address !== null ? address.port : forward.port);
    });
  });
}

function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255);
}
