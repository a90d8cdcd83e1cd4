// What a secondary checks of its primary's messages and frames: the initial copy in order
// (init-begin, pages, the state, each disk's chunks and digest, init-end), then syncs whose
// frames precede their sync-commit and agree with it, every extent inside the memory and disks
// init-begin announced. What a delta applies to (the replica) is checked there.
import { MAX_SECTORS_PER_BLOCK_FRAME, MAX_SYNC_DISK_BYTES } from "./limits.ts";
import { ProtocolError } from "./errors.ts";
import type { BinaryFrame, SyncCommitFrame } from "./frames.ts";
import type { ControlMessage, DiskDescriptor, InitBeginMessage, InitEndMessage, WireDiskMode } from "./messages.ts";
import { inconsistent, orderError, SessionOrder } from "./session-order.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";

/** What arrived for the sync in progress. */
interface PendingSync {
  pageUpdates: number;
  lastPage: number;
  stateChanges: number;
  /** Disk-blocks frames in arrival order. */
  blocks: { disk: number; sector: number; sectors: number }[];
  diskBytes: number;
  outputFrames: number;
}

interface DiskCopy {
  descriptor: DiskDescriptor;
  nextOffset: number;
  digested: boolean;
}

interface Layout {
  memoryPages: number;
  memoryBytes: number;
  diskMode: WireDiskMode;
  disks: Map<number, DiskCopy>;
}

export class SecondarySessionOrder extends SessionOrder {
  /** What init-begin announced, and what arrived since. */
  #layout: Layout | undefined;
  #initialPages = 0;
  #initialStateParts: number | undefined;
  #lastCommitted = 0;
  #pending: PendingSync = emptyPending();
  /** The number the next held output must have, and how many the primary said it released. */
  #nextOutput = 0;
  #outputsReleased = 0;

  constructor() {
    super("secondary");
  }

  override sentFrame(frame: BinaryFrame): void {
    throw orderError(`a secondary does not send ${frame.kind} frames`);
  }

  protected override sentControl(message: ControlMessage): void {
    // Our own takeover: the session's epoch is the new one from here.
    if (message.type === "promoted") this.raiseEpoch(message.epoch);
  }

  protected override receiveControl(message: ControlMessage): void {
    switch (message.type) {
      case "init-begin":
        this.expectPhase("await-init", message.type);
        this.expectEpoch(message.epoch, message.type);
        return this.#beginInit(message);
      case "disk-digest": {
        this.expectPhase("initial-sync", message.type);
        this.expectEpoch(message.epoch, message.type);
        const copy = this.#diskCopy(message.disk, message.type);
        if (copy.descriptor.sha256 !== undefined) throw orderError(`disk-digest for disk ${copy.descriptor.id}, which init-begin marked as already present`);
        if (copy.nextOffset !== copy.descriptor.sizeBytes) {
          throw orderError(`disk-digest for disk ${copy.descriptor.id} after ${copy.nextOffset} of ${copy.descriptor.sizeBytes} bytes`);
        }
        if (copy.digested) throw orderError(`second disk-digest for disk ${copy.descriptor.id}`);
        copy.digested = true;
        return;
      }
      case "init-end":
        this.expectPhase("initial-sync", message.type);
        this.expectEpoch(message.epoch, message.type);
        return this.#endInit(message);
      case "handover":
        this.expectPhase("replicating", message.type);
        this.expectEpoch(message.epoch, message.type);
        return;
      case "verify-request": {
        this.expectPhase("replicating", message.type);
        // It names the sync the check is as of: the last one committed, with nothing of the next yet.
        const pending = this.#pending;
        if (message.seq !== this.#lastCommitted || pending.pageUpdates + pending.stateChanges + pending.blocks.length + pending.outputFrames > 0) {
          throw orderError(
            `verify-request as of sync ${message.seq}, but sync ${this.#lastCommitted} is the last committed${pending.pageUpdates + pending.blocks.length > 0 ? " and the next has begun" : ""}`,
          );
        }
        const limit = message.target === "ram" ? this.#requireLayout().memoryBytes : this.#diskCopy(message.disk, message.type).descriptor.sizeBytes;
        if (message.offset + message.length > limit)
          throw inconsistent(`verify-request ${message.id}: range ${message.offset}+${message.length} beyond ${limit} bytes`);
        return;
      }
      case "promoted":
        throw orderError("promoted sent to a secondary (only a secondary promotes)");
      default:
        throw orderError(`a secondary does not accept ${message.type}`);
    }
  }

