// What a test can ask of a pair, with the defaults and the checks that turn a bad
// value into an error naming the option before anything starts.
import { DEFAULTS, MEMORY_MIB_RANGE } from "../../emulator/config.ts";
import type { DiskMode, SecondaryLossPolicy, SyncMode } from "../../replication/engine/primary/engine.ts";
import { checkForwards, parseForward, type ForwardSpec } from "../network/forwards.ts";
import type { GuestOverlay } from "../overlay/archive.ts";
import type { GuestTemplate } from "./template.ts";
import { SECTOR_SIZE } from "../../emulator/units.ts";

/** A disk of the guest (vda, vdb, ... in order). */
export type DiskSpec =
  /** A new, empty (sparse) image of this many bytes (a multiple of 512). */
  | { sizeBytes: number }
  /**
   * An existing image. The primary gets a copy in the pair's folder unless `inPlace`
   * (then the pair writes to your file). The first secondary gets `secondaryImage`
   * if given (same size; used in place), else an empty image the initial sync fills.
   */
  | { image: string; inPlace?: boolean; secondaryImage?: string };

export interface PairOptions {
  /** Guest RAM, MiB (default 128; at least 128 for the default guest). */
  memoryMiB?: number;
  /** Default: one empty 64 MiB disk. */
  disks?: DiskSpec[];
  /** How disk writes reach the secondary (default logging-replay). */
  mode?: DiskMode;
  /** What the primary does while it has no secondary: run on unprotected (continue, the default) or hold the guest's writes and output (stall). */
  onSecondaryLoss?: SecondaryLossPolicy;
  /** When the guest sees a disk write complete: at its sync's capture (speculative) or its acknowledgement (synchronous, Kemari). Default: see DEFAULT_SYNC_MODE. */
  syncMode?: SyncMode;
  /** Speculative mode: how long a write the guest saw complete may wait for the capture that logs it, unless output asks sooner (default 20 ms). */
  syncIntervalMs?: number;
  /** How long the guest's output (console bytes, frames) may wait for the rest of its burst before a capture covers it, the guest running (default 2 ms; a guest that idles is captured at once; 0: at once). */
  outputCoalesceMs?: number;
  /**
   * Host ports forwarded to guest ports through a network gateway in this process (passt, the
   * Debian package, must be installed): "[HOST:]PORT:GUESTPORT" or {host?, port, guestPort};
   * port 0 picks a free port (`pair.hostPort(guestPort)` tells which). Loopback unless a host is given.
   */
  forwards?: (string | ForwardSpec)[];
  /** With forwards: passt writes every frame it exchanges with the guest to `capture/network.pcap` in the pair's folder (keep it with stop({keepFiles: true})). */
  capturePackets?: boolean;
  /**
   * An arbiter: this process is the witness both nodes ask before running the guest, so a cut
   * replication link with both nodes alive leaves exactly one guest running (the other stalls and
   * is fenced). Default false: a cut link then gives two running guests under `continue` (split brain).
   */
  arbiter?: boolean;
  /** Your files (and a start-up command) in the guest, on both nodes. */
  overlay?: GuestOverlay;
  /** Appended to the guest kernel's command line (e.g. "twinvm.root=/dev/vda"). */
  kernelArgs?: string;
  /** Restore this booted guest instead of booting (see createGuestTemplate); memory, disks, overlay and kernel arguments come from it. */
  template?: GuestTemplate;
  /** Restore the primary from this snapshot file instead of booting (lower level than `template`). */
  snapshotPath?: string;
  /**
   * After a takeover, or when the secondary's process is lost, start a fresh secondary
   * and protect the guest again while it runs (default true).
   */
  reprotect?: boolean;
  /** Wait this long before re-protecting (default 0), e.g. to observe the unprotected window. */
  reprotectDelayMs?: number;
  /** Route the replication link through a fault proxy, needed for cutLink/stallLink (default true). */
  linkFaults?: boolean;
  /** One-way delay the fault proxy adds to each direction of the replication link, ms (default 0): a distant secondary. */
  linkDelayMs?: number;
  /** Silence from the peer this long means it is gone (default 3000 ms; SIGKILL is noticed at once). */
  peerTimeoutMs?: number;
  /** Bound on booting (or restoring) plus the first initial sync (default 240 s). */
  startTimeoutMs?: number;
  /** Where the pair's temporary folder goes (default: the OS temp folder). */
  workDir?: string;
  /** Control sockets for `twinvm status/exec --run-dir` (default: inside the pair's folder). */
  runDir?: string;
  /** Node names are NAME-primary, NAME-secondary, NAME-secondary-2, ... (default "pair"). */
  name?: string;
  /** Folder with bios.bin, vmlinuz, initramfs.cpio.gz (default: the shipped guest). */
  imagesDir?: string;
  /** Copy the nodes' logs to this process's stderr as they come. */
  echoLogs?: boolean;
}

