// Consistency verification without stopping the guest: ranges of the replica's RAM and of
// its disks are compared, by digests of chunks, with the primary's as of one sync. The
// primary takes its side at that sync's capture (RAM: a copy at the boundary; a disk: read
// once the writes before the capture are on it, noting any guest write to the range since,
// which makes those chunks inconclusive and checked again), and asks the secondary for its
// digests of the same range as of the same sync. Differing chunks are reported and, when
// asked, repaired: disk chunks travel as writes in the next sync, RAM pages whole.
import type { ControlMessage } from "../protocol/messages.ts";
import { chunkDigests } from "./disk-image.ts";
import type { GuestDisk } from "./guest.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";

export interface SectorRange {
  sector: number;
  sectors: number;
}

/** What the primary engine lends a check. */
export interface CheckHost {
  readonly memoryBytes: number;
  readonly disks: readonly GuestDisk[];
  /** Runs `task` at the next capture's boundary (with guest RAM as captured); its messages follow that sync. */
  atCapture<T>(task: (seq: number, ram: Uint8Array) => { value: T; after: ControlMessage[] }): Promise<T>;
  digestsFor(id: number): Promise<string[]>;
  nextId(): number;
  /** Records the guest's writes to a disk range from now on. */
  watchWrites(disk: number, range: SectorRange): { hits(): SectorRange[]; stop(): void };
  /** Writes submitted but left for a later sync (a capture's batch limit) that overlap the range. */
  heldWrites(disk: number, range: SectorRange): SectorRange[];
  /** Queues `data` as a write of the secondary's disk in the next sync. */
  repairDisk(disk: number, sector: number, data: Uint8Array): void;
  /** Sends these pages whole in the next sync. */
  repairPages(pages: readonly number[]): void;
}

export interface VerifyOptions {
  ram?: boolean;
  disks?: boolean;
  /** Repair what differs (then check it again). */
  repair?: boolean;
  /** Bytes per check (one sync each); default 4 MiB. */
  rangeBytes?: number;
  /** Bytes per digest; default 64 KiB. */
  chunkBytes?: number;
  onProgress?: (line: string) => void;
}

export interface ByteRange {
  offset: number;
  length: number;
}

export interface AreaReport {
  name: string;
  bytes: number;
  /** Chunks that differ (after repair, if asked: those that still differ). */
  differing: ByteRange[];
  /** Chunks the guest kept writing during every try: not compared. */
  inconclusive: ByteRange[];
  /** Chunks that differed and were repaired (and then matched). */
  repaired: ByteRange[];
}

export interface VerifyReport {
  ram: AreaReport | undefined;
  disks: AreaReport[];
  ms: number;
}

const TRIES = 3;

export async function verify(host: CheckHost, options: VerifyOptions = {}): Promise<VerifyReport> {
  const started = performance.now();
  const rangeBytes = options.rangeBytes ?? 4 << 20;
  const chunkBytes = options.chunkBytes ?? 64 << 10;
  if (chunkBytes % PAGE_SIZE !== 0 || rangeBytes % chunkBytes !== 0) throw new RangeError("verify: chunks must be whole pages, ranges whole chunks");
  const ram = options.ram === false ? undefined : await checkArea(host, { kind: "ram", name: "RAM", bytes: host.memoryBytes }, rangeBytes, chunkBytes, options);
  const disks: AreaReport[] = [];
  if (options.disks !== false) {
    for (const [index, disk] of host.disks.entries()) {
      disks.push(await checkArea(host, { kind: "disk", index, name: disk.name, bytes: disk.backend.sizeBytes }, rangeBytes, chunkBytes, options));
    }
  }
  return { ram, disks, ms: performance.now() - started };
}

type Area = { kind: "ram"; name: string; bytes: number } | { kind: "disk"; index: number; name: string; bytes: number };

