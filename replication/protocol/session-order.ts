// Checks the ORDER of what a peer sends, on the receiving side, so an engine fed
// through it never sees e.g. a sync-commit before its pages, a seq that skips,
// an epoch that goes down, or data before authentication. It also checks that a
// sync-commit agrees with the frames that preceded it and that every extent lies
// inside the memory and disks announced by init-begin.
import { ProtocolError } from "./errors.ts";
import type { BinaryFrame } from "./frames.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "./limits.ts";
import type {
  BlockWriteAnnouncement,
  ControlMessage,
  DiskDescriptor,
  InitBeginMessage,
  InitEndMessage,
  NodeRole,
  SyncCommitMessage,
  WireDiskMode,
} from "./messages.ts";

export type Inbound = { channel: "control"; message: ControlMessage } | { channel: "frame"; frame: BinaryFrame };

export type SessionPhase =
  | "handshake" // only challenge, auth, welcome (or refused/error)
  | "await-init" // authenticated; secondary waits for init-begin, primary for its own init-end + init-ack
  | "initial-sync" // secondary: between init-begin and init-end
  | "replicating" // event-driven syncs
  | "fenced" // primary: the peer promoted itself; only goodbye/error/heartbeats now
  | "closed"; // after goodbye, error or refused: nothing more

interface PendingSync {
  pages: number;
  stateBytes: number | undefined;
  blockWrites: BlockWriteAnnouncement[];
}

interface DiskCopy {
  descriptor: DiskDescriptor;
  nextOffset: number;
  digested: boolean;
}

export class SessionOrder {
  private currentPhase: SessionPhase = "handshake";
  private handshakeStep: "challenge" | "auth" | "welcome" | "done" = "challenge";
  private sessionEpoch = 0;

  // secondary side: what init-begin announced and what arrived since
  private layout: { memoryPages: number; memoryBytes: number; diskMode: WireDiskMode; disks: Map<number, DiskCopy> } | undefined;
  private initialPages = 0;
  private initialStateBytes: number | undefined;
  private lastCommitted = 0;
  private pending: PendingSync = emptyPending();

  // primary side: what we sent, so the peer's acks can be checked
  private initEndSent = false;
  private initAcked = false;
  private lastCommitSent = 0;
  private lastAcked = 0;

  // both sides
  private lastPeerHeartbeat = -1;
  private lastHeartbeatSent = -1;
  private lastHeartbeatAcked = -1;

  constructor(readonly localRole: NodeRole) {}

  get phase(): SessionPhase {
    return this.currentPhase;
  }

