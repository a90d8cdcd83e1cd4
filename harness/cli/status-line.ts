// The live status of a replicating node: sync rate, bytes/s by category and
// the last sync's latency, from two consecutive metrics snapshots. On a
// terminal it is drawn on the bottom row, which a scroll region keeps out of the
// guest console's way (the guest scrolls in the rows above); elsewhere it is
// printed on demand as an ordinary stderr line.
import { BYTE_CATEGORIES, type ByteCategory } from "../../replication/protocol/frames.ts";
import type { MetricsSnapshot } from "../../replication/engine/metrics.ts";
import { formatBytes } from "./progress.ts";

const CATEGORY_LABELS: Record<ByteCategory, string> = {
  memoryPages: "pages",
  deviceState: "state",
  ioLog: "iolog",
  diskBlocks: "blocks",
  diskCopy: "copy",
  output: "out",
  control: "ctl",
};

export interface Rates {
  syncsPerSecond: number;
  bytesPerSecond: Record<ByteCategory, number>;
}

export function ratesBetween(before: MetricsSnapshot, after: MetricsSnapshot): Rates {
  const seconds = Math.max((after.uptimeMs - before.uptimeMs) / 1000, 1e-3);
  const bytesPerSecond = Object.fromEntries(BYTE_CATEGORIES.map((c) => [c, Math.max(0, after.bytes[c] - before.bytes[c]) / seconds])) as Record<
    ByteCategory,
    number
  >;
  return { syncsPerSecond: Math.max(0, after.syncs - before.syncs) / seconds, bytesPerSecond };
}

/** One line: "primary protected | 12.0 syncs/s | pages 1.2 MiB/s state 40.1 KiB/s | last sync 3.2 ms". */
export function formatStatus(label: string, now: MetricsSnapshot, rates: Rates | undefined): string {
  const parts = [`${label} ${now.state}`];
  if (rates) {
    parts.push(`${rates.syncsPerSecond.toFixed(1)} syncs/s`);
    const flowing = BYTE_CATEGORIES.filter((c) => rates.bytesPerSecond[c] >= 1).map((c) => `${CATEGORY_LABELS[c]} ${formatBytes(rates.bytesPerSecond[c])}/s`);
    parts.push(flowing.length > 0 ? flowing.join(" ") : "no traffic");
  }
  parts.push(`syncs ${now.syncs}`);
  if (now.roundTripMs.count > 0) parts.push(`last sync ${now.roundTripMs.lastMs.toFixed(1)} ms`);
  if (now.failoverMs !== undefined) parts.push(`took over in ${now.failoverMs.toFixed(0)} ms`);
  return parts.join(" | ");
}

/** Remembers the previous snapshot so each new one yields rates. */
export class StatusSampler {
  #previous: MetricsSnapshot | undefined;
  #previousRole: string | undefined;

  line(label: string, snapshot: MetricsSnapshot): string {
    // Rates across a takeover would mix two nodes' counters.
    const rates = this.#previous && this.#previousRole === label ? ratesBetween(this.#previous, snapshot) : undefined;
    this.#previous = snapshot;
    this.#previousRole = label;
    return formatStatus(label, snapshot, rates);
  }
}

/** The bottom terminal row, kept free by a scroll region (DECSTBM) and redrawn in place. */
export class BottomStatusRow {
  readonly #out = process.stderr;
  #active = false;
  #text = "";

  static supported(): boolean {
    return process.stderr.isTTY === true && process.stdout.isTTY === true && (process.stderr.rows ?? 0) >= 4;
  }

  start(): void {
    if (this.#active) return;
    this.#active = true;
    // Scroll once so the bottom row is free, then confine scrolling to the rows above it.
    this.#out.write("\n\x1b[1A");
    this.#applyRegion();
    this.#out.on("resize", this.#onResize);
  }

  draw(text: string): void {
    this.#text = text;
    if (!this.#active) return;
    const rows = this.#out.rows;
    const width = Math.max(1, this.#out.columns - 1);
    // Save cursor, go to the bottom row, draw in reverse video, restore: the guest's cursor never moves.
    this.#out.write(`\x1b7\x1b[${rows};1H\x1b[2K\x1b[7m${text.slice(0, width)}\x1b[0m\x1b8`);
  }

  stop(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#out.off("resize", this.#onResize);
    this.#out.write(`\x1b7\x1b[r\x1b[${this.#out.rows};1H\x1b[2K\x1b8`);
  }

  #applyRegion(): void {
    this.#out.write(`\x1b7\x1b[1;${this.#out.rows - 1}r\x1b8`);
  }

  readonly #onResize = () => {
    this.#applyRegion();
    this.draw(this.#text);
  };
}
