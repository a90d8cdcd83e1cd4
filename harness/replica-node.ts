// One node of a replicated pair in its own process: a primary (runs the guest and
// connects to the secondary) or a secondary (listens, keeps the replica, takes
// over). A secondary that took over can be told to protect its guest with a new
// secondary (`protect`): it becomes a primary at its epoch. Started with `fork()`
// by the test API and the twinvm command; it reports events and answers requests
// over Node's IPC channel, and serves a control socket when given a run directory.
import { BlockHook } from "../emulator/block/hook.ts";
import { DEFAULT_CMDLINE, type MachineConfig } from "../emulator/config.ts";
import { Machine } from "../emulator/machine.ts";
import { FileBackend } from "../emulator/node/file-backend.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import { readFile } from "node:fs/promises";
import { controlSocketPath, ensureRunDir } from "./run-dir.ts";
import { serveControl } from "./control-socket.ts";
import type { ControlRequest, NodeInspection, NodeStatus } from "./control-request.ts";
import { createPrimaryEngine, createSecondaryEngine, onSyncs, type SyncReport } from "./engines.ts";
import { guestImages } from "./overlay/guest-images.ts";
import { uploadToGuest } from "./guest-upload.ts";
import { handshake } from "../replication/channel/handshake.ts";
import type { DiskMode, MigrationReport, PrimaryEngine, SecondaryLossPolicy, SyncMode } from "../replication/engine/primary/engine.ts";
import type { VerifyReport } from "../replication/engine/consistency-check.ts";
import type { ReplicationChannel } from "../replication/channel/channel.ts";
import { keepProtected, type Protector } from "../replication/engine/primary/keep-protected.ts";
import type { SecondaryEngine } from "../replication/engine/secondary/engine.ts";
import { ReplicationMetrics, type MetricsSnapshot } from "../replication/engine/metrics.ts";
import { connectReplication, listenReplication } from "../replication/node/ws-transport.ts";
import { loadSecret } from "../replication/node/secret.ts";
import { MAX_LINK_MESSAGE_BYTES } from "../replication/network/link-limits.ts";
import { GuestNetworkLink } from "./network/guest-link.ts";
import { IpcWitness, type WitnessQuestion, type WitnessReply } from "./witness/ipc-witness.ts";
import { LinkWitness } from "../replication/arbiter/link-witness.ts";
import type { Witness } from "../replication/arbiter/witness.ts";

/** A witness on another host, asked over the network link with this node's secret. */
async function remoteWitness(config: NodeConfig, url: string): Promise<Witness> {
  const secret = await loadSecret({ file: config.secretFile });
  return new LinkWitness({
    url,
    secret,
    nodeId: config.name ?? config.role,
    dial: (to) => connectReplication(to, { maxMessageBytes: MAX_LINK_MESSAGE_BYTES }),
  });
}

/** This node's arbiter, when it has one; its parent's IPC answers reach `parentWitness`. */
let witness: Witness | undefined;
let parentWitness: IpcWitness | undefined;

export interface NodeConfig {
  role: "primary" | "secondary";
  /** Disk images (files), attached as vda, vdb, ... in order. */
  disks: string[];
  memoryMiB?: number;
  /** Folder of the guest's BIOS, kernel and initramfs (default: the shipped guest). */
  imagesDir?: string;
  /** An extra initramfs archive (overlay/archive.ts) loaded after the guest's own; both nodes get the same. */
  overlayArchive?: string;
  /** Appended to the default kernel command line; both nodes get the same. */
  kernelArgs?: string;
  /** Primary: start from this snapshot file instead of booting. */
  snapshotPath?: string;
  /** Primary: the secondary's ws:// URL. */
  connect?: string;
  /** Secondary: where to listen (default 127.0.0.1, ephemeral port). */
  listenHost?: string;
  listenPort?: number;
  /** Secondary: needed to listen on anything but loopback (replication carries guest memory). */
  allowNonLoopback?: boolean;
  /**
   * "none": a primary that runs the guest without replication (no secondary, no --connect).
   * A secondary uses it if it re-protects its guest after a takeover.
   */
  mode: DiskMode | "none";
  secretFile?: string;
  peerTimeoutMs?: number;
  /** Primary: deflate sync frames (default off; pays only on slow links). */
  compressSyncs?: boolean;
  /** When the guest sees a write complete: at its sync's capture (speculative) or its acknowledgement (synchronous). */
  syncMode?: SyncMode;
  /** Speculative mode: how long a completed write may wait for the capture that logs it (default 20 ms). */
  syncIntervalMs?: number;
  /** How long the guest's output may wait for the rest of its burst before a capture covers it (default 2 ms; at once when the guest idles). */
  outputCoalesceMs?: number;
  /** What a primary (or a secondary that took over and re-protects) does when its secondary is lost (default continue). */
  onSecondaryLoss?: SecondaryLossPolicy;
  /** Primary: how often to dial the secondary again while unprotected (default 1000 ms). */
  reconnectMs?: number;
  /** Secondary: take over by itself when the primary is lost (default true). */
  autoFailover?: boolean;
  /** A metrics line on stderr this often (0: never). Default 10 s. */
  metricsIntervalMs?: number;
  /** Serve `status`/`promote`/`exec` on `<runDir>/<name>.sock` (see control-socket.ts); off unless runDir is given. */
  runDir?: string;
  /** Default: the role. */
  name?: string;
  /** The network gateway's ws:// URL: the guest's NIC talks to it while the guest runs here (authenticated with the secret). */
  gateway?: string;
  /**
   * An arbiter: "parent" (the process that started this node, over IPC: a pair's parent), or
   * the ws:// URL of `twinvm witness` (or of a gateway that serves one). Without it, no arbiter.
   */
  witness?: string;
}

