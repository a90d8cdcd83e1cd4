// Checks the ORDER of what a peer sends, on the receiving side, so an engine fed through it
// never sees e.g. a sync-commit before its frames, a seq that skips, an epoch that goes
// down, or data before authentication. It also checks that a sync-commit agrees with the
// frames that preceded it, and that every extent lies inside the memory and disks announced
// by init-begin. What a delta applies to (the secondary's own replica) is checked there.
import { ProtocolError } from "./errors.ts";
import type { BinaryFrame, SyncCommitFrame } from "./frames.ts";
import { MAX_SECTORS_PER_BLOCK_FRAME, MAX_SYNC_DISK_BYTES } from "./limits.ts";
import type { ControlMessage, DiskDescriptor, InitBeginMessage, InitEndMessage, NodeRole, WireDiskMode } from "./messages.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";

export type Inbound = { channel: "control"; message: ControlMessage } | { channel: "frame"; frame: BinaryFrame };

export type SessionPhase =
  | "handshake" // only challenge, auth, welcome (or refused/error)
  | "await-init" // authenticated; secondary waits for init-begin, primary for its own init-end + init-ack
  | "initial-sync" // secondary: between init-begin and init-end
  | "replicating" // event-driven syncs
  | "fenced" // primary: the peer promoted itself; only goodbye/error/heartbeats now
  | "closed"; // after goodbye, error or refused: nothing more

/** What arrived for the sync in progress (secondary side). */
interface PendingSync {
  pageUpdates: number;
  lastPage: number;
  stateChanges: number;
  /** Disk-blocks frames in arrival order. */
  blocks: { disk: number; sector: number; sectors: number }[];
  diskBytes: number;
}

interface DiskCopy {
  descriptor: DiskDescriptor;
  nextOffset: number;
  digested: boolean;
}

export class SessionOrder {
  private currentPhase: SessionPhase = "handshake";
  private handshakeStep: "challenge" | "auth" | "done" = "challenge";
  private sessionEpoch = 0;

  // secondary side: what init-begin announced and what arrived since
  private layout: { memoryPages: number; memoryBytes: number; diskMode: WireDiskMode; disks: Map<number, DiskCopy> } | undefined;
  private initialPages = 0;
  private initialStateParts: number | undefined;
  private lastCommitted = 0;
  private pending: PendingSync = emptyPending();

  // primary side: what we sent, so the peer's acks can be checked
  private initEndSent = false;
  private initAcked = false;
  private lastCommitSent = 0;
  private lastAcked = 0;

  // both sides
  private lastPeerHeartbeat = -1;

  constructor(readonly localRole: NodeRole) {}

  get phase(): SessionPhase {
    return this.currentPhase;
  }

  get epoch(): number {
    return this.sessionEpoch;
  }

  /** The highest sync the peer acknowledged (primary side). */
  get acknowledged(): number {
    return this.lastAcked;
  }

  /** Called by the handshake once the peer has proved the secret; `epoch` is the primary's. */
  authenticated(epoch: number): void {
    if (this.currentPhase !== "handshake" || this.handshakeStep !== "done") {
      throw new ProtocolError("order", "authenticated() before the handshake finished");
    }
    this.sessionEpoch = epoch;
    this.currentPhase = "await-init";
  }

  /** Accepts one inbound message or frame, or throws ProtocolError and stays unchanged. */
  receive(input: Inbound): void {
    if (this.currentPhase === "closed") throw orderError(`${describe(input)} after the session closed`);
    if (this.currentPhase === "handshake") return this.receiveDuringHandshake(input);
    if (input.channel === "frame") return this.receiveFrame(input.frame);
    const message = input.message;
    if (message.type === "error" || message.type === "goodbye" || message.type === "refused") {
      this.currentPhase = "closed";
      return;
    }
    if (message.type === "heartbeat") return this.receiveHeartbeat(message);
    if (this.currentPhase === "fenced") throw orderError(`${message.type} after the peer promoted itself`);
    if (message.type === "promoted") return this.receivePromoted(message.epoch);
    if (this.localRole === "secondary") return this.receiveFromPrimary(message);
    return this.receiveFromSecondary(message);
  }

