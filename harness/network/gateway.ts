// The network gateway: passt as the host's TCP/IP stack, the gateway core's rules, and a
// WebSocket where nodes attach over the authenticated, encrypted network link. It outlives
// either node, so the guest's TCP endpoints (passt's sockets) survive a failover: the node
// that runs the guest attaches, and after a takeover the new primary attaches at a higher
// epoch and is given what its replica had not seen.
//
//   passt --frames--> GatewayCore --sealed records--> node (NetworkUplink)
//   node  --released egress frames--> GatewayCore --> passt
//
// In-process (meant for the test API's test process and `twinvm pair`'s parent) or as
// `twinvm gateway` (harness/cli/gateway.ts) on a third host.
import { maxFrameBytes } from "../../replication/network/ethernet.ts";
import { MIN_SECRET_BYTES } from "../../replication/protocol/limits.ts";
import { GatewayCore, type GatewayCounters, type GatewayEvent as CoreEvent } from "../../replication/network/gateway-core.ts";
import { DEFAULT_GUEST_NETWORK, type GuestNetwork } from "../../replication/network/guest-network.ts";
import { resolveForwards, type Forward, type ForwardSpec } from "./forwards.ts";
import { WitnessCore } from "../../replication/arbiter/witness.ts";
import { DuplicateAckPacer } from "../../replication/network/duplicate-acks.ts";
import { startLinkServer, type LinkServer, type LinkServerCounters, type LinkServerEvent, type LinkServerOptions } from "./link-server.ts";
import { PasstStack, type PasstCounters, type PasstExit, type PasstOptions } from "./passt.ts";

export const DEFAULT_LOG_LIMITS = { maxFrames: 4096, maxBytes: 4 << 20 } as const;

export interface GatewayOptions {
  forwards: readonly ForwardSpec[];
  /** The pair's shared secret (16+ bytes). */
  secret: Uint8Array;
  /** Where nodes connect; default 127.0.0.1 and a free port. A non-loopback host needs allowNonLoopback. */
  listen?: LinkServerOptions["listen"];
  network?: GuestNetwork;
  passt?: Pick<PasstOptions, "binary" | "env" | "dnsForward" | "mapGatewayToHost" | "pcapFile" | "startTimeoutMs">;
  /** Serve an arbiter's witness on the same link too (the gateway already decides which node talks to clients). */
  witness?: boolean;
  /** Bounds of the ingress log (default 4096 frames, 4 MiB). */
  log?: { maxFrames?: number; maxBytes?: number };
  link?: LinkServerOptions["link"];
  /**
   * Id of the first ingress frame. Default: the start time in microseconds, so a restarted
   * gateway's ids are above any its predecessor gave (a node's state keeps them).
   */
  firstIngressId?: number;
}

export type GatewayEvent =
  | CoreEvent
  | LinkServerEvent
  /** passt exited without being asked: its flows are gone, egress frames are dropped. */
  | { type: "stack-exited"; reason: string };

export interface GatewayStatus extends GatewayCounters {
  /** `duplicateAcksWithheld`: the guest's repeated pure ACKs held back from passt (DuplicateAckPacer). */
  stack: { state: "running" | "down"; pid: number; reason?: string; duplicateAcksWithheld: number } & PasstCounters;
  links: LinkServerCounters;
  /** The attached node's id as it named itself in the handshake. */
  nodeId: string | undefined;
}

export interface Gateway {
  /** Where nodes connect (ws://HOST:PORT). */
  readonly url: string;
  readonly forwards: readonly Forward[];
  readonly passtPid: number;
  /** The host port forwarded to `guestPort` (the one picked, for a forward asked with port 0). */
  hostPort(guestPort: number): number;
  counters(): GatewayStatus;
  onEvent(listener: (event: GatewayEvent) => void): () => void;
  /** Closes the nodes' links, the listener and passt. */
  close(): Promise<void>;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  // Checked before anything starts: a bad value would otherwise fail every node's handshake, one by one.
  if (options.secret.length < MIN_SECRET_BYTES) throw new RangeError(`the secret is ${options.secret.length} bytes, at least ${MIN_SECRET_BYTES} are required`);
  for (const [name, value] of Object.entries(options.log ?? {})) {
    if (value !== undefined && !(Number.isSafeInteger(value) && value > 0)) throw new RangeError(`log.${name} must be a positive integer, got ${value}`);
  }
  const network = options.network ?? DEFAULT_GUEST_NETWORK;
  const forwards = await resolveForwards(options.forwards);
  const listeners = new Set<(event: GatewayEvent) => void>();
  const emit = (event: GatewayEvent) => {
    for (const listener of listeners) listener(event);
  };
  // passt delivers from its first moment, so the core exists before it starts (and sends nowhere until then).
  const stackRef: { current?: PasstStack } = {};
  const ackPacer = new DuplicateAckPacer();
  const core = new GatewayCore(
    { send: (frame) => !ackPacer.pass(frame, performance.now()) || (stackRef.current?.send(frame) ?? false) },
    {
      maxFrames: options.log?.maxFrames ?? DEFAULT_LOG_LIMITS.maxFrames,
      maxBytes: options.log?.maxBytes ?? DEFAULT_LOG_LIMITS.maxBytes,
      maxFrameBytes: maxFrameBytes(network.mtu),
      firstIngressId: options.firstIngressId ?? Date.now() * 1000,
    },
  );
  core.onEvent(emit);
  const running = await PasstStack.start({ ...options.passt, forwards, network, onFrame: (frame) => core.ingress(frame) });
  stackRef.current = running;
  let stackExit: PasstExit | undefined;
  running.onExit((exit) => {
    stackExit = exit;
    emit({ type: "stack-exited", reason: exit.reason });
  });

  let server: LinkServer;
  try {
    const serverOptions: LinkServerOptions = { secret: options.secret, ...(options.witness === true && { witness: new WitnessCore() }) };
    if (options.listen) serverOptions.listen = options.listen;
    if (options.link) serverOptions.link = options.link;
    server = await startLinkServer(core, serverOptions, emit);
  } catch (error) {
    await running.stop();
    throw error;
  }

  let closing: Promise<void> | undefined;
  return {
    url: server.url,
    forwards,
    passtPid: running.pid,
    hostPort(guestPort) {
      const forward = forwards.find((f) => f.guestPort === guestPort);
      if (forward === undefined)
        throw new RangeError(`guest port ${guestPort} is not forwarded (forwarded: ${forwards.map((f) => f.guestPort).join(", ") || "none"})`);
      return forward.port;
    },
    counters() {
      return {
        ...core.counters(),
        stack: {
          state: stackExit === undefined ? "running" : "down",
          pid: running.pid,
          duplicateAcksWithheld: ackPacer.withheld,
          ...(stackExit ? { reason: stackExit.reason } : {}),
          ...running.counters(),
        },
        links: server.counters(),
        nodeId: server.currentNodeId(),
      };
    },
    onEvent(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      closing ??= (async () => {
        await server.close();
        await running.stop();
      })();
      return closing;
    },
  };
}
