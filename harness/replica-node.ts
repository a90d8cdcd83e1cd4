// One node of a replicated pair in its own process: a primary (runs the guest and
// connects to the secondary) or a secondary (listens, keeps the replica, takes
// over). Started with `fork()` by tests and by the twinvm command; it reports
// events and answers requests over Node's IPC channel.
import { BlockHook } from "../emulator/block/hook.ts";
import type { MachineConfig } from "../emulator/config.ts";
import { Machine } from "../emulator/machine.ts";
import { FileBackend } from "../emulator/node/file-backend.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import { readFile } from "node:fs/promises";
import { handshake } from "../replication/channel/handshake.ts";
import { PrimaryEngine, type DiskMode } from "../replication/engine/primary.ts";
import { SecondaryEngine } from "../replication/engine/secondary.ts";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";
import { connectReplication, listenReplication } from "../replication/node/ws-transport.ts";
import { loadSecret } from "../replication/node/secret.ts";

export interface NodeConfig {
  role: "primary" | "secondary";
  /** Disk images (files), attached as vda, vdb, ... in order. */
  disks: string[];
  memoryMiB?: number;
  /** Primary: start from this snapshot file instead of booting. */
  snapshotPath?: string;
  /** Primary: the secondary's ws:// URL. */
  connect?: string;
  /** Secondary: where to listen (default 127.0.0.1, ephemeral port). */
  listenHost?: string;
  listenPort?: number;
  mode: DiskMode;
  secretFile?: string;
  peerTimeoutMs?: number;
}

/** Parent -> node. */
export type NodeRequest =
  | { type: "exec"; id: number; command: string; timeoutMs?: number }
  | { type: "metrics"; id: number }
  | { type: "promote"; id: number }
  | { type: "shutdown"; id: number };

/** Node -> parent. */
export type NodeEvent =
  | { type: "listening"; url: string }
  | { type: "state"; state: string; reason: string }
  | { type: "output"; text: string }
  | { type: "reply"; id: number; ok: true; result: unknown }
  | { type: "reply"; id: number; ok: false; error: string }
  | { type: "fatal"; error: string };

function emit(event: NodeEvent): void {
  process.send?.(event);
}

async function openDisks(paths: string[], hook: BlockHook | undefined): Promise<MachineConfig["devices"]> {
  const backends = await Promise.all(paths.map((path) => FileBackend.open(path)));
  return backends.map((backend, i) => virtioBlkDisk({ backend, id: `vd${String.fromCharCode(0x61 + i)}`, ...(hook && { hook }) }));
}

async function startPrimary(config: NodeConfig): Promise<{ machine: () => Machine; engine: PrimaryEngine }> {
  const hook = new BlockHook();
  const machineConfig: MachineConfig = { ...defaultGuest(), memoryMiB: config.memoryMiB, devices: await openDisks(config.disks, hook) };
  const machine =
    config.snapshotPath !== undefined
      ? await Machine.fromSnapshot(new Uint8Array(await readFile(config.snapshotPath)), machineConfig)
      : await bootFresh(machineConfig);
  const secret = await loadSecret({ file: config.secretFile });
  const transport = await connectReplication(config.connect!);
  const channel = await handshake(transport, "primary", secret);
  const engine = new PrimaryEngine(machine, channel, { mode: config.mode, hook, peerTimeoutMs: config.peerTimeoutMs, log: (line) => process.stderr.write(line + "\n") });
  engine.onStateChange((state, reason) => emit({ type: "state", state, reason }));
  engine.output.onRelease((bytes) => emit({ type: "output", text: new TextDecoder().decode(bytes) }));
  await engine.protect();
  return { machine: () => machine, engine };
}

async function bootFresh(config: MachineConfig): Promise<Machine> {
  const machine = new Machine(config);
  await machine.boot();
  return machine;
}

async function startSecondary(config: NodeConfig): Promise<{ machine: () => Machine; engine: SecondaryEngine }> {
  const machine = await Machine.createBlank({ ...defaultGuest(), memoryMiB: config.memoryMiB, devices: await openDisks(config.disks, undefined) });
  const secret = await loadSecret({ file: config.secretFile });
  const engine = new SecondaryEngine(machine, { peerTimeoutMs: config.peerTimeoutMs, log: (line) => process.stderr.write(line + "\n") });
  engine.onStateChange((state, reason) => {
    emit({ type: "state", state, reason });
    if (state === "active") machine.console.onOutput((bytes) => emit({ type: "output", text: new TextDecoder().decode(bytes) }));
  });
  const server = await listenReplication({ host: config.listenHost, port: config.listenPort }, (transport) => {
    handshake(transport, "secondary", secret).then(
      (channel) => engine.attach(channel),
      (error: unknown) => process.stderr.write(`secondary: refused a peer: ${(error as Error).message}\n`),
    );
  });
  emit({ type: "listening", url: server.url });
  return { machine: () => machine, engine };
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as NodeConfig;
  const node = config.role === "primary" ? await startPrimary(config) : await startSecondary(config);
  process.on("message", (raw) => {
    const request = raw as NodeRequest;
    void handle(request).then(
      (result) => emit({ type: "reply", id: request.id, ok: true, result }),
      (error: unknown) => emit({ type: "reply", id: request.id, ok: false, error: (error as Error).message }),
    );
  });

  async function handle(request: NodeRequest): Promise<unknown> {
    switch (request.type) {
      case "exec":
        return node.machine().exec(request.command, { timeoutMs: request.timeoutMs ?? 60_000 });
      case "metrics":
        return node.engine.metrics.snapshot() satisfies MetricsSnapshot;
      case "promote":
        if (!(node.engine instanceof SecondaryEngine)) throw new Error("only a secondary can be promoted");
        return node.engine.promote("promoted by request");
      case "shutdown":
        await node.engine.close();
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
