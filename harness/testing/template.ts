// Boot once, start many pairs: a guest template is a guest booted in this process
// (with your disks, overlay and kernel arguments), set up by your function (format
// a disk, start a service), and snapshotted with its disk images. `startPair({
// template })` restores it on the primary in a second or two instead of a boot, on
// copies of the template's disks, so each test gets a fresh, identical guest.
import { copyFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DEFAULT_CMDLINE, DEFAULTS } from "../../emulator/config.ts";
import { Machine } from "../../emulator/machine.ts";
import { FileBackend } from "../../emulator/node/file-backend.ts";
import { virtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import { guestImages } from "../overlay/guest-images.ts";
import type { GuestOverlay } from "../overlay/archive.ts";
import { removeDirNow, track } from "./cleanup.ts";
import { readGuestFile, type GuestShell } from "./guest-files.ts";
import { uploadToGuest } from "../guest-upload.ts";
import { checkPairOptions, type DiskSpec } from "./options.ts";
import { prepareDisks, prepareOverlay, privateDir, sparseImage, type PreparedDisks } from "./pair-files.ts";
import { checkStartupCommand } from "./startup-check.ts";

export interface TemplateOptions {
  memoryMiB?: number;
  /** Default: one empty 64 MiB disk. Images you give are copied, never written. */
  disks?: DiskSpec[];
  overlay?: GuestOverlay;
  kernelArgs?: string;
  imagesDir?: string;
  workDir?: string;
  /** Runs in the booted guest before the snapshot: format and mount disks, install things. */
  setup?: (guest: TemplateGuest) => Promise<void>;
}

/** The booted guest as `setup` gets it. */
export interface TemplateGuest extends GuestShell {
  writeFile(path: string, data: string | Uint8Array, options?: { mode?: number }): Promise<void>;
  readFile(path: string): Promise<Uint8Array>;
}

export class GuestTemplate {
  #disposed = false;
  readonly #untrack: () => void;

  constructor(
    /** The template's private folder (snapshot, disk images, overlay archive). */
    readonly dir: string,
    readonly snapshotPath: string,
    /** The guest's disks as the snapshot left them, vda first. */
    readonly diskImages: readonly string[],
    readonly diskSizes: readonly number[],
    readonly memoryMiB: number,
    readonly overlayArchive: string | undefined,
    readonly kernelArgs: string | undefined,
    readonly imagesDir: string | undefined,
    /** How long the boot took (CPU start to ready marker). */
    readonly bootMs: number,
  ) {
    this.#untrack = track({ disposeNow: () => removeDirNow(dir) });
  }

  /** Removes the template's folder. Pairs started from it keep their own copies. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    removeDirNow(this.dir);
    this.#untrack();
  }
}

/** Boots the guest once, runs `setup`, snapshots it; see GuestTemplate. */
export async function createGuestTemplate(options: TemplateOptions = {}): Promise<GuestTemplate> {
  checkPairOptions({ memoryMiB: options.memoryMiB, disks: options.disks, overlay: options.overlay, kernelArgs: options.kernelArgs });
  const memoryMiB = options.memoryMiB ?? DEFAULTS.memoryMiB;
  const dir = await privateDir(options.workDir, "template");
  try {
    const overlayArchive = await prepareOverlay(dir, options.overlay, memoryMiB);
    // prepareDisks makes the first secondary's images too; a template needs only the primary's.
    const disks = await prepareDisks(
      dir,
      options.disks?.map((disk) => ("image" in disk ? { image: disk.image } : disk)),
    );
    const backends = await Promise.all(disks.primary.map((path) => FileBackend.open(path)));
    const machine = new Machine({
      ...guestImages(options.imagesDir, overlayArchive),
      ...(options.kernelArgs !== undefined && { cmdline: `${DEFAULT_CMDLINE} ${options.kernelArgs}` }),
      memoryMiB,
      devices: backends.map((backend, i) => virtioBlkDisk({ backend, id: `vd${String.fromCharCode(0x61 + i)}` })),
    });
    let bootMs: number;
    const snapshotPath = join(dir, "guest.snapshot");
    try {
      ({ bootMs } = await machine.boot());
      if (options.overlay?.startup !== undefined) await checkStartupCommand(machine);
      await options.setup?.({
        exec: (command, execOptions) => machine.exec(command, execOptions),
        writeFile: (path, data, fileOptions) => uploadToGuest(machine, path, typeof data === "string" ? new TextEncoder().encode(data) : data, fileOptions),
        readFile: (path) => readGuestFile(machine, path),
      });
      await writeFile(snapshotPath, await machine.snapshot());
    } finally {
      await machine.destroy(); // closes (and so flushes) the disk images
    }
    return new GuestTemplate(dir, snapshotPath, disks.primary, disks.sizes, memoryMiB, overlayArchive, options.kernelArgs, options.imagesDir, bootMs);
  } catch (error) {
    removeDirNow(dir);
    throw error;
  }
}

/** A pair's disks from a template: copies of its images for the primary, empty ones for the first secondary. */
export async function copyTemplateDisks(template: GuestTemplate, dir: string): Promise<PreparedDisks> {
  const prepared: PreparedDisks = { primary: [], secondary: [], sizes: [...template.diskSizes] };
  for (const [i, image] of template.diskImages.entries()) {
    const letter = String.fromCharCode(0x61 + i);
    const primary = join(dir, `primary-vd${letter}.img`);
    await copyFile(image, primary);
    prepared.primary.push(primary);
    prepared.secondary.push(await sparseImage(join(dir, `secondary-vd${letter}.img`), template.diskSizes[i]!));
  }
  return prepared;
}
