// Last-resort cleanup for a test process that ends without stopping its pairs (a
// test that threw before its `after` hook, a runner that exits early): on exit,
// every node still running is SIGKILLed and every temporary folder removed. Nodes
// also exit on their own when the IPC channel to this process closes.
import { rmSync } from "node:fs";

export interface Disposable {
  /** Synchronous: runs inside process.on("exit"). */
  disposeNow(): void;
}

const live = new Set<Disposable>();
let installed = false;

export function track(resource: Disposable): () => void {
  if (!installed) {
    installed = true;
    process.on("exit", () => {
      for (const entry of live) {
        try {
          entry.disposeNow();
        } catch {
          // keep going: the others must still be cleaned
        }
      }
    });
  }
  live.add(resource);
  return () => live.delete(resource);
}

export function removeDirNow(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
