// Where things are on a virtio modern PCI function: the config-space header and
// vendor capabilities (spec 4.1.4), and the regions inside the single I/O BAR they
// point to. v86 can only relocate I/O BARs, so every region lives in BAR0.
import { PCI_DEVICE_ID_MODERN_BASE, PCI_VENDOR_ID_VIRTIO } from "./constants.ts";

/** Offsets inside BAR0. */
export const Bar0 = {
  COMMON: 0x00,
  COMMON_SIZE: 0x40, // virtio_pci_common_cfg is 0x38 bytes (0x3c with queue_notify_data/queue_reset)
  ISR: 0x40,
  ISR_SIZE: 0x04,
  NOTIFY: 0x60,
  NOTIFY_SIZE: 0x20,
  /** Queue n is notified by a write at NOTIFY + n * NOTIFY_OFF_MULTIPLIER. */
  NOTIFY_OFF_MULTIPLIER: 4,
  DEVICE: 0x80,
  SIZE: 0x100,
} as const;

export const MAX_QUEUES = Bar0.NOTIFY_SIZE / Bar0.NOTIFY_OFF_MULTIPLIER;
export const MAX_DEVICE_CONFIG = Bar0.SIZE - Bar0.DEVICE;

const CapType = { COMMON_CFG: 1, NOTIFY_CFG: 2, ISR_CFG: 3, DEVICE_CFG: 4 } as const;
const PCI_CAP_ID_VENDOR = 0x09;
const PCI_STATUS_CAP_LIST = 0x10;
const FIRST_CAP = 0x40;
/** "Non-transitional devices SHOULD have a PCI Subsystem Device ID of 0x40 or higher." */
const SUBSYSTEM_ID = 0x40;

export interface PciIdentity {
  deviceType: number;
  pciClass: number;
  deviceConfigSize: number;
}

/** The 256-byte config space of a virtio modern function with INTx pin A and BAR0 regions. */
export function buildConfigSpace({ deviceType, pciClass, deviceConfigSize }: PciIdentity): Uint8Array {
  if (deviceConfigSize > MAX_DEVICE_CONFIG) throw new Error(`device config of ${deviceConfigSize} bytes does not fit BAR0`);
  const space = new Uint8Array(256);
  const view = new DataView(space.buffer);
  view.setUint16(0x00, PCI_VENDOR_ID_VIRTIO, true);
  view.setUint16(0x02, PCI_DEVICE_ID_MODERN_BASE + deviceType, true);
  view.setUint16(0x06, PCI_STATUS_CAP_LIST, true);
  space[0x08] = 1; // revision 1: a modern device
  space[0x09] = pciClass & 0xff;
  space[0x0a] = (pciClass >> 8) & 0xff;
  space[0x0b] = (pciClass >> 16) & 0xff;
  view.setUint16(0x2c, PCI_VENDOR_ID_VIRTIO, true);
  view.setUint16(0x2e, SUBSYSTEM_ID, true);
  space[0x34] = FIRST_CAP;
  space[0x3d] = 1; // INTx pin A

  const caps: { type: number; offset: number; length: number; extra?: number }[] = [
    { type: CapType.COMMON_CFG, offset: Bar0.COMMON, length: Bar0.COMMON_SIZE },
    { type: CapType.NOTIFY_CFG, offset: Bar0.NOTIFY, length: Bar0.NOTIFY_SIZE, extra: Bar0.NOTIFY_OFF_MULTIPLIER },
    { type: CapType.ISR_CFG, offset: Bar0.ISR, length: Bar0.ISR_SIZE },
  ];
  if (deviceConfigSize > 0) caps.push({ type: CapType.DEVICE_CFG, offset: Bar0.DEVICE, length: deviceConfigSize });
  let at = FIRST_CAP;
  caps.forEach((cap, i) => {
    const length = cap.extra === undefined ? 16 : 20;
    const next = i + 1 < caps.length ? at + length : 0;
    // struct virtio_pci_cap: vndr, next, len, cfg_type, bar, padding[3], offset, length
    space.set([PCI_CAP_ID_VENDOR, next, length, cap.type, 0], at);
    view.setUint32(at + 8, cap.offset, true);
    view.setUint32(at + 12, cap.length, true);
    if (cap.extra !== undefined) view.setUint32(at + 16, cap.extra, true);
    at += length;
  });
  return space;
}
