// A protected guest with both nodes in this process, joined by the in-memory link: the
// set-up the in-process benchmarks share (on the test support's guest snapshot and engine
// link). Every node restores the same warmed-up snapshot and starts from the same disk bytes.
import type { MemoryBackend } from "../emulator/block/memory-backend.ts";
import type { Machine } from "../emulator/machine.ts";
import type { ReplicationChannel } from "../replication/channel/channel.ts";
import { PrimaryEngine, type PrimaryOptions } from "../replication/engine/primary/engine.ts";
import type { SecondaryEngine } from "../replication/engine/secondary/engine.ts";
import { linkSecondary } from "../test/support/engine-link.ts";
import { blankReplica, prepareGuest, restoreGuest, type PreparedGuest } from "../test/support/guest-snapshot.ts";

/** Boots the default guest with one disk of `diskBytes`, runs `setup` (up to 10 minutes), and snapshots it. */
export function prepareBenchGuest(diskBytes: number, setup: string): Promise<PreparedGuest> {
  return prepareGuest(diskBytes, setup, 600_000);
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
export async function benchPrimary(guest: PreparedGuest, options: Omit<PrimaryOptions, "hook">): Promise<BenchPrimary> {
  const { machine, disk, hook } = await restoreGuest(guest);
  return { machine, disk, engine: new PrimaryEngine(machine, { ...options, hook }) };
}

/** A blank node holding `disk` (by default the same bytes as the primary's), attached and waiting for `primary`. */
export async function benchSecondary(primary: BenchPrimary, disk: Uint8Array): Promise<BenchSecondary> {
  const { machine, disk: backend } = await blankReplica(disk);
  const { secondary, channel } = await linkSecondary(primary.engine, machine);
  return { machine, disk: backend, engine: secondary, channel };
}
