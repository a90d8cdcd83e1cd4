// The virtio block device: features and config space, and the life of a request
// from the available ring to the used ring. Requests run concurrently; each one
// completes (status byte, used ring, interrupt) when its backend I/O and every
// hook gate have settled.
import { type BlockBackend } from "../block/backend.ts";
import type { BlockHook, BlockIoEvent, BlockIoType } from "../block/hook.ts";
import { gatherSegments } from "../block/segments.ts";
import type { RateLimitedLog } from "../rate-limited-log.ts";
import { featureBit } from "../virtio/constants.ts";
import type { VirtioDevice, VirtioDeviceContext } from "../virtio/device.ts";
import type { GuestMemory } from "../virtio/guest-memory.ts";
import type { DescriptorChain, SplitVirtqueue } from "../virtio/virtqueue.ts";
import { BlockMetrics } from "./metrics.ts";
import { isRequestError, parseRequest, statusFor, type Request } from "./request.ts";
import { BlkConfig, BlkFeature, BlkStatus, ID_BYTES, VIRTIO_ID_BLOCK } from "./spec.ts";
import { SECTOR_SIZE } from "../units.ts";

export const QUEUE_SIZE = 256;
/** Largest data segment the driver may use (Linux's max_segment_size). */
export const SIZE_MAX = 1 << 20;
/** Data segments per request: the queue holds header and status too. */
export const SEG_MAX = QUEUE_SIZE - 2;

/** PCI class: mass storage controller, SCSI subclass (what QEMU uses for virtio-blk). */
const PCI_CLASS_STORAGE_SCSI = 0x010000;

export interface VirtioBlkDeviceOptions {
  id: string;
  backend: BlockBackend;
  /** Up to 20 bytes answered to VIRTIO_BLK_T_GET_ID (/sys/block/vdX/serial). */
  serial: string;
  hook: BlockHook | undefined;
  log: RateLimitedLog;
}

/** A request taken from the ring and not yet returned, and what it waits for (for inspection). */
export interface InFlightRequest {
  head: number;
  type: BlockIoType;
  sector: number;
  sectors: number;
  /** performance.now() when it was taken (or taken up again after a restore). */
  since: number;
  /** The backend has finished (or failed) its part. */
  backendDone: boolean;
  /** Every hook gate (replication: the secondary's acknowledgement) has settled. */
  gatesDone: boolean;
}

/** withheld: the disk failed and someone else (a secondary) completes the request; it never completes here. */
type Outcome = { status: BlkStatus; readData?: Uint8Array } | "withheld";