  /** Records what we sent that the peer's replies will be checked against. */
  sent(message: ControlMessage): void {
    switch (message.type) {
      case "init-end":
        this.initEndSent = true;
        break;
      case "promoted":
        this.sessionEpoch = message.epoch;
        break;
      case "goodbye":
      case "error":
      case "refused":
        this.currentPhase = "closed";
        break;
      default:
        break;
    }
  }

  /** Records a frame we sent (sync-commits number the acks we may get). */
  sentFrame(frame: BinaryFrame): void {
    if (frame.kind !== "sync-commit") return;
    if (frame.seq !== this.lastCommitSent + 1) throw orderError(`sending sync-commit ${frame.seq} after ${this.lastCommitSent}`);
    this.lastCommitSent = frame.seq;
  }

  // ------------------------------------------------------------ handshake

  private receiveDuringHandshake(input: Inbound): void {
    if (input.channel === "frame") throw new ProtocolError("unauthenticated", `${input.frame.kind} frame before authentication`);
    const type = input.message.type;
    if (type === "refused" || type === "error") {
      this.currentPhase = "closed";
      return;
    }
    if (type !== this.handshakeStep) {
      const code = ["challenge", "auth"].includes(type) ? "order" : "unauthenticated";
      throw new ProtocolError(code, `${type} during the handshake, expected ${this.handshakeStep}`);
    }
    // The initiator's welcome travels as the first encrypted record; the handshake checks it.
    this.handshakeStep = type === "challenge" ? "auth" : "done";
  }

  // ------------------------------------------------------------ secondary receiving from the primary

  private receiveFromPrimary(message: ControlMessage): void {
    switch (message.type) {
      case "init-begin":
        this.expectPhase("await-init", message.type);
        this.expectEpoch(message.epoch, message.type);
        return this.beginInit(message);
      case "disk-digest": {
        this.expectPhase("initial-sync", message.type);
        this.expectEpoch(message.epoch, message.type);
        const copy = this.diskCopy(message.disk, message.type);
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
        return this.endInit(message);
      case "handover":
        this.expectPhase("replicating", message.type);
        this.expectEpoch(message.epoch, message.type);
        return;
      case "verify-request": {
        this.expectPhase("replicating", message.type);
        // It names the sync the check is as of: the last one committed, with nothing of the next yet.
        const pending = this.pending;
        if (message.seq !== this.lastCommitted || pending.pageUpdates + pending.stateChanges + pending.blocks.length > 0) {
          throw orderError(
            `verify-request as of sync ${message.seq}, but sync ${this.lastCommitted} is the last committed${pending.pageUpdates + pending.blocks.length > 0 ? " and the next has begun" : ""}`,
          );
        }
        const limit = message.target === "ram" ? this.requireLayout().memoryBytes : this.diskCopy(message.disk, message.type).descriptor.sizeBytes;
        if (message.offset + message.length > limit)
          throw inconsistent(`verify-request ${message.id}: range ${message.offset}+${message.length} beyond ${limit} bytes`);
        return;
      }
      default:
        throw orderError(`a secondary does not accept ${message.type}`);
    }
  }

  private beginInit(message: InitBeginMessage): void {
    this.layout = {
      memoryBytes: message.memoryBytes,
      memoryPages: message.memoryBytes / PAGE_SIZE,
      diskMode: message.diskMode,
      disks: new Map(message.disks.map((descriptor) => [descriptor.id, { descriptor, nextOffset: 0, digested: false }])),
    };
    this.currentPhase = "initial-sync";
  }

  private endInit(message: InitEndMessage): void {
    for (const copy of this.requireLayout().disks.values()) {
      if (copy.descriptor.sha256 === undefined && !copy.digested) {
        throw orderError(`init-end before disk ${copy.descriptor.id} was fully copied and digested`);
      }
    }
    if (message.pageCount !== this.initialPages) throw inconsistent(`init-end says ${message.pageCount} pages, ${this.initialPages} arrived`);
    if (this.initialStateParts === undefined) throw orderError("init-end before the state-parts frame");
    if (message.stateParts !== this.initialStateParts) {
      throw inconsistent(`init-end says ${message.stateParts} state parts, the state frame held ${this.initialStateParts}`);
    }
    this.currentPhase = "replicating";
  }

  private commit(frame: SyncCommitFrame): void {
    const pending = this.pending;
    if (frame.pageUpdates !== pending.pageUpdates)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.pageUpdates} page updates, ${pending.pageUpdates} arrived`);
    if (frame.stateChanges !== pending.stateChanges)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.stateChanges} state-changes frames, ${pending.stateChanges} arrived`);
    if (frame.blockFrames !== pending.blocks.length)
      throw inconsistent(`sync-commit ${frame.seq} counts ${frame.blockFrames} disk-blocks frames, ${pending.blocks.length} arrived`);
    const layout = this.requireLayout();
    const blocks = pending.blocks[Symbol.iterator]();
    for (const [index, entry] of frame.log.entries()) {
      const disk = this.diskCopy(entry.disk, `sync-commit ${frame.seq} entry ${index}`).descriptor;
      if (entry.type === "flush") continue;
      this.checkSectors(disk, entry.sector, entry.sectors, `sync-commit ${frame.seq} entry ${index}`);
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
    this.lastCommitted = frame.seq;
    this.pending = emptyPending();
  }