/** Parent -> node. */
export type NodeRequest =
  | { type: "exec"; id: number; command: string; timeoutMs?: number }
  /** `restart`: after the snapshot, duration percentiles count from now (per-workload figures). */
  | { type: "metrics"; id: number; restart?: boolean }
  | { type: "status"; id: number }
  | { type: "inspect"; id: number }
  | { type: "promote"; id: number }
  /** A secondary that took over: protect the guest with the secondary at `connect` (and keep re-dialling it). */
  | { type: "protect"; id: number; connect: string }
  /** Writes a file into the guest (data in base64), see guest-upload.ts. */
  | { type: "upload"; id: number; path: string; base64: string; mode?: number; timeoutMs?: number }
  /** Console input for the guest, base64 (IPC is JSON); refused unless this node runs the guest. */
  | { type: "input"; id: number; base64: string }
  /** The parent's answer to this node's question to the witness (no reply). */
  | WitnessReply
  | { type: "shutdown"; id: number };

/** Node -> parent. */
export type NodeEvent =
  | { type: "listening"; url: string }
  /** A state change of this node's primary or secondary engine. */
  | { type: "state"; engine: "primary" | "secondary"; state: string; reason: string }
  | { type: "output"; text: string }
  /** A sync this node's primary engine got acknowledged. */
  | { type: "sync"; report: SyncReport }
  /** Progress before the engine exists: "booting", "restoring", "connecting", "ready". */
  | { type: "phase"; phase: string }
  | { type: "reply"; id: number; ok: true; result: unknown }
  | { type: "reply"; id: number; ok: false; error: string }
  | { type: "fatal"; error: string }
  /** A question to the witness (the parent answers with a witness-answer). */
  | WitnessQuestion;

/** The last `phase` event, for `status` before the engine exists. */
let phase = "starting";

function emit(event: NodeEvent): void {
  if (event.type === "phase") phase = event.phase;
  process.send?.(event);
}

const log = (line: string) => process.stderr.write(line + "\n");
const decoder = () => {
  const textDecoder = new TextDecoder();
  return (bytes: Uint8Array) => emit({ type: "output", text: textDecoder.decode(bytes, { stream: true }) });
};

async function openDisks(paths: string[], hook: BlockHook): Promise<MachineConfig["devices"]> {
  const backends = await Promise.all(paths.map((path) => FileBackend.open(path)));
  return backends.map((backend, i) => virtioBlkDisk({ backend, id: `vd${String.fromCharCode(0x61 + i)}`, hook }));
}

/** What `migrate` answers: the engine's report, and the secondary this node let go (it holds its replica). */
export interface MigrateResult extends MigrationReport {
  to: string;
  /** The secondary that protected the guest here, if any: the target may protect the guest with it. */
  releasedSecondary?: string;
}

/** A primary engine protecting the guest with the secondary at `url`, re-dialling it whenever it is lost. */
interface Protection {
  engine: PrimaryEngine;
  url: string;
  /** Opens an authenticated channel to another secondary, as this primary. */
  dial(url: string): Promise<ReplicationChannel>;
  /** Stops re-dialling (closing, or migrating away). */
  stopRedialing(): void;
  /** Re-dials again (a migration failed: the guest runs on here). */
  redial(): void;
}