async function checkArea(host: CheckHost, area: Area, rangeBytes: number, chunkBytes: number, options: VerifyOptions): Promise<AreaReport> {
  const report: AreaReport = { name: area.name, bytes: area.bytes, differing: [], inconclusive: [], repaired: [] };
  for (let offset = 0; offset < area.bytes; offset += rangeBytes) {
    const length = Math.min(rangeBytes, area.bytes - offset);
    let outcome = await checkRange(host, area, offset, length, chunkBytes);
    for (let attempt = 1; attempt < TRIES && outcome.inconclusive.length > 0; attempt++) {
      outcome.watcher?.stop();
      outcome = await checkRange(host, area, offset, length, chunkBytes);
    }
    report.inconclusive.push(...outcome.inconclusive);
    if (outcome.differing.length > 0 && options.repair === true) {
      repair(host, area, outcome);
      const again = await checkRange(host, area, offset, length, chunkBytes);
      again.watcher?.stop();
      const still = again.differing;
      report.repaired.push(...outcome.differing.filter((chunk) => !still.some((s) => s.offset === chunk.offset)));
      report.differing.push(...still);
    } else {
      outcome.watcher?.stop();
      report.differing.push(...outcome.differing);
    }
    options.onProgress?.(
      `${area.name}: ${Math.min(offset + length, area.bytes) >> 20} of ${area.bytes >> 20} MiB checked, ${report.differing.length} chunks differ`,
    );
  }
  return report;
}

interface RangeOutcome {
  differing: ByteRange[];
  inconclusive: ByteRange[];
  /** Our bytes of the range as of the check's sync (what a repair sends). */
  ours: Uint8Array;
  offset: number;
  /** Writes seen since the check began (a repair must not undo them). */
  watcher: ReturnType<CheckHost["watchWrites"]> | undefined;
}

async function checkRange(host: CheckHost, area: Area, offset: number, length: number, chunkBytes: number): Promise<RangeOutcome> {
  const id = host.nextId();
  const sectors: SectorRange = { sector: offset / SECTOR_SIZE, sectors: length / SECTOR_SIZE };
  interface Taken {
    ours: Uint8Array | undefined;
    watcher: ReturnType<CheckHost["watchWrites"]> | undefined;
    held: SectorRange[];
  }
  const {
    ours: oursNow,
    watcher,
    held,
  } = await host.atCapture<Taken>((seq, ram) => {
    const request: ControlMessage = {
      type: "verify-request",
      id,
      seq,
      target: area.kind,
      disk: area.kind === "disk" ? area.index : 0,
      offset,
      length,
      chunkBytes,
    };
    if (area.kind === "ram") return { value: { ours: ram.slice(offset, offset + length), watcher: undefined, held: [] as SectorRange[] }, after: [request] };
    return { value: { ours: undefined, watcher: host.watchWrites(area.index, sectors), held: host.heldWrites(area.index, sectors) }, after: [request] };
  });
  const theirsPromise = host.digestsFor(id);
  let ours = oursNow;
  if (ours === undefined && area.kind === "disk") {
    // Every write up to the capture is on our disk once it is idle; later ones are watched.
    const disk = host.disks[area.index]!;
    await disk.idle();
    ours = await disk.backend.read(sectors.sector, length);
  }
  const [theirs, mine] = await Promise.all([theirsPromise, chunkDigests(ours!, chunkBytes)]);
  const busy = [...held, ...(watcher?.hits() ?? [])];
  const differing: ByteRange[] = [];
  const inconclusive: ByteRange[] = [];
  mine.forEach((digest, i) => {
    const chunk = { offset: offset + i * chunkBytes, length: Math.min(chunkBytes, length - i * chunkBytes) };
    const first = chunk.offset / SECTOR_SIZE;
    if (busy.some((w) => w.sector < first + chunk.length / SECTOR_SIZE && first < w.sector + w.sectors)) inconclusive.push(chunk);
    else if (digest !== theirs[i]) differing.push(chunk);
  });
  return { differing, inconclusive, ours: ours!, offset, watcher };
}

function repair(host: CheckHost, area: Area, outcome: RangeOutcome): void {
  if (area.kind === "ram") {
    host.repairPages(outcome.differing.flatMap((chunk) => Array.from({ length: chunk.length / PAGE_SIZE }, (_, k) => chunk.offset / PAGE_SIZE + k)));
    return;
  }
  const written = outcome.watcher?.hits() ?? [];
  outcome.watcher?.stop();
  for (const chunk of outcome.differing) {
    const first = chunk.offset / SECTOR_SIZE;
    // A guest write since the check holds newer data than ours: its own sync carries it.
    if (written.some((w) => w.sector < first + chunk.length / SECTOR_SIZE && first < w.sector + w.sectors)) continue;
    const at = chunk.offset - outcome.offset;
    host.repairDisk(area.index, first, outcome.ours.slice(at, at + chunk.length));
  }
}
