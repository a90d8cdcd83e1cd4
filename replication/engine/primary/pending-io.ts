// What the next sync's I/O log will carry: the guest's requests since the last capture, in
// submission order, and the reads whose pages may travel as a log entry instead (read-replay).
// A read may be replayed only if no write submitted after it, and logged before the capture,
// touches its sectors: the secondary's disk holds that write by the time it replays the read.
import type { BlockIoEvent } from "../../../emulator/block/hook.ts";
import { MAX_IO_LOG_ENTRIES, MAX_SYNC_DISK_BYTES } from "../../protocol/limits.ts";
import type { SectorRange } from "../consistency-check.ts";
import type { HeldOutput } from "./output-commit.ts";

/** A guest request the next sync logs. */
export interface PendingRequest {
  readonly event: BlockIoEvent;
  /** When the guest submitted it (performance.now()). */
  readonly submittedAt: number;
  /** Submission order among all of the guest's requests (reads included). */
  readonly order: number;
  /** Its data travels whatever memory holds (a repair of the secondary's disk, not the guest's own write). */
  readonly forceInline?: boolean;
  /** Its completion, held in the output-commit queue, when the guest waits for it. */
  readonly completion?: HeldOutput;
}

/** A read that completed since the last capture, with what landed in guest memory. */
export interface CompletedRead {
  readonly event: BlockIoEvent;
  readonly data: Uint8Array;
  readonly order: number;
}

interface LoggedWrite {
  order: number;
  disk: string;
  sector: number;
  sectors: number;
}

export class PendingIo {
  #requests: PendingRequest[] = [];
  /** Of #requests: those whose completion the guest waits for, and the write data they keep. */
  #heldCompletions = 0;
  #dataBytes = 0;
  #nextOrder = 1;
  readonly #orderOf = new WeakMap<BlockIoEvent, number>();
  /** Reads submitted and not completed, by order: a write logged meanwhile may change what they read. */
  readonly #readsInFlight = new Set<number>();
  #completedReads: CompletedRead[] = [];
  /** Writes logged while reads were outstanding (see takeReplayableReads). */
  #writesLoggedDuringReads: LoggedWrite[] = [];

  /** Numbers a request in submission order. */
  submitted(event: BlockIoEvent): number {
    const order = this.#nextOrder++;
    this.#orderOf.set(event, order);
    return order;
  }

  /** A number for a request the engine makes itself (a repair). */
  nextOrder(): number {
    return this.#nextOrder++;
  }

  get count(): number {
    return this.#requests.length;
  }

  get oldestSubmittedAt(): number | undefined {
    return this.#requests[0]?.submittedAt;
  }

  /** Whether the guest waits for the completion of a request not logged yet. */
  get holdsCompletion(): boolean {
    return this.#heldCompletions > 0;
  }

  /** Bytes of write data the requests not logged yet keep (each write's copy as submitted). */
  get dataBytes(): number {
    return this.#dataBytes;
  }

  add(request: PendingRequest): void {
    this.#requests.push(request);
    this.#count(request, 1);
  }

  /** The requests one sync logs: all of them, unless their data would make it too large. */
  takeBatch(carriesData: boolean): PendingRequest[] {
    let bytes = 0;
    let count = 0;
    for (const { event } of this.#requests) {
      const carried = carriesData ? (event.data?.length ?? 0) : 0;
      if (count > 0 && (count >= MAX_IO_LOG_ENTRIES || bytes + carried > MAX_SYNC_DISK_BYTES)) break;
      bytes += carried;
      count++;
    }
    const batch = this.#requests.splice(0, count);
    for (const request of batch) this.#count(request, -1);
    return batch;
  }

  /** Everything so far is covered otherwise (an initial copy holds it, or nothing protects the guest): forget it. */
  clear(): void {
    this.#requests = [];
    this.#heldCompletions = 0;
    this.#dataBytes = 0;
    this.#readsInFlight.clear();
    this.#completedReads = [];
    this.#writesLoggedDuringReads = [];
  }

  /** Writes the guest submitted and no sync has logged yet, overlapping `range` of `disk`. */
  writesOverlapping(disk: string, range: SectorRange): SectorRange[] {
    return this.#requests
      .filter(({ event }) => event.type === "write" && event.disk === disk && overlaps(range, event))
      .map(({ event }) => ({ sector: event.sector, sectors: event.sectors }));
  }

  #count(request: PendingRequest, sign: 1 | -1): void {
    if (request.completion !== undefined) this.#heldCompletions += sign;
    this.#dataBytes += sign * (request.event.data?.length ?? 0);
  }

  // ------------------------------------------------------------ read-replay

  readStarted(event: BlockIoEvent): void {
    const order = this.#orderOf.get(event);
    if (order !== undefined) this.#readsInFlight.add(order);
  }

  /** A read's data landed in guest memory: a candidate for the next capture, if it was tracked from its start. */
  readCompleted(event: BlockIoEvent, data: Uint8Array | undefined): void {
    const order = this.#orderOf.get(event);
    if (order === undefined || !this.#readsInFlight.delete(order)) return;
    if (data !== undefined) this.#completedReads.push({ event, data, order });
  }

  /** The completed reads a capture may replay (see the top of this file). */
  takeReplayableReads(): CompletedRead[] {
    const reads = this.#completedReads.splice(0);
    return reads.filter(
      (read) =>
        !this.#writesLoggedDuringReads.some(
          (w) =>
            w.order > read.order && w.disk === read.event.disk && w.sector < read.event.sector + read.event.sectors && read.event.sector < w.sector + w.sectors,
        ),
    );
  }

  /** Remembers the writes a capture logged while reads are outstanding, and forgets what no read can need. */
  noteLogged(requests: readonly PendingRequest[]): void {
    const oldestRead = Math.min(...this.#readsInFlight, ...this.#completedReads.map((r) => r.order));
    this.#writesLoggedDuringReads = this.#writesLoggedDuringReads.filter((w) => w.order > oldestRead);
    if (!Number.isFinite(oldestRead)) return;
    for (const { event, order } of requests) {
      if (event.type === "write" && order > oldestRead)
        this.#writesLoggedDuringReads.push({ order, disk: event.disk, sector: event.sector, sectors: event.sectors });
    }
  }
}

export function overlaps(range: SectorRange, extent: { sector: number; sectors: number }): boolean {
  return extent.sector < range.sector + range.sectors && range.sector < extent.sector + extent.sectors;
}
