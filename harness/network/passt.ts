// passt (Debian package `passt`) as the gateway's TCP/IP stack: a child process that owns
// the host sockets (forwarded ports, outbound flows) and speaks Ethernet frames over a
// socketpair inherited as fd 3 (`-f --fd 3`), 4-byte length before each frame.
//
// Configured so that nothing depends on the host's addressing: the guest's address,
// netmask, gateway and the gateway's MAC are given; IPv4 only (`-4`: the guest is
// configured for IPv4, and IPv6 would add router and neighbour chatter, every frame of
// which the guest's output commit must sync); no DNS server handed out unless asked; and
// `--no-map-gw`, so that the guest cannot reach the host's loopback services through the
// gateway address. Start-up ends with an ARP request sent as the guest: passt's answer
// says its ports are bound and its loop runs, and it teaches passt the guest's MAC (until
// it has seen one, this version sends frames to 00:00:00:00:00:00, which a guest drops).
import { spawn, type ChildProcess } from "node:child_process";
import type { Socket } from "node:net";
import { arpRequest, readArpReply } from "../../replication/network/arp.ts";
import { ETHERNET_HEADER_BYTES, maxFrameBytes } from "../../replication/network/ethernet.ts";
import type { FrameStack } from "../../replication/network/gateway-core.ts";
import { DEFAULT_GUEST_NETWORK, type GuestNetwork } from "../../replication/network/guest-network.ts";
import { PortInUseError, type Forward } from "./forwards.ts";
import { StreamFrameDecoder, encodeStreamFrame } from "./stream-frames.ts";

export const PASST_PACKAGE = "passt";
/** Where guest DNS queries go when DNS forwarding is asked for (QEMU's slirp address). */
export const GUEST_DNS_ADDRESS = "10.0.2.3";
const DEFAULT_START_TIMEOUT_MS = 5000;
/** Bytes queued towards passt beyond which egress frames are dropped (passt reads as fast as the host's sockets take data). */
const MAX_QUEUED_TO_PASST = 1 << 20;
const STDERR_LINES_KEPT = 20;
const STOP_GRACE_MS = 1000;

export type PasstErrorCode = "missing" | "start-failed";

export class PasstError extends Error {
  override name = "PasstError";
  constructor(
    readonly code: PasstErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface PasstOptions {
  forwards: readonly Forward[];
  network?: GuestNetwork;
  /** Frames from passt towards the guest; set here so that none is missed during start-up. */
  onFrame: (frame: Uint8Array) => void;
  /** The executable (default "passt", looked up on env.PATH). */
  binary?: string;
  env?: NodeJS.ProcessEnv;
  /** Hand out GUEST_DNS_ADDRESS and forward queries sent there to the host's resolver. Default off. */
  dnsForward?: boolean;
  /** Let the guest reach the host's loopback through the gateway address (passt's default). Default off. */
  mapGatewayToHost?: boolean;
  /** Write passt's view of the frames to this pcap file (debugging). */
  pcapFile?: string;
  startTimeoutMs?: number;
}

export interface PasstExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** One line: what happened, with passt's last words. */
  reason: string;
}

export interface PasstCounters {
  framesIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
  dropped: { oversized: number; malformed: number; backlog: number };
}

/** The command line for `options` (fd 3 is the frame socket). */
export function passtArguments(options: Omit<PasstOptions, "onFrame">): string[] {
  const net = options.network ?? DEFAULT_GUEST_NETWORK;
  const args = [
    "-f",
    "-q",
    "--fd",
    "3",
    "-4",
    "--mtu",
    String(net.mtu),
    "-a",
    net.guestIp,
    "-n",
    String(net.prefixLength),
    "-g",
    net.gatewayIp,
    "-M",
    net.gatewayMac,
  ];
  args.push("--no-dhcp-search");
  if (options.dnsForward === true) args.push("--dns-forward", GUEST_DNS_ADDRESS, "-D", GUEST_DNS_ADDRESS);
  else args.push("--no-dhcp-dns");
  if (options.mapGatewayToHost !== true) args.push("--no-map-gw");
  if (options.pcapFile !== undefined) args.push("-p", options.pcapFile);
  for (const forward of options.forwards) args.push("-t", `${forward.host}/${forward.port}:${forward.guestPort}`);
  return args;
}

export class PasstStack implements FrameStack {
  readonly #child: ChildProcess;
  readonly #socket: Socket;
  readonly #stderr: string[] = [];
  #exit: PasstExit | undefined;
  #stopping = false;
  readonly #exitListeners = new Set<(exit: PasstExit) => void>();
  readonly #exited: Promise<PasstExit>;
  readonly #counts = { framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, oversized: 0, malformed: 0, backlog: 0 };
  #frameListener: (frame: Uint8Array) => void;

  private constructor(child: ChildProcess, onFrame: (frame: Uint8Array) => void, maxFrame: number) {
    this.#child = child;
    this.#frameListener = onFrame;
    this.#socket = child.stdio[3] as Socket;
    const decoder = new StreamFrameDecoder(
      maxFrame,
      ETHERNET_HEADER_BYTES,
      (frame) => {
        this.#counts.framesIn++;
        this.#counts.bytesIn += frame.length;
        this.#frameListener(frame);
      },
      (reason) => void (reason === "oversized" ? this.#counts.oversized++ : this.#counts.malformed++),
    );
    this.#socket.on("data", (chunk: Buffer) => decoder.push(chunk));
    this.#socket.on("error", () => undefined); // EPIPE and the like: the exit says what happened
    child.stderr!.setEncoding("utf8");
    let partial = "";
    child.stderr!.on("data", (text: string) => {
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) this.#keepStderr(line);
    });
    this.#exited = new Promise((resolve) => {
      // "close", not "exit": by then passt's last words on stderr have been read.
      child.once("close", (code, signal) => {
        this.#keepStderr(partial);
        const words = this.#stderr.length > 0 ? `: ${this.#stderr.join(" / ")}` : "";
        this.#exit = { code, signal, reason: `passt (pid ${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}${words}` };
        this.#socket.destroy();
        if (!this.#stopping) for (const listener of this.#exitListeners) listener(this.#exit);
        resolve(this.#exit);
      });
    });
  }