/** A running node: its machine, the engine in charge now, its metrics. */
interface StartedNode {
  machine: Machine;
  /** The engine in charge now: for a secondary that re-protects its guest, the primary engine. */
  engine(): PrimaryEngine | SecondaryEngine | undefined;
  role(): "primary" | "secondary";
  metrics(): ReplicationMetrics;
  /** Whether this node's guest runs here (so console input and exec may go to it). */
  runsGuest(): boolean;
  /** Only a secondary that took over: protect the guest with the secondary at `url`. */
  protect?(url: string): Promise<string>;
  /** The primary engine that protects the guest here, if one does. */
  protection(): Protection | undefined;
  /** A secondary: where it listens. */
  listenUrl?: string;
  /** The guest's link to the network gateway, while the guest runs here. */
  network(): GuestNetworkLink | undefined;
  close(): Promise<void>;
}

async function machineConfig(config: NodeConfig, hook: BlockHook): Promise<MachineConfig> {
  return {
    ...guestImages(config.imagesDir, config.overlayArchive),
    ...(config.kernelArgs !== undefined && { cmdline: `${DEFAULT_CMDLINE} ${config.kernelArgs}` }),
    memoryMiB: config.memoryMiB,
    devices: await openDisks(config.disks, hook),
  };
}

/**
 * Starts a primary engine on `machine`, reports its states and syncs, releases its
 * output, protects the guest with the secondary at `url` (rejecting, with the engine
 * closed, if that first attempt fails) and from then on keeps dialling `url`
 * whenever the secondary is lost.
 */
async function protectWith(
  machine: Machine,
  hook: BlockHook,
  config: NodeConfig,
  secret: Uint8Array,
  url: string,
  epoch: number | undefined,
  /** Called with the engine as soon as it holds the guest's output (console, frames), and again with undefined if protecting failed and it no longer does. */
  outputTakenOver: (engine: PrimaryEngine | undefined) => void = () => undefined,
  /** Called with the engine as soon as it exists, before the initial sync (whose progress its metrics show). */
  onEngine: (engine: PrimaryEngine) => void = () => undefined,
): Promise<Protection> {
  if (config.mode === "none") throw new Error("this node runs without replication (mode none)");
  const engine = createPrimaryEngine(machine, {
    mode: config.mode,
    hook,
    epoch,
    peerTimeoutMs: config.peerTimeoutMs,
    onSecondaryLoss: config.onSecondaryLoss,
    syncMode: config.syncMode,
    syncIntervalMs: config.syncIntervalMs,
    outputCoalesceMs: config.outputCoalesceMs,
    compressSyncs: config.compressSyncs,
    witness,
    nodeName: config.name ?? config.role,
    log,
  });
  engine.onStateChange((state, reason) => emit({ type: "state", engine: "primary", state, reason }));
  onEngine(engine);
  const stopOutput = engine.outputs.onRelease("console", decoder());
  // From here on the engine holds and releases the guest's output: no other path may print it too.
  outputTakenOver(engine);
  const stopSyncs = onSyncs(engine, (report) => emit({ type: "sync", report }));
  const dial = async (to: string) => handshake(await connectReplication(to), "primary", secret, { epoch: engine.epoch });
  try {
    await engine.protect(await dial(url));
    if (engine.state !== "protected") throw new Error(`the initial sync with ${url} did not complete (state ${engine.state}; see the log)`);
  } catch (error) {
    await engine.close(`could not protect the guest: ${(error as Error).message}`).catch(() => undefined);
    stopOutput();
    stopSyncs();
    outputTakenOver(undefined);
    throw error;
  }
  const keep = (): Protector => keepProtected(engine, { connect: () => connectReplication(url), secret, retryMs: config.reconnectMs ?? 1000, log });
  let protector = keep();
  return {
    engine,
    url,
    dial,
    stopRedialing: () => protector.stop(),
    redial() {
      protector.stop();
      protector = keep();
    },
  };
}

