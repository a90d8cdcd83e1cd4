// The secondary: holds a replica that is never running (RAM filled page by page,
// the last committed device state as bytes, its own disks), applies each sync
// atomically at its commit, replays the sync's disk writes from its own memory
// (I/O logging-replay) or writes the copied blocks, and acknowledges. When the
// primary is lost it restores the last committed state and runs the guest.
import { SECTOR_SIZE } from "../../emulator/block/backend.ts";
import { gatherSegments } from "../../emulator/block/segments.ts";
import { withoutUndefined } from "../../emulator/config.ts";
import type { Machine } from "../../emulator/machine.ts";
import { applyDelta, decodeMemorylessState, restoreMemorylessState } from "../../emulator/state/index.ts";
import { VirtioBlkDisk } from "../../emulator/virtio-blk/disk.ts";
import type { ChannelCloseInfo, ChannelEvent, ReplicationChannel } from "../channel/channel.ts";
import type { BinaryFrame, MemoryPagesFrame } from "../protocol/frames.ts";
import { applyPages } from "../protocol/page-collect.ts";
import type { ControlMessage, InitBeginMessage, SyncCommitMessage } from "../protocol/messages.ts";
import { diskDigest } from "./disk-image.ts";
import { ReplicationMetrics } from "./metrics.ts";

export type SecondaryState = "waiting" | "initial-sync" | "replicating" | "promoting" | "active";

export interface SecondaryOptions {
  /** No word from the primary for this long while replicating means it is gone. */
  peerTimeoutMs?: number;
  /** Take over by itself when the primary is lost (default true); else wait for `promote()`. */
  autoFailover?: boolean;
  log?: (line: string) => void;
}

interface StagedSync {
  pages: MemoryPagesFrame[];
  stateDelta: Uint8Array | undefined;
  blocks: Extract<BinaryFrame, { kind: "disk-blocks" }>[];
}

const DEFAULT_PEER_TIMEOUT_MS = 2000;

export class SecondaryEngine {
  readonly metrics = new ReplicationMetrics("secondary");
  readonly #machine: Machine;
  readonly #disks: VirtioBlkDisk[];
  readonly #options: Required<Omit<SecondaryOptions, "log">> & Pick<SecondaryOptions, "log">;
  #state: SecondaryState = "waiting";
  #channel: ReplicationChannel | undefined;
  /** Local disk for each wire disk number of the session. */
  #diskMap = new Map<number, VirtioBlkDisk>();
  /** The last committed memory-less state, encoded. */
  #committedState: Uint8Array | undefined;
  #staged: StagedSync = emptyStage();
  /** Applies run one after another; a takeover waits for the last one. */
  #work: Promise<void> = Promise.resolve();
  #lastHeard = 0;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #lossDetectedAt = 0;
  #stateListeners = new Set<(state: SecondaryState, reason: string) => void>();

  /** `machine` comes from `Machine.createBlank` with the same disks (by id and size) as the primary's. */
  constructor(machine: Machine, options: SecondaryOptions = {}) {
    if (machine.state !== "blank") throw new Error(`secondary: the replica machine must be blank, it is ${machine.state}`);
    this.#machine = machine;
    this.#disks = machine.devices.filter((device): device is VirtioBlkDisk => device instanceof VirtioBlkDisk);
    this.#options = { peerTimeoutMs: DEFAULT_PEER_TIMEOUT_MS, autoFailover: true, ...withoutUndefined(options) };
  }

  get state(): SecondaryState {
    return this.#state;
  }

  get machine(): Machine {
    return this.#machine;
  }

  /** The failover epoch this node has seen (raised by its own takeover); handshakes carry it. */
  get epoch(): number {
    return this.metrics.epoch;
  }

