// A split virtqueue (virtio 1.x, 2.7) seen from the device: the driver's
// configuration of it, taking descriptor chains from the available ring, and
// returning them on the used ring. Everything read from the guest is checked:
// a chain that breaks the rules comes back as a ChainError, never an exception.
import { AVAIL_F_NO_INTERRUPT, DescriptorFlag } from "./constants.ts";
import { isInRam, readU16, readU32, readU64, writeU16, writeU32Pair, type GuestMemory } from "./guest-memory.ts";

/** One buffer of a chain, in guest-physical memory (checked to lie inside RAM). */
export interface Descriptor {
  readonly gpa: number;
  readonly length: number;
  /** Device-writable (the driver reads it back); otherwise device-readable. */
  readonly writable: boolean;
}

export interface DescriptorChain {
  /** Index of the first descriptor: what goes back on the used ring. */
  readonly head: number;
  readonly descriptors: readonly Descriptor[];
}

/** Ways a chain can break the split-virtqueue rules. */
export type ChainError =
  | "head-out-of-range"
  | "next-out-of-range"
  /** More descriptors than the queue size: a loop, or a driver bug. */
  | "chain-too-long"
  | "indirect-not-negotiated"
  | "nested-indirect"
  | "indirect-with-next"
  | "bad-indirect-length"
  | "indirect-table-outside-ram"
  | "buffer-outside-ram"
  | "readable-after-writable";

/** The available ring itself is broken: its index moved by more than the queue holds. */
export type AvailRingError = "avail-index-jumped";

export type PopResult = { readonly chain: DescriptorChain } | { readonly error: ChainError; readonly head: number } | { readonly error: AvailRingError };

export type QueueLayoutError = "size-not-power-of-two" | "size-too-large" | "ring-outside-ram" | "ring-misaligned";

/** Ring options fixed by feature negotiation. */
export interface RingFeatures {
  indirectDescriptors: boolean;
  eventIdx: boolean;
}

/** What a snapshot keeps of a queue (JSON-safe). */
export interface QueueState {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  enabled: boolean;
  lastAvailIdx: number;
  nextUsedIdx: number;
  signalledUsedIdx: number;
}

/**
 * A queue's indices as the device and the driver see them: `availIdx - lastAvailIdx` chains
 * wait to be taken, `nextUsedIdx - signalledUsedIdx` were returned without an interrupt decision.
 */
export interface QueueInspection {
  enabled: boolean;
  size: number;
  lastAvailIdx: number;
  nextUsedIdx: number;
  signalledUsedIdx: number;
  /** The driver's avail.idx in guest RAM. */
  availIdx: number;
  /** used.idx in guest RAM (what the driver reads). */
  usedIdx: number;
  /** With EVENT_IDX: the driver wants an interrupt once used.idx passes this. */
  usedEvent?: number;
  /** Without EVENT_IDX: the driver asked for no interrupts (avail.flags). */
  noInterrupt?: boolean;
}

const DESCRIPTOR_BYTES = 16;

export class SplitVirtqueue {
  // Registers the driver programs through the transport.
  size: number;
  descAddr = 0;
  availAddr = 0;
  usedAddr = 0;
  enabled = false;
  features: RingFeatures = { indirectDescriptors: false, eventIdx: false };

  /** Next available-ring entry to take (free-running 16-bit, as in the ring). */
  #lastAvailIdx = 0;
  /** Our copy of used.idx: the guest may scribble on its own, we never read it back. */
  #nextUsedIdx = 0;
  /** used.idx when we last decided about an interrupt (for EVENT_IDX). */
  #signalledUsedIdx = 0;

  constructor(
    readonly index: number,
    readonly maxSize: number,
  ) {
    this.size = maxSize;
  }

  reset(): void {
    this.size = this.maxSize;
    this.descAddr = this.availAddr = this.usedAddr = 0;
    this.enabled = false;
    this.features = { indirectDescriptors: false, eventIdx: false };
    this.#lastAvailIdx = this.#nextUsedIdx = this.#signalledUsedIdx = 0;
  }

  /** Checks the driver's size and ring addresses before the queue is enabled. */
  checkLayout(ram: GuestMemory): QueueLayoutError | undefined {
    const { size } = this;
    if (size === 0 || (size & (size - 1)) !== 0) return "size-not-power-of-two";
    if (size > this.maxSize) return "size-too-large";
    const rings: [addr: number, bytes: number, align: number][] = [
      [this.descAddr, DESCRIPTOR_BYTES * size, 16],
      [this.availAddr, 6 + 2 * size, 2], // flags, idx, ring[size], used_event
      [this.usedAddr, 6 + 8 * size, 4], // flags, idx, ring[size] of {id, len}, avail_event
    ];
    for (const [addr, bytes, align] of rings) {
      if (!isInRam(ram, addr, bytes)) return "ring-outside-ram";
      if (addr % align !== 0) return "ring-misaligned";
    }
    return undefined;
  }

