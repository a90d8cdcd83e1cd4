// The rules of the network gateway, without sockets or processes: which node may talk to
// the outside, which ingress frames a node is given, and what is kept for the next node.
//
//   stack (passt) --ingress--> log (ids, bounded) --cursor--> current node
//   current node  --egress---> stack                 (any other node: dropped, stale epoch)
//
// - A node attaches with its authenticated epoch and the id of the last ingress frame its
//   guest state has seen. A lower epoch than the highest seen is refused; an equal or
//   higher one replaces the current node (which is told, and closed by its session).
// - Every ingress frame is logged before any node sees it, so the log always holds what the
//   current node was given beyond the committed watermark. The node reports
//   `committed(id)` after each acknowledged sync (everything up to id is in the
//   secondary's copy), which trims the log.
// - A node that attaches is given the logged frames after its id first, in order, then live
//   ones; frames that arrive while no node is attached are logged for the next one (passt
//   never resends a SYN: the log is what saves a connection made during a takeover).
import { checkFrame } from "./ethernet.ts";
import { IngressLog, type IngressLogLimits } from "./ingress-log.ts";

/** The gateway's end of one node's link. */
export interface NodeSink {
  /** Whether the link takes another frame now; when it is false the core waits for resume(sink). */
  readonly writable: boolean;
  deliver(frame: Uint8Array, id: number): void;
  /** A node at `epoch` took this one's place; the sink should tell its node and close. */
  superseded(epoch: number): void;
}

/** Where egress frames go (passt). False: the frame was not taken (stack down or backed up). */
export interface FrameStack {
  send(frame: Uint8Array): boolean;
}

export interface GatewayCoreOptions extends IngressLogLimits {
  /** Largest frame either way (MTU + Ethernet header). */
  maxFrameBytes: number;
  /** Id of the first ingress frame. Ids only grow; see DEFAULT first id in gateway.ts. */
  firstIngressId: number;
}

export type AttachResult =
  | {
      accepted: true;
      /** The first id this node will be given. */
      resumeFrom: number;
      /** Logged frames it is given again (ids resumeFrom..lastId at attach). */
      replay: number;
      /** Frames after its lastIngressId that are no longer in the log (trimmed as committed by another node). */
      missing: number;
      replacedEpoch: number | undefined;
    }
  | { accepted: false; reason: "stale-epoch"; currentEpoch: number; message: string };

export type CommitResult = { ok: true } | { ok: false; message: string };

export type GatewayEvent =
  | { type: "attached"; epoch: number; lastIngressId: number; resumeFrom: number; replay: number; missing: number; replacedEpoch?: number }
  | { type: "refused"; epoch: number; currentEpoch: number }
  | { type: "detached"; epoch: number; reason: string }
  | { type: "unknown-ingress-id"; epoch: number; lastIngressId: number; lastId: number };

export interface GatewayCounters {
  ingress: {
    frames: number;
    bytes: number;
    /** Logged while no node was attached (kept for the next one). */
    heldWhileDetached: number;
    /** Given again from the log to a node that attached. */
    replayed: number;
    dropped: { oversized: number; malformed: number; logFull: number; noNode: number };
  };
  egress: {
    frames: number;
    bytes: number;
    dropped: { oversized: number; malformed: number; staleEpoch: number; stackDown: number };
  };
  log: { frames: number; bytes: number; firstId: number; lastId: number; committed: number };
  nodes: { attached: number; refused: number; replaced: number; current: { epoch: number; delivered: number } | undefined };
}

interface Attached {
  sink: NodeSink;
  epoch: number;
  /** Next id to deliver. */
  cursor: number;
  /** Ids up to this one are replays. */
  replayThrough: number;
}

