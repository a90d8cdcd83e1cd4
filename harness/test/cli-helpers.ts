// Running the `twinvm` command from tests: one invocation to completion, and polling its output.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const LAUNCHER = fileURLToPath(new URL("../bin/twinvm.js", import.meta.url));

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `twinvm ARGS...` to completion (killed after `timeoutMs`). */
export function twinvm(args: string[], timeoutMs = 30_000): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LAUNCHER, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`twinvm ${args.join(" ")} did not finish in ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Polls `read()` until it matches, failing with what was read. */
export async function eventually(read: () => string, pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(read())) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; got:\n${read().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