export const DEFAULT_DISK_BYTES = 64 << 20;
export const DEFAULT_PEER_TIMEOUT_MS = 3000;
/**
 * With an arbiter a false failover is safe (the old primary cannot keep its lease and is
 * fenced), so a silent peer may be called lost much sooner. Measured (`npm run bench --
 * silent-faults`, benchmarks/results/silent-faults.md): no false failover in 60 s of a writing
 * guest on a loaded 2-core machine at 150, 200 or 250 ms (and in 180 s at 200, 250 and 400 in
 * an earlier run); a client's next byte after a frozen primary or a stalled link came 245-397 ms
 * after the fault at 200 (217-351 at 150, 327-487 at 250). In 300 s loaded, one false
 * failover at 150 ms (a primary silent for 152 ms) and none at 200: 200 it is.
 */
export const ARBITRATED_PEER_TIMEOUT_MS = 200;
export const DEFAULT_START_TIMEOUT_MS = 240_000;

export class PairOptionError extends Error {
  override name = "PairOptionError";
}

/** Throws a PairOptionError naming the first bad option. */
export function checkPairOptions(options: PairOptions): void {
  const memory = options.memoryMiB ?? DEFAULTS.memoryMiB;
  if (!Number.isInteger(memory) || memory < MEMORY_MIB_RANGE.min || memory > MEMORY_MIB_RANGE.max) {
    throw new PairOptionError(`memoryMiB: expected a whole number from ${MEMORY_MIB_RANGE.min} to ${MEMORY_MIB_RANGE.max}, got ${String(options.memoryMiB)}`);
  }
  if (options.mode !== undefined && options.mode !== "logging-replay" && options.mode !== "dirty-block-copy") {
    throw new PairOptionError(`mode: expected "logging-replay" or "dirty-block-copy", got ${JSON.stringify(options.mode)}`);
  }
  if (options.onSecondaryLoss !== undefined && options.onSecondaryLoss !== "continue" && options.onSecondaryLoss !== "stall") {
    throw new PairOptionError(`onSecondaryLoss: expected "continue" or "stall", got ${JSON.stringify(options.onSecondaryLoss)}`);
  }
  for (const [i, disk] of (options.disks ?? []).entries()) {
    if ("sizeBytes" in disk && (!Number.isSafeInteger(disk.sizeBytes) || disk.sizeBytes <= 0 || disk.sizeBytes % SECTOR_SIZE !== 0)) {
      throw new PairOptionError(`disks[${i}].sizeBytes: expected a positive multiple of ${SECTOR_SIZE}, got ${String(disk.sizeBytes)}`);
    }
    if ("image" in disk && (typeof disk.image !== "string" || disk.image === "")) throw new PairOptionError(`disks[${i}].image: expected a file path`);
  }
  if (
    options.template !== undefined &&
    (options.disks !== undefined || options.overlay !== undefined || options.memoryMiB !== undefined || options.kernelArgs !== undefined)
  ) {
    throw new PairOptionError("template: memoryMiB, disks, overlay and kernelArgs come from the template; do not give them too");
  }
  if (options.template !== undefined && options.snapshotPath !== undefined) throw new PairOptionError("give template or snapshotPath, not both");
  for (const key of ["peerTimeoutMs", "startTimeoutMs", "reprotectDelayMs", "syncIntervalMs", "outputCoalesceMs", "linkDelayMs"] as const) {
    const value = options[key];
    if (value !== undefined && (!Number.isFinite(value) || value < 0))
      throw new PairOptionError(`${key}: expected a non-negative number of milliseconds, got ${String(value)}`);
  }
  if (options.linkDelayMs !== undefined && options.linkDelayMs > 0 && options.linkFaults === false)
    throw new PairOptionError("linkDelayMs: the delay is the fault proxy's; it needs linkFaults");
  if (options.kernelArgs !== undefined && /[\r\n]/.test(options.kernelArgs)) throw new PairOptionError("kernelArgs: must be a single line");
  if (options.syncMode !== undefined && options.syncMode !== "synchronous" && options.syncMode !== "speculative") {
    throw new PairOptionError(`syncMode: expected "synchronous" or "speculative", got ${JSON.stringify(options.syncMode)}`);
  }
  try {
    checkForwards(forwardSpecs(options));
  } catch (error) {
    throw new PairOptionError(`forwards: ${(error as Error).message}`, { cause: error });
  }
  if (options.capturePackets === true && forwardSpecs(options).length === 0)
    throw new PairOptionError("capturePackets: needs forwards (no gateway runs without them)");
  if (options.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$/.test(options.name))
    throw new PairOptionError(`name: expected letters, digits, ".", "_" or "-", got ${JSON.stringify(options.name)}`);
}

/** The forwards asked for, as specs. */
export function forwardSpecs(options: PairOptions): ForwardSpec[] {
  return (options.forwards ?? []).map((forward) => (typeof forward === "string" ? parseForward(forward) : forward));
}
