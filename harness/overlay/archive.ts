// A guest overlay: a folder of the host (and/or files given inline) added to the
// guest's root file system as one more initramfs archive, loaded after the guest's
// own (Linux unpacks concatenated archives in order; a later file replaces an
// earlier one), plus an optional start-up command that the default guest runs
// before it reports ready. Modes are normalized (0755 for directories and
// executables, 0644 otherwise, owner root) so the same input gives the same bytes.
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { encodeCpio, type CpioEntry } from "./cpio.ts";

export interface GuestOverlay {
  /** A host folder whose contents appear at the guest's `/` (dir/opt/app -> /opt/app). */
  dir?: string;
  /** Files given inline: guest path (absolute) -> contents; added after `dir`'s. */
  files?: Record<string, string | Uint8Array>;
  /**
   * A shell command line run once at boot, before the guest reports ready (so
   * `startPair` returns after it): end it with `&` to leave a daemon running. Its
   * output goes to /var/log/twinvm-startup.log and its exit code to
   * /var/log/twinvm-startup.status. Needs the default guest (or one with its /bin/twinvm-startup).
   */
  startup?: string;
}

/** Where the default guest looks for the start-up command (images/build.sh: /bin/twinvm-startup). */
export const STARTUP_PATH = "etc/twinvm/startup";
export const STARTUP_LOG = "/var/log/twinvm-startup.log";
export const STARTUP_STATUS = "/var/log/twinvm-startup.status";

export interface OverlayArchive {
  /** gzip-compressed newc cpio, to be appended to the guest's initramfs. */
  bytes: Uint8Array;
  /** Bytes the guest unpacks into its RAM-backed root file system. */
  unpackedBytes: number;
  /** Guest paths, sorted (directories included). */
  paths: string[];
}

export class OverlayError extends Error {
  override name = "OverlayError";
}

const encoder = new TextEncoder();

/** Reads the folder and inline files and builds the archive; an unusable file is an OverlayError that names it. */
export async function buildOverlayArchive(overlay: GuestOverlay): Promise<OverlayArchive> {
  const entries = new Map<string, CpioEntry>();
  const add = (entry: CpioEntry, origin: string) => {
    const existing = entries.get(entry.path);
    if (existing !== undefined && !(existing.type === "directory" && entry.type === "directory")) {
      throw new OverlayError(`guest overlay: /${entry.path} is given twice (${origin})`);
    }
    entries.set(entry.path, entry);
  };
  const addParents = (path: string) => {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) add({ type: "directory", path: parts.slice(0, i).join("/"), mode: 0o755 }, "a parent folder");
  };

  if (overlay.dir !== undefined) {
    const root = overlay.dir;
    let rootStat;
    try {
      rootStat = await lstat(root);
    } catch (error) {
      throw new OverlayError(`guest overlay ${root}: ${(error as NodeJS.ErrnoException).code === "ENOENT" ? "no such folder" : (error as Error).message}`);
    }
    if (!rootStat.isDirectory()) throw new OverlayError(`guest overlay ${root}: not a folder`);
    for (const entry of await walk(root, "")) add(entry, `in ${root}`);
  }
  for (const [guestPath, contents] of Object.entries(overlay.files ?? {})) {
    const path = guestRelative(guestPath);
    addParents(path);
    add({ type: "file", path, mode: 0o644, data: typeof contents === "string" ? encoder.encode(contents) : contents }, "in files");
  }
  if (overlay.startup !== undefined) {
    if (overlay.startup.trim() === "") throw new OverlayError("guest overlay: the start-up command is empty");
    addParents(STARTUP_PATH);
    add(
      { type: "file", path: STARTUP_PATH, mode: 0o755, data: encoder.encode(`#!/bin/sh\n# twinvm guest overlay start-up command\n${overlay.startup}\n`) },
      "the start-up command",
    );
  }

  // Sorted, so a folder comes before what is inside it and the bytes do not depend on readdir order.
  const sorted = [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const cpio = encodeCpio(sorted);
  return { bytes: new Uint8Array(gzipSync(cpio, { level: 9 })), unpackedBytes: cpio.length, paths: sorted.map((entry) => `/${entry.path}`) };
}

function guestRelative(guestPath: string): string {
  if (!guestPath.startsWith("/")) throw new OverlayError(`guest overlay: file path ${JSON.stringify(guestPath)} must be absolute (e.g. "/etc/app.conf")`);
  const path = guestPath.replace(/^\/+/, "").replace(/\/+$/, "");
  if (path === "" || path.split("/").some((part) => part === "" || part === "." || part === "..")) {
    throw new OverlayError(`guest overlay: bad file path ${JSON.stringify(guestPath)}`);
  }
  return path;
}

async function walk(root: string, relative: string): Promise<CpioEntry[]> {
  const out: CpioEntry[] = [];
  const names = (await readdir(join(root, relative))).sort();
  for (const name of names) {
    const path = relative === "" ? name : `${relative}/${name}`;
    const hostPath = join(root, path);
    const stat = await lstat(hostPath);
    if (stat.isDirectory()) {
      out.push({ type: "directory", path, mode: 0o755 }, ...(await walk(root, path)));
    } else if (stat.isFile()) {
      out.push({ type: "file", path, mode: stat.mode & 0o111 ? 0o755 : 0o644, data: new Uint8Array(await readFile(hostPath)) });
    } else if (stat.isSymbolicLink()) {
      out.push({ type: "symlink", path, target: await readlink(hostPath) });
    } else {
      throw new OverlayError(`guest overlay: ${hostPath} is not a file, folder or symbolic link`);
    }
  }
  return out;
}
