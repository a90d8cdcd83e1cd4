// The primary's sync engine (Kemari, event-driven): the guest runs; when it
// submits disk writes or prints, the engine stops it at an instruction boundary,
// captures dirty pages and the device-state delta, lets it run on, and sends the
// capture with the batch's I/O log (or, in dirty-block-copy mode, the written
// blocks). The writes' completions and the printed bytes are released only when
// the secondary acknowledges that sync.
import type { BlockHook, BlockIoEvent } from "../../emulator/block/hook.ts";
import type { Machine } from "../../emulator/machine.ts";
import { DirtyPageTracker, type PageSet } from "../../emulator/memory/index.ts";
import { captureMemorylessState, encodeDelta, encodeMemorylessState } from "../../emulator/state/index.ts";
import { VirtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import type { ReplicationChannel, ChannelEvent, ChannelCloseInfo } from "../channel/channel.ts";
import type { MemoryPagesFrame } from "../protocol/frames.ts";
import { MAX_PAGES_PER_FRAME, MAX_SECTORS_PER_BLOCK_FRAME, PAGE_SIZE, SECTOR_SIZE } from "../protocol/limits.ts";
import type { BlockWriteAnnouncement, ControlMessage, IoLogEntry } from "../protocol/messages.ts";
import { diskChunks, diskDigest, isAllZero } from "./disk-image.ts";
import { ReplicationMetrics } from "./metrics.ts";
import { OutputCommit } from "./output-commit.ts";

export type DiskMode = "logging-replay" | "dirty-block-copy";

export type PrimaryState = "idle" | "initial-sync" | "protected" | "unprotected" | "fenced";

export interface PrimaryOptions {
  mode: DiskMode;
  /** The hook the machine's disks were built with. */
  hook: BlockHook;
  epoch?: number;
  heartbeatIntervalMs?: number;
  /** A sync or heartbeat unanswered this long means the secondary is gone. */
  peerTimeoutMs?: number;
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

export class PrimaryEngine {
  readonly metrics = new ReplicationMetrics("primary");
  /** Guest console output, released by output commit; attach terminals here. */
  readonly output = new OutputCommit();
  readonly #machine: Machine;
  readonly #channel: ReplicationChannel;
  readonly #options: Required<Omit<PrimaryOptions, "log">> & Pick<PrimaryOptions, "log">;
  readonly #disks: VirtioBlkDisk[];
  #state: PrimaryState = "idle";
  #tracker: DirtyPageTracker | undefined;
  #lastState: Uint8Array | undefined;
  #nextSeq = 1;
  #pending: PendingRequest[] = [];
  #outputSinceCapture = false;
  #syncLoopRunning = false;
  #ackWaiters = new Map<number, () => void>();
  #initAck: (() => void) | undefined;
  #peerDigests = new Map<number, string>();
  #peerDigestWaiter: (() => void) | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #heartbeatId = 0;
  #lastHeard = performance.now();
  #unsubscribe: (() => void)[] = [];
  #stateListeners = new Set<(state: PrimaryState, reason: string) => void>();

  constructor(machine: Machine, channel: ReplicationChannel, options: PrimaryOptions) {
    this.#machine = machine;
    this.#channel = channel;
    this.#options = {
      epoch: 1,
      heartbeatIntervalMs: DEFAULT_HEARTBEAT_MS,
      peerTimeoutMs: DEFAULT_PEER_TIMEOUT_MS,
      ...options,
    };
    this.#disks = machine.devices.filter((device): device is VirtioBlkDisk => device instanceof VirtioBlkDisk);
    this.metrics.epoch = this.#options.epoch;
    channel.onMessage((event) => this.#receive(event));
    channel.onClose((info) => this.#peerClosed(info));
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

  /**
   * Initial sync: the guest stands still while RAM, device state and (unless the
   * secondary proves it has them) the disks are copied; then it runs protected.
   */
  async protect(): Promise<void> {
    if (this.#state !== "idle") throw new Error(`protect: engine is ${this.#state}`);
    this.#setState("initial-sync", "initial sync started");
    const started = performance.now();
    const bytesBefore = this.metrics.totalBytes;
    await this.#waitForPeerDigests();
    const wasRunning = this.#machine.state === "running";
    await this.#machine.pause();
    try {
      await this.#settleDiskRequests();
      this.#tracker = DirtyPageTracker.create(this.#machine);
      const pages = this.#tracker.collect();
      const state = encodeMemorylessState(captureMemorylessState(this.#machine));
      this.#lastState = state;
      const digests = await Promise.all(this.#disks.map((disk) => diskDigest(disk.backend)));
      const epoch = this.#options.epoch;
      const disks = this.#disks.map((disk, id) => ({
        id,
        name: disk.id,
        sizeBytes: disk.backend.sizeBytes,
        ...(this.#peerDigests.get(id) === digests[id] ? { sha256: digests[id]! } : {}),
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
      await this.#sendPages(0, pages, { compress: true });
      this.metrics.count("deviceState", await this.#channel.sendFrame({ kind: "device-state", seq: 0, epoch, mode: "full", data: state }));
      for (const [id, disk] of this.#disks.entries()) {
        if (disks[id]!.sha256 !== undefined) continue;
        for await (const chunk of diskChunks(disk.backend)) {
          const zeros = isAllZero(chunk.data);
          this.metrics.count(
            "diskCopy",
            await this.#channel.sendFrame(
              { kind: "disk-chunk", seq: 0, epoch, disk: id, offset: chunk.offset, length: chunk.data.length, data: zeros ? "zeros" : chunk.data },
              { compress: true },
            ),
          );
          await this.#channel.whenDrained();
        }
        await this.#sendControl({ type: "disk-digest", seq: 0, epoch, disk: id, sha256: digests[id]! });
      }
      const acked = new Promise<void>((resolve) => (this.#initAck = resolve));
      await this.#sendControl({ type: "init-end", seq: 0, epoch, pageCount: pages.indices.length, stateBytes: state.length });
      await this.#untilAckOrLoss(acked, "init-ack");
      this.metrics.initialSync = { ms: performance.now() - started, bytes: this.metrics.totalBytes - bytesBefore };
      this.#setState("protected", `initial sync done in ${(this.metrics.initialSync.ms / 1000).toFixed(1)} s`);
      this.#startHeartbeat();
    } finally {
      if (wasRunning && (this.#state as PrimaryState) !== "fenced") this.#machine.run();
    }
  }

  /** Stops replicating (the guest keeps running unprotected) and closes the channel. */
  async close(reason = "primary shutting down"): Promise<void> {
    this.#stopHeartbeat();
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
    this.#releaseAllRequests();
    this.output.releaseAll();
    this.#tracker?.dispose();
    this.#tracker = undefined;
    await this.#channel.close(reason);
  }

  // ------------------------------------------------------------ guest events

  #blockEvent(event: BlockIoEvent): void | Promise<void> {
    if (this.#state !== "protected" || event.type === "read") return;
    return new Promise<void>((release) => {
      this.#pending.push({ event, data: event.data, release });
      this.#startSyncLoop();
    });
  }

  #guestOutput(bytes: Uint8Array): void {
    if (this.#state === "protected") {
      this.output.hold(bytes, this.#nextSeq);
      this.#outputSinceCapture = true;
      this.#startSyncLoop();
    } else if (this.#state === "fenced") {
      // A fenced primary's guest is no longer the real one: nothing it prints counts.
    } else {
      this.output.hold(bytes, 0);
      this.output.releaseAll();
    }
  }

  // ------------------------------------------------------------ event-driven sync

  #startSyncLoop(): void {
    if (this.#syncLoopRunning) return;
    this.#syncLoopRunning = true;
    void this.#syncLoop().finally(() => (this.#syncLoopRunning = false));
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
    await this.#sendPages(seq, capture.pages, {});
    const stateDeltaBytes = capture.stateDelta.length;
    if (stateDeltaBytes > 0) {
      this.metrics.count("deviceState", await this.#channel.sendFrame({ kind: "device-state", seq, epoch, mode: "delta", data: capture.stateDelta }));
    }
    for (const block of wire.blocks) {
      this.metrics.count("diskBlocks", await this.#channel.sendFrame({ kind: "disk-blocks", seq, epoch, ...block }));
    }
    const commit: ControlMessage = {
      type: "sync-commit",
      seq,
      epoch,
      pageCount: capture.pages.indices.length,
      stateDeltaBytes,
      ...(wire.ioLog !== undefined ? { ioLog: wire.ioLog } : { blockWrites: wire.blockWrites }),
    };
    const commitBytes = await this.#channel.send(commit);
    const ioLogBytes = wire.ioLog === undefined ? 0 : JSON.stringify(wire.ioLog).length;
    this.metrics.count("ioLog", ioLogBytes);
    this.metrics.count("control", commitBytes - ioLogBytes);
    await this.#untilAckOrLoss(acked, `sync-ack ${seq}`);
    this.#ackWaiters.delete(seq);
    if (this.#state !== "protected") return;
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
      if (data !== undefined && !memoryHolds(ram, segments, data)) {
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

  async #sendPages(seq: number, pages: PageSet, options: { compress?: boolean }): Promise<void> {
    const epoch = this.#options.epoch;
    for (let start = 0; start < pages.indices.length; start += MAX_PAGES_PER_FRAME) {
      const end = Math.min(pages.indices.length, start + MAX_PAGES_PER_FRAME);
      const frame = pageFrame(seq, epoch, pages, start, end);
      this.metrics.count("memoryPages", await this.#channel.sendFrame(frame, options));
      if (seq === 0) await this.#channel.whenDrained();
    }
  }

  // ------------------------------------------------------------ the peer

  #receive(event: ChannelEvent): void {
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
        this.#fence(`the secondary promoted itself to epoch ${message.epoch}`);
        return;
      case "error":
        this.#lose(`secondary reported ${message.code}: ${message.message}`);
        return;
      default:
        return;
    }
  }

  #peerClosed(info: ChannelCloseInfo): void {
    const why = info.error !== undefined ? `protocol error: ${info.error.message}` : info.reason;
    this.#lose(`replication link closed (${why})`);
  }

  /** The secondary is gone: the guest keeps running, unprotected, and says so. */
  #lose(reason: string): void {
    if (this.#state === "unprotected" || this.#state === "fenced") return;
    this.#stopHeartbeat();
    this.#setState("unprotected", `${reason}; the guest now runs UNPROTECTED`);
    this.#releaseAllRequests();
    this.output.releaseAll();
    for (const resolve of this.#ackWaiters.values()) resolve();
    this.#initAck?.();
    this.#peerDigestWaiter?.();
  }

  /** The peer took over: this guest must never acknowledge another write or show output. */
  #fence(reason: string): void {
    if (this.#state === "fenced") return;
    this.#stopHeartbeat();
    this.#setState("fenced", `${reason}; this primary stops its guest`);
    void this.#machine.pause();
    for (const resolve of this.#ackWaiters.values()) resolve();
    this.#initAck?.();
  }

  #releaseAllRequests(): void {
    for (const request of this.#pending.splice(0)) request.release();
  }

  #resumeUnlessFenced(): void {
    if (this.#state !== "fenced") this.#machine.run();
  }

  async #untilAckOrLoss(acked: Promise<void>, what: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#lose(`no ${what} within ${this.#options.peerTimeoutMs} ms`);
        resolve();
      }, this.#options.peerTimeoutMs);
    });
    await Promise.race([acked, timeout]);
    clearTimeout(timer);
  }

  async #waitForPeerDigests(): Promise<void> {
    const expected = this.#disks.length;
    const deadline = performance.now() + this.#options.peerTimeoutMs;
    while (this.#peerDigests.size < expected && performance.now() < deadline && this.#state === "initial-sync") {
      await new Promise<void>((resolve) => {
        this.#peerDigestWaiter = resolve;
        setTimeout(resolve, 100);
      });
    }
  }

  /** Waits (guest stopped) until no disk request is half done, so disks and RAM agree. */
  async #settleDiskRequests(): Promise<void> {
    while (this.#disks.some((disk) => disk.device.inFlightHeads.length > 0)) {
      await new Promise((resolve) => setTimeout(resolve, 5));
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
    this.metrics.count("control", await this.#channel.send(message));
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

function memoryHolds(ram: Uint8Array, segments: readonly { gpa: number; length: number }[], data: Uint8Array): boolean {
  let at = 0;
  for (const { gpa, length } of segments) {
    const slice = ram.subarray(gpa, gpa + length);
    for (let i = 0; i < length; i++) if (slice[i] !== data[at + i]) return false;
    at += length;
  }
  return true;
}

function pageFrame(seq: number, epoch: number, pages: PageSet, start: number, end: number): MemoryPagesFrame {
  return {
    kind: "memory-pages",
    seq,
    epoch,
    indices: pages.indices.slice(start, end),
    data: pages.data.subarray(start * PAGE_SIZE, end * PAGE_SIZE),
    zeroIndices: new Uint32Array(0),
  };
}
