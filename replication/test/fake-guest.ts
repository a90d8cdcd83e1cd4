// An in-memory guest for engine tests: RAM as a byte array, device state as a few parts,
// disks in memory, and block requests and console output the test submits by hand. It
// follows the contract of a real machine where the engines can tell: a write's data is
// copied at submission and written to the disk at once, its completion waits for the
// engine's gate, and captures see RAM and state at one moment.
import { BlockHook, type BackendFailureHandler, type BlockCompletionListener, type BlockIoEvent } from "../../emulator/block/hook.ts";
import { MemoryBackend } from "../../emulator/block/memory-backend.ts";
import type { BlockBackend } from "../../emulator/block/backend.ts";
import { copyPageChanges, type PageChangeViews, type PageSet } from "../../emulator/memory/index.ts";
import type { StateChanges } from "../../emulator/state/state-parts.ts";
import type { FullCopyEnd, GuestDisk, PrimaryGuest, ReplicaGuest } from "../engine/guest.ts";

export const FAKE_PAGES = 64;
const PAGE = 4096;

/** A disk whose writes (or flushes) fail on command, as a dying device would. */
export class FailingBackend extends MemoryBackend {
  failWrites = false;
  override async write(offsetSectors: number, data: Uint8Array): Promise<void> {
    if (this.failWrites) throw new Error("EIO: the disk is failing");
    return super.write(offsetSectors, data);
  }
}

