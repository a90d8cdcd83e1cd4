// When to capture: as soon as there is work (a request to log, output to cover, a sync asked
// for) and the engine may capture (a secondary protects the guest, and the window of syncs in
// flight has room). One explicit state: either nothing is asked of the guest, or one capture
// waits for its next instruction boundary. Whether there is work is not remembered here: the
// engine derives it from its queues each time.

export type CaptureSchedulerState = "idle" | "at-boundary";

export interface CaptureSchedulerHost {
  /** Work waits for a capture. */
  wanted(): boolean;
  /** A capture may start now (protected, room in the window). */
  allowed(): boolean;
  /** Runs one capture at the guest's next instruction boundary and sends it; settles when the capture is taken. */
  capture(): Promise<void>;
  /** The capture failed: the engine loses its secondary. */
  failed(error: Error): void;
}

export class CaptureScheduler {
  #state: CaptureSchedulerState = "idle";

  constructor(private readonly host: CaptureSchedulerHost) {}

  get state(): CaptureSchedulerState {
    return this.#state;
  }

  /** Asks for a capture if there is work, room and none is waiting already. Call whenever any of them may have changed. */
  wake(): void {
    if (this.#state !== "idle" || !this.host.allowed() || !this.host.wanted()) return;
    this.#state = "at-boundary";
    this.host.capture().then(
      () => {
        this.#state = "idle";
        this.wake();
      },
      (error: unknown) => {
        this.#state = "idle";
        this.host.failed(error as Error);
      },
    );
  }
}
