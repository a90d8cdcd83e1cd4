// Protecting the guest with a (new) secondary, as the steps it takes:
//   1. a session on the channel, heartbeats from the start;
//   2. the initial copy (initial-sync.ts): at its start everything the guest did so far is
//      covered by it (sync 0), and the guest runs on while RAM and the disks are copied, its
//      output going out at once until the copy's last boundary (under `continue`);
//   3. the secondary's init-ack: what the copy covered is released, and event-driven syncs
//      take over from there.
// A link that fails on the way is a loss, handled by the loss policy: never a rejection.
import type { ReplicationChannel } from "../../channel/channel.ts";
import { emptyByteCounts } from "../sync-event.ts";
import type { PrimaryCore } from "./core.ts";
import { sendInitialSync } from "./initial-sync.ts";

export async function protect(core: PrimaryCore, channel: ReplicationChannel): Promise<void> {
  const { fsm, guest, metrics, options, outputs, pending } = core;
  // Until the copy's last boundary no copy exists that a takeover could resume from.
  core.copying(true);
  fsm.go("initial-sync", "initial sync started");
  const started = performance.now();
  const bytesBefore = metrics.totalBytes;
  const session = core.openSession(channel);
  let copiedIngress: number | null = null;
  try {
    await sendInitialSync({
      guest,
      session,
      epoch: options.epoch,
      mode: options.mode,
      digestWaitMs: options.peerTimeoutMs,
      atCopyStart: () => {
        pending.clear();
        outputs.coverAll(0);
        session.track({
          seq: 0,
          requests: [],
          capturedAt: performance.now(),
          sentAt: undefined,
          ingressWatermark: copiedIngress,
          encoded: undefined,
          bytes: emptyByteCounts(),
          pauseMs: 0,
          after: [],
        });
      },
      atCopyEnd: () => {
        core.copying(false);
        // The copy's RAM and NIC state are as of here: it has seen every frame given so far.
        copiedIngress = guest.ingressWatermark();
      },
    });
  } catch (error) {
    core.lose(session, `initial sync failed: ${(error as Error).message}`);
  } finally {
    core.copying(false);
  }
  // The copy has its own timeout: it is as slow as the disks are large.
  if (!(await session.initAcknowledged(options.initialSyncTimeoutMs))) return;
  // Acknowledged, but the session may have ended since (a loss, a fence): its ack covers nothing now.
  if (session.ended) return;
  metrics.initialSync = { ms: performance.now() - started, bytes: metrics.totalBytes - bytesBefore };
  fsm.go("protected", `initial sync done in ${(metrics.initialSync.ms / 1000).toFixed(1)} s`);
  core.protectedAgain();
  session.setPeerTimeout(options.peerTimeoutMs);
  outputs.acknowledged(0);
  core.ingressCommitted(copiedIngress);
  core.wake();
}
