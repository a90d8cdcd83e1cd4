// Gathers the frames of sync N as they arrive and hands over one CommittedSync at its
// sync-commit. SessionOrder has already checked order, counts and extents, so this only
// collects; what depends on the replica (state deltas) is checked when it is applied.
import type { BinaryFrame, PartChange } from "../../protocol/frames.ts";
import type { CommittedSync } from "./replica.ts";

export class SyncAssembler {
  #pages: CommittedSync["pages"] = [];
  #state: { partCount: number; changes: PartChange[] } | undefined;
  #blocks: CommittedSync["blocks"] = [];
  #output: CommittedSync["output"] = [];

  /** Takes one frame of an event-driven sync; returns the sync when `frame` is its commit. */
  add(frame: BinaryFrame): CommittedSync | undefined {
    switch (frame.kind) {
      case "page-updates":
        for (const update of frame.updates) this.#pages.push(update);
        return undefined;
      case "state-changes":
        this.#state = { partCount: frame.partCount, changes: frame.changes };
        return undefined;
      case "disk-blocks":
        this.#blocks.push(frame);
        return undefined;
      case "held-output":
        this.#output.push(frame);
        return undefined;
      case "sync-commit": {
        const sync: CommittedSync = { seq: frame.seq, pages: this.#pages, state: this.#state, log: frame.log, blocks: this.#blocks, output: this.#output };
        this.discard();
        return sync;
      }
      default:
        throw new Error(`sync assembler: ${frame.kind} is not an event-driven sync frame`);
    }
  }

  /** Drops a partly received sync (its primary is gone): the replica stays at the last commit. */
  discard(): void {
    this.#pages = [];
    this.#state = undefined;
    this.#blocks = [];
    this.#output = [];
  }
}
