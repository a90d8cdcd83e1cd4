// A secondary engine in this process, linked to a primary engine by the in-memory transport
// and the real handshake: the set-up every in-process engine test and benchmark shares,
// whether the guests are fakes or real machines.
import type { Machine } from "../../emulator/machine.ts";
import type { ReplicationChannel } from "../../replication/channel/channel.ts";
import { handshake } from "../../replication/channel/handshake.ts";
import type { ReplicaGuest } from "../../replication/engine/guest.ts";
import type { PrimaryEngine } from "../../replication/engine/primary/engine.ts";
import { SecondaryEngine, type SecondaryOptions } from "../../replication/engine/secondary/engine.ts";
import { createMemoryPair, type MemoryPair } from "../../replication/transport/memory-pair.ts";

export const TEST_SECRET = new TextEncoder().encode("twinvm-test-secret-0123456789");

export interface EngineLink {
  secondary: SecondaryEngine;
  link: MemoryPair;
  /** The primary's end, authenticated: give it to `primary.protect` (or `migrate`). */
  channel: ReplicationChannel;
  /** The secondary's end. */
  accepted: ReplicationChannel;
}

export interface EngineLinkOptions {
  secondary?: SecondaryOptions;
  latencyMs?: number;
  /** Adjusts the secondary's channel before the engine attaches it (a test's fault injection). */
  beforeAttach?: (accepted: ReplicationChannel) => void;
}

/** Hand-shakes a new link for `primary` and attaches a secondary engine on `replica` to its far end (not yet protected). */
export async function linkSecondary(primary: PrimaryEngine, replica: Machine | ReplicaGuest, options: EngineLinkOptions = {}): Promise<EngineLink> {
  const link = createMemoryPair(options.latencyMs === undefined ? {} : { latencyMs: options.latencyMs });
  const [channel, accepted] = await Promise.all([
    handshake(link.a, "primary", TEST_SECRET, { epoch: primary.epoch }),
    handshake(link.b, "secondary", TEST_SECRET),
  ]);
  const secondary = new SecondaryEngine(replica, options.secondary);
  options.beforeAttach?.(accepted);
  void secondary.attach(accepted);
  return { secondary, link, channel, accepted };
}

/** Hand-shakes a bare link (no engines), for tests of the channel or a target node. */
export async function linkedChannels(): Promise<{ link: MemoryPair; channel: ReplicationChannel; accepted: ReplicationChannel }> {
  const link = createMemoryPair();
  const [channel, accepted] = await Promise.all([handshake(link.a, "primary", TEST_SECRET), handshake(link.b, "secondary", TEST_SECRET)]);
  return { link, channel, accepted };
}
