// The secondary's replica: RAM (a machine that never runs until it takes over), the device
// state as of the last committed sync, and its own disks. A sync is applied all or nothing:
// everything that can be refused (a state delta that does not fit the part it names) is
// checked before RAM, state or disks change; then pages, state and the I/O log's disk
// operations (replayed from the replica's own memory, or the inline data) are applied. Disk
// operations run in order per disk; the first one that fails makes the replica inconsistent
// for good, and a replica that is not consistent cannot be promoted.
import { gatherSegments } from "../../../emulator/block/segments.ts";
import { ProtocolError } from "../../protocol/errors.ts";
import type { DiskBlocksFrame, HeldOutputBatch, IoLogEntry, MemoryPagesFrame, PageUpdate, PartChange } from "../../protocol/frames.ts";
import { applyPages } from "../../protocol/page-collect.ts";
import { applyRunDelta } from "../../protocol/run-delta.ts";
import type { DiskDescriptor } from "../../protocol/messages.ts";
import { diskDigest } from "../disk-image.ts";
import type { GuestDisk, ReplicaGuest } from "../guest.ts";
import type { LoggedIo } from "../sync-event.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../../emulator/units.ts";

/** One sync as the assembler hands it over: every frame of seq N, checked for order and counts. */
export interface CommittedSync {
  seq: number;
  pages: PageUpdate[];
  /** State part count after the sync, and the changed parts; undefined when no state changed. */
  state: { partCount: number; changes: PartChange[] } | undefined;
  log: IoLogEntry[];
  blocks: DiskBlocksFrame[];
  /** The guest's output the sync's capture covers (held-output frames), for a takeover to let out. */
  output: HeldOutputBatch[];
}

/** Disk data queued but not yet written above this: acknowledgements wait (backpressure to the primary). */
export const MAX_DISK_BACKLOG_BYTES = 256 << 20;

export class Replica {
  readonly #guest: ReplicaGuest;
  /** The primary's disk numbers of this session, mapped to our disks. */
  #disks = new Map<number, GuestDisk>();
  #parts: Uint8Array[] = [];
  /** Per disk (by the primary's number): the tail of its queue of operations. */
  #chains = new Map<number, Promise<void>>();
  #backlogBytes = 0;
  #backlogWaiters: (() => void)[] = [];
  #failure: string | undefined;
  #expectedDigests = new Map<number, string>();
  #onFailure: (reason: string) => void;

  constructor(guest: ReplicaGuest, onFailure: (reason: string) => void) {
    this.#guest = guest;
    this.#onFailure = onFailure;
  }

  /** Why the replica is not usable any more (a disk operation failed), if it is not. */
  get failure(): string | undefined {
    return this.#failure;
  }

  get hasState(): boolean {
    return this.#parts.length > 0;
  }

  // ------------------------------------------------------------ initial sync

