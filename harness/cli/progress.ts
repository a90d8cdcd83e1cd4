// Progress for long work (boot, initial sync) on stderr. On a terminal one line
// is rewritten in place; into a pipe or file a line is written when the work
// changes (a new topic) and then every few seconds, so logs stay readable.
const PIPE_INTERVAL_MS = 5000;

export class ProgressLine {
  #lastPrint = 0;
  #topic: string | undefined;
  #drawn = false;
  readonly #tty = process.stderr.isTTY === true;

  /** `topic` names the work the line is about ("booting", "initial sync"): a new one is printed at once. */
  update(text: string, topic?: string): void {
    if (topic !== this.#topic) {
      this.#topic = topic;
      this.#lastPrint = Number.NEGATIVE_INFINITY;
    }
    if (this.#tty) {
      process.stderr.write(`\r\x1b[2K${text}`);
      this.#drawn = true;
    } else if (performance.now() - this.#lastPrint >= PIPE_INTERVAL_MS) {
      this.#lastPrint = performance.now();
      process.stderr.write(`${text}\n`);
    }
  }

  /** Ends the progress with a final line (or just ends the line). */
  done(text?: string): void {
    if (this.#drawn) process.stderr.write("\r\x1b[2K");
    this.#drawn = false;
    if (text !== undefined) process.stderr.write(`${text}\n`);
  }
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes.toFixed(0)} B`;
  if (bytes < 1 << 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1 << 30) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
