// The contract between the virtio PCI transport and a device type (block, and
// later others): the transport owns registers, features, status and interrupts;
// the device owns its config space and what its queues carry.
import type { GuestMemory } from "./guest-memory.ts";
import type { SplitVirtqueue } from "./virtqueue.ts";

export interface VirtioDevice {
  /** Virtio device type (2 = block); the PCI device id is 0x1040 + type. */
  readonly deviceType: number;
  /** PCI class code, 24 bits: class, subclass, programming interface. */
  readonly pciClass: number;
  /** Device-type feature bits (below 24); the transport adds VERSION_1 and the ring features. */
  readonly features: bigint;
  /** Maximum size of each queue, in queue order. */
  readonly queueSizes: readonly number[];
  /** Bytes of device-specific configuration. */
  readonly configSize: number;
  readConfig(offset: number, width: 1 | 2 | 4): number;
  writeConfig(offset: number, width: 1 | 2 | 4, value: number): void;
  /** The driver set DRIVER_OK: queues are configured and may be used. */
  activate(context: VirtioDeviceContext): void;
  /** The driver notified queue `queueIndex` (the CPU is inside its OUT instruction). */
  processQueue(queueIndex: number): void;
  /** Device reset (status 0, or the machine rebooted): forget all work, including requests in flight. */
  reset(): void;
}

/** What an activated device may do through its transport. */
export interface VirtioDeviceContext {
  readonly ram: GuestMemory;
  readonly queues: readonly SplitVirtqueue[];
  /** Feature bits both sides agreed on. */
  readonly negotiatedFeatures: bigint;
  /** Interrupts the driver for chains pushed onto `queue`, unless it suppressed that. */
  notifyUsed(queue: SplitVirtqueue): void;
  /**
   * The driver broke the protocol in a way no status byte can report: set
   * DEVICE_NEEDS_RESET, raise a config interrupt, and take no more requests until reset.
   */
  needsReset(reason: string): void;
  readonly isBroken: boolean;
}
