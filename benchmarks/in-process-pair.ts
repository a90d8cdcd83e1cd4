// A protected guest with both nodes in this process, joined by the in-memory link: the
// set-up the in-process benchmarks share. Every node restores the same warmed-up snapshot
// and starts from the same disk bytes.
import { BlockHook } from "../emulator/block/hook.ts";
import { MemoryBackend } from "../emulator/block/memory-backend.ts";
import { Machine } from "../emulator/machine.ts";
import { defaultGuest } from "../emulator/node/images.ts";
import { virtioBlkDisk } from "../emulator/virtio-blk/disk.ts";
import type { ReplicationChannel } from "../replication/channel/channel.ts";
import { handshake } from "../replication/channel/handshake.ts";
import { PrimaryEngine, type PrimaryOptions } from "../replication/engine/primary/engine.ts";
import { SecondaryEngine } from "../replication/engine/secondary/engine.ts";
import { createMemoryPair } from "../replication/transport/memory-pair.ts";

const SECRET = new TextEncoder().encode("benchmark-secret-0123456789abcdef");

/** Boots the default guest with one disk of `diskBytes`, runs `setup`, and snapshots it. */
export async function prepareBenchGuest(diskBytes: number, setup: string): Promise<{ snapshot: Uint8Array; disk: Uint8Array }> {
  const backend = new MemoryBackend(diskBytes);
  const machine = new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend, id: "vda", keepBackendOpen: true })] });
  try {
    await machine.boot();
    const result = await machine.exec(setup, { timeoutMs: 600_000 });
    if (result.exitCode !== 0) throw new Error(`guest set-up failed (${result.exitCode}): ${result.output}`);
    return { snapshot: await machine.snapshot(), disk: backend.bytes.slice() };
  } finally {
    await machine.destroy();
  }
}

export interface BenchPrimary {
  machine: Machine;
  disk: MemoryBackend;
  engine: PrimaryEngine;
}

export interface BenchSecondary {
  machine: Machine;
  disk: MemoryBackend;
  engine: SecondaryEngine;
  /** The primary's end of the link to this node. */
  channel: ReplicationChannel;
}

/** A primary restored from the snapshot, not yet protected. */
export async function benchPrimary(guest: { snapshot: Uint8Array; disk: Uint8Array }, options: Omit<PrimaryOptions, "hook">): Promise<BenchPrimary> {
  const hook = new BlockHook();
  const disk = new MemoryBackend(guest.disk.slice());
  const machine = await Machine.fromSnapshot(guest.snapshot, {
    ...defaultGuest(),
    devices: [virtioBlkDisk({ backend: disk, id: "vda", hook, keepBackendOpen: true })],
  });
  return { machine, disk, engine: new PrimaryEngine(machine, { ...options, hook }) };
}

/** A blank node holding `disk` (by default the same bytes as the primary's), attached and waiting for `primary`. */
export async function benchSecondary(primary: BenchPrimary, disk: Uint8Array): Promise<BenchSecondary> {
  const backend = new MemoryBackend(disk.slice());
  const machine = await Machine.createBlank({ ...defaultGuest(), devices: [virtioBlkDisk({ backend, id: "vda", keepBackendOpen: true })] });
  const link = createMemoryPair();
  const [channel, accepted] = await Promise.all([
    handshake(link.a, "primary", SECRET, { epoch: primary.engine.epoch }),
    handshake(link.b, "secondary", SECRET),
  ]);
  const engine = new SecondaryEngine(machine);
  void engine.attach(accepted);
  return { machine, disk: backend, engine, channel };
}
