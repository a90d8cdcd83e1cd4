// What every campaign round starts from: a guest booted ONCE (ext4 made on /dev/vda
// and mounted, the workload script in /tmp, an echo service on TCP port 7) as a test-API
// template, and the pair each round starts from it (the primary restores the snapshot on a
// copy of the formatted disk; the secondary starts empty and is filled by the initial
// sync), with a network gateway forwarding a free host port to the echo service.
import type { DiskMode, SecondaryLossPolicy, SyncMode } from "../../replication/engine/primary/engine.ts";
import { startPair, type Pair } from "../testing/pair.ts";
import { createGuestTemplate, type GuestTemplate } from "../testing/template.ts";
import { installWorkload, MOUNT_POINT } from "./guest-workload.ts";

const DISK_BYTES = 64 << 20;
/** A takeover after SIGKILL is driven by the closed socket; this only bounds silent faults. */
const PEER_TIMEOUT_MS = 3000;
const STARTUP_TIMEOUT_MS = 180_000;
/** The guest's echo service (one `cat` per connection), which the network check streams through. */
export const ECHO_PORT = 7;

export async function createCampaignTemplate(workDir: string | undefined): Promise<GuestTemplate> {
  return createGuestTemplate({
    disks: [{ sizeBytes: DISK_BYTES }],
    overlay: { startup: `(nc -ll -p ${ECHO_PORT} -e cat &)` },
    ...(workDir !== undefined && { workDir }),
    async setup(guest) {
      const format = await guest.exec(`mkfs.ext4 -q /dev/vda && mkdir -p ${MOUNT_POINT} && mount /dev/vda ${MOUNT_POINT} && sync`, { timeoutMs: 60_000 });
      if (format.exitCode !== 0) throw new Error(`formatting /dev/vda failed: ${format.output}`);
      await installWorkload(guest);
    },
  });
}

export interface RoundPairOptions {
  mode: DiskMode;
  policy: SecondaryLossPolicy;
  syncMode: SyncMode;
  /** The test process as the pair's witness, with the short peer timeout an arbiter makes safe. */
  arbiter: boolean;
  /** Re-protection after a loss waits this long, so that the unprotected window can be observed. */
  reprotectDelayMs: number;
  workDir: string;
  echoLogs: boolean;
}

export function startRoundPair(template: GuestTemplate, options: RoundPairOptions): Promise<Pair> {
  return startPair({
    template,
    mode: options.mode,
    onSecondaryLoss: options.policy,
    syncMode: options.syncMode,
    // With an arbiter the pair's own short default applies: a false failover is safe, as the witness lets one node run.
    ...(options.arbiter ? { arbiter: true } : { peerTimeoutMs: PEER_TIMEOUT_MS }),
    startTimeoutMs: STARTUP_TIMEOUT_MS,
    reprotectDelayMs: options.reprotectDelayMs,
    workDir: options.workDir,
    echoLogs: options.echoLogs,
    forwards: [{ port: 0, guestPort: ECHO_PORT }],
  });
}
