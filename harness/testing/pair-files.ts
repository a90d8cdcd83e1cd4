// The files a pair (or a guest template) lives on, all in one private folder that
// goes away with it: the shared secret, disk images, the overlay archive.
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdir, mkdtemp, open, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS } from "../../emulator/config.ts";
import { buildOverlayArchive, OverlayError, type GuestOverlay } from "../overlay/archive.ts";
import { DEFAULT_DISK_BYTES, type DiskSpec } from "./options.ts";
import { SECTOR_SIZE } from "../../emulator/units.ts";

/** A new private (0700) folder named `twinvm-<prefix>-XXXXXX` under `parent`. */
export async function privateDir(parent: string | undefined, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(parent ?? tmpdir(), `twinvm-${prefix}-`));
  await chmod(dir, 0o700);
  return dir;
}

/**
 * A folder passt can write its capture into: passt started as root runs as nobody, so the
 * pair's folder becomes traverse-only for others (its files stay 0600) and this one is open.
 */
export async function captureDir(pairDir: string): Promise<string> {
  const dir = join(pairDir, "capture");
  await mkdir(dir);
  await chmod(dir, 0o777);
  await chmod(pairDir, 0o711);
  return dir;
}

export async function writeSecret(dir: string): Promise<string> {
  const path = join(dir, "secret");
  await writeFile(path, randomBytes(32).toString("hex"), { mode: 0o600 });
  return path;
}

/** A new sparse image (no blocks allocated until the guest writes). */
export async function sparseImage(path: string, sizeBytes: number): Promise<string> {
  const handle = await open(path, "wx", 0o600);
  try {
    await handle.truncate(sizeBytes);
  } finally {
    await handle.close();
  }
  return path;
}

export async function imageSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    throw new Error(`disk image ${path}: ${(error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message}`, { cause: error });
  }
}

export interface PreparedDisks {
  primary: string[];
  /** The first secondary's images. */
  secondary: string[];
  sizes: number[];
}

/** The primary's and the first secondary's images for `specs` (default: one empty 64 MiB disk), in `dir`. */
export async function prepareDisks(dir: string, specs: DiskSpec[] | undefined): Promise<PreparedDisks> {
  const prepared: PreparedDisks = { primary: [], secondary: [], sizes: [] };
  for (const [i, spec] of (specs ?? [{ sizeBytes: DEFAULT_DISK_BYTES }]).entries()) {
    const letter = String.fromCharCode(0x61 + i);
    let primary: string;
    if ("sizeBytes" in spec) {
      primary = await sparseImage(join(dir, `primary-vd${letter}.img`), spec.sizeBytes);
    } else if (spec.inPlace) {
      primary = spec.image;
    } else {
      primary = join(dir, `primary-vd${letter}.img`);
      await copyFile(spec.image, primary).catch((error: NodeJS.ErrnoException) => {
        throw new Error(`disks[${i}].image ${spec.image}: ${error.code === "ENOENT" ? "no such file" : error.message}`);
      });
    }
    const size = await imageSize(primary);
    if (size === 0 || size % SECTOR_SIZE !== 0) throw new Error(`disk image ${primary}: ${size} bytes, expected a positive multiple of ${SECTOR_SIZE}`);
    let secondary: string;
    if ("secondaryImage" in spec && spec.secondaryImage !== undefined) {
      secondary = spec.secondaryImage;
      const secondarySize = await imageSize(secondary);
      if (secondarySize !== size)
        throw new Error(`disks[${i}]: ${secondary} is ${secondarySize} bytes but ${primary} is ${size}; a replica's disk must be the same size`);
    } else {
      secondary = await sparseImage(join(dir, `secondary-vd${letter}.img`), size);
    }
    prepared.primary.push(primary);
    prepared.secondary.push(secondary);
    prepared.sizes.push(size);
  }
  return prepared;
}

/** Empty images of `sizes` for a replacement secondary, named after it. */
export async function freshImages(dir: string, nodeName: string, sizes: number[]): Promise<string[]> {
  return Promise.all(sizes.map((size, i) => sparseImage(join(dir, `${nodeName}-vd${String.fromCharCode(0x61 + i)}.img`), size)));
}

/**
 * Builds the overlay archive into `dir` (undefined without an overlay). The guest
 * unpacks it into its RAM-backed root file system, which Linux caps at half of RAM
 * and which also holds the default guest's own ~11 MB: refuse what cannot fit.
 */
export async function prepareOverlay(dir: string, overlay: GuestOverlay | undefined, memoryMiB = DEFAULTS.memoryMiB): Promise<string | undefined> {
  if (overlay === undefined) return undefined;
  const archive = await buildOverlayArchive(overlay);
  const limit = (memoryMiB << 20) / 4;
  if (archive.unpackedBytes > limit) {
    throw new OverlayError(
      `guest overlay: ${(archive.unpackedBytes / (1 << 20)).toFixed(1)} MiB unpacked is more than a ${memoryMiB} MiB guest can hold in its root file system (at most ${limit >> 20} MiB); give the guest more memory or put the files on a disk`,
    );
  }
  const path = join(dir, "overlay.cpio.gz");
  await writeFile(path, archive.bytes, { mode: 0o600 });
  return path;
}
