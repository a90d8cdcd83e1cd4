// One node of a replicated pair in its own process: a primary (runs the guest and
// connects to the secondary) or a secondary (listens, keeps the replica, takes
// over). Started with `fork()` by tests and by the twinvm command; it reports
// events and answers requests over Node's IPC channel.
import { BlockHook } from "../emulator/block/hook.ts";
import { withoutUndefined, type MachineConfig } from "../emulator/config.ts";
import { Machine } from "../emulator/machine.ts";
import { FileBackend } from "../emulator/node/file-backend.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import { readFile } from "node:fs/promises";
import { controlSocketPath, ensureRunDir } from "./run-dir.ts";
import { serveControl, type ControlRequest, type NodeStatus } from "./control-socket.ts";
import { handshake } from "../replication/channel/handshake.ts";
import { PrimaryEngine, type DiskMode, type SecondaryLossPolicy } from "../replication/engine/primary.ts";
import { keepProtected } from "../replication/engine/keep-protected.ts";
import { SecondaryEngine } from "../replication/engine/secondary.ts";
import { ReplicationMetrics, type MetricsSnapshot } from "../replication/engine/metrics.ts";
import { connectReplication, listenReplication } from "../replication/node/ws-transport.ts";
import { loadSecret } from "../replication/node/secret.ts";

export interface NodeConfig {
  role: "primary" | "secondary";
  /** Disk images (files), attached as vda, vdb, ... in order. */
  disks: string[];
  memoryMiB?: number;
  /** Folder of the guest's BIOS, kernel and initramfs (default: the shipped guest). */
  imagesDir?: string;
  /** Primary: start from this snapshot file instead of booting. */
  snapshotPath?: string;
  /** Primary: the secondary's ws:// URL. */
  connect?: string;
  /** Secondary: where to listen (default 127.0.0.1, ephemeral port). */
  listenHost?: string;
  listenPort?: number;
  /** Secondary: needed to listen on anything but loopback (replication carries guest memory). */
  allowNonLoopback?: boolean;
  /** "none": a primary that runs the guest without replication (no secondary, no --connect). */
  mode: DiskMode | "none";
  secretFile?: string;
  peerTimeoutMs?: number;
  /** Primary: deflate sync frames (default off; pays only on slow links). */
  compressSyncs?: boolean;
  /** Primary: what to do when the secondary is lost (default continue). */
  onSecondaryLoss?: SecondaryLossPolicy;
  /** Primary: how often to dial the secondary again while unprotected (default 1000 ms). */
  reconnectMs?: number;
  /** Secondary: take over by itself when the primary is lost (default true). */
  autoFailover?: boolean;
  /** A metrics line on stderr this often (0: never). Default 10 s. */
  metricsIntervalMs?: number;
  /** Serve `status`/`promote` on `<runDir>/<name>.sock` (see control-socket.ts); off unless runDir is given. */
  runDir?: string;
  /** Default: the role. */
  name?: string;
}

/** Parent -> node. */
export type NodeRequest =
  | { type: "exec"; id: number; command: string; timeoutMs?: number }
  /** `restart`: after the snapshot, duration percentiles count from now (per-workload figures). */
  | { type: "metrics"; id: number; restart?: boolean }
  | { type: "promote"; id: number }
  /** Console input for the guest, base64 (IPC is JSON); refused unless this node runs the guest. */
  | { type: "input"; id: number; base64: string }
  | { type: "shutdown"; id: number };

/** Node -> parent. */
export type NodeEvent =
  | { type: "listening"; url: string }
  | { type: "state"; state: string; reason: string }
  | { type: "output"; text: string }
  /** Progress before the engine exists: "booting", "restoring", "connecting", "ready". */
  | { type: "phase"; phase: string }
  | { type: "reply"; id: number; ok: true; result: unknown }
  | { type: "reply"; id: number; ok: false; error: string }
  | { type: "fatal"; error: string };

/** The last `phase` event, for `status` before the engine exists. */
let phase = "starting";

function emit(event: NodeEvent): void {
  if (event.type === "phase") phase = event.phase;
  process.send?.(event);
}

async function openDisks(paths: string[], hook: BlockHook | undefined): Promise<MachineConfig["devices"]> {
  const backends = await Promise.all(paths.map((path) => FileBackend.open(path)));
  return backends.map((backend, i) => virtioBlkDisk({ backend, id: `vd${String.fromCharCode(0x61 + i)}`, ...(hook && { hook }) }));
}

/** A running node: the machine it holds, the engine (none for an unreplicated primary), its metrics. */
interface StartedNode {
  machine: () => Machine;
  engine: PrimaryEngine | SecondaryEngine | undefined;
  metrics: ReplicationMetrics;
  /** Whether this node's guest runs here (so console input may go to it). */
  runsGuest(): boolean;
}

