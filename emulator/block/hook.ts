// The block-layer I/O log: every request a disk takes emits an event, at the
// moment the guest submits it, naming the guest-physical buffers it uses. A
// replication engine subscribes here; its listener may return a promise (a gate)
// that holds the request's completion until it settles. It also hears when a
// request's data has landed in guest memory (a read's DMA), and may take over a
// request whose disk failed (a secondary with a healthy disk completes it instead).

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

/** A request completed and the guest is about to be told; a successful read's `readData` has landed in guest memory. */
export type BlockCompletionListener = (event: BlockIoEvent, outcome: { ok: boolean; readData?: Uint8Array }) => void;

/**
 * The disk itself failed a request. Return undefined to let it fail (the guest gets IOERR),
 * or a promise to decide later: true when someone else took the request over (a secondary
 * with a healthy disk runs it: it never completes here), false to fail it after all.
 */
export type BackendFailureHandler = (event: BlockIoEvent, error: Error) => Promise<boolean> | undefined;

export class BlockHook {
  readonly #listeners = new Set<BlockIoListener>();
  readonly #completionListeners = new Set<BlockCompletionListener>();
  readonly #failureHandlers = new Set<BackendFailureHandler>();

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
  onCompleted(listener: BlockCompletionListener): () => void {
    this.#completionListeners.add(listener);
    return () => this.#completionListeners.delete(listener);
  }

  onBackendFailure(handler: BackendFailureHandler): () => void {
    this.#failureHandlers.add(handler);
    return () => this.#failureHandlers.delete(handler);
  }

  /** Tells the completion listeners (a listener that throws is skipped: completions must go on). */
  completed(event: BlockIoEvent, outcome: { ok: boolean; readData?: Uint8Array }): void {
    for (const listener of this.#completionListeners) {
      try {
        listener(event, outcome);
      } catch {
        // a broken listener must not stop the guest's I/O
      }
    }
  }

  /** Resolves true when a handler took the failed request over, false when the guest is to get the error. */
  async backendFailed(event: BlockIoEvent, error: Error): Promise<boolean> {
    const decisions: Promise<boolean>[] = [];
    for (const handler of this.#failureHandlers) {
      try {
        const decision = handler(event, error);
        if (decision !== undefined) decisions.push(decision.catch(() => false));
      } catch {
        // as above
      }
    }
    return (await Promise.all(decisions)).some(Boolean);
  }

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
