// Where running nodes keep their control sockets: $XDG_RUNTIME_DIR/twinvm (a
// per-user tmpfs on systemd machines) or /tmp/twinvm-<uid>. The directory is
// 0700 and must belong to us, because anyone who can reach a control socket can
// promote a node.
import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function defaultRunDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg !== undefined && xdg !== "") return join(xdg, "twinvm");
  return join(tmpdir(), `twinvm-${process.getuid?.() ?? "user"}`);
}

/** Creates the run directory (0700) if needed and refuses one that someone else could write to. */
export function ensureRunDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stat = lstatSync(dir);
  if (!stat.isDirectory()) throw new Error(`run directory ${dir}: not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && stat.uid !== uid) throw new Error(`run directory ${dir}: owned by uid ${stat.uid}, not by you (uid ${uid})`);
  if ((stat.mode & 0o077) !== 0) throw new Error(`run directory ${dir}: mode ${(stat.mode & 0o777).toString(8)} lets others in; expected 700`);
  return dir;
}

export function controlSocketPath(runDir: string, nodeName: string): string {
  return join(runDir, `${nodeName}.sock`);
}