async function startPrimary(config: NodeConfig): Promise<StartedNode> {
  const hook = new BlockHook();
  const machineConfig: MachineConfig = { ...defaultGuest(config.imagesDir), memoryMiB: config.memoryMiB, devices: await openDisks(config.disks, hook) };
  // Read the secret before booting so that a bad secret file fails in a second, not after the boot.
  const secret = config.mode === "none" ? undefined : await loadSecret({ file: config.secretFile });
  emit({ type: "phase", phase: config.snapshotPath !== undefined ? "restoring" : "booting" });
  const machine =
    config.snapshotPath !== undefined
      ? await Machine.fromSnapshot(new Uint8Array(await readFile(config.snapshotPath)), machineConfig)
      : await bootFresh(machineConfig);
  if (config.mode === "none" || secret === undefined) return startUnreplicated(machine);
  emit({ type: "phase", phase: "connecting" });
  const log = (line: string) => process.stderr.write(line + "\n");
  const engine = new PrimaryEngine(machine, {
    mode: config.mode,
    hook,
    ...withoutUndefined({ peerTimeoutMs: config.peerTimeoutMs, onSecondaryLoss: config.onSecondaryLoss, compressSyncs: config.compressSyncs }),
    log,
  });
  engine.onStateChange((state, reason) => emit({ type: "state", state, reason }));
  engine.output.onRelease((bytes) => emit({ type: "output", text: new TextDecoder().decode(bytes) }));
  // The first session must come up (as before); after a loss the primary keeps dialling
  // the secondary's address and resyncs with whoever answers there.
  const transport = await connectReplication(config.connect!);
  await engine.protect(await handshake(transport, "primary", secret, { epoch: engine.epoch }));
  keepProtected(engine, { connect: () => connectReplication(config.connect!), secret, retryMs: config.reconnectMs ?? 1000, log });
  return { machine: () => machine, engine, metrics: engine.metrics, runsGuest: () => engine.state !== "fenced" };
}

function startUnreplicated(machine: Machine): StartedNode {
  const metrics = new ReplicationMetrics("primary");
  metrics.state = "unreplicated";
  machine.console.onOutput((bytes) => emit({ type: "output", text: new TextDecoder().decode(bytes) }));
  return { machine: () => machine, engine: undefined, metrics, runsGuest: () => true };
}

async function bootFresh(config: MachineConfig): Promise<Machine> {
  const machine = new Machine(config);
  await machine.boot();
  return machine;
}

async function startSecondary(config: NodeConfig): Promise<StartedNode> {
  const machine = await Machine.createBlank({ ...defaultGuest(config.imagesDir), memoryMiB: config.memoryMiB, devices: await openDisks(config.disks, undefined) });
  const secret = await loadSecret({ file: config.secretFile });
  const engine = new SecondaryEngine(machine, { ...withoutUndefined({ peerTimeoutMs: config.peerTimeoutMs, autoFailover: config.autoFailover }), log: (line) => process.stderr.write(line + "\n") });
  engine.onStateChange((state, reason) => {
    emit({ type: "state", state, reason });
    if (state === "active") machine.console.onOutput((bytes) => emit({ type: "output", text: new TextDecoder().decode(bytes) }));
  });
  const server = await listenReplication({ host: config.listenHost, port: config.listenPort, allowNonLoopback: config.allowNonLoopback }, (transport) =>
    // The epoch it carries tells a primary that this node took over (the primary then fences itself).
    // The returned promise settles with the handshake: the server bounds connections still pending.
    handshake(transport, "secondary", secret, { epoch: Math.max(1, engine.epoch) }).then(
      (channel) => void engine.attach(channel),
      (error: unknown) => void process.stderr.write(`secondary: refused a peer: ${(error as Error).message}\n`),
    ),
  );
  emit({ type: "listening", url: server.url });
  return { machine: () => machine, engine, metrics: engine.metrics, runsGuest: () => engine.state === "active" };
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as NodeConfig;
  // Without its parent nobody can see this node's console or stop it: go too.
  process.on("disconnect", () => process.exit(0));
  let node: StartedNode | undefined;
  process.on("message", (raw) => {
    const request = raw as NodeRequest;
    void handle(request).then(
      (result) => emit({ type: "reply", id: request.id, ok: true, result }),
      (error: unknown) => emit({ type: "reply", id: request.id, ok: false, error: (error as Error).message }),
    );
  });

  if (config.runDir !== undefined) {
    const socket = controlSocketPath(ensureRunDir(config.runDir), config.name ?? config.role);
    await serveControl(socket, (request: ControlRequest) => (request.type === "status" ? Promise.resolve(status()) : promote()));
  }
  node = config.role === "primary" ? await startPrimary(config) : await startSecondary(config);
  emit({ type: "phase", phase: "ready" });
  const started = node;
  const interval = config.metricsIntervalMs ?? 10_000;
  if (interval > 0) setInterval(() => process.stderr.write(`metrics: ${started.metrics.summaryLine()}\n`), interval).unref();

  function status(): NodeStatus {
    return { name: config.name ?? config.role, role: config.role, pid: process.pid, phase, ...(node && { metrics: node.metrics.snapshot() }) };
  }

  function promote(): Promise<void> {
    if (!(node?.engine instanceof SecondaryEngine)) throw new Error(node === undefined ? "this node is still starting" : "only a secondary can be promoted");
    return node.engine.promote("promoted by request");
  }

  async function handle(request: NodeRequest): Promise<unknown> {
    if (node === undefined) throw new Error(`this node is still starting (${phase})`);
    switch (request.type) {
      case "exec":
        return node.machine().exec(request.command, { timeoutMs: request.timeoutMs ?? 60_000 });
      case "metrics": {
        const snapshot = node.metrics.snapshot() satisfies MetricsSnapshot;
        if (request.restart === true) node.metrics.restartDurations();
        return snapshot;
      }
      case "promote":
        return promote();
      case "input":
        if (!node.runsGuest()) throw new Error(`console input refused: the guest does not run on this node (${node.metrics.state})`);
        node.machine().send(new Uint8Array(Buffer.from(request.base64, "base64")));
        return undefined;
      case "shutdown":
        await node.engine?.close();
        await node.machine().destroy();
        setImmediate(() => process.exit(0));
        return undefined;
    }
  }
}

main().catch((error: unknown) => {
  emit({ type: "fatal", error: (error as Error).stack ?? String(error) });
  process.stderr.write(`replica-node: ${(error as Error).stack}\n`);
  process.exit(1);
});
