// The virtio 1.x modern PCI transport (spec 4.1) over one I/O BAR: the common
// configuration registers, feature negotiation, the device status state machine,
// queue setup, notifications, the ISR and INTx. Device types plug in through
// VirtioDevice; nothing here knows about blocks.
import type { IntxInspection, IoRegion, PciFunctionSpec, PciInterrupt } from "../v86-internals.ts";
import type { RateLimitedLog } from "../rate-limited-log.ts";
import { DeviceStatus, IsrBit, TransportFeature, featureBit } from "./constants.ts";
import type { VirtioDevice, VirtioDeviceContext } from "./device.ts";
import type { GuestMemory } from "./guest-memory.ts";
import { Bar0, MAX_QUEUES, buildConfigSpace } from "./pci-layout.ts";
import { SplitVirtqueue, type QueueInspection, type QueueState } from "./virtqueue.ts";

/** Where a transport gets attached: `Emulator` in v86-internals.ts, or a fake in tests. */
export interface PciHost {
  attachPciFunction(spec: PciFunctionSpec): PciInterrupt;
}

/** What a snapshot keeps of the transport (JSON-safe; features as hex strings). */
export interface TransportState {
  status: number;
  deviceFeatureSelect: number;
  driverFeatureSelect: number;
  driverFeatures: string;
  queueSelect: number;
  isr: number;
  configGeneration: number;
  queues: QueueState[];
}

export interface TransportInspection {
  /** Device status register (DRIVER_OK 0x04, DEVICE_NEEDS_RESET 0x40, ...). */
  status: number;
  /** ISR bits not yet read by the driver (0x01 queue, 0x02 config): while set, the pin should be asserted. */
  isr: number;
  intx?: IntxInspection;
  queues: QueueInspection[];
}

/** Features the transport offers on top of the device's own. */
const TRANSPORT_FEATURES =
  featureBit(TransportFeature.VERSION_1) | featureBit(TransportFeature.RING_INDIRECT_DESC) | featureBit(TransportFeature.RING_EVENT_IDX);

/** MSI-X is not offered: vector registers read as VIRTIO_MSI_NO_VECTOR. */
const NO_VECTOR = 0xffff;

/** Common configuration fields (struct virtio_pci_common_cfg); 64-bit addresses as two halves. */
const Common = {
  DeviceFeatureSelect: 0x00,
  DeviceFeature: 0x04,
  DriverFeatureSelect: 0x08,
  DriverFeature: 0x0c,
  MsixConfig: 0x10,
  NumQueues: 0x12,
  DeviceStatus: 0x14,
  ConfigGeneration: 0x15,
  QueueSelect: 0x16,
  QueueSize: 0x18,
  QueueMsixVector: 0x1a,
  QueueEnable: 0x1c,
  QueueNotifyOff: 0x1e,
  QueueDescLow: 0x20,
  QueueDescHigh: 0x24,
  QueueDriverLow: 0x28,
  QueueDriverHigh: 0x2c,
  QueueDeviceLow: 0x30,
  QueueDeviceHigh: 0x34,
  QueueNotifyData: 0x38,
  QueueReset: 0x3a,
} as const;

/** [offset, width] of every field, for accesses narrower than the field. */
const COMMON_FIELDS: readonly (readonly [offset: number, width: number])[] = [
  [0x00, 4],
  [0x04, 4],
  [0x08, 4],
  [0x0c, 4],
  [0x10, 2],
  [0x12, 2],
  [0x14, 1],
  [0x15, 1],
  [0x16, 2],
  [0x18, 2],
  [0x1a, 2],
  [0x1c, 2],
  [0x1e, 2],
  [0x20, 4],
  [0x24, 4],
  [0x28, 4],
  [0x2c, 4],
  [0x30, 4],
  [0x34, 4],
  [0x38, 2],
  [0x3a, 2],
];

const TWO_POW_32 = 0x1_0000_0000;

export class VirtioPciTransport implements IoRegion {
  readonly size = Bar0.SIZE;
  readonly queues: readonly SplitVirtqueue[];
  readonly offeredFeatures: bigint;
  #status = 0;
  #deviceFeatureSelect = 0;
  #driverFeatureSelect = 0;
  #driverFeatures = 0n;
  #queueSelect = 0;
  #isr = 0;
  #configGeneration = 0;
  #internalErrors = 0;
  readonly #interrupt: PciInterrupt;
  readonly #context: VirtioDeviceContext;
  readonly #log: RateLimitedLog;

