// Output commit: what the outside world (and, in the synchronous mode, the guest) would see
// waits until the secondary holds a state at least as new as the moment it happened, so that
// after a failover nothing anyone saw is unknown to the surviving replica. One queue, one
// rule, for every kind of held output:
//
//   - held uncovered: it happened after the last capture;
//   - covered by sync N: the capture of sync N saw it (for a disk write's completion: sync N
//     logs the write);
//   - released, in the order it was held, once sync N is acknowledged and everything held
//     before it is released too.
//
// One exception, the speculative mode's: a disk write's completion marked `atCapture` is
// released as soon as the capture that logs the write is taken. (Most speculative writes are
// never held at all: they complete at once and the next capture logs them; the engine holds
// one here only while too many wait unlogged.) The guest learns nothing the outside world
// could see from it; a failover resumes from the last acknowledged sync, before it happened.
//
// The console bytes and frames a sync covers travel with it (held-output), numbered in the
// session in the order the guest produced them, with how many of them are out: a secondary
// that takes over lets out what the primary had not (secondary/carried-output.ts). Numbering
// starts with each session's initial copy, whose output does not travel.
//
// Pure: the engine calls it; the queue calls a completion's `release` and the listeners of
// the kind that is released.
import type { CarriedOutput, HeldOutputBatch } from "../../protocol/frames.ts";

export type HeldOutput =
  /** A guest request's completion (a disk write the guest waits for); `atCapture`: released when the capture that logs it is taken. */
  | { kind: "completion"; release: () => void; atCapture?: boolean }
  /** Bytes the guest printed on its console. */
  | { kind: "console"; bytes: Uint8Array }
  /** An Ethernet frame the guest transmitted. */
  | { kind: "frame"; bytes: Uint8Array };

export type HeldKind = HeldOutput["kind"];

/** Held console bytes and frames beyond this (a stalled primary whose guest keeps talking) are dropped and counted. */
export const MAX_HELD_OUTPUT_BYTES = 4 << 20;

interface Entry {
  output: HeldOutput;
  /** The sync whose capture covers it; undefined until one does. */
  coveredBy: number | undefined;
  /** When it was held (the clock of the caller), for how long captures keep work waiting. */
  heldAt: number;
  /** Console bytes and frames covered by a sync of this session: their number in the session (they travel with the sync). */
  carryIndex: number | undefined;
}

export interface OutputCounters {
  held: number;
  released: number;
  dropped: number;
  heldBytes: number;
  releasedBytes: number;
  droppedBytes: number;
}

const emptyCounters = (): OutputCounters => ({ held: 0, released: 0, dropped: 0, heldBytes: 0, releasedBytes: 0, droppedBytes: 0 });

export interface OutputCommitOptions {
  /** Called as held console bytes or a frame go out, with when they were held (for the hold-time metric). */
  released?: (kind: "console" | "frame", heldAt: number) => void;
}

export class OutputCommitQueue {
  /** Held entries, oldest first. */
  #entries: Entry[] = [];
  /** Console and frame bytes held now (completions carry none). */
  #heldBytes = 0;
  readonly #listeners = { console: new Set<(bytes: Uint8Array) => void>(), frame: new Set<(bytes: Uint8Array) => void>() };
  readonly #counters: Record<HeldKind, OutputCounters> = { completion: emptyCounters(), console: emptyCounters(), frame: emptyCounters() };
  /** Numbering of carried output in this session: the next number, how many are out, and what was last told. */
  #nextCarry = 0;
  #carryReleased = 0;
  #carryReported = 0;
  #toCarry: CarriedOutput[] = [];

  constructor(private readonly options: OutputCommitOptions = {}) {}

  /** Listeners for console bytes or frames as they are released, in order. */
  onRelease(kind: "console" | "frame", listener: (bytes: Uint8Array) => void): () => void {
    this.#listeners[kind].add(listener);
    return () => this.#listeners[kind].delete(listener);
  }

