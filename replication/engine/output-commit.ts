// Output commit: what the guest prints reaches the outside world only once the secondary
// holds a state at least as new as the moment it was printed, so that after a failover
// nothing anyone saw is unknown to the surviving replica. Bytes are held "uncovered" until
// a capture covers them (its sync number), and released when that sync is acknowledged.

interface HeldChunk {
  /** The sync whose capture covers the chunk; undefined until one does. */
  coveredBySeq: number | undefined;
  bytes: Uint8Array;
}

/** Held output beyond this (a stalled primary whose guest keeps printing) is dropped and counted. */
export const MAX_HELD_OUTPUT_BYTES = 4 << 20;

export class OutputCommit {
  /** Bytes dropped because the held output was full. */
  droppedBytes = 0;
  /** Held chunks, oldest first. */
  #held: HeldChunk[] = [];
  #listeners = new Set<(bytes: Uint8Array) => void>();
  #heldBytes = 0;

  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Whether output printed since the last capture waits for one. */
  get hasUncovered(): boolean {
    return this.#held.length > 0 && this.#held.at(-1)!.coveredBySeq === undefined;
  }

  onRelease(listener: (bytes: Uint8Array) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Guest output that must wait for the secondary. */
  hold(bytes: Uint8Array): void {
    if (this.#heldBytes + bytes.length > MAX_HELD_OUTPUT_BYTES) {
      this.droppedBytes += bytes.length;
      return;
    }
    this.#held.push({ coveredBySeq: undefined, bytes });
    this.#heldBytes += bytes.length;
  }

  /** A capture for sync `seq` was taken: everything held and not yet covered is covered by it. */
  cover(seq: number): void {
    for (let i = this.#held.length - 1; i >= 0 && this.#held[i]!.coveredBySeq === undefined; i--) this.#held[i]!.coveredBySeq = seq;
  }

  /** A new session's initial copy (seq 0) covers everything held so far, whatever covered it before. */
  coverAllByInitialCopy(): void {
    for (const chunk of this.#held) chunk.coveredBySeq = 0;
  }

  /** The secondary acknowledged sync `seq`: everything it covers goes out, in order. */
  acknowledged(seq: number): void {
    let released = 0;
    while (released < this.#held.length && this.#held[released]!.coveredBySeq !== undefined && this.#held[released]!.coveredBySeq! <= seq) released++;
    this.#emit(this.#held.splice(0, released));
  }

  /** Unprotected from now on (no secondary): everything held goes out now. */
  releaseAll(): void {
    this.#emit(this.#held.splice(0));
  }

  /** A fenced primary's guest is not the real one any more: what it printed is dropped. */
  discardAll(): void {
    this.#held = [];
    this.#heldBytes = 0;
  }

  #emit(chunks: HeldChunk[]): void {
    for (const { bytes } of chunks) {
      this.#heldBytes -= bytes.length;
      for (const listener of this.#listeners) listener(bytes);
    }
  }
}
