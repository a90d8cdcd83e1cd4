// Output commit: what the guest prints reaches the outside world only once the
// secondary holds a state at least as new as the moment it was printed, so that
// after a failover nothing anyone saw is unknown to the surviving replica.

export class OutputCommit {
  /** Chunks waiting for the sync that will cover them, oldest first. */
  #held: { coveredBySeq: number; bytes: Uint8Array }[] = [];
  #listeners = new Set<(bytes: Uint8Array) => void>();
  #heldBytes = 0;

  get heldBytes(): number {
    return this.#heldBytes;
  }

  get hasHeld(): boolean {
    return this.#held.length > 0;
  }

  onRelease(listener: (bytes: Uint8Array) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Guest output produced before the capture of sync `nextSeq`. */
  hold(bytes: Uint8Array, nextSeq: number): void {
    this.#held.push({ coveredBySeq: nextSeq, bytes });
    this.#heldBytes += bytes.length;
  }

  /** The secondary acknowledged sync `seq`: everything it covers goes out, in order. */
  acknowledged(seq: number): void {
    let released = 0;
    while (released < this.#held.length && this.#held[released]!.coveredBySeq <= seq) released++;
    this.#emit(this.#held.splice(0, released));
  }

  /** A new session's initial copy covers everything held so far: it goes out when that copy is acked. */
  coverHeldBy(seq: number): void {
    for (const chunk of this.#held) chunk.coveredBySeq = seq;
  }

  /** Unprotected from now on (no secondary): output flows straight through. */
  releaseAll(): void {
    this.#emit(this.#held.splice(0));
  }

  #emit(chunks: { bytes: Uint8Array }[]): void {
    for (const { bytes } of chunks) {
      this.#heldBytes -= bytes.length;
      for (const listener of this.#listeners) listener(bytes);
    }
  }
}