  /** Counts by kind: held, released and dropped, in items and bytes. */
  counters(kind: HeldKind): Readonly<OutputCounters> {
    return { ...this.#counters[kind] };
  }

  /** Console and frame bytes held now. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Everything held now (each waits for an acknowledgement, or a capture). */
  get size(): number {
    return this.#entries.length;
  }

  /** Completions the guest waits for now. */
  get heldCompletions(): number {
    return this.#entries.reduce((n, entry) => n + (entry.output.kind === "completion" ? 1 : 0), 0);
  }

  /** Whether console bytes or frames wait for a capture (completions wait for the sync that logs their request). */
  get hasUncoveredOutput(): boolean {
    return this.#entries.some((entry) => entry.coveredBy === undefined && entry.output.kind !== "completion");
  }

  /** When the oldest uncovered console bytes or frame were held. */
  get oldestUncoveredAt(): number | undefined {
    return this.#entries.find((entry) => entry.coveredBy === undefined && entry.output.kind !== "completion")?.heldAt;
  }

  /** Holds an output until a sync covers it and is acknowledged. Console bytes and frames over the bound are dropped and counted (false). */
  hold(output: HeldOutput, at: number): boolean {
    const counters = this.#counters[output.kind];
    const bytes = output.kind === "completion" ? 0 : output.bytes.length;
    if (bytes > 0 && this.#heldBytes + bytes > MAX_HELD_OUTPUT_BYTES) {
      counters.dropped++;
      counters.droppedBytes += bytes;
      return false;
    }
    this.#entries.push({ output, coveredBy: undefined, heldAt: at, carryIndex: undefined });
    this.#heldBytes += bytes;
    counters.held++;
    counters.heldBytes += bytes;
    return true;
  }

  /** Passes an output straight through (nothing protects the guest now), counted as released. */
  pass(output: HeldOutput): void {
    this.#emit(output);
  }

  /**
   * The capture of sync `seq` was taken: every console byte and frame held so far is covered by
   * it, and of the completions those of the requests the sync logs (`logged`).
   */
  cover(seq: number, logged: ReadonlySet<HeldOutput>): void {
    for (const entry of this.#entries) {
      if (entry.coveredBy !== undefined) continue;
      if (entry.output.kind === "completion") {
        if (logged.has(entry.output)) entry.coveredBy = seq;
        continue;
      }
      entry.coveredBy = seq;
      entry.carryIndex = this.#nextCarry++;
      this.#toCarry.push({ kind: entry.output.kind, bytes: entry.output.bytes });
    }
  }

  /**
   * The console bytes and frames covered since the last call (for the sync being encoded), with
   * their first number and how many numbered outputs are out; undefined when there is nothing
   * new to carry and nothing more was released since the last call.
   */
  takeCarried(): HeldOutputBatch | undefined {
    if (this.#toCarry.length === 0 && this.#carryReleased === this.#carryReported) return undefined;
    const outputs = this.#toCarry;
    this.#toCarry = [];
    this.#carryReported = this.#carryReleased;
    return { first: this.#nextCarry - outputs.length, released: this.#carryReleased, outputs };
  }

  /** Capture `seq` was taken and is in flight: completions it covers that wait only for a capture go out now. */
  captured(seq: number): void {
    if (!this.#entries.some((entry) => entry.coveredBy === seq && entry.output.kind === "completion" && entry.output.atCapture === true)) return;
    const released: Entry[] = [];
    this.#entries = this.#entries.filter((entry) => {
      const now = entry.coveredBy === seq && entry.output.kind === "completion" && entry.output.atCapture === true;
      if (now) released.push(entry);
      return !now;
    });
    for (const { output } of released) this.#emit(output);
  }

  /** A new secondary's initial copy (sync 0) holds everything so far, whatever covered it before; its session numbers carried output from 0. */
  coverAll(seq: number): void {
    for (const entry of this.#entries) {
      entry.coveredBy = seq;
      entry.carryIndex = undefined;
    }
    this.#nextCarry = this.#carryReleased = this.#carryReported = 0;
    this.#toCarry = [];
  }

  /** The secondary lost syncs after `lastAcknowledged` with the session: what they covered waits for a new cover. */
  uncoverAfter(lastAcknowledged: number): void {
    for (const entry of this.#entries) {
      if (entry.coveredBy === undefined || entry.coveredBy <= lastAcknowledged) continue;
      entry.coveredBy = undefined;
      entry.carryIndex = undefined;
    }
  }

  /** Sync `seq` is acknowledged: entries it (or an earlier sync) covers go out, from the oldest, up to the first that is not covered yet. */
  acknowledged(seq: number): void {
    let count = 0;
    while (count < this.#entries.length && this.#entries[count]!.coveredBy !== undefined && this.#entries[count]!.coveredBy! <= seq) count++;
    this.#releaseFirst(count);
  }

  /** Nothing protects the guest any more: everything held goes out now, in order. */
  releaseAll(): void {
    this.#releaseFirst(this.#entries.length);
  }

  /** A fenced primary's guest is not the real one: its held console bytes and frames are dropped; completions stay held (its guest never runs again). */
  discardOutput(): void {
    const kept: Entry[] = [];
    for (const entry of this.#entries) {
      if (entry.output.kind === "completion") {
        kept.push(entry);
        continue;
      }
      const counters = this.#counters[entry.output.kind];
      counters.dropped++;
      counters.droppedBytes += entry.output.bytes.length;
      this.#heldBytes -= entry.output.bytes.length;
    }
    this.#entries = kept;
  }

  #releaseFirst(count: number): void {
    if (count === 0) return;
    const released = this.#entries.splice(0, count);
    for (const { output, heldAt, carryIndex } of released) {
      if (carryIndex !== undefined) this.#carryReleased = Math.max(this.#carryReleased, carryIndex + 1);
      if (output.kind !== "completion") {
        this.#heldBytes -= output.bytes.length;
        this.options.released?.(output.kind, heldAt);
      }
      this.#emit(output);
    }
  }

  #emit(output: HeldOutput): void {
    const counters = this.#counters[output.kind];
    counters.released++;
    if (output.kind === "completion") return output.release();
    counters.releasedBytes += output.bytes.length;
    for (const listener of this.#listeners[output.kind]) listener(output.bytes);
  }
}
