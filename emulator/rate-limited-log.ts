// Warnings about guest misbehaviour, at a bounded rate: a guest that sends
// garbage in a loop must not flood the host's log.

export type LogSink = (line: string) => void;

export class RateLimitedLog {
  #windowStart = -Infinity;
  #inWindow = 0;
  #suppressed = 0;

  constructor(
    private readonly prefix: string,
    private readonly sink: LogSink = (line) => console.warn(line),
    private readonly perWindow = 5,
    private readonly windowMs = 10_000,
  ) {}

  warn(message: string): void {
    const now = Date.now();
    if (now - this.#windowStart >= this.windowMs) {
      if (this.#suppressed > 0) this.sink(`${this.prefix}: ${this.#suppressed} more warnings suppressed`);
      this.#windowStart = now;
      this.#inWindow = 0;
      this.#suppressed = 0;
    }
    if (this.#inWindow < this.perWindow) {
      this.#inWindow++;
      this.sink(`${this.prefix}: ${message}`);
    } else {
      this.#suppressed++;
    }
  }
}