/** A disk whose flushes, once `holdFlushes` is set, wait until the test lets them finish. */
export class SlowFlushBackend extends MemoryBackend {
  holdFlushes = false;
  /** Flushes asked for while held. */
  flushes = 0;
  #waiting: (() => void)[] = [];
  override flush(): Promise<void> {
    if (!this.holdFlushes) return super.flush();
    this.flushes++;
    return new Promise((resolve) => this.#waiting.push(resolve));
  }
  releaseFlushes(): void {
    for (const resolve of this.#waiting.splice(0)) resolve();
  }
}

/** How a submitted request ended, from the guest's point of view. */
export interface Submitted {
  /** Settles when the guest would see the request complete (OK or error). */
  completion: Promise<"ok" | "error">;
  /** Whether it has completed yet. */
  completed(): boolean;
}

export class FakeGuest implements PrimaryGuest, ReplicaGuest {
  readonly memoryBytes = FAKE_PAGES * PAGE;
  readonly disks: GuestDisk[];
  readonly hook = new BlockHook();
  #ram = new Uint8Array(this.memoryBytes);
  #shadow: Uint8Array | undefined;
  #copyAt = 0;
  #state: Uint8Array[] = [new TextEncoder().encode('{"eip":0}'), new Uint8Array(64)];
  #lastState: Uint8Array[] = [];
  #outputListeners = new Set<(bytes: Uint8Array) => void>();
  #frameListeners = new Set<(frame: Uint8Array) => void>();
  #ingressWatermark: number | null = null;
  #busy = new Set<Promise<unknown>>();
  halted = false;
  startedWith: readonly Uint8Array[] | undefined;

  constructor(backends: BlockBackend[] = [new MemoryBackend(1 << 20)]) {
    this.disks = backends.map((backend, i) => ({
      name: `vd${String.fromCharCode(0x61 + i)}`,
      backend,
      idle: async () => void (await Promise.allSettled([...this.#busy])),
    }));
  }

  // ---------------------------------------------------------------- the guest's side

  /** The guest writes `data` at sector `sector` from its buffer at page `bufferPage` (a buffer larger than RAM stays outside it). */
  write(sector: number, data: Uint8Array, bufferPage = 10, disk = 0): Submitted {
    if (bufferPage * PAGE + data.length <= this.memoryBytes) this.#ram.set(data, bufferPage * PAGE);
    return this.#submit({
      disk: this.disks[disk]!.name,
      type: "write",
      sector,
      sectors: data.length / 512,
      segments: [{ gpa: bufferPage * PAGE, length: data.length }],
      data: data.slice(),
    });
  }

  flush(disk = 0): Submitted {
    return this.#submit({ disk: this.disks[disk]!.name, type: "flush", sector: 0, sectors: 0, segments: [] });
  }

  print(text: string): void {
    const bytes = new TextEncoder().encode(text);
    for (const listener of this.#outputListeners) listener(bytes);
  }

  /** Changes RAM and device state as running code would. */
  touch(page: number, value: number): void {
    this.#ram.fill(value, page * PAGE, page * PAGE + 100);
    this.#state[0] = new TextEncoder().encode(`{"eip":${value}}`);
  }

  #submit(event: BlockIoEvent): Submitted {
    const backend = this.disks.find((d) => d.name === event.disk)!.backend;
    const io = event.type === "write" ? backend.write(event.sector, event.data!) : event.type === "flush" ? backend.flush() : Promise.resolve();
    this.#busy.add(io);
    void io.finally(() => this.#busy.delete(io));
    const gate = this.hook.emit(event);
    let done = false;
    // As the device: a disk error that someone takes over never completes here.
    const ran = io.then(
      () => true,
      async (error: unknown) => !(await this.hook.backendFailed(event, error as Error)) && Promise.reject(error),
    );
    const completion = Promise.all([ran, gate]).then(
      ([settled]) => (settled ? ("ok" as const) : new Promise<never>(() => undefined)),
      () => "error" as const,
    );
    void completion.then(() => (done = true));
    return { completion, completed: () => done };
  }

  // ---------------------------------------------------------------- PrimaryGuest

  atNextBoundary<T>(work: () => T): Promise<T> {
    return Promise.resolve().then(work);
  }

  /** Whether the engine asked for short slices (it does while syncs are in flight). */
  eagerYielding = false;

  eagerYield(on: boolean): void {
    this.eagerYielding = on;
  }

  readonly #idleListeners = new Set<() => void>();

  onIdle(listener: () => void): () => void {
    this.#idleListeners.add(listener);
    return () => this.#idleListeners.delete(listener);
  }

  /** The guest's CPU halts (as a machine reports after a slice that ended in HLT). */
  goIdle(): void {
    for (const listener of this.#idleListeners) listener();
  }

  beginFullCopy(): void {
    this.#shadow = new Uint8Array(this.#ram.length);
    this.#copyAt = 0;
  }

  /** Like a machine: the guest may write between ranges; finishFullCopy reports what it changed. */
  copyPages(maxPages: number): { pages: PageSet; done: boolean } {
    const first = this.#copyAt;
    const end = Math.min(FAKE_PAGES, first + maxPages);
    const indices: number[] = [];
    for (let p = first; p < end; p++) if (this.#ram.subarray(p * PAGE, (p + 1) * PAGE).some((b) => b !== 0)) indices.push(p);
    const data = new Uint8Array(indices.length * PAGE);
    indices.forEach((p, k) => {
      data.set(this.#ram.subarray(p * PAGE, (p + 1) * PAGE), k * PAGE);
      this.#shadow!.set(this.#ram.subarray(p * PAGE, (p + 1) * PAGE), p * PAGE);
    });
    this.#copyAt = end;
    return { pages: { indices: Uint32Array.from(indices), data }, done: end === FAKE_PAGES };
  }

  finishFullCopy(): FullCopyEnd {
    this.#lastState = this.#state.map((part) => part.slice());
    return { pages: copyPageChanges(this.collectPages()), state: this.#lastState.map((part) => part.slice()) };
  }

  collectPages(): PageChangeViews {
    const shadow = this.#shadow!;
    const indices: number[] = [];
    for (let p = 0; p < FAKE_PAGES; p++) {
      const now = this.#ram.subarray(p * PAGE, (p + 1) * PAGE);
      if (Buffer.compare(now, shadow.subarray(p * PAGE, (p + 1) * PAGE)) !== 0) indices.push(p);
    }
    const previous = new Uint8Array(indices.length * PAGE);
    indices.forEach((p, k) => {
      previous.set(shadow.subarray(p * PAGE, (p + 1) * PAGE), k * PAGE);
      shadow.set(this.#ram.subarray(p * PAGE, (p + 1) * PAGE), p * PAGE);
    });
    const ram = this.#ram;
    return {
      indices: Uint32Array.from(indices),
      now: (k) => ram.subarray(indices[k]! * PAGE, (indices[k]! + 1) * PAGE),
      before: (k) => previous.subarray(k * PAGE, (k + 1) * PAGE),
    };
  }

  captureState(): StateChanges {
    const state: StateChanges = { partCount: this.#state.length, changed: [] };
    this.#state.forEach((part, index) => {
      const before = this.#lastState[index];
      if (before !== undefined && Buffer.compare(before, part) === 0) return;
      state.changed.push({ index, previous: before, current: part.slice() });
      this.#lastState[index] = part.slice();
    });
    return state;
  }

  ram(): Uint8Array {
    return this.#ram;
  }

  onBlockRequest(listener: (event: BlockIoEvent) => void | Promise<void>): () => void {
    return this.hook.subscribe(listener);
  }

  onBlockCompleted(listener: BlockCompletionListener): () => void {
    return this.hook.onCompleted(listener);
  }

  onBackendFailure(handler: BackendFailureHandler): () => void {
    return this.hook.onBackendFailure(handler);
  }

  paused = false;

  async pause(): Promise<void> {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  /** The guest transmits an Ethernet frame. */
  transmit(frame: Uint8Array): void {
    for (const listener of this.#frameListeners) listener(frame.slice());
  }

  /** The guest's NIC takes an ingress frame (the watermark rides in its state). */
  receive(id: number): void {
    this.#ingressWatermark = id;
    this.#state[1] = new TextEncoder().encode(`{"ingress":${id}}`);
  }

  onFrame(listener: (frame: Uint8Array) => void): () => void {
    this.#frameListeners.add(listener);
    return () => this.#frameListeners.delete(listener);
  }

  ingressWatermark(): number | null {
    return this.#ingressWatermark;
  }

  onOutput(listener: (bytes: Uint8Array) => void): () => void {
    this.#outputListeners.add(listener);
    return () => this.#outputListeners.delete(listener);
  }

  halt(): void {
    this.halted = true;
  }

  readonly trackerStats = undefined;

  dispose(): void {}

  // ---------------------------------------------------------------- ReplicaGuest

  start(state: readonly Uint8Array[]): void {
    this.startedWith = state;
  }

  /** The device state as the primary would capture it now. */
  get stateParts(): Uint8Array[] {
    return this.#state;
  }
}