  get epoch(): number {
    return this.sessionEpoch;
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
    if (message.type === "heartbeat" || message.type === "heartbeat-ack") return this.receiveHeartbeat(message);
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
      case "sync-commit":
        if (message.seq !== this.lastCommitSent + 1) throw orderError(`sending sync-commit ${message.seq} after ${this.lastCommitSent}`);
        this.lastCommitSent = message.seq;
        break;
      case "heartbeat":
        this.lastHeartbeatSent = Math.max(this.lastHeartbeatSent, message.id);
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

  // ------------------------------------------------------------ handshake

  private receiveDuringHandshake(input: Inbound): void {
    if (input.channel === "frame") throw new ProtocolError("unauthenticated", `${input.frame.kind} frame before authentication`);
    const type = input.message.type;
    if (type === "refused" || type === "error") {
      this.currentPhase = "closed";
      return;
    }
    if (type !== this.handshakeStep) {
      const code = ["challenge", "auth", "welcome"].includes(type) ? "order" : "unauthenticated";
      throw new ProtocolError(code, `${type} during the handshake, expected ${this.handshakeStep}`);
    }
    this.handshakeStep = type === "challenge" ? "auth" : type === "auth" ? "welcome" : "done";
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
      case "sync-commit":
        this.expectPhase("replicating", message.type);
        this.expectEpoch(message.epoch, message.type);
        return this.commit(message);
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
    if (this.initialStateBytes === undefined) throw orderError("init-end before the full device-state frame");
    if (message.stateBytes !== this.initialStateBytes) {
      throw inconsistent(`init-end says ${message.stateBytes} state bytes, the state frame held ${this.initialStateBytes}`);
    }
    this.currentPhase = "replicating";
  }

  private commit(message: SyncCommitMessage): void {
    const expected = this.lastCommitted + 1;
    if (message.seq !== expected) throw orderError(`sync-commit ${message.seq}, expected ${expected}`);
    const pending = this.pending;
    if (message.pageCount !== pending.pages) throw inconsistent(`sync-commit ${message.seq} says ${message.pageCount} pages, ${pending.pages} arrived`);
    if (message.stateDeltaBytes !== (pending.stateBytes ?? 0)) {
      throw inconsistent(`sync-commit ${message.seq} says ${message.stateDeltaBytes} state bytes, ${pending.stateBytes ?? 0} arrived`);
    }
    const layout = this.requireLayout();
    if (layout.diskMode === "io-log") {
      if (message.ioLog === undefined) throw inconsistent(`sync-commit ${message.seq} has no ioLog in io-log mode`);
      const inline = message.ioLog.flatMap((entry) => (entry.type === "write" && entry.inline === true ? [entry] : []));
      if (!sameWrites(inline, pending.blockWrites)) {
        throw inconsistent(`sync-commit ${message.seq} marks ${inline.length} writes inline that differ from the ${pending.blockWrites.length} block frames received`);
      }
      for (const entry of message.ioLog) {
        const disk = this.diskCopy(entry.disk, "ioLog entry").descriptor;
        if (entry.type === "flush") continue;
        this.checkSectors(disk, entry.sector, entry.sectors, `sync-commit ${message.seq} ioLog`);
        for (const segment of entry.segments) {
          if (segment.gpa + segment.length > layout.memoryBytes) {
            throw inconsistent(`sync-commit ${message.seq}: segment at ${segment.gpa}+${segment.length} is outside guest memory`);
          }
        }
      }
    } else {
      if (message.blockWrites === undefined) throw inconsistent(`sync-commit ${message.seq} has no blockWrites in dirty-block-copy mode`);
      const arrived = pending.blockWrites;
      if (!sameWrites(message.blockWrites, arrived)) throw inconsistent(`sync-commit ${message.seq} announces ${message.blockWrites.length} block writes that differ from the ${arrived.length} block frames received`);
    }
    this.lastCommitted = message.seq;
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
    switch (frame.kind) {
      case "memory-pages":
        this.checkPages(frame);
        this.pending.pages += frame.indices.length + frame.zeroIndices.length;
        return;
      case "device-state":
        if (frame.mode !== "delta") throw orderError(`full device state in sync ${frame.seq}; only the initial sync sends a full state`);
        if (this.pending.stateBytes !== undefined) throw orderError(`second device-state frame for seq ${frame.seq}`);
        this.pending.stateBytes = frame.data.length;
        return;
      case "disk-blocks": {
        // In io-log mode a block frame carries the data of a write marked `inline`.
        const sectors = frame.data.length / SECTOR_SIZE;
        this.checkSectors(this.diskCopy(frame.disk, "disk-blocks frame").descriptor, frame.sector, sectors, "disk-blocks frame");
        this.pending.blockWrites.push({ disk: frame.disk, sector: frame.sector, sectors });
        return;
      }
      case "disk-chunk":
        throw orderError("disk-chunk frame after the initial sync");
    }
  }

  private receiveInitialFrame(frame: BinaryFrame): void {
    if (frame.seq !== 0) throw orderError(`${frame.kind} frame for seq ${frame.seq} during the initial sync (seq 0)`);
    switch (frame.kind) {
      case "memory-pages":
        this.checkPages(frame);
        this.initialPages += frame.indices.length + frame.zeroIndices.length;
        return;
      case "device-state":
        if (frame.mode !== "full") throw orderError("delta device state during the initial sync");
        if (this.initialStateBytes !== undefined) throw orderError("second full device-state frame");
        this.initialStateBytes = frame.data.length;
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
      case "disk-blocks":
        throw orderError("disk-blocks frame during the initial sync (disks travel as disk-chunk frames)");
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

  private receiveHeartbeat(message: Extract<ControlMessage, { type: "heartbeat" | "heartbeat-ack" }>): void {
    if (message.epoch < this.sessionEpoch) throw staleEpoch(message.epoch, this.sessionEpoch, message.type);
    if (message.type === "heartbeat") {
      if (message.id <= this.lastPeerHeartbeat) throw orderError(`heartbeat ${message.id} after ${this.lastPeerHeartbeat}`);
      this.lastPeerHeartbeat = message.id;
      return;
    }
    if (message.id > this.lastHeartbeatSent || message.id <= this.lastHeartbeatAcked) {
      throw orderError(`heartbeat-ack ${message.id} (last sent ${this.lastHeartbeatSent}, last acked ${this.lastHeartbeatAcked})`);
    }
    this.lastHeartbeatAcked = message.id;
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

  private checkPages(frame: Extract<BinaryFrame, { kind: "memory-pages" }>): void {
    const pages = this.requireLayout().memoryPages;
    // Index lists are sorted (the decoder checks), so the last entries are the largest.
    const highest = Math.max(frame.indices.at(-1) ?? -1, frame.zeroIndices.at(-1) ?? -1);
    if (highest >= pages) throw inconsistent(`page ${highest} is outside guest memory (${pages} pages)`);
  }
}

function sameWrites(announced: readonly BlockWriteAnnouncement[], arrived: readonly BlockWriteAnnouncement[]): boolean {
  return (
    announced.length === arrived.length &&
    announced.every((w, i) => w.disk === arrived[i]!.disk && w.sector === arrived[i]!.sector && w.sectors === arrived[i]!.sectors)
  );
}

function emptyPending(): PendingSync {
  return { pages: 0, stateBytes: undefined, blockWrites: [] };
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