  // ------------------------------------------------------------ frames (secondary only)

  private receiveFrame(frame: BinaryFrame): void {
    if (this.localRole === "primary") throw orderError(`${frame.kind} frame from a secondary`);
    if (this.currentPhase === "fenced") throw orderError(`${frame.kind} frame after promotion`);
    this.expectEpoch(frame.epoch, `${frame.kind} frame`);
    if (this.currentPhase === "initial-sync") return this.receiveInitialFrame(frame);
    if (this.currentPhase !== "replicating") throw orderError(`${frame.kind} frame before init-begin`);
    const expected = this.lastCommitted + 1;
    if (frame.seq !== expected) throw orderError(`${frame.kind} frame for seq ${frame.seq}, expected ${expected} (frames precede their sync-commit)`);
    const pending = this.pending;
    switch (frame.kind) {
      case "page-updates": {
        const pages = this.requireLayout().memoryPages;
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
        this.checkSectors(this.diskCopy(frame.disk, "disk-blocks frame").descriptor, frame.sector, sectors, "disk-blocks frame");
        pending.diskBytes += frame.data.length;
        if (pending.diskBytes > MAX_SYNC_DISK_BYTES + MAX_SECTORS_PER_BLOCK_FRAME * SECTOR_SIZE) {
          throw new ProtocolError("oversized", `sync ${frame.seq} carries more than ${MAX_SYNC_DISK_BYTES} bytes of disk data`);
        }
        pending.blocks.push({ disk: frame.disk, sector: frame.sector, sectors });
        return;
      }
      case "sync-commit":
        return this.commit(frame);
      default:
        throw orderError(`${frame.kind} frame after the initial sync`);
    }
  }