  /** Takes the next chain the driver made available, or `null` when there is none. */
  pop(ram: GuestMemory): PopResult | null {
    const bytes = ram.bytes;
    const availIdx = readU16(bytes, this.availAddr + 2);
    const pending = (availIdx - this.#lastAvailIdx) & 0xffff;
    if (pending === 0) {
      // With EVENT_IDX the driver only kicks once avail.idx passes avail_event.
      if (this.features.eventIdx) writeU16(ram, this.usedAddr + 4 + 8 * this.size, this.#lastAvailIdx);
      return null;
    }
    if (pending > this.size) return { error: "avail-index-jumped" };
    const head = readU16(bytes, this.availAddr + 4 + 2 * (this.#lastAvailIdx % this.size));
    this.#lastAvailIdx = (this.#lastAvailIdx + 1) & 0xffff;
    const chain = this.readChain(ram, head);
    return typeof chain === "string" ? { error: chain, head } : { chain };
  }

  /** Walks the chain that starts at `head` (also used to take up requests again after a restore). */
  readChain(ram: GuestMemory, head: number): DescriptorChain | ChainError {
    if (!Number.isInteger(head) || head < 0 || head >= this.size) return "head-out-of-range";
    const bytes = ram.bytes;
    const descriptors: Descriptor[] = [];
    let table = this.descAddr;
    let tableSize = this.size;
    let inIndirectTable = false;
    let index = head;
    let seenWritable = false;
    // Each step adds a descriptor or enters the one indirect table: bounded by 2 * size.
    for (let steps = 0; steps <= 2 * this.size; steps++) {
      const at = table + DESCRIPTOR_BYTES * index;
      const gpa = readU64(bytes, at);
      const length = readU32(bytes, at + 8);
      const flags = readU16(bytes, at + 12);
      const next = readU16(bytes, at + 14);
      if (flags & DescriptorFlag.INDIRECT) {
        if (!this.features.indirectDescriptors) return "indirect-not-negotiated";
        if (inIndirectTable) return "nested-indirect";
        if (flags & DescriptorFlag.NEXT) return "indirect-with-next";
        if (length === 0 || length % DESCRIPTOR_BYTES !== 0) return "bad-indirect-length";
        if (!isInRam(ram, gpa, length)) return "indirect-table-outside-ram";
        table = gpa;
        tableSize = length / DESCRIPTOR_BYTES;
        inIndirectTable = true;
        index = 0;
        continue;
      }
      if (!isInRam(ram, gpa, length)) return "buffer-outside-ram";
      const writable = (flags & DescriptorFlag.WRITE) !== 0;
      if (seenWritable && !writable) return "readable-after-writable";
      seenWritable ||= writable;
      descriptors.push({ gpa, length, writable });
      if (descriptors.length > this.size) return "chain-too-long";
      if (!(flags & DescriptorFlag.NEXT)) return { head, descriptors };
      if (next >= tableSize) return "next-out-of-range";
      index = next;
    }
    return "chain-too-long";
  }

  /** Returns a chain to the driver; `written` is how many bytes the device wrote into it. */
  pushUsed(ram: GuestMemory, head: number, written: number): void {
    writeU32Pair(ram, this.usedAddr + 4 + 8 * (this.#nextUsedIdx % this.size), head, written);
    this.#nextUsedIdx = (this.#nextUsedIdx + 1) & 0xffff;
    writeU16(ram, this.usedAddr + 2, this.#nextUsedIdx);
  }

  /** Whether the driver wants an interrupt for what was pushed since the last call. */
  shouldInterrupt(ram: GuestMemory): boolean {
    const previous = this.#signalledUsedIdx;
    const current = this.#nextUsedIdx;
    this.#signalledUsedIdx = current;
    if (current === previous) return false;
    const bytes = ram.bytes;
    if (this.features.eventIdx) {
      const usedEvent = readU16(bytes, this.availAddr + 4 + 2 * this.size);
      // vring_need_event: did used.idx step past used_event since `previous`?
      return ((current - usedEvent - 1) & 0xffff) < ((current - previous) & 0xffff);
    }
    return (readU16(bytes, this.availAddr) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  inspect(ram: GuestMemory): QueueInspection {
    const base = {
      enabled: this.enabled,
      size: this.size,
      lastAvailIdx: this.#lastAvailIdx,
      nextUsedIdx: this.#nextUsedIdx,
      signalledUsedIdx: this.#signalledUsedIdx,
    };
    if (!this.enabled || this.checkLayout(ram) !== undefined) return { ...base, availIdx: 0, usedIdx: 0 };
    const bytes = ram.bytes;
    const rings = { availIdx: readU16(bytes, this.availAddr + 2), usedIdx: readU16(bytes, this.usedAddr + 2) };
    return this.features.eventIdx
      ? { ...base, ...rings, usedEvent: readU16(bytes, this.availAddr + 4 + 2 * this.size) }
      : { ...base, ...rings, noInterrupt: (readU16(bytes, this.availAddr) & AVAIL_F_NO_INTERRUPT) !== 0 };
  }

  saveState(): QueueState {
    return {
      size: this.size,
      descAddr: this.descAddr,
      availAddr: this.availAddr,
      usedAddr: this.usedAddr,
      enabled: this.enabled,
      lastAvailIdx: this.#lastAvailIdx,
      nextUsedIdx: this.#nextUsedIdx,
      signalledUsedIdx: this.#signalledUsedIdx,
    };
  }

  restoreState(state: QueueState): void {
    this.size = state.size;
    this.descAddr = state.descAddr;
    this.availAddr = state.availAddr;
    this.usedAddr = state.usedAddr;
    this.enabled = state.enabled;
    this.#lastAvailIdx = state.lastAvailIdx & 0xffff;
    this.#nextUsedIdx = state.nextUsedIdx & 0xffff;
    this.#signalledUsedIdx = state.signalledUsedIdx & 0xffff;
  }
}
