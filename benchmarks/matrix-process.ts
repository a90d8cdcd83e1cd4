// Runs a benchmark matrix in a child process, inside a private network namespace
// (`unshare --net`) when its links are shaped with tc there: the config goes in as a JSON
// file, the results come back as one, and the child's stderr lines are the progress.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface MatrixProcess {
  /** The script the child runs: `script CONFIG_PATH RESULTS_PATH`. */
  script: string;
  /** Named in the error if the child fails. */
  name: string;
  /** Whether the child runs inside its own network namespace. */
  inNamespace: boolean;
  log: (line: string) => void;
}

export async function runMatrixInChild<Config, Results>(config: Config, run: MatrixProcess): Promise<Results> {
  const dir = mkdtempSync(join(tmpdir(), "twinvm-matrix-"));
  try {
    const configPath = join(dir, "config.json");
    const resultsPath = join(dir, "results.json");
    writeFileSync(configPath, JSON.stringify(config));
    const node = [process.execPath, "--import", "tsx", run.script, configPath, resultsPath];
    const [command, ...args] = run.inNamespace ? ["unshare", "--net", "--", ...node] : node;
    await new Promise<void>((resolve, reject) => {
      const child = spawn(command!, args, { stdio: ["ignore", "inherit", "pipe"] });
      child.stderr.on("data", (chunk: Buffer) => {
        for (const line of chunk.toString().split("\n")) if (line.trim() !== "") run.log(line.trim());
      });
      child.on("error", reject);
      child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`the ${run.name} matrix exited with ${code}`))));
    });
    return JSON.parse(readFileSync(resultsPath, "utf8")) as Results;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