  #beginInit(message: InitBeginMessage): void {
    this.#layout = {
      memoryBytes: message.memoryBytes,
      memoryPages: message.memoryBytes / PAGE_SIZE,
      diskMode: message.diskMode,
      disks: new Map(message.disks.map((descriptor) => [descriptor.id, { descriptor, nextOffset: 0, digested: false }])),
    };
    this.enter("initial-sync");
  }

  #endInit(message: InitEndMessage): void {
    for (const copy of this.#requireLayout().disks.values()) {
      if (copy.descriptor.sha256 === undefined && !copy.digested) {
        throw orderError(`init-end before disk ${copy.descriptor.id} was fully copied and digested`);
      }
    }
    if (message.pageCount !== this.#initialPages) throw inconsistent(`init-end says ${message.pageCount} pages, ${this.#initialPages} arrived`);
    if (this.#initialStateParts === undefined) throw orderError("init-end before the state-parts frame");
    if (message.stateParts !== this.#initialStateParts) {
      throw inconsistent(`init-end says ${message.stateParts} state parts, the state frame held ${this.#initialStateParts}`);
    }
    this.enter("replicating");
  }

  #commit(frame: SyncCommitFrame): void {
    const pending = this.#pending;
    if (frame.pageUpdates !== pending.pageUpdates)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.pageUpdates} page updates, ${pending.pageUpdates} arrived`);
    if (frame.stateChanges !== pending.stateChanges)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.stateChanges} state-changes frames, ${pending.stateChanges} arrived`);
    if (frame.blockFrames !== pending.blocks.length)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.blockFrames} disk-blocks frames, ${pending.blocks.length} arrived`);
    if (frame.outputFrames !== pending.outputFrames)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.outputFrames} held-output frames, ${pending.outputFrames} arrived`);
    const layout = this.#requireLayout();
    const blocks = pending.blocks[Symbol.iterator]();
    for (const [index, entry] of frame.log.entries()) {
      const disk = this.#diskCopy(entry.disk, `sync-commit ${frame.seq} entry ${index}`).descriptor;
      if (entry.type === "flush") continue;
      this.#checkSectors(disk, entry.sector, entry.sectors, `sync-commit ${frame.seq} entry ${index}`);
      if (entry.type === "write" && entry.inline === true) {
        // The data of an inline write is the next disk-blocks frames, in order, exactly covering it.
        let sector = entry.sector;
        while (sector < entry.sector + entry.sectors) {
          const block = blocks.next();
          if (
            block.done === true ||
            block.value.disk !== entry.disk ||
            block.value.sector !== sector ||
            sector + block.value.sectors > entry.sector + entry.sectors
          ) {
            throw inconsistent(
              `sync-commit ${frame.seq} entry ${index}: inline write of sectors ${entry.sector}+${entry.sectors} on disk ${entry.disk} is not what the disk-blocks frames carried`,
            );
          }
          sector += block.value.sectors;
        }
        continue;
      }
      if (layout.diskMode === "dirty-block-copy" && entry.type === "write")
        throw inconsistent(`sync-commit ${frame.seq} entry ${index}: a write to replay from memory in dirty-block-copy mode`);
      for (const segment of entry.segments) {
        if (segment.gpa + segment.length > layout.memoryBytes) {
          throw inconsistent(`sync-commit ${frame.seq} entry ${index}: segment at ${segment.gpa}+${segment.length} is outside guest memory`);
        }
      }
    }
    if (blocks.next().done !== true) throw inconsistent(`sync-commit ${frame.seq}: disk-blocks frames that no inline write uses`);
    this.#lastCommitted = frame.seq;
    this.#pending = emptyPending();
  }

  protected override receiveFrame(frame: BinaryFrame): void {
    this.expectEpoch(frame.epoch, `${frame.kind} frame`);
    if (this.phase === "initial-sync") return this.#receiveInitialFrame(frame);
    if (this.phase !== "replicating") throw orderError(`${frame.kind} frame before init-begin`);
    const expected = this.#lastCommitted + 1;
    if (frame.seq !== expected) throw orderError(`${frame.kind} frame for seq ${frame.seq}, expected ${expected} (frames precede their sync-commit)`);
    const pending = this.#pending;
    switch (frame.kind) {
      case "page-updates": {
        const pages = this.#requireLayout().memoryPages;
        for (const { page } of frame.updates) {
          if (page <= pending.lastPage) throw orderError(`page ${page} of sync ${frame.seq} after page ${pending.lastPage}`);
          if (page >= pages) throw inconsistent(`page ${page} is outside guest memory (${pages} pages)`);
          pending.lastPage = page;
        }
        pending.pageUpdates += frame.updates.length;
        return;
      }
      case "state-changes":
        if (pending.stateChanges > 0) throw orderError(`second state-changes frame for seq ${frame.seq}`);
        pending.stateChanges = 1;
        return;
      case "disk-blocks": {
        const sectors = frame.data.length / SECTOR_SIZE;
        this.#checkSectors(this.#diskCopy(frame.disk, "disk-blocks frame").descriptor, frame.sector, sectors, "disk-blocks frame");
        pending.diskBytes += frame.data.length;
        if (pending.diskBytes > MAX_SYNC_DISK_BYTES + MAX_SECTORS_PER_BLOCK_FRAME * SECTOR_SIZE) {
          throw new ProtocolError("oversized", `sync ${frame.seq} carries more than ${MAX_SYNC_DISK_BYTES} bytes of disk data`);
        }
        pending.blocks.push({ disk: frame.disk, sector: frame.sector, sectors });
        return;
      }
      case "held-output":
        // Numbered without gaps or repeats across the session; what was released only grows.
        if (frame.first !== this.#nextOutput) throw orderError(`held outputs numbered from ${frame.first}, expected ${this.#nextOutput}`);
        if (frame.released < this.#outputsReleased)
          throw inconsistent(`held-output says ${frame.released} outputs released, an earlier frame said ${this.#outputsReleased}`);
        this.#nextOutput += frame.outputs.length;
        this.#outputsReleased = frame.released;
        pending.outputFrames++;
        return;
      case "sync-commit":
        return this.#commit(frame);
      default:
        throw orderError(`${frame.kind} frame after the initial sync`);
    }
  }

  #receiveInitialFrame(frame: BinaryFrame): void {
    if (frame.seq !== 0) throw orderError(`${frame.kind} frame for seq ${frame.seq} during the initial sync (seq 0)`);
    switch (frame.kind) {
      case "memory-pages": {
        const pages = this.#requireLayout().memoryPages;
        // Index lists are sorted (the decoder checks), so the last entries are the largest.
        const highest = Math.max(frame.indices.at(-1) ?? -1, frame.zeroIndices.at(-1) ?? -1);
        if (highest >= pages) throw inconsistent(`page ${highest} is outside guest memory (${pages} pages)`);
        this.#initialPages += frame.indices.length + frame.zeroIndices.length;
        return;
      }
      case "state-parts":
        if (this.#initialStateParts !== undefined) throw orderError("second state-parts frame");
        this.#initialStateParts = frame.parts.length;
        return;
      case "disk-chunk": {
        const copy = this.#diskCopy(frame.disk, "disk-chunk frame");
        if (copy.descriptor.sha256 !== undefined) throw orderError(`disk-chunk for disk ${frame.disk}, which init-begin marked as already present`);
        if (frame.offset !== copy.nextOffset) throw orderError(`disk-chunk for disk ${frame.disk} at ${frame.offset}, expected ${copy.nextOffset}`);
        if (frame.offset + frame.length > copy.descriptor.sizeBytes) {
          throw inconsistent(`disk-chunk ends at ${frame.offset + frame.length}, disk ${frame.disk} has ${copy.descriptor.sizeBytes} bytes`);
        }
        copy.nextOffset += frame.length;
        return;
      }
      default:
        throw orderError(`${frame.kind} frame during the initial sync`);
    }
  }

  #requireLayout(): Layout {
    if (this.#layout === undefined) throw orderError("no init-begin yet");
    return this.#layout;
  }

  #diskCopy(disk: number, what: string): DiskCopy {
    const copy = this.#requireLayout().disks.get(disk);
    if (copy === undefined) throw inconsistent(`${what} names disk ${disk}, which init-begin did not announce`);
    return copy;
  }

  #checkSectors(disk: DiskDescriptor, sector: number, sectors: number, what: string): void {
    if ((sector + sectors) * SECTOR_SIZE > disk.sizeBytes) {
      throw inconsistent(`${what}: sectors ${sector}+${sectors} end beyond disk ${disk.id} (${disk.sizeBytes} bytes)`);
    }
  }
}

function emptyPending(): PendingSync {
  return { pageUpdates: 0, lastPage: -1, stateChanges: 0, blocks: [], diskBytes: 0, outputFrames: 0 };
}