  private receiveInitialFrame(frame: BinaryFrame): void {
    if (frame.seq !== 0) throw orderError(`${frame.kind} frame for seq ${frame.seq} during the initial sync (seq 0)`);
    switch (frame.kind) {
      case "memory-pages": {
        const pages = this.requireLayout().memoryPages;
        // Index lists are sorted (the decoder checks), so the last entries are the largest.
        const highest = Math.max(frame.indices.at(-1) ?? -1, frame.zeroIndices.at(-1) ?? -1);
        if (highest >= pages) throw inconsistent(`page ${highest} is outside guest memory (${pages} pages)`);
        this.initialPages += frame.indices.length + frame.zeroIndices.length;
        return;
      }
      case "state-parts":
        if (this.initialStateParts !== undefined) throw orderError("second state-parts frame");
        this.initialStateParts = frame.parts.length;
        return;
      case "disk-chunk": {
        const copy = this.diskCopy(frame.disk, "disk-chunk frame");
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

  // ------------------------------------------------------------ primary receiving from the secondary

  private receiveFromSecondary(message: ControlMessage): void {
    switch (message.type) {
      case "disk-digest":
        // The secondary tells what its own disks hold, so the primary can skip copying equal ones.
        this.expectPhase("await-init", message.type);
        this.expectEpoch(message.epoch, message.type);
        if (this.initEndSent) throw orderError("disk-digest from the secondary after init-end");
        return;
      case "init-ack":
        if (!this.initEndSent || this.initAcked) throw orderError(this.initAcked ? "second init-ack" : "init-ack before init-end was sent");
        this.expectEpoch(message.epoch, message.type);
        this.initAcked = true;
        this.currentPhase = "replicating";
        return;
      case "verify-digests":
        this.expectPhase("replicating", message.type);
        return;
      case "sync-ack":
        this.expectEpoch(message.epoch, message.type);
        if (!this.initAcked) throw orderError("sync-ack before init-ack");
        if (message.seq !== this.lastAcked + 1) throw orderError(`sync-ack ${message.seq}, expected ${this.lastAcked + 1}`);
        if (message.seq > this.lastCommitSent) throw orderError(`sync-ack ${message.seq} for a sync-commit not sent (last sent ${this.lastCommitSent})`);
        this.lastAcked = message.seq;
        return;
      default:
        throw orderError(`a primary does not accept ${message.type}`);
    }
  }

  // ------------------------------------------------------------ both sides

  private receivePromoted(epoch: number): void {
    if (this.localRole !== "primary") throw orderError("promoted sent to a secondary (only a secondary promotes)");
    if (epoch <= this.sessionEpoch) throw new ProtocolError("stale-epoch", `promoted to epoch ${epoch}, session is already at ${this.sessionEpoch}`);
    this.sessionEpoch = epoch;
    this.currentPhase = "fenced";
  }

  /** Both sides send heartbeats on their own clock (no answers: any record shows the peer alive). */
  private receiveHeartbeat(message: Extract<ControlMessage, { type: "heartbeat" }>): void {
    if (message.epoch < this.sessionEpoch) throw staleEpoch(message.epoch, this.sessionEpoch, message.type);
    if (message.id <= this.lastPeerHeartbeat) throw orderError(`heartbeat ${message.id} after ${this.lastPeerHeartbeat}`);
    this.lastPeerHeartbeat = message.id;
  }

  private expectPhase(phase: SessionPhase, what: string): void {
    if (this.currentPhase !== phase) throw orderError(`${what} in phase ${this.currentPhase}, expected ${phase}`);
  }

  private expectEpoch(epoch: number, what: string): void {
    if (epoch < this.sessionEpoch) throw staleEpoch(epoch, this.sessionEpoch, what);
    if (epoch > this.sessionEpoch) throw orderError(`${what} with epoch ${epoch}, session is at ${this.sessionEpoch} and no promoted was sent`);
  }

  private requireLayout(): NonNullable<SessionOrder["layout"]> {
    if (this.layout === undefined) throw orderError("no init-begin yet");
    return this.layout;
  }

  private diskCopy(disk: number, what: string): DiskCopy {
    const copy = this.requireLayout().disks.get(disk);
    if (copy === undefined) throw inconsistent(`${what} names disk ${disk}, which init-begin did not announce`);
    return copy;
  }

  private checkSectors(disk: DiskDescriptor, sector: number, sectors: number, what: string): void {
    if ((sector + sectors) * SECTOR_SIZE > disk.sizeBytes) {
      throw inconsistent(`${what}: sectors ${sector}+${sectors} end beyond disk ${disk.id} (${disk.sizeBytes} bytes)`);
    }
  }
}

function emptyPending(): PendingSync {
  return { pageUpdates: 0, lastPage: -1, stateChanges: 0, blocks: [], diskBytes: 0 };
}

function describe(input: Inbound): string {
  return input.channel === "frame" ? `${input.frame.kind} frame` : input.message.type;
}

function orderError(message: string): ProtocolError {
  return new ProtocolError("order", message);
}

function inconsistent(message: string): ProtocolError {
  return new ProtocolError("inconsistent", message);
}

function staleEpoch(epoch: number, current: number, what: string): ProtocolError {
  return new ProtocolError("stale-epoch", `${what} with epoch ${epoch}, session is at ${current}`);
}
