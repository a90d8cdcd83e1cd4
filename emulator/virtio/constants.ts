// Numbers from the virtio 1.x specification (PCI transport, split virtqueues)
// that more than one module needs.

/** Device status bits (spec 2.1). */
export const DeviceStatus = {
  ACKNOWLEDGE: 0x01,
  DRIVER: 0x02,
  DRIVER_OK: 0x04,
  FEATURES_OK: 0x08,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;

/** Feature bits the transport itself handles (spec 6); device types add theirs below 24. */
export const TransportFeature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
} as const;

/** ISR status bits (spec 4.1.4.5). */
export const IsrBit = {
  QUEUE: 0x01,
  CONFIG: 0x02,
} as const;

/** Descriptor flags of a split virtqueue (spec 2.7.5). */
export const DescriptorFlag = {
  NEXT: 0x1,
  WRITE: 0x2,
  INDIRECT: 0x4,
} as const;

/** `avail.flags` bit: the driver asks for no interrupts (used without EVENT_IDX). */
export const AVAIL_F_NO_INTERRUPT = 0x1;

export const PCI_VENDOR_ID_VIRTIO = 0x1af4;
/** A modern (non-transitional) device has PCI device id 0x1040 + virtio device type. */
export const PCI_DEVICE_ID_MODERN_BASE = 0x1040;

export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}