export class GatewayCore {
  readonly #log: IngressLog;
  readonly #firstIngressId: number;
  #current: Attached | undefined;
  #highestEpoch = 0;
  #committed: number;
  readonly #listeners = new Set<(event: GatewayEvent) => void>();
  #pumping = false;
  readonly #counts = {
    ingressFrames: 0,
    ingressBytes: 0,
    heldWhileDetached: 0,
    replayed: 0,
    inOversized: 0,
    inMalformed: 0,
    logFull: 0,
    noNode: 0,
    egressFrames: 0,
    egressBytes: 0,
    outOversized: 0,
    outMalformed: 0,
    staleEpoch: 0,
    stackDown: 0,
    attached: 0,
    refused: 0,
    replaced: 0,
  };

  constructor(
    private readonly stack: FrameStack,
    private readonly options: GatewayCoreOptions,
  ) {
    this.#log = new IngressLog(options, options.firstIngressId);
    this.#firstIngressId = options.firstIngressId;
    this.#committed = options.firstIngressId - 1;
  }

  /** The epoch of the attached node, if any. */
  get currentEpoch(): number | undefined {
    return this.#current?.epoch;
  }

  get highestEpoch(): number {
    return this.#highestEpoch;
  }

  onEvent(listener: (event: GatewayEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * `epoch` must be authenticated (the link's handshake proved the secret). Frames flow once
   * the caller, having told its node the result, calls resume(sink).
   */
  attach(sink: NodeSink, epoch: number, lastIngressId: number): AttachResult {
    if (epoch < this.#highestEpoch) {
      this.#counts.refused++;
      this.#emit({ type: "refused", epoch, currentEpoch: this.#highestEpoch });
      return {
        accepted: false,
        reason: "stale-epoch",
        currentEpoch: this.#highestEpoch,
        message: `epoch ${epoch} is stale: the gateway serves epoch ${this.#highestEpoch} (a newer primary took over)`,
      };
    }
    const previous = this.#current;
    this.#highestEpoch = epoch;
    const { resumeFrom, missing, unknown } = this.#resumePoint(lastIngressId);
    const replay = Math.max(0, this.#log.lastId - resumeFrom + 1);
    this.#current = { sink, epoch, cursor: resumeFrom, replayThrough: this.#log.lastId };
    this.#counts.attached++;
    if (previous !== undefined) {
      this.#counts.replaced++;
      previous.sink.superseded(epoch);
    }
    if (unknown) this.#emit({ type: "unknown-ingress-id", epoch, lastIngressId, lastId: this.#log.lastId });
    this.#emit({ type: "attached", epoch, lastIngressId, resumeFrom, replay, missing, ...(previous ? { replacedEpoch: previous.epoch } : {}) });
    // No frame yet: the caller tells its node where the stream resumes, then calls resume(sink).
    return { accepted: true, resumeFrom, replay, missing, replacedEpoch: previous?.epoch };
  }

  /** The node's link closed. Its frames stay logged for the next node. */
  detach(sink: NodeSink, reason: string): void {
    if (this.#current?.sink !== sink) return;
    this.#emit({ type: "detached", epoch: this.#current.epoch, reason });
    this.#current = undefined;
  }

  /** Whether `sink` is the attached node. */
  isCurrent(sink: NodeSink): boolean {
    return this.#current?.sink === sink;
  }

  /** A frame from the stack towards the guest. */
  ingress(frame: Uint8Array): void {
    const verdict = checkFrame(frame, this.options.maxFrameBytes);
    if (verdict !== "ok") {
      if (verdict === "oversized") this.#counts.inOversized++;
      else this.#counts.inMalformed++;
      return;
    }
    if (!this.#log.hasRoomFor(frame.length)) {
      // Tail drop: see ingress-log.ts. Which counter says why the log is full.
      if (this.#current === undefined) this.#counts.noNode++;
      else this.#counts.logFull++;
      return;
    }
    this.#log.append(frame);
    this.#counts.ingressFrames++;
    this.#counts.ingressBytes += frame.length;
    if (this.#current === undefined) this.#counts.heldWhileDetached++;
    else this.#pump();
  }

  /** A frame the guest transmitted, released by `sink`'s node. */
  egress(sink: NodeSink, frame: Uint8Array): void {
    if (this.#current?.sink !== sink) {
      this.#counts.staleEpoch++;
      return;
    }
    const verdict = checkFrame(frame, this.options.maxFrameBytes);
    if (verdict !== "ok") {
      if (verdict === "oversized") this.#counts.outOversized++;
      else this.#counts.outMalformed++;
      return;
    }
    if (!this.stack.send(frame)) {
      this.#counts.stackDown++;
      return;
    }
    this.#counts.egressFrames++;
    this.#counts.egressBytes += frame.length;
  }

  /**
   * `sink`'s node says everything up to `lastIngressId` is in its secondary's copy. Only the
   * attached node's word counts; claiming a frame it was never given is refused.
   */
  committed(sink: NodeSink, lastIngressId: number): CommitResult {
    const current = this.#current;
    if (current?.sink !== sink) return { ok: true }; // superseded: its word no longer counts
    if (lastIngressId >= current.cursor) {
      return { ok: false, message: `committed ingress frame ${lastIngressId}, but the last frame this node was given is ${current.cursor - 1}` };
    }
    if (lastIngressId <= this.#committed) return { ok: true };
    this.#committed = lastIngressId;
    this.#log.trimThrough(lastIngressId);
    return { ok: true };
  }

  /** The sink can take frames (again): right after attach, and whenever its link drained. */
  resume(sink: NodeSink): void {
    if (this.#current?.sink === sink) this.#pump();
  }

  counters(): GatewayCounters {
    const c = this.#counts;
    return {
      ingress: {
        frames: c.ingressFrames,
        bytes: c.ingressBytes,
        heldWhileDetached: c.heldWhileDetached,
        replayed: c.replayed,
        dropped: { oversized: c.inOversized, malformed: c.inMalformed, logFull: c.logFull, noNode: c.noNode },
      },
      egress: {
        frames: c.egressFrames,
        bytes: c.egressBytes,
        dropped: { oversized: c.outOversized, malformed: c.outMalformed, staleEpoch: c.staleEpoch, stackDown: c.stackDown },
      },
      log: { frames: this.#log.frames, bytes: this.#log.bytes, firstId: this.#log.firstId, lastId: this.#log.lastId, committed: this.#committed },
      nodes: {
        attached: c.attached,
        refused: c.refused,
        replaced: c.replaced,
        current: this.#current && { epoch: this.#current.epoch, delivered: this.#current.cursor - 1 },
      },
    };
  }

  /**
   * Where a node that has seen `lastIngressId` continues. An id from before this gateway's
   * first (a node whose state came from an earlier gateway) simply gets everything logged;
   * an id this gateway never gave out cannot be trusted either way, so it gets everything
   * logged too, and an event says so.
   */
  #resumePoint(lastIngressId: number): { resumeFrom: number; missing: number; unknown: boolean } {
    const first = this.#log.firstId;
    if (lastIngressId > this.#log.lastId) return { resumeFrom: first, missing: 0, unknown: true };
    if (lastIngressId + 1 >= first) return { resumeFrom: lastIngressId + 1, missing: 0, unknown: false };
    const missing = lastIngressId < this.#firstIngressId - 1 ? 0 : first - (lastIngressId + 1);
    return { resumeFrom: first, missing, unknown: false };
  }

  /** Hands logged frames to the attached node while its link takes them. */
  #pump(): void {
    if (this.#pumping) return; // deliver() may call back in (resume); the loop below picks it up
    this.#pumping = true;
    try {
      for (;;) {
        const current = this.#current;
        if (current === undefined || !current.sink.writable) return;
        const frame = this.#log.get(current.cursor);
        if (frame === undefined) return;
        const id = current.cursor++;
        if (id <= current.replayThrough) this.#counts.replayed++;
        current.sink.deliver(frame, id);
      }
    } finally {
      this.#pumping = false;
    }
  }

  #emit(event: GatewayEvent): void {
    for (const listener of this.#listeners) listener(event);
  }
}
