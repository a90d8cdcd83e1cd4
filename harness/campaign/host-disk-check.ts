// Host-side checks of a guest's ext2 image after the guest unmounted it: e2fsck, and
// the log's files read straight from the image with debugfs (not through the guest's
// page cache), hashed on the host.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LOG_NAME } from "./guest-workload.ts";

const TOOL_TIMEOUT_MS = 120_000;

interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runTool(command: string, args: string[]): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: TOOL_TIMEOUT_MS, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1;
      resolve({ code, stdout, stderr: stderr || (error?.message ?? "") });
    });
  });
}

export interface FsckVerdict {
  clean: boolean;
  /** The tail of e2fsck's report when it is not clean. */
  detail: string;
}

/** `e2fsck -fn`: forced full check, read-only; exit code 0 means clean. */
export async function fsckImage(image: string): Promise<FsckVerdict> {
  const result = await runTool("e2fsck", ["-fn", image]);
  return { clean: result.code === 0, detail: result.code === 0 ? "" : `${result.stdout}${result.stderr}`.trim().split("\n").slice(-8).join("\n") };
}

export interface ImageLogVerdict {
  logLines: number;
  lost: string[];
}

/** Reads the workload log from the image and checks each named file's sha256 on the host. */
export async function verifyLogOnImage(image: string, scratchDir: string): Promise<ImageLogVerdict> {
  const log = await runTool("debugfs", ["-R", `cat /${LOG_NAME}`, image]);
  if (log.code !== 0) throw new Error(`debugfs could not read /${LOG_NAME}: ${log.stderr}`);
  const entries = log.stdout
    .split("\n")
    .filter((line) => line.length > 0)
    .map((line) => {
      const [name = "", sha256 = ""] = line.split(" ");
      return { line, name, sha256 };
    });
  const dir = await mkdtemp(join(scratchDir, "image-files-"));
  try {
    const wellFormed = entries.filter((entry) => /^f\d+$/.test(entry.name) && /^[0-9a-f]{64}$/.test(entry.sha256));
    // One debugfs run dumps every file; a missing one is simply not dumped.
    await writeFile(join(dir, "commands"), wellFormed.map((entry) => `dump /${entry.name} ${join(dir, entry.name)}\n`).join(""));
    await runTool("debugfs", ["-f", join(dir, "commands"), image]);
    const lost: string[] = entries.filter((entry) => !wellFormed.includes(entry)).map((entry) => `malformed line: ${entry.line}`);
    for (const entry of wellFormed) {
      const data = await readFile(join(dir, entry.name)).catch(() => undefined);
      if (data === undefined) lost.push(`${entry.name}: missing`);
      else if (createHash("sha256").update(data).digest("hex") !== entry.sha256) lost.push(`${entry.name}: wrong sha256`);
    }
    return { logLines: entries.length, lost };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
