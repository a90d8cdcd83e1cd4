// Taking over, as the steps it takes:
//   1. refuse unless the replica is consistent (replicating or standby);
//   2. end the primary's session; unless the primary asked for it (a handover, its guest is
//      stopped), fence it first with `promoted`: it may still be running;
//   3. wait until every acknowledged sync is on the replica's disks, make them durable, load the
//      last committed state and run the guest (requests in flight in that state are run again
//      by the disks);
//   4. tell a primary that handed over that its guest runs here (or why it cannot).
import type { Clock } from "../../clock.ts";
import type { ControlMessage } from "../../protocol/messages.ts";
import type { ReplicationMetrics } from "../metrics.ts";
import type { StateMachine } from "../transitions.ts";
import type { PrimaryAttachment } from "./attachment.ts";
import type { Replica } from "./replica.ts";
import type { SecondaryState } from "./states.ts";

export interface TakeoverCore {
  readonly fsm: StateMachine<SecondaryState>;
  readonly replica: Replica;
  readonly metrics: ReplicationMetrics;
  readonly clock: Clock;
  /** The primary attached now, if any. */
  readonly attached: PrimaryAttachment | undefined;
  detach(attachment: PrimaryAttachment): void;
}

/** `detectedAt`: when the loss that led here was noticed (performance.now()), for the failover time. */
export async function takeOver(core: TakeoverCore, reason: string, options: { handover: boolean; detectedAt: number | undefined }): Promise<void> {
  const { fsm, replica, metrics } = core;
  if (fsm.is("failed")) throw new Error(`promote: the replica is not consistent: ${replica.failure ?? "failed"}`);
  if (!fsm.is("replicating", "standby")) throw new Error(`promote: no consistent replica to run (state ${fsm.state})`);
  const started = options.detectedAt ?? performance.now();
  fsm.go("promoting", `taking over: ${reason}`);
  const attachment = core.attached;
  const epoch = (attachment?.channel.epoch ?? metrics.epoch) + 1;
  if (attachment !== undefined) {
    core.detach(attachment);
    // Fence the old primary: it must never acknowledge another guest write.
    if (!options.handover && attachment.channel.isOpen) await attachment.channel.send({ type: "promoted", epoch }).catch(() => undefined);
  }
  const finish = async (message: ControlMessage) => {
    if (attachment === undefined) return;
    if (options.handover && attachment.channel.isOpen) await attachment.channel.send(message).catch(() => undefined);
    await attachment.channel.close(message.type === "promoted" ? "secondary promoted" : "secondary cannot take over").catch(() => undefined);
  };
  const replicaStartAt = performance.now(); // the old primary fenced (or handed over), its session ended
  let steps: Awaited<ReturnType<Replica["start"]>>;
  try {
    steps = await replica.start();
  } catch (error) {
    fsm.go("failed", `takeover refused: ${(error as Error).message}`);
    await finish({ type: "error", code: "cannot-take-over", message: (error as Error).message.slice(0, 500) });
    throw error;
  }
  const resumedAtMs = core.clock.wallMs();
  metrics.epoch = epoch;
  metrics.failoverMs = performance.now() - started;
  const ms = (value: number) => value.toFixed(0);
  fsm.go(
    "active",
    `guest running on this node (epoch ${epoch}), takeover took ${ms(metrics.failoverMs)} ms ` +
      `(until it began ${ms(replicaStartAt - started)}, disks settled ${ms(steps.settledMs)}, flushed ${ms(steps.flushedMs)}, state loaded ${ms(steps.loadedMs)})`,
  );
  await finish({ type: "promoted", epoch, resumedAtMs });
}