export class VirtioBlkDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly pciClass = PCI_CLASS_STORAGE_SCSI;
  readonly queueSizes = [QUEUE_SIZE];
  readonly configSize = BlkConfig.SIZE;
  readonly features: bigint;
  readonly metrics = new BlockMetrics();
  readonly #config: Uint8Array;
  readonly #serial: Uint8Array;
  #context: VirtioDeviceContext | undefined;
  /** Bumped by reset: completions of requests taken before it are dropped. */
  #epoch = 0;
  /** Chains taken from the ring and not yet returned, by head, oldest first (the heads are kept in snapshots). */
  readonly #inFlight = new Map<number, InFlightRequest>();
  /** Backend operations not yet settled (a request may still wait on its gates after this). */
  readonly #backendOps = new Set<Promise<unknown>>();

  constructor(private readonly options: VirtioBlkDeviceOptions) {
    const { backend } = options;
    this.features =
      featureBit(BlkFeature.SIZE_MAX) |
      featureBit(BlkFeature.SEG_MAX) |
      featureBit(BlkFeature.BLK_SIZE) |
      featureBit(BlkFeature.FLUSH) |
      (backend.readOnly ? featureBit(BlkFeature.RO) : 0n);
    this.#config = new Uint8Array(BlkConfig.SIZE);
    const view = new DataView(this.#config.buffer);
    view.setBigUint64(BlkConfig.CAPACITY, BigInt(backend.sectorCount), true);
    view.setUint32(BlkConfig.SIZE_MAX, SIZE_MAX, true);
    view.setUint32(BlkConfig.SEG_MAX, SEG_MAX, true);
    view.setUint32(BlkConfig.BLK_SIZE, SECTOR_SIZE, true);
    this.#serial = new TextEncoder().encode(options.serial).slice(0, ID_BYTES);
  }

  get id(): string {
    return this.options.id;
  }

  get capacitySectors(): number {
    return this.options.backend.sectorCount;
  }

  /**
   * Resolves once every backend operation started so far has settled, whatever the
   * gates of their requests still hold: after it, the backend holds every write taken.
   */
  async backendIdle(): Promise<void> {
    await Promise.allSettled([...this.#backendOps]);
  }

  /** Heads of requests in flight, for a snapshot. */
  get inFlightHeads(): number[] {
    return [...this.#inFlight.keys()];
  }

  /** Requests in flight, oldest first (copies). */
  get inFlight(): InFlightRequest[] {
    return [...this.#inFlight.values()].map((request) => ({ ...request }));
  }

  readConfig(offset: number, width: 1 | 2 | 4): number {
    let value = 0;
    for (let i = width - 1; i >= 0; i--) value = value * 256 + (this.#config[offset + i] ?? 0);
    return value;
  }

  writeConfig(): void {
    // Only `writeback` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which is not offered.
  }

  activate(context: VirtioDeviceContext): void {
    this.#context = context;
  }

  reset(): void {
    this.#context = undefined;
    this.#epoch++;
    this.#inFlight.clear();
  }

  processQueue(queueIndex: number): void {
    const context = this.#context;
    const queue = context?.queues[queueIndex];
    if (context === undefined || queue === undefined) return;
    for (;;) {
      const popped = queue.pop(context.ram);
      if (popped === null) return;
      if ("error" in popped) return this.#needsReset(context, `bad chain: ${popped.error}`);
      this.#submit(context, queue, popped.chain);
      if (context.isBroken) return;
    }
  }

  /** After a restore: submits again what was in flight when the snapshot was taken. */
  resubmit(heads: readonly number[]): void {
    const context = this.#context;
    const queue = context?.queues[0];
    if (context === undefined || queue === undefined) return;
    for (const head of heads) {
      const chain = queue.readChain(context.ram, head);
      if (typeof chain === "string") return this.#needsReset(context, `bad chain after restore: ${chain}`);
      this.#submit(context, queue, chain);
    }
  }

  #submit(context: VirtioDeviceContext, queue: SplitVirtqueue, chain: DescriptorChain): void {
    const { ram } = context;
    const parsed = parseRequest(chain, ram, this.capacitySectors);
    this.metrics.requests++;
    if (isRequestError(parsed)) {
      if (parsed.statusGpa === undefined) return this.#needsReset(context, `request without a status byte: ${parsed.error}`);
      this.metrics.invalidRequests++;
      this.options.log.warn(`refused request: ${parsed.error}`);
      this.#complete(queue, chain.head, parsed.statusGpa, 0, statusFor(parsed));
      return;
    }
    if (parsed.kind === "get-id") {
      this.metrics.getIds++;
      const written = scatter(ram, parsed.data, this.#serial.subarray(0, Math.min(ID_BYTES, parsed.dataLength)));
      this.#complete(queue, chain.head, parsed.statusGpa, written, BlkStatus.OK);
      return;
    }
    const epoch = this.#epoch;
    const kind: BlockIoType = parsed.kind;
    const record: InFlightRequest = {
      head: chain.head,
      type: kind,
      sector: parsed.sector,
      sectors: kind === "flush" ? 0 : parsed.dataLength / SECTOR_SIZE,
      since: performance.now(),
      backendDone: false,
      gatesDone: false,
    };
    this.#inFlight.set(chain.head, record);
    void this.#run(ram, parsed, record).then(({ event, outcome }) => {
      if (epoch !== this.#epoch) return; // the driver reset the device and forgot this request
      if (outcome === "withheld") return; // stays in flight here: a snapshot still shows it pending
      this.#inFlight.delete(chain.head);
      const written = outcome.readData === undefined ? 0 : scatter(ram, parsed.data, outcome.readData);
      this.options.hook?.completed(event, { ok: outcome.status === BlkStatus.OK, ...(outcome.readData && { readData: outcome.readData }) });
      this.#complete(queue, chain.head, parsed.statusGpa, written, outcome.status);
    });
  }

  /**
   * Starts a request now, while the guest is stopped in its notify: the hook event
   * goes out and write data is copied as of this instant. Never rejects.
   */
  #run(ram: GuestMemory, request: Request, record: InFlightRequest): Promise<{ event: BlockIoEvent; outcome: Outcome }> {
    const { backend, hook } = this.options;
    const kind = request.kind as BlockIoType;
    const sectors = kind === "flush" ? 0 : request.dataLength / SECTOR_SIZE;
    const writeData = kind === "write" ? gatherSegments(ram.bytes, request.data) : undefined;
    const event: BlockIoEvent = { disk: this.id, type: kind, sector: request.sector, sectors, segments: request.data, ...(writeData && { data: writeData }) };
    const gate = hook?.emit(event);
    const io = attempt<Uint8Array | void>(() =>
      kind === "read" ? backend.read(request.sector, request.dataLength) : kind === "write" ? backend.write(request.sector, writeData!) : backend.flush(),
    );
    this.#backendOps.add(io);
    const backendSettled = () => {
      this.#backendOps.delete(io);
      record.backendDone = true;
    };
    void io.then(backendSettled, backendSettled);
    if (gate === undefined) record.gatesDone = true;
    else
      void gate.then(
        () => (record.gatesDone = true),
        () => (record.gatesDone = true),
      );
    const failed = (what: "backend" | "gate") => (error: unknown) => {
      this.metrics[what === "backend" ? "backendErrors" : "gateErrors"]++;
      this.options.log.warn(`${kind} at sector ${request.sector}: ${what} failed: ${(error as Error)?.message ?? String(error)}`);
      return Promise.reject(error);
    };
    let withheld = false;
    const backendDone = io.catch(async (error: unknown) => {
      // A failing disk may be someone else's to handle: the request then never completes here.
      if (hook !== undefined && (await hook.backendFailed(event, error instanceof Error ? error : new Error(String(error))))) withheld = true;
      return failed("backend")(error);
    });
    return Promise.all([backendDone, gate?.catch(failed("gate"))]).then(
      ([data]): { event: BlockIoEvent; outcome: Outcome } => {
        this.#count(kind, request.dataLength);
        return { event, outcome: { status: BlkStatus.OK, readData: data instanceof Uint8Array ? data : undefined } };
      },
      (): { event: BlockIoEvent; outcome: Outcome } => ({ event, outcome: withheld ? "withheld" : { status: BlkStatus.IOERR } }),
    );
  }

  #count(kind: BlockIoType, bytes: number): void {
    if (kind === "read") {
      this.metrics.reads++;
      this.metrics.bytesRead += bytes;
    } else if (kind === "write") {
      this.metrics.writes++;
      this.metrics.bytesWritten += bytes;
    } else {
      this.metrics.flushes++;
    }
  }

  /** Status byte, then the used ring, then (unless suppressed) an interrupt. */
  #complete(queue: SplitVirtqueue, head: number, statusGpa: number, dataWritten: number, status: BlkStatus): void {
    const context = this.#context;
    if (context === undefined) return;
    context.ram.write(statusGpa, Uint8Array.of(status));
    queue.pushUsed(context.ram, head, dataWritten + 1);
    context.notifyUsed(queue);
  }

  #needsReset(context: VirtioDeviceContext, reason: string): void {
    this.metrics.deviceNeedsReset++;
    context.needsReset(reason);
  }
}

/** Spreads `data` over the guest's buffers in order; returns the bytes written. */
function scatter(ram: GuestMemory, segments: readonly { gpa: number; length: number }[], data: Uint8Array): number {
  let at = 0;
  for (const { gpa, length } of segments) {
    if (at >= data.length) break;
    const part = data.subarray(at, at + length);
    ram.write(gpa, part);
    at += part.length;
  }
  return at;
}

/** Runs an async operation so that a synchronous throw becomes a rejection. */
function attempt<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return operation();
  } catch (error) {
    return Promise.reject(error);
  }
}
