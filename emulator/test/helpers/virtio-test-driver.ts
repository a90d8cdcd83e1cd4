// A minimal virtio driver for tests: programs a transport through its BAR0
// handlers and builds split-virtqueue rings and chains in a scratch area of RAM.
import { DescriptorFlag, DeviceStatus, TransportFeature, featureBit } from "../../virtio/constants.ts";
import { readU16, readU32, type GuestMemory } from "../../virtio/guest-memory.ts";
import { Bar0 } from "../../virtio/pci-layout.ts";
import type { IoRegion } from "../../v86-internals.ts";
import { RequestType } from "../../virtio-blk/spec.ts";

export interface RawDescriptor {
  gpa: number;
  length: number;
  flags: number;
  next: number;
}

export const VERSION_1 = featureBit(TransportFeature.VERSION_1);
export const INDIRECT = featureBit(TransportFeature.RING_INDIRECT_DESC);
export const EVENT_IDX = featureBit(TransportFeature.RING_EVENT_IDX);

/** A RAM of plain bytes, for tests without v86. */
export function plainRam(size: number): GuestMemory & { writes: number } {
  const bytes = new Uint8Array(size);
  return {
    size,
    bytes,
    writes: 0,
    write(gpa, data) {
      this.writes++;
      bytes.set(data, gpa);
    },
  };
}

export class TestVirtioDriver {
  queueSize = 0;
  descAddr = 0;
  availAddr = 0;
  usedAddr = 0;
  #availIdx = 0;
  #usedSeen = 0;
  #heap = 0;
  #nextHead = 0;

  constructor(
    readonly bar: IoRegion,
    readonly ram: GuestMemory,
    /** Scratch RAM the test owns: rings first, then buffers. */
    readonly area: { base: number; size: number },
  ) {}

  get status(): number {
    return this.bar.read(Bar0.COMMON + 0x14, 1);
  }

  reset(): void {
    this.bar.write(Bar0.COMMON + 0x14, 1, 0);
    this.#availIdx = this.#usedSeen = this.#nextHead = 0;
  }