/** `onEngine`: the primary engine as soon as it exists, so that its metrics answer while the node still starts (the initial sync). */
async function startPrimary(config: NodeConfig, onEngine: (engine: PrimaryEngine) => void): Promise<StartedNode> {
  const hook = new BlockHook();
  const machineSettings = await machineConfig(config, hook);
  // Read the secret before booting so that a bad secret file fails in a second, not after the boot.
  const secret = config.mode === "none" && config.gateway === undefined ? undefined : await loadSecret({ file: config.secretFile });
  emit({ type: "phase", phase: config.snapshotPath !== undefined ? "restoring" : "booting" });
  const machine =
    config.snapshotPath !== undefined
      ? await Machine.fromSnapshot(new Uint8Array(await readFile(config.snapshotPath)), machineSettings)
      : await bootFresh(machineSettings);
  const network = secret === undefined ? undefined : networkLink(machine, config, secret);
  if (config.mode === "none" || secret === undefined) return startUnreplicated(machine, network);
  emit({ type: "phase", phase: "connecting" });
  const protection = await protectWith(machine, hook, config, secret, config.connect!, undefined, (engine) => network?.useEngine(engine), onEngine);
  const { engine } = protection;
  network?.attach(engine.epoch);
  engine.onStateChange((state) => {
    // A fenced primary's guest is not the real one: the gateway hears the new primary only.
    if (state === "fenced") network?.close();
  });
  return {
    machine,
    engine: () => engine,
    role: () => "primary",
    metrics: () => engine.metrics,
    runsGuest: () => engine.state !== "fenced",
    protection: () => protection,
    network: () => network,
    async close() {
      protection.stopRedialing();
      await engine.close();
      network?.close();
    },
  };
}

function startUnreplicated(machine: Machine, network: GuestNetworkLink | undefined): StartedNode {
  const metrics = new ReplicationMetrics("primary");
  metrics.state = "unreplicated";
  machine.console.onOutput(decoder());
  network?.attach(1);
  return {
    machine,
    engine: () => undefined,
    role: () => "primary",
    metrics: () => metrics,
    runsGuest: () => true,
    protection: () => undefined,
    network: () => network,
    close: async () => network?.close(),
  };
}

/** The guest's link to the gateway, if the node was given one (frames go straight out until an engine holds them). */
function networkLink(machine: Machine, config: NodeConfig, secret: Uint8Array): GuestNetworkLink | undefined {
  if (config.gateway === undefined) return undefined;
  return new GuestNetworkLink(machine, { url: config.gateway, secret, nodeId: config.name ?? config.role, log });
}

async function bootFresh(config: MachineConfig): Promise<Machine> {
  const machine = new Machine(config);
  await machine.boot();
  return machine;
}