  /** Starts a full copy: maps the primary's disks to ours (same name and size), or says why not. */
  beginInitial(memoryBytes: number, disks: readonly DiskDescriptor[]): string | undefined {
    if (memoryBytes !== this.#guest.memoryBytes) return `the primary has ${memoryBytes} bytes of RAM, this replica ${this.#guest.memoryBytes}`;
    const mapped = new Map<number, GuestDisk>();
    const expected = new Map<number, string>();
    for (const descriptor of disks) {
      const disk = this.#guest.disks.find((d) => d.name === descriptor.name);
      if (disk === undefined || disk.backend.sizeBytes !== descriptor.sizeBytes) {
        return `the primary's disk ${descriptor.name} (${descriptor.sizeBytes} bytes) has no equal-sized disk here`;
      }
      mapped.set(descriptor.id, disk);
      // Announced with a digest: we hold it already and must prove it at init-end.
      if (descriptor.sha256 !== undefined) expected.set(descriptor.id, descriptor.sha256);
    }
    this.#disks = mapped;
    this.#expectedDigests = expected;
    this.#parts = [];
    this.#failure = undefined;
    this.#chains = new Map([...mapped.keys()].map((id) => [id, Promise.resolve()]));
    return undefined;
  }

  writeInitialPages(frame: MemoryPagesFrame): void {
    applyPages(frame, this.#guest.ram());
  }

  setInitialState(parts: Uint8Array[]): void {
    this.#parts = parts;
  }

  /** Queues a chunk of the disk copy; resolves when the backlog allows more. */
  writeChunk(disk: number, offset: number, data: Uint8Array): Promise<void> {
    this.#queue(disk, data.length, (backend) => backend.write(offset / SECTOR_SIZE, data), `writing the copy of disk ${disk} at ${offset}`);
    return this.belowBacklog();
  }

  expectDigest(disk: number, sha256: string): void {
    this.#expectedDigests.set(disk, sha256);
  }

  /** Waits for the copy to be on disk and checks every disk against the primary's digest; returns why not, or undefined. */
  async finishInitial(): Promise<string | undefined> {
    await this.settled();
    if (this.#failure !== undefined) return this.#failure;
    for (const [id, disk] of this.#disks) {
      const expected = this.#expectedDigests.get(id);
      if (expected === undefined) return `no digest for disk ${disk.name}`;
      if ((await diskDigest(disk.backend)) !== expected) return `disk ${disk.name} differs from the primary's after the copy`;
    }
    // The copy is what a takeover starts from: make it durable.
    await Promise.all([...this.#disks.values()].map((disk) => disk.backend.flush()));
    return undefined;
  }

  // ------------------------------------------------------------ event-driven syncs

  /**
   * Applies one sync. Throws ProtocolError, before changing anything, when a state delta does
   * not fit the part it names. Disk writes and flushes are queued (see `settled`); read-replay
   * entries are read from our disk into the replica's memory in log order, so a later write
   * of the same sync gathers what they filled. `replayed` resolves once the log's reads are in
   * memory (the next sync's pages must not land before them); the disk writes may still be
   * queued then: `settled()` waits for those, and a takeover waits for it.
   */
  apply(sync: CommittedSync): { io: LoggedIo[]; replayed: Promise<void> } {
    const parts = sync.state === undefined ? undefined : this.#nextParts(sync.seq, sync.state.partCount, sync.state.changes);
    // Nothing below can fail: pages were checked by the frame decoder, extents by SessionOrder.
    const ram = this.#guest.ram();
    for (const { page, encoding, bytes } of sync.pages) {
      const at = page * PAGE_SIZE;
      if (encoding === "zero") ram.fill(0, at, at + PAGE_SIZE);
      else if (encoding === "full") ram.set(bytes, at);
      else applyRunDelta(bytes, PAGE_SIZE, ram.subarray(at, at + PAGE_SIZE), `page ${page}`);
    }
    if (parts !== undefined) this.#parts = parts;
    const io = sync.log.map((entry): LoggedIo => {
      if (entry.type === "flush") return { disk: entry.disk, type: "flush", sector: 0, sectors: 0, segments: [], delivery: "flush" };
      const delivery = entry.type === "read" ? "read-replayed" : entry.inline === true ? "inline" : "replayed";
      return { disk: entry.disk, type: entry.type, sector: entry.sector, sectors: entry.sectors, segments: entry.segments, delivery };
    });
    const entries = sync.log[Symbol.iterator]();
    let blockIndex = 0;
    /** Runs the log from where it stands; at a read it waits for the data to be in memory. */
    const run = async (): Promise<void> => {
      for (const entry of entries) {
        if (entry.type === "read") {
          const data = await this.#queueRead(
            entry.disk,
            entry.sector,
            entry.sectors * SECTOR_SIZE,
            `replaying a read of sectors ${entry.sector}+${entry.sectors} of disk ${entry.disk}`,
          );
          if (data !== undefined) scatterInto(this.#guest.ram(), entry.segments, data);
          continue;
        }
        if (entry.type === "flush") {
          this.#queue(entry.disk, 0, (backend) => backend.flush(), `flushing disk ${entry.disk}`);
          continue;
        }
        let data: Uint8Array;
        if (entry.inline === true) {
          // SessionOrder checked that the next frames cover exactly this write.
          const pieces: Uint8Array[] = [];
          for (let covered = 0; covered < entry.sectors; covered += pieces.at(-1)!.length / SECTOR_SIZE) pieces.push(sync.blocks[blockIndex++]!.data);
          data = pieces.length === 1 ? pieces[0]! : concat(pieces);
        } else {
          data = gatherSegments(this.#guest.ram(), entry.segments);
        }
        this.#queue(
          entry.disk,
          data.length,
          (backend) => backend.write(entry.sector, data),
          `writing sectors ${entry.sector}+${entry.sectors} of disk ${entry.disk}`,
        );
      }
    };
    // Without reads the whole log is queued right here, synchronously.
    const logged = sync.log.some((entry) => entry.type === "read") ? run() : (void run(), Promise.resolve());
    return { io, replayed: logged };
  }

  #nextParts(seq: number, partCount: number, changes: readonly PartChange[]): Uint8Array[] {
    const next: (Uint8Array | undefined)[] = this.#parts.slice(0, partCount);
    next.length = partCount;
    for (const change of changes) {
      if (change.encoding === "full") {
        next[change.index] = change.bytes;
        continue;
      }
      const base = this.#parts[change.index];
      if (base === undefined) throw new ProtocolError("inconsistent", `sync ${seq}: a delta for state part ${change.index}, which this replica does not have`);
      // applyRunDelta checks the whole delta before it writes, and `out` is ours alone.
      const out = new Uint8Array(change.length);
      out.set(base.subarray(0, Math.min(base.length, change.length)));
      applyRunDelta(change.bytes, base.length, out, `sync ${seq} state part ${change.index}`);
      next[change.index] = out;
    }
    const missing = next.findIndex((part) => part === undefined);
    if (missing >= 0) throw new ProtocolError("inconsistent", `sync ${seq}: state part ${missing} is new but was not sent`);
    return next as Uint8Array[];
  }

  // ------------------------------------------------------------ consistency checks

  /** A copy of a range of the replica's RAM as it is now (the last applied sync). */
  copyRam(offset: number, length: number): Uint8Array {
    return this.#guest.ram().slice(offset, offset + length);
  }

  /** A range of one of our disks as of every operation queued so far (the last applied sync); undefined if the disk failed. */
  readDisk(disk: number, offset: number, length: number): Promise<Uint8Array | undefined> {
    return this.#queueRead(disk, offset / SECTOR_SIZE, length, `reading disk ${disk} at ${offset} for a consistency check`);
  }

  // ------------------------------------------------------------ takeover

  /** Resolves once every queued disk operation has run (whether or not one failed: see `failure`). */
  async settled(): Promise<void> {
    await Promise.all(this.#chains.values());
  }

  /**
   * Waits for the disks and makes them durable; then loads the last committed state and runs
   * the guest. Resolves with how long each step took (ms), for the takeover's log line.
   * (Making them durable behind the running guest instead was tried: no faster answer from the
   * guest in a campaign, and more slow ones.)
   */
  async start(): Promise<{ settledMs: number; flushedMs: number; loadedMs: number }> {
    const began = performance.now();
    await this.settled();
    if (this.#failure !== undefined) throw new Error(`the replica is not consistent: ${this.#failure}`);
    const settledAt = performance.now();
    await Promise.all([...this.#disks.values()].map((disk) => disk.backend.flush()));
    const flushedAt = performance.now();
    this.#guest.start(this.#parts);
    return { settledMs: settledAt - began, flushedMs: flushedAt - settledAt, loadedMs: performance.now() - flushedAt };
  }

  belowBacklog(): Promise<void> {
    if (this.#backlogBytes <= MAX_DISK_BACKLOG_BYTES) return Promise.resolve();
    return new Promise((resolve) => this.#backlogWaiters.push(resolve));
  }

  #queue(diskNumber: number, bytes: number, operation: (backend: GuestDisk["backend"]) => Promise<void>, what: string): void {
    const disk = this.#disks.get(diskNumber);
    const tail = this.#chains.get(diskNumber);
    if (disk === undefined || tail === undefined) throw new ProtocolError("inconsistent", `disk ${diskNumber} is not part of this session`);
    this.#backlogBytes += bytes;
    this.#chains.set(
      diskNumber,
      tail.then(async () => {
        try {
          if (this.#failure === undefined) await operation(disk.backend);
        } catch (error) {
          this.#fail(`${what} failed: ${(error as Error).message}`);
        } finally {
          this.#backlogBytes -= bytes;
          if (this.#backlogBytes <= MAX_DISK_BACKLOG_BYTES) for (const resolve of this.#backlogWaiters.splice(0)) resolve();
        }
      }),
    );
  }

  /** Reads from a disk after everything queued on it; undefined when the disk failed. */
  #queueRead(diskNumber: number, sector: number, length: number, what: string): Promise<Uint8Array | undefined> {
    let data: Uint8Array | undefined;
    this.#queue(
      diskNumber,
      0,
      async (backend) => {
        data = await backend.read(sector, length);
      },
      what,
    );
    return this.#chains.get(diskNumber)!.then(() => data);
  }

  #fail(reason: string): void {
    if (this.#failure !== undefined) return;
    this.#failure = reason;
    this.#onFailure(reason);
  }
}

/** Spreads `data` over guest-physical segments, in order. */
function scatterInto(ram: Uint8Array, segments: readonly { gpa: number; length: number }[], data: Uint8Array): void {
  let at = 0;
  for (const { gpa, length } of segments) {
    ram.set(data.subarray(at, at + length), gpa);
    at += length;
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