  /** Negotiates `features` and sets up queue 0; returns false if the device refused the features. */
  setup(features: bigint = VERSION_1 | INDIRECT, queueSize = 256): boolean {
    this.reset();
    const write = (offset: number, width: 1 | 2 | 4, value: number) => this.bar.write(Bar0.COMMON + offset, width, value);
    write(0x14, 1, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
    for (const select of [0, 1]) {
      write(0x08, 4, select);
      write(0x0c, 4, Number((features >> BigInt(32 * select)) & 0xffff_ffffn));
    }
    write(0x14, 1, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK);
    if (!(this.status & DeviceStatus.FEATURES_OK)) return false;
    this.#layOut(queueSize);
    this.ram.write(this.area.base, new Uint8Array(this.#heap - this.area.base)); // clean rings
    write(0x16, 2, 0);
    write(0x18, 2, queueSize);
    write(0x20, 4, this.descAddr);
    write(0x24, 4, 0);
    write(0x28, 4, this.availAddr);
    write(0x2c, 4, 0);
    write(0x30, 4, this.usedAddr);
    write(0x34, 4, 0);
    write(0x1c, 2, 1);
    write(0x14, 1, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    return true;
  }

  /** Takes up the rings `setup` laid out, as a restored guest does: RAM and device already hold them. */
  resume(queueSize = 256): void {
    this.#layOut(queueSize);
  }

  #layOut(queueSize: number): void {
    this.queueSize = queueSize;
    this.descAddr = this.area.base;
    this.availAddr = this.descAddr + 16 * queueSize;
    this.usedAddr = align(this.availAddr + 6 + 2 * queueSize, 4);
    this.#heap = align(this.usedAddr + 6 + 8 * queueSize, 16);
  }

  /** Scratch buffer space after the rings (wraps around when full). */
  alloc(bytes: number, alignment = 16): number {
    let at = align(this.#heap, alignment);
    if (at + bytes > this.area.base + this.area.size) {
      at = align(this.usedAddr + 6 + 8 * this.queueSize, 16);
    }
    this.#heap = at + bytes;
    return at;
  }

  writeDescriptors(table: number, descriptors: readonly RawDescriptor[]): void {
    const out = new Uint8Array(16 * descriptors.length);
    const view = new DataView(out.buffer);
    descriptors.forEach((d, i) => {
      view.setBigUint64(16 * i, BigInt(d.gpa), true);
      view.setUint32(16 * i + 8, d.length >>> 0, true);
      view.setUint16(16 * i + 12, d.flags, true);
      view.setUint16(16 * i + 14, d.next, true);
    });
    this.ram.write(table, out);
  }

  /** Puts `heads` on the available ring (does not notify). */
  publish(...heads: number[]): void {
    for (const head of heads) {
      const slot = this.availAddr + 4 + 2 * (this.#availIdx % this.queueSize);
      this.ram.write(slot, Uint8Array.of(head & 0xff, head >> 8));
      this.#availIdx = (this.#availIdx + 1) & 0xffff;
    }
    this.setAvailIdx(this.#availIdx);
  }

  setAvailIdx(idx: number): void {
    this.ram.write(this.availAddr + 2, Uint8Array.of(idx & 0xff, (idx >> 8) & 0xff));
  }

  notify(queue = 0): void {
    this.bar.write(Bar0.NOTIFY + queue * Bar0.NOTIFY_OFF_MULTIPLIER, 2, queue);
  }

  readIsr(): number {
    return this.bar.read(Bar0.ISR, 1);
  }

  get usedIdx(): number {
    return readU16(this.ram.bytes, this.usedAddr + 2);
  }

  /** Used-ring entries added since the last call. */
  takeUsed(): { head: number; length: number }[] {
    const out = [];
    while (this.#usedSeen !== this.usedIdx) {
      const at = this.usedAddr + 4 + 8 * (this.#usedSeen % this.queueSize);
      out.push({ head: readU32(this.ram.bytes, at), length: readU32(this.ram.bytes, at + 4) });
      this.#usedSeen = (this.#usedSeen + 1) & 0xffff;
    }
    return out;
  }

  /**
   * Builds a well-formed block request (header, data, status) with direct
   * descriptors, publishes and (unless told not to) notifies it. Returns where its status byte is.
   */
  blockRequest(type: number, sector: number, data: { gpa: number; length: number }[], options: { notify?: boolean } = {}): { head: number; statusGpa: number } {
    const header = this.alloc(16);
    const headerBytes = new Uint8Array(16);
    const view = new DataView(headerBytes.buffer);
    view.setUint32(0, type, true);
    view.setBigUint64(8, BigInt(sector), true);
    this.ram.write(header, headerBytes);
    const statusGpa = this.alloc(1, 1);
    this.ram.write(statusGpa, Uint8Array.of(0xee));
    const writable = type === RequestType.IN || type === RequestType.GET_ID ? DescriptorFlag.WRITE : 0;
    const parts: Omit<RawDescriptor, "next">[] = [
      { gpa: header, length: 16, flags: 0 },
      ...data.map(({ gpa, length }) => ({ gpa, length, flags: writable })),
      { gpa: statusGpa, length: 1, flags: DescriptorFlag.WRITE },
    ];
    const head = this.#nextHead;
    const indices = parts.map((_, i) => (head + i) % this.queueSize);
    this.#nextHead = (head + parts.length) % this.queueSize;
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      this.writeDescriptors(this.descAddr + 16 * indices[i]!, [
        { ...part, flags: part.flags | (last ? 0 : DescriptorFlag.NEXT), next: last ? 0 : indices[i + 1]! },
      ]);
    });
    this.publish(head);
    if (options.notify !== false) this.notify();
    return { head, statusGpa };
  }
}

function align(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
