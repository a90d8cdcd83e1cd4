// Disk image files for the CLI: sizes of existing ones, and new sparse ones
// (a file of the right length with no blocks allocated, so a 1 GiB disk costs
// nothing until the guest writes to it).
import { statSync, truncateSync, writeFileSync } from "node:fs";
import { CliError } from "./args.ts";

export function createSparseImage(path: string, sizeBytes: number): string {
  try {
    writeFileSync(path, "", { flag: "wx", mode: 0o600 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(`disk image ${path}: ${code === "EEXIST" ? "already exists (refusing to overwrite it)" : (error as Error).message}`);
  }
  truncateSync(path, sizeBytes);
  return path;
}

export function totalSize(paths: string[]): number {
  return paths.reduce((sum, path) => sum + statSync(path).size, 0);
}

/** The secondary's disks must be the primary's sizes, one for one. */
export function checkMatchingDisks(primary: string[], secondary: string[]): void {
  if (primary.length !== secondary.length)
    throw new CliError(`the primary has ${primary.length} disk(s) and the secondary ${secondary.length}: give one secondary disk per primary disk`);
  for (const [i, path] of primary.entries()) {
    const [a, b] = [statSync(path).size, statSync(secondary[i]!).size];
    if (a !== b) throw new CliError(`disk ${i + 1}: ${path} is ${a} bytes but ${secondary[i]} is ${b}; a replica's disk must be the same size`);
  }
}