  constructor(
    private readonly device: VirtioDevice,
    private readonly ram: GuestMemory,
    host: PciHost,
    options: { name: string; slot: number; log: RateLimitedLog },
  ) {
    if (device.queueSizes.length > MAX_QUEUES) throw new Error(`at most ${MAX_QUEUES} queues fit the notify region`);
    this.queues = device.queueSizes.map((size, index) => new SplitVirtqueue(index, size));
    this.offeredFeatures = device.features | TRANSPORT_FEATURES;
    this.#log = options.log;
    // The context's getters run with the context as `this`: they read the transport through this name.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const transport = this;
    this.#context = {
      ram,
      queues: this.queues,
      get negotiatedFeatures() {
        return transport.#driverFeatures;
      },
      get isBroken() {
        return transport.#isBroken;
      },
      notifyUsed: (queue) => {
        if (queue.shouldInterrupt(this.ram)) this.#raise(IsrBit.QUEUE);
      },
      needsReset: (reason) => this.#needsReset(reason),
    };
    this.#interrupt = host.attachPciFunction({
      name: options.name,
      slot: options.slot,
      configSpace: buildConfigSpace({ deviceType: device.deviceType, pciClass: device.pciClass, deviceConfigSize: device.configSize }),
      ioBars: [this],
    });
  }

  get status(): number {
    return this.#status;
  }

  get negotiatedFeatures(): bigint {
    return this.#driverFeatures;
  }

  /** Exceptions from our own code that a guest access ran into (contained; should stay 0). */
  get internalErrors(): number {
    return this.#internalErrors;
  }

  // --- IoRegion: every guest access to BAR0 lands here --------------------------------

  read(offset: number, width: 1 | 2 | 4): number {
    try {
      if (offset < Bar0.COMMON + Bar0.COMMON_SIZE) return this.#readCommonBytes(offset - Bar0.COMMON, width);
      if (offset === Bar0.ISR) return this.#readIsr();
      if (offset >= Bar0.DEVICE && offset + width <= Bar0.DEVICE + this.device.configSize) {
        return this.device.readConfig(offset - Bar0.DEVICE, width);
      }
      return 0;
    } catch (error) {
      this.#contain(error, `read of BAR0+${offset}`);
      return 0;
    }
  }

  write(offset: number, width: 1 | 2 | 4, value: number): void {
    try {
      if (offset < Bar0.COMMON + Bar0.COMMON_SIZE) this.#writeCommonBytes(offset - Bar0.COMMON, width, value);
      else if (offset >= Bar0.NOTIFY && offset < Bar0.NOTIFY + Bar0.NOTIFY_SIZE) this.#notify(offset - Bar0.NOTIFY);
      else if (offset >= Bar0.DEVICE && offset + width <= Bar0.DEVICE + this.device.configSize) {
        this.device.writeConfig(offset - Bar0.DEVICE, width, value);
      }
    } catch (error) {
      this.#contain(error, `write of BAR0+${offset}`);
    }
  }

  /** Device reset: what a status write of 0 does, and what a machine reboot does. */
  reset(): void {
    this.device.reset();
    this.#status = 0;
    this.#deviceFeatureSelect = this.#driverFeatureSelect = this.#queueSelect = 0;
    this.#driverFeatures = 0n;
    for (const queue of this.queues) queue.reset();
    this.#isr = 0;
    this.#interrupt.lower();
  }

  saveState(): TransportState {
    return {
      status: this.#status,
      deviceFeatureSelect: this.#deviceFeatureSelect,
      driverFeatureSelect: this.#driverFeatureSelect,
      driverFeatures: this.#driverFeatures.toString(16),
      queueSelect: this.#queueSelect,
      isr: this.#isr,
      configGeneration: this.#configGeneration,
      queues: this.queues.map((queue) => queue.saveState()),
    };
  }

  /** Takes up a saved state; v86 restored the PCI config space itself. */
  restoreState(state: TransportState): void {
    if (state.queues.length !== this.queues.length) throw new Error(`state has ${state.queues.length} queues, device has ${this.queues.length}`);
    this.#status = state.status;
    this.#deviceFeatureSelect = state.deviceFeatureSelect;
    this.#driverFeatureSelect = state.driverFeatureSelect;
    this.#driverFeatures = BigInt(`0x${state.driverFeatures}`);
    this.#queueSelect = state.queueSelect;
    this.#isr = state.isr;
    this.#configGeneration = state.configGeneration;
    state.queues.forEach((queueState, i) => this.queues[i]!.restoreState(queueState));
    // v86 restored the IRQ's level; the host's record of which functions hold it (wired-OR) is ours to restore.
    if (this.#isr !== 0) this.#interrupt.raise();
    else this.#interrupt.lower();
    if (this.#status & DeviceStatus.FEATURES_OK) this.#applyRingFeatures();
    if (this.#status & DeviceStatus.DRIVER_OK) this.device.activate(this.#context);
  }

  /** Registers, queues and the interrupt pin as they are now, for diagnosing a guest that waits on this device. */
  inspect(): TransportInspection {
    return {
      status: this.#status,
      isr: this.#isr,
      ...(this.#interrupt.inspect !== undefined && { intx: this.#interrupt.inspect() }),
      queues: this.queues.map((queue) => queue.inspect(this.ram)),
    };
  }

  // --- common configuration ----------------------------------------------------------

  #readCommonBytes(offset: number, width: number): number {
    const field = COMMON_FIELDS.find(([at, size]) => offset >= at && offset + width <= at + size);
    if (field === undefined) return 0;
    const [at, size] = field;
    const value = this.#readCommon(at);
    if (size === width) return value;
    return (value >>> (8 * (offset - at))) & (2 ** (8 * width) - 1);
  }

  #writeCommonBytes(offset: number, width: number, value: number): void {
    const field = COMMON_FIELDS.find(([at, size]) => offset >= at && offset + width <= at + size);
    if (field === undefined) return;
    const [at, size] = field;
    if (size === width) return this.#writeCommon(at, value);
    // A narrower write merges into the field's current value.
    const shift = 8 * (offset - at);
    const mask = (2 ** (8 * width) - 1) * 2 ** shift;
    const merged = (this.#readCommon(at) & ~mask) | ((value * 2 ** shift) & mask);
    this.#writeCommon(at, merged >>> 0);
  }

  #readCommon(field: number): number {
    const queue = this.#selectedQueue();
    switch (field) {
      case Common.DeviceFeatureSelect:
        return this.#deviceFeatureSelect;
      case Common.DeviceFeature:
        return featureWord(this.offeredFeatures, this.#deviceFeatureSelect);
      case Common.DriverFeatureSelect:
        return this.#driverFeatureSelect;
      case Common.DriverFeature:
        return featureWord(this.#driverFeatures, this.#driverFeatureSelect);
      case Common.MsixConfig:
        return NO_VECTOR;
      case Common.NumQueues:
        return this.queues.length;
      case Common.DeviceStatus:
        return this.#status;
      case Common.ConfigGeneration:
        return this.#configGeneration;
      case Common.QueueSelect:
        return this.#queueSelect;
      case Common.QueueMsixVector:
        return NO_VECTOR;
    }
    if (queue === undefined) return 0; // queue_size 0 tells the driver the queue does not exist
    switch (field) {
      case Common.QueueSize:
        return queue.size;
      case Common.QueueEnable:
        return queue.enabled ? 1 : 0;
      case Common.QueueNotifyOff:
        return queue.index;
      case Common.QueueDescLow:
        return queue.descAddr % TWO_POW_32;
      case Common.QueueDescHigh:
        return Math.floor(queue.descAddr / TWO_POW_32);
      case Common.QueueDriverLow:
        return queue.availAddr % TWO_POW_32;
      case Common.QueueDriverHigh:
        return Math.floor(queue.availAddr / TWO_POW_32);
      case Common.QueueDeviceLow:
        return queue.usedAddr % TWO_POW_32;
      case Common.QueueDeviceHigh:
        return Math.floor(queue.usedAddr / TWO_POW_32);
      default:
        return 0; // queue_notify_data, queue_reset: features not offered
    }
  }

  #writeCommon(field: number, value: number): void {
    switch (field) {
      case Common.DeviceFeatureSelect:
        this.#deviceFeatureSelect = value;
        return;
      case Common.DriverFeatureSelect:
        this.#driverFeatureSelect = value;
        return;
      case Common.DriverFeature:
        return this.#writeDriverFeatures(value);
      case Common.DeviceStatus:
        return this.#writeStatus(value);
      case Common.QueueSelect:
        this.#queueSelect = value;
        return;
    }
    const queue = this.#selectedQueue();
    // The driver programs a queue before enabling it; later writes are ignored.
    if (queue === undefined || queue.enabled) return;
    switch (field) {
      case Common.QueueSize:
        queue.size = value;
        return;
      case Common.QueueEnable:
        if (value === 1) this.#enableQueue(queue);
        return;
      case Common.QueueDescLow:
        queue.descAddr = withLow(queue.descAddr, value);
        return;
      case Common.QueueDescHigh:
        queue.descAddr = withHigh(queue.descAddr, value);
        return;
      case Common.QueueDriverLow:
        queue.availAddr = withLow(queue.availAddr, value);
        return;
      case Common.QueueDriverHigh:
        queue.availAddr = withHigh(queue.availAddr, value);
        return;
      case Common.QueueDeviceLow:
        queue.usedAddr = withLow(queue.usedAddr, value);
        return;
      case Common.QueueDeviceHigh:
        queue.usedAddr = withHigh(queue.usedAddr, value);
        return;
    }
  }

  #selectedQueue(): SplitVirtqueue | undefined {
    return this.queues[this.#queueSelect];
  }

  #writeDriverFeatures(word: number): void {
    // Features are fixed once the driver set FEATURES_OK.
    if (this.#status & DeviceStatus.FEATURES_OK || this.#driverFeatureSelect > 1) return;
    const shift = BigInt(32 * this.#driverFeatureSelect);
    this.#driverFeatures = (this.#driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(word >>> 0) << shift);
  }

  #writeStatus(value: number): void {
    value &= 0xff;
    if (value === 0) return this.reset();
    const added = value & ~this.#status;
    if (added & DeviceStatus.FEATURES_OK) {
      const unknown = this.#driverFeatures & ~this.offeredFeatures;
      // Refusing FEATURES_OK (the driver reads it back) is how the device says no.
      if (unknown !== 0n || !(this.#driverFeatures & featureBit(TransportFeature.VERSION_1))) {
        this.#log.warn(`refused features 0x${this.#driverFeatures.toString(16)} (offered 0x${this.offeredFeatures.toString(16)})`);
        value &= ~DeviceStatus.FEATURES_OK;
      } else {
        this.#applyRingFeatures();
      }
    }
    // DEVICE_NEEDS_RESET belongs to the device: the driver can neither set nor clear it.
    this.#status = (value & ~DeviceStatus.DEVICE_NEEDS_RESET) | (this.#status & DeviceStatus.DEVICE_NEEDS_RESET);
    if (added & DeviceStatus.DRIVER_OK) {
      if (!(this.#status & DeviceStatus.FEATURES_OK)) return this.#needsReset("DRIVER_OK without FEATURES_OK");
      this.device.activate(this.#context);
    }
  }

  #applyRingFeatures(): void {
    const features = {
      indirectDescriptors: (this.#driverFeatures & featureBit(TransportFeature.RING_INDIRECT_DESC)) !== 0n,
      eventIdx: (this.#driverFeatures & featureBit(TransportFeature.RING_EVENT_IDX)) !== 0n,
    };
    for (const queue of this.queues) queue.features = features;
  }

  #enableQueue(queue: SplitVirtqueue): void {
    const problem = queue.checkLayout(this.ram);
    if (problem !== undefined) return this.#needsReset(`queue ${queue.index}: ${problem}`);
    queue.enabled = true;
  }

  // --- notifications and interrupts --------------------------------------------------

  #notify(offset: number): void {
    if (offset % Bar0.NOTIFY_OFF_MULTIPLIER !== 0) return;
    const queue = this.queues[offset / Bar0.NOTIFY_OFF_MULTIPLIER];
    const ready = DeviceStatus.DRIVER_OK | DeviceStatus.FEATURES_OK;
    if (queue === undefined || !queue.enabled || (this.#status & ready) !== ready || this.#isBroken) return;
    this.device.processQueue(queue.index);
  }

  get #isBroken(): boolean {
    return (this.#status & DeviceStatus.DEVICE_NEEDS_RESET) !== 0;
  }

  /** Spec 2.1.2: set DEVICE_NEEDS_RESET and, once the driver is up, send a config change notification. */
  #needsReset(reason: string): void {
    this.#log.warn(`device needs reset: ${reason}`);
    if (this.#isBroken) return;
    this.#status |= DeviceStatus.DEVICE_NEEDS_RESET;
    this.#configGeneration = (this.#configGeneration + 1) & 0xff;
    if (this.#status & DeviceStatus.DRIVER_OK) this.#raise(IsrBit.CONFIG);
  }

  /** Reading the ISR returns its bits and clears them, which also lowers the INTx line. */
  #readIsr(): number {
    const value = this.#isr;
    this.#isr = 0;
    this.#interrupt.lower();
    return value;
  }

  #raise(bit: number): void {
    this.#isr |= bit;
    this.#interrupt.raise();
  }

  /** A bug of ours must not escape into v86's port dispatch: stop the device instead. */
  #contain(error: unknown, during: string): void {
    this.#internalErrors++;
    this.#needsReset(`internal error during ${during}: ${(error as Error)?.stack ?? String(error)}`);
  }
}

function featureWord(features: bigint, select: number): number {
  if (select > 1) return 0;
  return Number((features >> BigInt(32 * select)) & 0xffff_ffffn);
}

function withLow(address: number, low: number): number {
  return Math.floor(address / TWO_POW_32) * TWO_POW_32 + (low >>> 0);
}

function withHigh(address: number, high: number): number {
  return (high >>> 0) * TWO_POW_32 + (address % TWO_POW_32);
}
