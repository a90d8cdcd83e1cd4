// The block-layer I/O log: every request a disk takes emits an event, at the
// moment the guest submits it, naming the guest-physical buffers it uses. A
// replication engine subscribes here; its listener may return a promise (a gate)
// that holds the request's completion until it settles.

export type BlockIoType = "read" | "write" | "flush";

/** A data buffer of a request in guest-physical memory. */
export interface GuestSegment {
  readonly gpa: number;
  readonly length: number;
}

export interface BlockIoEvent {
  /** The disk's id. */
  readonly disk: string;
  readonly type: BlockIoType;
  /** First sector (0 for a flush). */
  readonly sector: number;
  /** Sectors covered (0 for a flush). */
  readonly sectors: number;
  /** In request order; their bytes at event time are what a write stores. */
  readonly segments: readonly GuestSegment[];
  /** A write's bytes as submitted (the copy the backend gets); absent for reads and flushes. */
  readonly data?: Uint8Array;
}

/** Returns nothing, or a gate: completion waits for it, a rejection fails the request (IOERR). */
export type BlockIoListener = (event: BlockIoEvent) => void | Promise<void>;

export class BlockHook {
  readonly #listeners = new Set<BlockIoListener>();

  /** Returns a function that unsubscribes. */
  subscribe(listener: BlockIoListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Calls every listener synchronously. Returns `undefined` when nobody gated the
   * request, else a promise of all gates. Never throws: a listener that throws
   * counts as a rejected gate.
   */
  emit(event: BlockIoEvent): Promise<void> | undefined {
    let gates: Promise<void>[] | undefined;
    for (const listener of this.#listeners) {
      let gate: void | Promise<void>;
      try {
        gate = listener(event);
      } catch (error) {
        gate = Promise.reject(error);
      }
      if (gate !== undefined) (gates ??= []).push(Promise.resolve(gate));
    }
    return gates === undefined ? undefined : Promise.all(gates).then(() => undefined);
  }
}
