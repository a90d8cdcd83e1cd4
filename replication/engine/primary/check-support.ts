// What the primary lends consistency checks (consistency-check.ts): work to run at the next
// capture's boundary, digests from the secondary, the guest's writes to a range while a check
// reads it, and repairs that ride in the next sync (disk data as writes, RAM pages whole).
import type { BlockIoEvent } from "../../../emulator/block/hook.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../../emulator/units.ts";
import type { ControlMessage } from "../../protocol/messages.ts";
import type { CheckHost, SectorRange } from "../consistency-check.ts";
import type { PrimaryGuest } from "../guest.ts";
import { overlaps, type PendingIo } from "./pending-io.ts";
import type { PrimarySession } from "./session.ts";

/** What the checks need of the engine. */
export interface CheckEngine {
  readonly guest: PrimaryGuest;
  readonly pending: PendingIo;
  /** Why checks cannot run now, or undefined when the guest is protected. */
  unprotectedReason(): string | undefined;
  session(): PrimarySession | undefined;
  /** Asks for a capture (work was added). */
  wake(): void;
}

export class CheckSupport {
  /** Run at the next capture's boundary, after its pages and requests were taken. */
  #tasks: { run: (seq: number) => ControlMessage[]; requestedAt: number }[] = [];
  /** Replica pages a check found wrong: the next sync sends them whole. */
  readonly #forcedPages = new Set<number>();
  #forcedSince: number | undefined;
  readonly #watchers = new Set<{ disk: string; range: SectorRange; hits: SectorRange[] }>();
  #nextId = 1;

  constructor(private readonly engine: CheckEngine) {}

  /** Whether a check waits for a capture. */
  get wantsCapture(): boolean {
    return this.#tasks.length > 0 || this.#forcedPages.size > 0;
  }

  /** Since when a check waits for a capture. */
  get waitingSince(): number | undefined {
    const times = [...this.#tasks.map((task) => task.requestedAt), ...(this.#forcedSince === undefined ? [] : [this.#forcedSince])];
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /** Every guest write, at submission: checks watching its range hear of it. */
  noteWrite(event: BlockIoEvent): void {
    for (const watcher of this.#watchers)
      if (watcher.disk === event.disk && overlaps(watcher.range, event)) watcher.hits.push({ sector: event.sector, sectors: event.sectors });
  }

  /** At a capture's boundary, before it is encoded: the pages to send whole, with their bytes now. */
  takeForcedPages(ram: Uint8Array): Map<number, Uint8Array> {
    const pages = new Map<number, Uint8Array>();
    for (const page of this.#forcedPages) pages.set(page, ram.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE));
    this.#forcedPages.clear();
    this.#forcedSince = undefined;
    return pages;
  }

  /** At a capture's boundary, after it is encoded: runs the waiting tasks; their messages follow sync `seq`. */
  runTasks(seq: number): ControlMessage[] {
    return this.#tasks.splice(0).flatMap((task) => task.run(seq));
  }

  host(): CheckHost {
    const { guest, pending } = this.engine;
    const diskName = (disk: number) => guest.disks[disk]!.name;
    return {
      memoryBytes: guest.memoryBytes,
      disks: guest.disks,
      atCapture: <T>(task: (seq: number, ram: Uint8Array) => { value: T; after: ControlMessage[] }) =>
        new Promise<T>((resolve, reject) => {
          const reason = this.engine.unprotectedReason();
          if (reason !== undefined) return reject(new Error(`the guest is not protected any more (${reason})`));
          this.#tasks.push({
            run: (seq) => {
              const { value, after } = task(seq, guest.ram());
              resolve(value);
              return after;
            },
            requestedAt: performance.now(),
          });
          this.engine.wake();
        }),
      digestsFor: (id) => {
        const session = this.engine.session();
        return session === undefined ? Promise.reject(new Error("no secondary")) : session.digestsFor(id);
      },
      nextId: () => this.#nextId++,
      watchWrites: (disk, range) => {
        const watcher = { disk: diskName(disk), range, hits: [] as SectorRange[] };
        this.#watchers.add(watcher);
        return { hits: () => watcher.hits, stop: () => void this.#watchers.delete(watcher) };
      },
      heldWrites: (disk, range) => pending.writesOverlapping(diskName(disk), range),
      repairDisk: (disk, sector, data) => {
        const event: BlockIoEvent = { disk: diskName(disk), type: "write", sector, sectors: data.length / SECTOR_SIZE, segments: [], data };
        pending.add({ event, submittedAt: performance.now(), order: pending.nextOrder(), forceInline: true });
        this.engine.wake();
      },
      repairPages: (pages) => {
        for (const page of pages) this.#forcedPages.add(page);
        this.#forcedSince ??= performance.now();
        this.engine.wake();
      },
    };
  }
}