  /** Starts passt and waits until it answers ARP. Throws PasstError, or PortInUseError naming the port. */
  static async start(options: PasstOptions): Promise<PasstStack> {
    const net = options.network ?? DEFAULT_GUEST_NETWORK;
    const binary = options.binary ?? "passt";
    const args = passtArguments(options);
    let probed = false;
    let answered: () => void = () => undefined;
    const answer = new Promise<void>((resolve) => (answered = resolve));
    const onFrame = (frame: Uint8Array) => {
      const reply = probed ? undefined : readArpReply(frame);
      if (reply !== undefined && reply.senderIp === net.gatewayIp && reply.targetMac === net.guestMac.toLowerCase()) {
        probed = true; // the probe's answer is ours, not the guest's
        answered();
        return;
      }
      options.onFrame(frame);
    };
    const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe", "pipe"], env: options.env ?? process.env });
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once("spawn", () => resolve(undefined));
      child.once("error", resolve);
    });
    if (spawned !== undefined) {
      const code = (spawned as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        throw new PasstError(
          "missing",
          `${binary} not found${binary.includes("/") ? "" : " on PATH"}: the network gateway needs passt; install the Debian package ${PASST_PACKAGE} (apt-get install ${PASST_PACKAGE})`,
          { cause: spawned },
        );
      }
      throw new PasstError("start-failed", `cannot start ${binary}: ${spawned.message}`, { cause: spawned });
    }
    child.on("error", () => undefined); // a failed kill() later is not fatal
    const stack = new PasstStack(child, onFrame, maxFrameBytes(net.mtu));
    stack.send(arpRequest(net.guestMac, net.guestIp, net.gatewayIp));
    const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      answer.then(() => "ready" as const),
      stack.#exited.then((exit) => exit),
      new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (outcome === "ready") return stack;
    await stack.stop();
    if (outcome === "timeout") throw new PasstError("start-failed", `passt did not answer ARP within ${timeoutMs} ms${stack.#stderrSuffix()}`);
    throw portInUse(outcome, options.forwards) ?? new PasstError("start-failed", `${outcome.reason} during start-up (${binary} ${args.join(" ")})`);
  }

  get pid(): number {
    return this.#child.pid!;
  }

  get running(): boolean {
    return this.#exit === undefined && !this.#stopping;
  }

  /** Called once if passt exits without stop(): its TCP flows are gone. */
  onExit(listener: (exit: PasstExit) => void): () => void {
    this.#exitListeners.add(listener);
    return () => this.#exitListeners.delete(listener);
  }

  /** A frame from the guest. False when passt is gone or backed up (the frame is dropped). */
  send(frame: Uint8Array): boolean {
    if (this.#exit !== undefined || this.#socket.destroyed) return false;
    if (this.#socket.writableLength > MAX_QUEUED_TO_PASST) {
      this.#counts.backlog++;
      return false;
    }
    this.#socket.write(encodeStreamFrame(frame));
    this.#counts.framesOut++;
    this.#counts.bytesOut += frame.length;
    return true;
  }

  counters(): PasstCounters {
    const c = this.#counts;
    return {
      framesIn: c.framesIn,
      bytesIn: c.bytesIn,
      framesOut: c.framesOut,
      bytesOut: c.bytesOut,
      dropped: { oversized: c.oversized, malformed: c.malformed, backlog: c.backlog },
    };
  }

  /** Last lines passt wrote (its messages, without the syslog noise). */
  get messages(): readonly string[] {
    return this.#stderr;
  }

  /** Ends passt: its frame socket closed (it exits on that), SIGTERM, SIGKILL after a grace period. */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#exit === undefined) {
      this.#socket.destroy();
      this.#child.kill("SIGTERM");
      const timer = setTimeout(() => this.#child.kill("SIGKILL"), STOP_GRACE_MS);
      await this.#exited;
      clearTimeout(timer);
    }
  }

  #keepStderr(line: string): void {
    const text = line.trim();
    // Without a syslog socket this version reports each message it could not log there.
    if (text === "" || /^Failed to send \d+ bytes to syslog$/.test(text) || text.startsWith("Don't run as root")) return;
    this.#stderr.push(text.slice(0, 300));
    if (this.#stderr.length > STDERR_LINES_KEPT) this.#stderr.shift();
  }

  #stderrSuffix(): string {
    return this.#stderr.length > 0 ? `; passt said: ${this.#stderr.join(" / ")}` : "";
  }
}

/** passt's "Failed to bind any port for '-t HOST/PORT:GUEST'" as the error that names the port. */
function portInUse(exit: PasstExit, forwards: readonly Forward[]): PortInUseError | undefined {
  const match = /Failed to bind any port for '-t ([^/']+)\/(\d+):(\d+)'/.exec(exit.reason);
  if (!match) return undefined;
  const forward = forwards.find((f) => f.host === match[1] && f.port === Number(match[2]));
  const host = match[1]!;
  const port = Number(match[2]);
  return new PortInUseError(
    host,
    port,
    `host port ${host}:${port} (forwarded to guest port ${forward?.guestPort ?? match[3]}) is in use by another program (passt could not bind it)`,
  );
}