async function startSecondary(config: NodeConfig): Promise<StartedNode> {
  // The disks get a hook from the start: if this node takes over and then protects its
  // guest with a new secondary, that primary engine captures the guest's writes through it.
  const hook = new BlockHook();
  const machine = await Machine.createBlank(await machineConfig(config, hook));
  const secret = await loadSecret({ file: config.secretFile });
  const secondary = createSecondaryEngine(machine, {
    peerTimeoutMs: config.peerTimeoutMs,
    autoFailover: config.autoFailover,
    witness,
    nodeName: config.name ?? config.role,
    log,
  });
  let primary: Protection | undefined;
  /** The primary engine of a protection still being set up (its initial sync): it already holds the guest's writes. */
  let protecting: PrimaryEngine | undefined;
  let stopDirectOutput: (() => void) | undefined;
  // Dialled now, attached at a takeover: the survivor's guest reaches its clients without a
  // connection and a handshake first.
  const network = networkLink(machine, config, secret);
  network?.standby();
  secondary.onStateChange((state, reason) => {
    emit({ type: "state", engine: "secondary", state, reason });
    if (state !== "active") return;
    // First what the guest produced before the state it resumed from and the old primary held
    // (it may have died before letting it out), then, until a primary engine holds it for
    // output commit, the guest's console and frames straight out.
    const carried = secondary.takeCarriedOutput();
    const print = decoder();
    for (const output of carried) if (output.kind === "console") print(output.bytes);
    stopDirectOutput = machine.console.onOutput(print);
    // The guest runs here now, at the new epoch: the gateway drops the old primary and gives this
    // node the ingress frames its replica had not seen.
    network?.attach(secondary.epoch);
    network?.sendHeld(carried.flatMap((output) => (output.kind === "frame" ? [output.bytes] : [])));
  });
  const server = await listenReplication({ host: config.listenHost, port: config.listenPort, allowNonLoopback: config.allowNonLoopback }, (transport) =>
    // The epoch it carries tells a primary that this node took over (the primary then fences itself).
    // The returned promise settles with the handshake: the server bounds connections still pending
    // and cuts off refused peers that do not close.
    handshake(transport, "secondary", secret, { epoch: Math.max(1, secondary.epoch) }).then(
      // attach() can fail when the primary leaves during set-up: the node stays up for the next one.
      (channel) =>
        void secondary.attach(channel).catch((error: unknown) => log(`secondary: session with a primary ended during set-up: ${(error as Error).message}`)),
      (error: unknown) => log(`secondary: refused a peer: ${(error as Error).message}`),
    ),
  );
  emit({ type: "listening", url: server.url });

  return {
    machine,
    engine: () => primary?.engine ?? protecting ?? secondary,
    role: () => (secondary.state === "active" || secondary.state === "promoting" ? "primary" : "secondary"),
    metrics: () => primary?.engine.metrics ?? secondary.metrics,
    runsGuest: () => secondary.state === "active" && primary?.engine.state !== "fenced",
    protection: () => primary,
    network: () => network,
    listenUrl: server.url,
    async protect(url: string): Promise<string> {
      if (secondary.state !== "active") throw new Error(`protect: only a secondary that took over can protect its guest (state ${secondary.state})`);
      if (primary !== undefined) throw new Error("protect: this node already protects its guest");
      // Once the primary engine holds the console output (for output commit), the direct path stops.
      try {
        primary = await protectWith(
          machine,
          hook,
          config,
          secret,
          url,
          secondary.epoch,
          (engine) => {
            stopDirectOutput?.();
            stopDirectOutput = engine !== undefined ? undefined : machine.console.onOutput(decoder());
            network?.useEngine(engine);
          },
          (engine) => (protecting = engine),
        );
      } finally {
        protecting = undefined;
      }
      primary.engine.onStateChange((state) => {
        if (state === "fenced") network?.close();
      });
      return primary.engine.state;
    },
    async close() {
      primary?.stopRedialing();
      await primary?.engine.close();
      await secondary.close();
      await server.close();
      network?.close();
    },
  };
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as NodeConfig;
  // Without its parent nobody can see this node's console or stop it: go too.
  process.on("disconnect", () => process.exit(0));
  let node: StartedNode | undefined;
  if (config.witness === "parent") witness = parentWitness = new IpcWitness((question) => process.send?.(question) ?? false);
  else if (config.witness !== undefined) witness = await remoteWitness(config, config.witness);
  /** A primary's engine during its initial sync, before `node` exists: its metrics show the sync's progress. */
  let startingEngine: PrimaryEngine | undefined;
  process.on("message", (raw) => {
    const request = raw as NodeRequest;
    if (request.type === "witness-answer") return parentWitness?.answered(request);
    void handle(request).then(
      (result) => emit({ type: "reply", id: request.id, ok: true, result }),
      (error: unknown) => emit({ type: "reply", id: request.id, ok: false, error: (error as Error).message }),
    );
  });

  if (config.runDir !== undefined) {
    const socket = controlSocketPath(ensureRunDir(config.runDir), config.name ?? config.role);
    await serveControl(socket, (request: ControlRequest) => {
      switch (request.type) {
        case "status":
          return Promise.resolve(status());
        case "inspect":
          return inspect();
        case "promote":
          return promote();
        case "exec":
          return exec(request.command, request.timeoutMs);
        case "verify":
          return verifyReplica(request.repair);
        case "migrate":
          return migrate(request.to, request.stopAndCopy);
        case "protect":
          return protect(request.connect);
      }
    });
  }
  // Assigned once the node has started (the request handlers registered above read it before).
  // eslint-disable-next-line prefer-const
  node = config.role === "primary" ? await startPrimary(config, (engine) => (startingEngine = engine)) : await startSecondary(config);
  startingEngine = undefined;
  emit({ type: "phase", phase: "ready" });
  const started = node;
  const interval = config.metricsIntervalMs ?? 10_000;
  if (interval > 0) setInterval(() => log(`metrics: ${started.metrics().summaryLine()}`), interval).unref();

  function status(): NodeStatus {
    const metrics = node?.metrics() ?? startingEngine?.metrics;
    return {
      name: config.name ?? config.role,
      role: node?.role() ?? config.role,
      startedAs: config.role,
      pid: process.pid,
      phase,
      runsGuest: node?.runsGuest() ?? false,
      ...(node?.listenUrl !== undefined && { listenUrl: node.listenUrl }),
      ...(node?.network() !== undefined && { network: node.network()!.status() }),
      ...(metrics && { metrics: metrics.snapshot() }),
    };
  }

  async function inspect(): Promise<NodeInspection> {
    const engine = node?.engine();
    return {
      name: config.name ?? config.role,
      engine:
        engine === undefined
          ? { state: node?.metrics().state ?? phase }
          : "heldRequests" in engine
            ? { state: engine.state, heldRequests: engine.heldRequests, heldOutputBytes: engine.outputs.heldBytes }
            : { state: engine.state },
      runsGuest: node?.runsGuest() ?? false,
      ...(node && { machine: await node.machine.inspect() }),
    };
  }

  function running(): StartedNode {
    if (node === undefined) throw new Error(`this node is still starting (${phase})`);
    return node;
  }

  async function promote(): Promise<void> {
    const engine = running().engine();
    if (engine === undefined || !("promote" in engine)) throw new Error("only a secondary can be promoted");
    await engine.promote("promoted by request");
  }

  /** The primary engine of a protected guest on this node. */
  function protectedEngine(what: string): Protection {
    const protection = running().protection();
    if (protection === undefined) throw new Error(`${what}: no primary engine protects a guest on this node (${running().metrics().state})`);
    if (protection.engine.state !== "protected") throw new Error(`${what}: the guest is not protected now (${protection.engine.state})`);
    return protection;
  }

  function verifyReplica(repair: boolean): Promise<VerifyReport> {
    return protectedEngine("verify").engine.verify({ repair, onProgress: (line) => log(`verify: ${line}`) });
  }

  async function migrate(to: string, stopAndCopy: boolean): Promise<MigrateResult> {
    const protection = protectedEngine("migrate");
    // The engine lets its secondary go first: re-dialling it now would race the migration.
    protection.stopRedialing();
    try {
      const report = await protection.engine.migrate(await protection.dial(to), { stopAndCopy });
      // The guest runs on the target now; this node is done once the answer is out.
      log(`migrated the guest to ${to}: ${(report.totalMs / 1000).toFixed(1)} s in all, ${report.downtimeMs?.toFixed(0) ?? "?"} ms stopped; exiting`);
      setTimeout(() => void handle({ type: "shutdown", id: 0 }), 500);
      return { ...report, to, releasedSecondary: protection.url };
    } catch (error) {
      if (protection.engine.state !== "fenced" && protection.engine.state !== "closed") protection.redial();
      throw error;
    }
  }

  function protect(url: string): Promise<string> {
    const started = running();
    if (started.protect === undefined) throw new Error("protect: this node was started as a primary");
    return started.protect(url);
  }

  function exec(command: string, timeoutMs = 60_000): Promise<{ output: string; exitCode: number }> {
    const started = running();
    if (!started.runsGuest()) throw new Error(`the guest does not run on this node (${started.metrics().state})`);
    return started.machine.exec(command, { timeoutMs });
  }

  async function handle(request: NodeRequest): Promise<unknown> {
    switch (request.type) {
      case "exec":
        return exec(request.command, request.timeoutMs);
      case "metrics": {
        // During the initial sync the node has not started yet, but its engine counts what it sent.
        const metrics = startingEngine?.metrics ?? running().metrics();
        const snapshot = metrics.snapshot() satisfies MetricsSnapshot;
        if (request.restart === true) metrics.restartDurations();
        return snapshot;
      }
      case "status":
        return status();
      case "inspect":
        return inspect();
      case "promote":
        return promote();
      case "protect":
        return protect(request.connect);
      case "upload": {
        const started = running();
        if (!started.runsGuest()) throw new Error(`the guest does not run on this node (${started.metrics().state})`);
        return uploadToGuest(started.machine, request.path, new Uint8Array(Buffer.from(request.base64, "base64")), {
          ...(request.mode !== undefined && { mode: request.mode }),
          ...(request.timeoutMs !== undefined && { timeoutMs: request.timeoutMs }),
        });
      }
      case "input": {
        const started = running();
        if (!started.runsGuest()) throw new Error(`console input refused: the guest does not run on this node (${started.metrics().state})`);
        started.machine.send(new Uint8Array(Buffer.from(request.base64, "base64")));
        return undefined;
      }
      case "shutdown":
        await node?.close();
        await node?.machine.destroy();
        setImmediate(() => process.exit(0));
        return undefined;
    }
  }
}

main().catch((error: unknown) => {
  emit({ type: "fatal", error: (error as Error).stack ?? String(error) });
  log(`replica-node: ${(error as Error).stack}`);
  process.exit(1);
});