  onStateChange(listener: (state: SecondaryState, reason: string) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /** Serves one authenticated session with a primary; refuses a second one while busy. */
  async attach(channel: ReplicationChannel): Promise<void> {
    if (this.#channel !== undefined || this.#state === "active" || this.#state === "promoting") {
      await channel.close(this.#state === "active" ? "this node has taken over" : "a primary is already attached");
      return;
    }
    this.#channel = channel;
    this.#lastHeard = performance.now();
    channel.onMessage((event) => this.#receive(channel, event));
    channel.onClose((info) => this.#closed(channel, info));
    // Tell the primary what our disks hold, so that equal ones are not copied.
    for (const [number, disk] of this.#disks.entries()) {
      const sha256 = await diskDigest(disk.backend);
      this.#count("control", await channel.send({ type: "disk-digest", seq: 0, epoch: channel.epoch, disk: number, sha256 }));
    }
    this.#startWatchdog();
  }

  /**
   * Takes over: waits for the last commit to be applied, restores the last committed
   * state into the replica and runs it. In-flight disk requests of that state are run
   * again by the disks. Refused unless an initial sync completed.
   */
  async promote(reason: string): Promise<void> {
    if (this.#state !== "replicating") {
      throw new Error(`promote: no consistent replica to run (state ${this.#state})`);
    }
    const started = this.#lossDetectedAt > 0 ? this.#lossDetectedAt : performance.now();
    this.#setState("promoting", `taking over: ${reason}`);
    this.#stopWatchdog();
    const channel = this.#channel;
    this.#channel = undefined;
    const epoch = (channel?.epoch ?? this.metrics.epoch) + 1;
    if (channel?.isOpen) {
      // Fence the old primary: it must never acknowledge another guest write.
      await channel.send({ type: "promoted", epoch }).catch(() => undefined);
      await channel.close("secondary promoted");
    }
    await this.#work;
    const state = decodeMemorylessState(this.#committedState!);
    restoreMemorylessState(this.#machine, state);
    await Promise.all(this.#disks.map((disk) => disk.backend.flush()));
    this.#machine.run();
    this.metrics.epoch = epoch;
    this.metrics.failoverMs = performance.now() - started;
    this.#setState("active", `guest running on this node (epoch ${epoch}), takeover took ${this.metrics.failoverMs.toFixed(0)} ms`);
  }

  /** Leaves the session on purpose (no takeover follows). */
  async close(): Promise<void> {
    this.#stopWatchdog();
    const channel = this.#channel;
    this.#channel = undefined;
    await channel?.close("secondary shutting down");
  }

  // ------------------------------------------------------------ inbound

  #receive(channel: ReplicationChannel, event: ChannelEvent): void {
    if (channel !== this.#channel) return;
    this.#lastHeard = performance.now();
    if (event.channel === "frame") return this.#frame(event.frame);
    const message = event.message;
    switch (message.type) {
      case "init-begin":
        return this.#enqueue(() => this.#initBegin(message));
      case "disk-digest":
        return this.#enqueue(() => this.#verifyDisk(message.disk, message.sha256));
      case "init-end":
        return this.#enqueue(async () => {
          // Verifying big disks can take longer than the peer timeout, and the primary is
          // silent until our init-ack: the watchdog counts from here, not from init-end's arrival.
          this.#lastHeard = performance.now();
          this.#setState("replicating", `initial sync complete (${message.pageCount} pages, ${message.stateBytes} state bytes)`);
          await this.#send({ type: "init-ack", seq: 0, epoch: message.epoch });
        });
      case "sync-commit": {
        const staged = this.#staged;
        this.#staged = emptyStage();
        return this.#enqueue(() => this.#commit(message, staged));
      }
      case "heartbeat":
        void this.#send({ type: "heartbeat-ack", epoch: message.epoch, id: message.id }).catch(() => undefined);
        return;
      case "goodbye":
        this.#options.log?.(`secondary: primary said goodbye (${message.reason}); not taking over`);
        this.#detach("primary left deliberately");
        return;
      default:
        return;
    }
  }

  #frame(frame: BinaryFrame): void {
    this.metrics.count(frameCategory(frame), frame.data === "zeros" ? 0 : frame.data.length);
    if (frame.seq === 0) {
      // Initial sync: written as it comes; the replica is not usable before init-end anyway.
      switch (frame.kind) {
        case "memory-pages":
          return this.#enqueue(async () => this.#writePages(frame));
        case "device-state":
          this.#committedState = frame.data;
          return;
        case "disk-chunk": {
          const disk = this.#diskMap.get(frame.disk)!;
          const data = frame.data === "zeros" ? new Uint8Array(frame.length) : frame.data;
          return this.#enqueue(() => disk.backend.write(frame.offset / SECTOR_SIZE, data));
        }
        default:
          return;
      }
    }
    switch (frame.kind) {
      case "memory-pages":
        this.#staged.pages.push(frame);
        return;
      case "device-state":
        this.#staged.stateDelta = frame.data;
        return;
      case "disk-blocks":
        this.#staged.blocks.push(frame);
        return;
      default:
        return;
    }
  }

  async #initBegin(message: InitBeginMessage): Promise<void> {
    this.#setState("initial-sync", `initial sync from the primary (epoch ${message.epoch}, ${message.diskMode})`);
    this.metrics.epoch = message.epoch;
    if (message.memoryBytes !== this.#machine.ram.size) {
      return this.#fail("memory-mismatch", `the primary has ${message.memoryBytes} bytes of RAM, this replica ${this.#machine.ram.size}`);
    }
    this.#diskMap.clear();
    for (const descriptor of message.disks) {
      const disk = this.#disks.find((d) => d.id === descriptor.name);
      if (disk === undefined || disk.backend.sizeBytes !== descriptor.sizeBytes) {
        return this.#fail("disk-mismatch", `the primary's disk ${descriptor.name} (${descriptor.sizeBytes} bytes) has no equal-sized disk here`);
      }
      this.#diskMap.set(descriptor.id, disk);
      if (descriptor.sha256 !== undefined) await this.#verifyDisk(descriptor.id, descriptor.sha256);
    }
  }

  async #verifyDisk(number: number, sha256: string): Promise<void> {
    const disk = this.#diskMap.get(number)!;
    const local = await diskDigest(disk.backend);
    if (local !== sha256) await this.#fail("disk-mismatch", `disk ${disk.id} differs from the primary's after the copy`);
  }

  /** One sync, all or nothing as far as a takeover can see: it waits for this to finish. */
  async #commit(message: SyncCommitMessage, staged: StagedSync): Promise<void> {
    for (const frame of staged.pages) this.#writePages(frame);
    if (staged.stateDelta !== undefined) this.#committedState = applyDelta(this.#committedState!, staged.stateDelta);
    const ram = this.#machine.ram.bytes;
    const inline = staged.blocks[Symbol.iterator]();
    const writes: Promise<void>[] = [];
    if (message.ioLog !== undefined) {
      for (const entry of message.ioLog) {
        if (entry.type === "flush") continue; // durability here matters only once this node runs the guest
        const disk = this.#diskMap.get(entry.disk)!;
        const data = entry.inline === true ? inline.next().value!.data : gatherSegments(ram, entry.segments);
        writes.push(disk.backend.write(entry.sector, data));
      }
    } else {
      for (const block of staged.blocks) writes.push(this.#diskMap.get(block.disk)!.backend.write(block.sector, block.data));
    }
    await Promise.all(writes);
    this.metrics.syncs++;
    this.metrics.pagesSynced += message.pageCount;
    this.metrics.writesSynced += writes.length;
    await this.#send({ type: "sync-ack", seq: message.seq, epoch: message.epoch });
  }

  #writePages(frame: MemoryPagesFrame): void {
    const { ram } = this.#machine;
    applyPages(frame, (gpa, bytes) => ram.write(gpa, bytes));
  }

  // ------------------------------------------------------------ losing the primary

  #closed(channel: ReplicationChannel, info: ChannelCloseInfo): void {
    if (channel !== this.#channel) return;
    const why = info.error !== undefined ? `protocol error: ${info.error.message}` : info.reason;
    this.#lost(`replication link closed (${why})`);
  }

  #lost(reason: string): void {
    if (this.#state === "replicating" && this.#options.autoFailover) {
      this.#lossDetectedAt = performance.now();
      void this.promote(`primary lost: ${reason}`).catch((error: unknown) => this.#options.log?.(`secondary: takeover failed: ${(error as Error).message}`));
      return;
    }
    this.#detach(reason);
  }

  /** Back to waiting for a primary; an incomplete initial sync leaves nothing usable. */
  #detach(reason: string): void {
    this.#stopWatchdog();
    const channel = this.#channel;
    this.#channel = undefined;
    void channel?.close(reason);
    if (this.#state === "initial-sync") this.#setState("waiting", `initial sync abandoned: ${reason}`);
    else if (this.#state === "replicating") this.#options.log?.(`secondary: ${reason}; holding the replica (promote to take over)`);
  }

  async #fail(code: string, message: string): Promise<void> {
    this.#options.log?.(`secondary: refusing the session: ${message}`);
    await this.#channel?.send({ type: "error", code, message }).catch(() => undefined);
    this.#detach(message);
  }

  #startWatchdog(): void {
    this.#watchdog = setInterval(() => {
      if (this.#state === "replicating" && performance.now() - this.#lastHeard > this.#options.peerTimeoutMs) {
        this.#lost(`no word from the primary for ${this.#options.peerTimeoutMs} ms`);
      }
    }, Math.max(50, this.#options.peerTimeoutMs / 8));
  }

  #stopWatchdog(): void {
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }

  #enqueue(work: () => Promise<void> | void): void {
    this.#work = this.#work.then(work).catch((error: unknown) => this.#fail("apply-failed", (error as Error).message));
  }

  async #send(message: ControlMessage): Promise<void> {
    const channel = this.#channel;
    if (channel === undefined) return;
    this.#count("control", await channel.send(message));
  }

  #count(category: "control", bytes: number): void {
    this.metrics.count(category, bytes);
  }

  #setState(state: SecondaryState, reason: string): void {
    this.#state = state;
    this.metrics.state = state;
    this.#options.log?.(`secondary: ${reason}`);
    for (const listener of this.#stateListeners) listener(state, reason);
  }
}

function emptyStage(): StagedSync {
  return { pages: [], stateDelta: undefined, blocks: [] };
}

function frameCategory(frame: BinaryFrame): "memoryPages" | "deviceState" | "diskBlocks" | "diskCopy" {
  return frame.kind === "memory-pages" ? "memoryPages" : frame.kind === "device-state" ? "deviceState" : frame.kind === "disk-blocks" ? "diskBlocks" : "diskCopy";
}
