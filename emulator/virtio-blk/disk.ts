// A virtio-blk disk as a Machine device: picks a PCI slot, wires the block
// device to the PCI transport and the guest's RAM, and carries both in snapshots.
//
//   new Machine({ ...defaultGuest(), devices: [virtioBlkDisk({ backend })] })
import type { BlockBackend } from "../block/backend.ts";
import type { BlockHook } from "../block/hook.ts";
import type { DeviceFactory, JsonValue, MachineDevice } from "../config.ts";
import { SnapshotError } from "../errors.ts";
import { RateLimitedLog, type LogSink } from "../rate-limited-log.ts";
import { GuestRam, type Emulator } from "../v86-internals.ts";
import { VirtioPciTransport } from "../virtio/pci-transport.ts";
import { checkDiskState, type DiskState } from "./disk-state.ts";
import { VirtioBlkDevice } from "./device.ts";
import type { BlockMetrics } from "./metrics.ts";

export interface VirtioBlkDiskOptions {
  backend: BlockBackend;
  /** Names the disk in hook events, logs and snapshots; default "vda", "vdb"... by PCI slot. */
  id?: string;
  /** Receives every request's event before it completes (the replication I/O log). */
  hook?: BlockHook;
  /** Answer to GET_ID (at most 20 bytes); default the id. */
  serial?: string;
  /** PCI slot on bus 0; default the first free one of DISK_SLOTS. */
  slot?: number;
  /** Leave the backend open when the machine is destroyed (default: the disk closes it). */
  keepBackendOpen?: boolean;
  /** Where rate-limited warnings about guest misbehaviour go (default console.warn). */
  log?: LogSink;
}

/**
 * Slots v86 leaves free. Its own devices sit at 0 (host bridge), 1 (ISA bridge),
 * 5 and 8+ (ne2k), 7 (ACPI), 0x0a-0x0c (its virtio devices), 0x12 (VGA), 0x1e (IDE).
 */
export const DISK_SLOTS: readonly number[] = [0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d];

export function virtioBlkDisk(options: VirtioBlkDiskOptions): DeviceFactory {
  return (emulator) => new VirtioBlkDisk(emulator, options);
}

export class VirtioBlkDisk implements MachineDevice {
  readonly id: string;
  readonly slot: number;
  readonly stateKey: string;
  readonly device: VirtioBlkDevice;
  readonly transport: VirtioPciTransport;
  readonly #options: VirtioBlkDiskOptions;

  constructor(emulator: Emulator, options: VirtioBlkDiskOptions) {
    this.#options = options;
    this.slot = options.slot ?? DISK_SLOTS.find((slot) => emulator.isPciSlotFree(slot)) ?? -1;
    if (!emulator.isPciSlotFree(this.slot)) throw new Error(`virtio-blk: PCI slot ${this.slot} is not free`);
    const defaultIndex = DISK_SLOTS.indexOf(this.slot);
    this.id = options.id ?? (defaultIndex >= 0 ? `vd${String.fromCharCode(0x61 + defaultIndex)}` : `disk${this.slot}`);
    this.stateKey = `virtio-blk:${this.id}`;
    const log = new RateLimitedLog(`virtio-blk ${this.id}`, options.log);
    this.device = new VirtioBlkDevice({
      id: this.id,
      backend: options.backend,
      serial: options.serial ?? this.id,
      hook: options.hook,
      log,
    });
    this.transport = new VirtioPciTransport(this.device, new GuestRam(emulator.cpu), emulator, {
      name: `virtio-blk ${this.id}`,
      slot: this.slot,
      log,
    });
    emulator.onReboot(() => this.transport.reset());
  }

  get metrics(): BlockMetrics {
    return this.device.metrics;
  }

  get backend(): BlockBackend {
    return this.#options.backend;
  }

  saveState(): JsonValue {
    const state: DiskState = { transport: this.transport.saveState(), inFlight: this.device.inFlightHeads };
    return state as unknown as JsonValue;
  }

  restoreState(state: JsonValue): void {
    const checked = checkDiskState(state);
    if (typeof checked === "string") throw new SnapshotError(`snapshot: state of ${this.stateKey} is damaged: ${checked}`);
    this.transport.restoreState(checked.transport);
    // Chains in flight are still in guest RAM untouched (the driver waits for them): run them again.
    this.device.resubmit(checked.inFlight);
  }

  /** The transport's registers and queues, and each request in flight with its age and what it waits for. */
  inspect(): JsonValue {
    const now = performance.now();
    const inspection = {
      ...this.transport.inspect(),
      inFlight: this.device.inFlight.map(({ since, ...request }) => ({ ...request, ageMs: Math.round(now - since) })),
    };
    return inspection as unknown as JsonValue;
  }

  async close(): Promise<void> {
    this.transport.reset();
    if (!this.#options.keepBackendOpen) await this.#options.backend.close();
  }
}
