// The primary's sync engine (Kemari, event-driven): the guest runs; when it
// submits disk writes or prints, the engine stops it at an instruction boundary,
// captures dirty pages and the device-state delta, lets it run on, and sends the
// capture with the batch's I/O log (or, in dirty-block-copy mode, the written
// blocks). The writes' completions and the printed bytes are released only when
// the secondary acknowledges that sync.
import type { BlockHook, BlockIoEvent } from "../../emulator/block/hook.ts";
import { segmentsHold } from "../../emulator/block/segments.ts";
import { withoutUndefined } from "../../emulator/config.ts";
import type { Machine } from "../../emulator/machine.ts";
import { DirtyPageTracker, type PageSet } from "../../emulator/memory/index.ts";
import { captureMemorylessState, encodeDelta, encodeMemorylessState } from "../../emulator/state/index.ts";
import { VirtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import type { ReplicationChannel, ChannelEvent, ChannelCloseInfo } from "../channel/channel.ts";
import type { BinaryFrame, MemoryPagesFrame } from "../protocol/frames.ts";
import { isAllZero } from "../protocol/page-collect.ts";
import { MAX_PAGES_PER_FRAME, MAX_SECTORS_PER_BLOCK_FRAME, PAGE_SIZE, SECTOR_SIZE } from "../protocol/limits.ts";
import type { BlockWriteAnnouncement, ControlMessage, IoLogEntry } from "../protocol/messages.ts";
import { copyDisk, diskDigest } from "./disk-image.ts";
import { ReplicationMetrics, type ByteCategory } from "./metrics.ts";
import { OutputCommit } from "./output-commit.ts";

export type DiskMode = "logging-replay" | "dirty-block-copy";

export type PrimaryState = "idle" | "initial-sync" | "protected" | "unprotected" | "fenced";

/**
 * What the primary does when it loses its secondary (it cannot tell a dead secondary
 * from a cut link). `continue`: the guest runs on unprotected, writes complete and
 * output flows, and the engine says so. `stall`: guest writes and output are held
 * until a secondary is protecting the guest again (the guest waits on its disk).
 */
export type SecondaryLossPolicy = "continue" | "stall";

export interface PrimaryOptions {
  mode: DiskMode;
  /** The hook the machine's disks were built with. */
  hook: BlockHook;
  epoch?: number;
  heartbeatIntervalMs?: number;
  /** A sync or heartbeat unanswered this long means the secondary is gone. */
  peerTimeoutMs?: number;
  onSecondaryLoss?: SecondaryLossPolicy;
  /** The secondary writes and hashes whole disks before its init-ack: allow for that. */
  initialSyncTimeoutMs?: number;
  log?: (line: string) => void;
}

interface PendingRequest {
  event: BlockIoEvent;
  /** The bytes as the guest submitted them (what this disk got). */
  data: Uint8Array | undefined;
  release: () => void;
}

interface Capture {
  seq: number;
  pages: PageSet;
  stateDelta: Uint8Array;
  requests: PendingRequest[];
}

const DEFAULT_HEARTBEAT_MS = 250;
const DEFAULT_PEER_TIMEOUT_MS = 5000;
const DEFAULT_INITIAL_SYNC_TIMEOUT_MS = 300_000;

export class PrimaryEngine {
  readonly metrics = new ReplicationMetrics("primary");
  /** Guest console output, released by output commit; attach terminals here. */
  readonly output = new OutputCommit();
  readonly #machine: Machine;
  #channel: ReplicationChannel | undefined;
  readonly #options: Required<Omit<PrimaryOptions, "log">> & Pick<PrimaryOptions, "log">;
  readonly #disks: VirtioBlkDisk[];
  #state: PrimaryState = "idle";
  #tracker: DirtyPageTracker | undefined;
  #lastState: Uint8Array | undefined;
  #nextSeq = 1;
  #pending: PendingRequest[] = [];
  #outputSinceCapture = false;
  #syncLoopRunning = false;
  /** Settles when the sync loop of the last session has stopped. */
  #syncLoopDone: Promise<void> = Promise.resolve();
  #ackWaiters = new Map<number, () => void>();
  #initAck: (() => void) | undefined;
  #peerDigests = new Map<number, string>();
  #peerDigestWaiter: (() => void) | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #heartbeatId = 0;
  #lastHeard = performance.now();
  #unsubscribe: (() => void)[] = [];
  #stateListeners = new Set<(state: PrimaryState, reason: string) => void>();

  /** `channel`: the first secondary's session (or pass one to each `protect`). */
  constructor(machine: Machine, channel: ReplicationChannel | undefined, options: PrimaryOptions) {
    this.#machine = machine;
    this.#channel = channel;
    this.#options = {
      epoch: 1,
      heartbeatIntervalMs: DEFAULT_HEARTBEAT_MS,
      peerTimeoutMs: DEFAULT_PEER_TIMEOUT_MS,
      onSecondaryLoss: "continue",
      initialSyncTimeoutMs: DEFAULT_INITIAL_SYNC_TIMEOUT_MS,
      ...withoutUndefined(options),
      mode: options.mode,
      hook: options.hook,
    };
    this.#disks = machine.devices.filter((device): device is VirtioBlkDisk => device instanceof VirtioBlkDisk);
    this.metrics.epoch = this.#options.epoch;
    this.#unsubscribe.push(
      machine.console.onOutput((bytes) => this.#guestOutput(bytes)),
      options.hook.subscribe((event) => this.#blockEvent(event)),
    );
  }

  get state(): PrimaryState {
    return this.#state;
  }

  onStateChange(listener: (state: PrimaryState, reason: string) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  get epoch(): number {
    return this.#options.epoch;
  }

  /**
   * Initial sync with a (new) secondary, from `idle` or after a loss. The guest stops
   * only for the capture of RAM and device state, then runs on while they and the
   * disks (unless the secondary proves it holds them) are sent; its writes and output
   * wait until the secondary acknowledges the copy. Resolves when protected (or when
   * the attempt failed: see `state`).
   */
  async protect(channel: ReplicationChannel | undefined = this.#channel): Promise<void> {
    if (channel === undefined) throw new Error("protect: no replication channel");
    if (this.#state !== "idle" && this.#state !== "unprotected") throw new Error(`protect: engine is ${this.#state}`);
    // The lost session's last sync must be over before a new one starts numbering from 1.
    await this.#syncLoopDone;
    this.#channel = channel;
    this.#peerDigests.clear();
    channel.onMessage((event) => this.#receive(channel, event));
    channel.onClose((info) => this.#peerClosed(channel, info));
    this.#setState("initial-sync", "initial sync started");
    const started = performance.now();
    const bytesBefore = this.metrics.totalBytes;
    await this.#waitForPeerDigests();
    if ((this.#state as PrimaryState) !== "initial-sync") return;

    // Capture: one instruction boundary for RAM and device state; then the guest runs.
    const wasRunning = this.#machine.state === "running";
    await this.#machine.pause();
    this.#tracker?.dispose();
    this.#tracker = DirtyPageTracker.create(this.#machine);
    const pages = this.#tracker.collect();
    const state = encodeMemorylessState(captureMemorylessState(this.#machine));
    this.#lastState = state;
    this.#nextSeq = 1;
    // Requests taken before the capture are in its device state; the disk copy below
    // (read after their backend I/O) holds their data. They complete once the copy is acked.
    const coveredByCopy = this.#pending;
    this.#pending = [];
    this.output.coverHeldBy(0);
    this.#outputSinceCapture = false;
    if (wasRunning) this.#machine.run();
    await Promise.all(this.#disks.map((disk) => disk.device.backendIdle()));

    const epoch = this.#options.epoch;
    const send = async (category: ByteCategory, frame: BinaryFrame, compress = false) => {
      this.metrics.count(category, await channel.sendFrame(frame, { compress }));
      await channel.whenDrained();
    };
    try {
      const peerDigests = new Map(this.#peerDigests);
      const ownDigests = await Promise.all(this.#disks.map((disk) => diskDigest(disk.backend)));
      const disks = this.#disks.map((disk, id) => ({
        id,
        name: disk.id,
        sizeBytes: disk.backend.sizeBytes,
        ...(peerDigests.get(id) === ownDigests[id] ? { sha256: ownDigests[id]! } : {}),
      }));
      await this.#sendControl({
        type: "init-begin",
        seq: 0,
        epoch,
        memoryBytes: this.#machine.ram.size,
        pageSize: PAGE_SIZE,
        diskMode: this.#options.mode === "logging-replay" ? "io-log" : "dirty-block-copy",
        disks,
      });
      for (let start = 0; start < pages.indices.length; start += MAX_PAGES_PER_FRAME) {
        await send("memoryPages", pageFrame(0, epoch, pages, start, Math.min(pages.indices.length, start + MAX_PAGES_PER_FRAME)), true);
      }
      await send("deviceState", { kind: "device-state", seq: 0, epoch, mode: "full", data: state });
      for (const [id, disk] of this.#disks.entries()) {
        if (disks[id]!.sha256 !== undefined) continue;
        // The guest writes on while the disk is read: the digest covers what was sent, and
        // every write after the capture is replayed on top by the syncs that follow.
        const sent = await copyDisk(disk.backend, (offset, data) =>
          send("diskCopy", { kind: "disk-chunk", seq: 0, epoch, disk: id, offset, length: data.length, data: isAllZero(data) ? "zeros" : data }, true),
        );
        await this.#sendControl({ type: "disk-digest", seq: 0, epoch, disk: id, sha256: sent });
      }
      const acked = new Promise<void>((resolve) => (this.#initAck = resolve));
      await this.#sendControl({ type: "init-end", seq: 0, epoch, pageCount: pages.indices.length, stateBytes: state.length });
      await this.#untilAckOrLoss(acked, "init-ack", this.#options.initialSyncTimeoutMs);
    } catch (error) {
      this.#lose(`initial sync failed: ${(error as Error).message}`);
    }
    if ((this.#state as PrimaryState) !== "initial-sync") {
      this.#pending.unshift(...coveredByCopy);
      if ((this.#state as PrimaryState) === "unprotected" && this.#options.onSecondaryLoss === "continue") this.#releaseAllRequests();
      return;
    }
    this.metrics.initialSync = { ms: performance.now() - started, bytes: this.metrics.totalBytes - bytesBefore };
    this.#setState("protected", `initial sync done in ${(this.metrics.initialSync.ms / 1000).toFixed(1)} s`);
    for (const request of coveredByCopy) request.release();
    this.output.acknowledged(0);
    this.#startHeartbeat();
    this.#startSyncLoop();
  }

  /** The peer took over (learnt from it, or from a refused handshake): never acknowledge another guest write. */
  fence(reason: string): void {
    if (this.#state === "fenced") return;
    this.#stopHeartbeat();
    this.#setState("fenced", `${reason}; this primary stops its guest for good`);
    void this.#machine.pause();
    for (const resolve of this.#ackWaiters.values()) resolve();
    this.#initAck?.();
    this.#peerDigestWaiter?.();
  }

  /** Stops replicating (the guest keeps running unprotected) and closes the channel. */
  async close(reason = "primary shutting down"): Promise<void> {
    this.#stopHeartbeat();
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    this.#releaseAllRequests();
    this.output.releaseAll();
    this.#tracker?.dispose();
    this.#tracker = undefined;
    await this.#channel?.close(reason);
  }

  // ------------------------------------------------------------ guest events

  /** Whether guest writes and output must wait for a secondary now. */
  get #holding(): boolean {
    return (
      this.#state === "protected" ||
      this.#state === "initial-sync" ||
      this.#state === "fenced" ||
      (this.#state === "unprotected" && this.#options.onSecondaryLoss === "stall")
    );
  }

  #blockEvent(event: BlockIoEvent): void | Promise<void> {
    if (!this.#holding || event.type === "read") return;
    return new Promise<void>((release) => {
      this.#pending.push({ event, data: event.data, release });
      this.#startSyncLoop();
    });
  }

  #guestOutput(bytes: Uint8Array): void {
    if (this.#state === "fenced") return; // a fenced primary's guest is no longer the real one
    if (!this.#holding) {
      this.output.hold(bytes, 0);
      this.output.releaseAll();
      return;
    }
    this.output.hold(bytes, this.#nextSeq);
    this.#outputSinceCapture = true;
    this.#startSyncLoop();
  }

  // ------------------------------------------------------------ event-driven sync

  #startSyncLoop(): void {
    if (this.#syncLoopRunning) return;
    this.#syncLoopRunning = true;
    this.#syncLoopDone = this.#syncLoop().finally(() => {
      this.#syncLoopRunning = false;
      // Work that arrived after the loop's last check (console output is delivered from a
      // microtask) would otherwise wait for the next guest event.
      if (this.#state === "protected" && (this.#pending.length > 0 || this.#outputSinceCapture)) this.#startSyncLoop();
    });
  }

  async #syncLoop(): Promise<void> {
    while (this.#state === "protected" && (this.#pending.length > 0 || this.#outputSinceCapture)) {
      try {
        await this.#syncOnce();
      } catch (error) {
        this.#lose(`sync failed: ${(error as Error).message}`);
      }
    }
  }

  async #syncOnce(): Promise<void> {
    const channel = this.#channel!;
    await this.#machine.pause();
    if (this.#state !== "protected") return this.#resumeUnlessFenced();
    const stopped = performance.now();
    const capture = this.#capture();
    const wire = this.#options.mode === "logging-replay" ? this.#ioLogOf(capture.requests) : this.#blockCopyOf(capture.requests);
    this.#machine.run();
    const captured = performance.now();
    this.metrics.pause.add(captured - stopped);

    const acked = new Promise<void>((resolve) => this.#ackWaiters.set(capture.seq, resolve));
    const { seq } = capture;
    const epoch = this.#options.epoch;
    for (let start = 0; start < capture.pages.indices.length; start += MAX_PAGES_PER_FRAME) {
      const end = Math.min(capture.pages.indices.length, start + MAX_PAGES_PER_FRAME);
      this.metrics.count("memoryPages", await channel.sendFrame(pageFrame(seq, epoch, capture.pages, start, end)));
    }
    const stateDeltaBytes = capture.stateDelta.length;
    if (stateDeltaBytes > 0) {
      this.metrics.count("deviceState", await channel.sendFrame({ kind: "device-state", seq, epoch, mode: "delta", data: capture.stateDelta }));
    }
    for (const block of wire.blocks) {
      this.metrics.count("diskBlocks", await channel.sendFrame({ kind: "disk-blocks", seq, epoch, ...block }));
    }
    const commit: ControlMessage = {
      type: "sync-commit",
      seq,
      epoch,
      pageCount: capture.pages.indices.length,
      stateDeltaBytes,
      ...(wire.ioLog !== undefined ? { ioLog: wire.ioLog } : { blockWrites: wire.blockWrites }),
    };
    const commitBytes = await channel.send(commit);
    const ioLogBytes = wire.ioLog === undefined ? 0 : JSON.stringify(wire.ioLog).length;
    this.metrics.count("ioLog", ioLogBytes);
    this.metrics.count("control", commitBytes - ioLogBytes);
    await this.#untilAckOrLoss(acked, `sync-ack ${seq}`);
    this.#ackWaiters.delete(seq);
    if (this.#state !== "protected") {
      // Not acknowledged: these wait for the next secondary (stall) or go now (continue).
      this.#pending.unshift(...capture.requests);
      if (this.#state === "unprotected" && this.#options.onSecondaryLoss === "continue") this.#releaseAllRequests();
      return;
    }
    this.metrics.roundTrip.add(performance.now() - captured);
    this.metrics.syncs++;
    this.metrics.pagesSynced += capture.pages.indices.length;
    this.metrics.writesSynced += capture.requests.filter((r) => r.event.type === "write").length;
    for (const request of capture.requests) request.release();
    this.output.acknowledged(seq);
  }

  /** Everything of one sync at one instruction boundary (the guest is stopped). */
  #capture(): Capture {
    const seq = this.#nextSeq++;
    const pages = this.#tracker!.collect();
    const state = encodeMemorylessState(captureMemorylessState(this.#machine));
    const stateDelta = encodeDelta(this.#lastState!, state);
    this.#lastState = state;
    const requests = this.#pending;
    this.#pending = [];
    this.#outputSinceCapture = false;
    return { seq, pages, stateDelta, requests };
  }

  /**
   * io-log mode: writes travel as (disk, sector, segments). A write whose pages the
   * guest changed after submitting it carries its data inline, because replaying it
   * from memory would store what the primary's disk never got.
   */
  #ioLogOf(requests: PendingRequest[]): { ioLog: IoLogEntry[]; blocks: BlockFrame[]; blockWrites?: undefined } {
    const ram = this.#machine.ram.bytes;
    const ioLog: IoLogEntry[] = [];
    const blocks: BlockFrame[] = [];
    for (const { event, data } of requests) {
      const disk = this.#diskNumber(event.disk);
      if (event.type === "flush") {
        ioLog.push({ disk, type: "flush" });
        continue;
      }
      const segments = event.segments.map(({ gpa, length }) => ({ gpa, length }));
      const entry: IoLogEntry = { disk, type: "write", sector: event.sector, sectors: event.sectors, segments };
      if (data !== undefined && !segmentsHold(ram, segments, data)) {
        ioLog.push({ ...entry, inline: true });
        blocks.push({ disk, sector: event.sector, data });
        this.metrics.inlineWrites++;
      } else {
        ioLog.push(entry);
      }
    }
    return { ioLog, blocks };
  }

  #blockCopyOf(requests: PendingRequest[]): { blockWrites: BlockWriteAnnouncement[]; blocks: BlockFrame[]; ioLog?: undefined } {
    const blocks: BlockFrame[] = [];
    for (const { event, data } of requests) {
      if (event.type !== "write" || data === undefined) continue;
      const disk = this.#diskNumber(event.disk);
      const step = MAX_SECTORS_PER_BLOCK_FRAME * SECTOR_SIZE;
      for (let at = 0; at < data.length; at += step) {
        blocks.push({ disk, sector: event.sector + at / SECTOR_SIZE, data: data.subarray(at, at + step) });
      }
    }
    const blockWrites = blocks.map(({ disk, sector, data }) => ({ disk, sector, sectors: data.length / SECTOR_SIZE }));
    return { blockWrites, blocks };
  }

  // ------------------------------------------------------------ the peer

  #receive(channel: ReplicationChannel, event: ChannelEvent): void {
    if (channel !== this.#channel) return;
    this.#lastHeard = performance.now();
    if (event.channel !== "control") return;
    const message = event.message;
    switch (message.type) {
      case "disk-digest":
        this.#peerDigests.set(message.disk, message.sha256);
        this.#peerDigestWaiter?.();
        return;
      case "init-ack":
        this.#initAck?.();
        return;
      case "sync-ack":
        this.#ackWaiters.get(message.seq)?.();
        return;
      case "promoted":
        this.fence(`the secondary promoted itself to epoch ${message.epoch}`);
        return;
      case "error":
        this.#lose(`secondary reported ${message.code}: ${message.message}`);
        return;
      default:
        return;
    }
  }

  #peerClosed(channel: ReplicationChannel, info: ChannelCloseInfo): void {
    if (channel !== this.#channel) return;
    const why = info.error !== undefined ? `protocol error: ${info.error.message}` : info.reason;
    this.#lose(`replication link closed (${why})`);
  }

  /** The secondary is gone: per policy the guest runs on unprotected, or its writes and output wait. */
  #lose(reason: string): void {
    if (this.#state === "unprotected" || this.#state === "fenced" || this.#state === "idle") return;
    this.#stopHeartbeat();
    const stall = this.#options.onSecondaryLoss === "stall";
    this.#setState(
      "unprotected",
      `${reason}; ${stall ? "guest writes and output are HELD until a secondary protects the guest again" : "the guest now runs UNPROTECTED"}`,
    );
    if (!stall) {
      this.#releaseAllRequests();
      this.output.releaseAll();
    }
    for (const resolve of this.#ackWaiters.values()) resolve();
    this.#initAck?.();
    this.#peerDigestWaiter?.();
    const channel = this.#channel;
    void channel?.close(reason.slice(0, 200)).catch(() => undefined);
  }

  #releaseAllRequests(): void {
    for (const request of this.#pending.splice(0)) request.release();
  }

  #resumeUnlessFenced(): void {
    if (this.#state !== "fenced") this.#machine.run();
  }

  async #untilAckOrLoss(acked: Promise<void>, what: string, timeoutMs = this.#options.peerTimeoutMs): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#lose(`no ${what} within ${timeoutMs} ms`);
        resolve();
      }, timeoutMs);
    });
    await Promise.race([acked, timeout]);
    clearTimeout(timer);
  }

  async #waitForPeerDigests(): Promise<void> {
    const expected = this.#disks.length;
    const deadline = performance.now() + this.#options.peerTimeoutMs;
    while (this.#peerDigests.size < expected && performance.now() < deadline && (this.#state as PrimaryState) === "initial-sync") {
      await new Promise<void>((resolve) => {
        this.#peerDigestWaiter = resolve;
        setTimeout(resolve, 100);
      });
    }
  }

  #startHeartbeat(): void {
    this.#lastHeard = performance.now();
    this.#heartbeatTimer = setInterval(() => {
      if (performance.now() - this.#lastHeard > this.#options.peerTimeoutMs) {
        this.#lose(`no word from the secondary for ${this.#options.peerTimeoutMs} ms`);
        return;
      }
      void this.#sendControl({ type: "heartbeat", epoch: this.#options.epoch, id: ++this.#heartbeatId }).catch(() => undefined);
    }, this.#options.heartbeatIntervalMs);
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
  }

  async #sendControl(message: ControlMessage): Promise<void> {
    const channel = this.#channel;
    if (channel === undefined) throw new Error("no replication channel");
    this.metrics.count("control", await channel.send(message));
  }

  #diskNumber(id: string): number {
    const index = this.#disks.findIndex((disk) => disk.id === id);
    if (index < 0) throw new Error(`block event for unknown disk ${id}`);
    return index;
  }

  #setState(state: PrimaryState, reason: string): void {
    this.#state = state;
    this.metrics.state = state;
    this.#options.log?.(`primary: ${reason}`);
    for (const listener of this.#stateListeners) listener(state, reason);
  }
}

interface BlockFrame {
  disk: number;
  sector: number;
  data: Uint8Array;
}

/** Pages [start, end) of a collection as one frame; all-zero pages (the kernel zeroes pages it hands out) travel as bare indices. */
function pageFrame(seq: number, epoch: number, pages: PageSet, start: number, end: number): MemoryPagesFrame {
  const dataIndices: number[] = [];
  const zeroIndices: number[] = [];
  const chunks: Uint8Array[] = [];
  for (let k = start; k < end; k++) {
    const page = pages.data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE);
    if (isAllZero(page)) {
      zeroIndices.push(pages.indices[k]!);
    } else {
      dataIndices.push(pages.indices[k]!);
      chunks.push(page);
    }
  }
  const data = chunks.length === end - start ? pages.data.subarray(start * PAGE_SIZE, end * PAGE_SIZE) : concatPages(chunks);
  return { kind: "memory-pages", seq, epoch, indices: Uint32Array.from(dataIndices), data, zeroIndices: Uint32Array.from(zeroIndices) };
}

function concatPages(pages: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pages.length * PAGE_SIZE);
  pages.forEach((page, i) => out.set(page, i * PAGE_SIZE));
  return out;
}
