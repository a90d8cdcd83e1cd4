// What every stress round starts from: a guest booted once with two ext4 disks mounted
// on /mnt/a and /mnt/b (they share one PCI interrupt line, as any two disks of this
// machine do) and the round's scripts in /opt/stress, as a test-API template; each round
// restores it into a fresh pair whose first secondary is filled by the initial sync.
import type { DiskMode, SecondaryLossPolicy } from "../../replication/engine/primary/engine.ts";
import { startPair, type Pair } from "../testing/pair.ts";
import { createGuestTemplate, type GuestTemplate } from "../testing/template.ts";
import { DISKS, FINISH, FINISH_SCRIPT, MOUNT, WRITER, WRITER_SCRIPT } from "./guest-scripts.ts";

export const DISK_BYTES = 64 << 20;
/** A SIGKILL is noticed from the closed socket; this only bounds silent faults. */
const PEER_TIMEOUT_MS = 3000;
const STARTUP_TIMEOUT_MS = 240_000;

export async function createStressTemplate(options: { memoryMiB: number; workDir: string }): Promise<GuestTemplate> {
  return createGuestTemplate({
    memoryMiB: options.memoryMiB,
    disks: DISKS.map(() => ({ sizeBytes: DISK_BYTES })),
    workDir: options.workDir,
    async setup(guest) {
      const devices = DISKS.map((disk, i) => [`/dev/vd${String.fromCharCode(0x61 + i)}`, MOUNT(disk)] as const);
      const format = devices.map(([device, mount]) => `mkfs.ext4 -q ${device} && mkdir -p ${mount} && mount ${device} ${mount}`).join(" && ");
      const formatted = await guest.exec(`${format} && sync`, { timeoutMs: 120_000 });
      if (formatted.exitCode !== 0) throw new Error(`formatting the disks failed: ${formatted.output}`);
      await guest.writeFile(WRITER, WRITER_SCRIPT, { mode: 0o755 });
      await guest.writeFile(FINISH, FINISH_SCRIPT, { mode: 0o755 });
    },
  });
}

export function startStressPair(
  template: GuestTemplate,
  options: { mode: DiskMode; policy: SecondaryLossPolicy; reprotect: boolean; workDir: string },
): Promise<Pair> {
  return startPair({
    template,
    mode: options.mode,
    onSecondaryLoss: options.policy,
    reprotect: options.reprotect,
    peerTimeoutMs: PEER_TIMEOUT_MS,
    startTimeoutMs: STARTUP_TIMEOUT_MS,
    workDir: options.workDir,
  });
}
