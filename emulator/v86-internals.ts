// The one module that knows v86's internal names. v86 is pinned to an exact
// version (package.json) because everything typed here is not public API:
// a v86 upgrade should need changes in this file only.
import { V86 } from "v86";
import type { V86Options } from "v86";
import { AlignedJsonWriter } from "./state/aligned-json.ts";
import { CHUNK_EXPORT, V86_CHUNK_INSTRUCTIONS, YIELD_EXPORT } from "./wasm-patch/dirty-map-abi.ts";

/** The v86 release these internals were read from; package.json pins the same version. */
export const V86_VERSION = "0.5.462";

/** One port handler set; v86 calls them with the port number already decoded. */
export type PortRead = () => number;
export type PortWrite = (value: number) => void;

/** v86's port table (`cpu.io`). Register handlers before `register_device`. */
export interface V86Io {
  /** One entry per port (65536); `device` is unset while no handler is registered. */
  ports: { device: object | undefined }[];
  register_read(port: number, device: object, r8?: PortRead, r16?: PortRead, r32?: PortRead): void;
  register_write(port: number, device: object, w8?: PortWrite, w16?: PortWrite, w32?: PortWrite): void;
}

/** A PCI function as v86's PCI bus expects it (`pci_id` is `slot << 3 | function`). */
export interface V86PciDevice {
  name: string;
  pci_id: number;
  /** Initial config space, 256 bytes so that capabilities fit. */
  pci_space: number[] | Uint8Array;
  /** Only I/O BARs can be relocated by the BIOS in v86; `null` for an unused BAR. */
  pci_bars: ({ size: number } | null)[];
}

export interface V86Pci {
  /** Registered functions by `pci_id`; `undefined` where the slot is free. */
  devices: (V86PciDevice | undefined)[];
  /** Returns the live config space as 64 dwords. */
  register_device(device: V86PciDevice): Int32Array;
  /** Live config spaces (64 dwords) by `pci_id`. */
  device_spaces: (Int32Array | undefined)[];
  /** Drives the IRQ its pin is routed to high; one bit per IRQ, whoever else holds it. */
  raise_irq(pciId: number): void;
  /** Drives that IRQ low, even if another function on it still asserts its pin (see Emulator's wired-OR). */
  lower_irq(pciId: number): void;
  /** The PIIX3 ISA bridge's config space; 0x60-0x63 route PIRQA-D to IRQs (the BIOS writes them). */
  isa_bridge_space8: Uint8Array;
}

/** The part of v86's CPU object this project uses. */
export interface V86Cpu {
  wasm_memory: WebAssembly.Memory;
  /** A Proxy that builds a fresh view on every access: use only for `.byteOffset`. */
  mem8: Uint8Array;
  memory_size: Int32Array;
  io: V86Io;
  devices: { pci: V86Pci };
  main_loop(): number;
  /** Called by main_loop between chunks of at most ~100k guest instructions: an instruction boundary. */
  run_hardware_timers(acpiEnabled: boolean, now: number): number;
  get_state(): unknown[];
  set_state(state: unknown[]): void;
  /** Drops compiled code for a guest-physical range after a device wrote into it. */
  jit_dirty_cache(start: number, end: number): void;
  pack_memory(): unknown;
  unpack_memory(packed: unknown): void;
  /** Resets the CPU and reloads the BIOS (guest reboot, `restart()`); v86's own devices reset here. */
  reboot_internal(): void;
  /** Non-zero while the CPU waits in HLT for an interrupt. */
  in_hlt: Uint8Array;
  /** EFLAGS (bit 9: interrupts enabled). */
  flags: Int32Array;
  /** The two 8259 PICs (v86 runs with ACPI, and so the I/O APIC, off): see `interruptControllers`. */
  get_state_pic(): unknown[];
}

/** v86's inner machine (`emulator.v86`), which the public typings omit. */
interface V86Inner {
  cpu: V86Cpu;
  save_state(): ArrayBuffer;
  restore_state(state: ArrayBuffer): void;
}

export type EmulatorOptions = Omit<V86Options, "wasm_fn" | "wasm_path"> & {
  /** The bytes of v86.wasm; loaded by the caller so that Node and browsers share this path. */
  wasmBytes: Uint8Array<ArrayBuffer>;
};

/**
 * A live view of guest RAM. v86 keeps RAM inside its wasm memory, which can
 * grow and so detach every view: `bytes` re-creates the view when that happened.
 */
export class GuestRam {
  #view: Uint8Array;

  constructor(private readonly cpu: V86Cpu) {
    this.#view = this.#create();
  }

  get size(): number {
    return this.cpu.memory_size[0]! >>> 0;
  }

  /** A view of all guest RAM; valid until the wasm memory next grows. */
  get bytes(): Uint8Array {
    if (this.#view.byteLength === 0) this.#view = this.#create();
    return this.#view;
  }

  /** The wasm memory's buffer and RAM's offset in it, for wasm modules that import it. */
  get wasmMemory(): WebAssembly.Memory {
    return this.cpu.wasm_memory;
  }

  get offsetInWasmMemory(): number {
    return this.cpu.mem8.byteOffset;
  }

  /** Writes from a device (DMA): the bytes land and compiled code over them is dropped. */
  write(gpa: number, data: Uint8Array): void {
    this.bytes.set(data, gpa);
    this.cpu.jit_dirty_cache(gpa, gpa + data.length);
  }

  #create(): Uint8Array {
    return new Uint8Array(this.cpu.wasm_memory.buffer, this.cpu.mem8.byteOffset, this.size);
  }
}

/** Handlers of one I/O BAR; `offset` counts from the BAR's start, `width` is in bytes. */
export interface IoRegion {
  /** Bytes; a power of two of at least 4. */
  readonly size: number;
  read(offset: number, width: 1 | 2 | 4): number;
  write(offset: number, width: 1 | 2 | 4, value: number): void;
}

/** A PCI function of ours: its config space (header and capabilities) and its I/O BARs. */
export interface PciFunctionSpec {
  name: string;
  /** Device number on bus 0 (function 0); see `Emulator.isPciSlotFree`. */
  slot: number;
  /** 256 bytes; the BAR registers are filled in by `attachPciFunction`. */
  configSpace: Uint8Array;
  /** BAR0, BAR1, ...: I/O BARs only, as v86 cannot move memory BARs. */
  ioBars: readonly IoRegion[];
}

/**
 * The INTx pin of an attached PCI function. Pins routed to one IRQ are wired-OR (PCI
 * interrupts are level-triggered, active while any function asserts): the IRQ stays high
 * until every function of ours on it has lowered its pin.
 */
export interface PciInterrupt {
  raise(): void;
  lower(): void;
  /** Where the pin is routed now and what the line and the pin are doing (for inspection). */
  inspect?(): IntxInspection;
}

export interface IntxInspection {
  /** The IRQ the BIOS routed the pin to. */
  irq: number;
  /** This function asserts its pin. */
  asserted: boolean;
  /** The interrupt controller sees the IRQ high (v86 keeps one level per IRQ). */
  lineHigh: boolean;
}

/** The CPU and the 8259 pair at an instruction boundary; IRQ masks are 16 bits, bit n = IRQ n. */
export interface CpuInspection {
  /** Waiting in HLT for an interrupt. */
  halted: boolean;
  /** EFLAGS.IF. */
  interruptsEnabled: boolean;
  /** IRQs requested and not yet taken (IRR). */
  requested: number;
  /** IRQs the guest is handling and has not yet acknowledged with an EOI (ISR). */
  inService: number;
  /** IRQs the guest has unmasked. */
  enabled: number;
  /** IRQ lines high now. */
  high: number;
  /** IRQs in level-triggered mode (ELCR), as the BIOS sets for PCI. */
  levelTriggered: number;
}

/** v86's virtio-net (`cpu.devices.virtio_net`, src/virtio_net.js): the fields this project reads or sets. */
interface V86VirtioNet {
  /** Bus events are named after it: `net${id}-send`, `net${id}-receive`. */
  id: number;
  /** What the guest reads from config space; the driver may replace it (VIRTIO_NET_CTRL_MAC_ADDR_SET). */
  mac: Uint8Array;
  virtio: { device_status: number; queues: V86VirtQueue[]; isr_status: number; pci_id: number };
}

/** One of v86's split virtqueues (src/virtio.js). */
interface V86VirtQueue {
  enabled: boolean;
  desc_addr: number;
  avail_addr: number;
  used_addr: number;
  /** Reads the available ring in guest RAM: only once the driver has set the queue up. */
  has_request(): boolean;
}

/** v86's bus as the emulator's public object holds it: `send` reaches the devices' side. */
interface V86Bus {
  send(name: string, value: unknown): void;
}

/** Device status bits (virtio 1.0 section 2.1). */
const VIRTIO_STATUS_DRIVER_OK = 4;
const VIRTIO_STATUS_NEEDS_RESET = 64;

/** Whether a received frame would land now, and if not, why. */
export type NicReceiveState = "ready" | "no-buffer" | "not-ready";

/** The guest's NIC, v86's virtio-net: its MAC and frames each way. */
export interface V86Nic {
  /** The MAC the guest reads now (a copy). */
  readonly mac: Uint8Array;
  /** Call before the CPU first runs: the driver reads the MAC once, when it binds. */
  setMac(mac: Uint8Array): void;
  /**
   * "ready" when the driver is up and has a receive buffer posted; "no-buffer" when it is up and
   * has none (v86 would drop the frame); "not-ready" before the driver set the receive queue up
   * (reading the queue's rings then would read whatever RAM holds at address 0).
   */
  receiveState(): NicReceiveState;
  /** Hands a frame to the device, which writes it into the guest's next receive buffer. Only when `receiveState()` is "ready". */
  deliver(frame: Uint8Array): void;
  /** Each frame the guest sends, as a view v86 may reuse; called inside the guest's instruction (do not re-enter the emulator). */
  onTransmit(listener: (frame: Uint8Array) => void): () => void;
}

/**
 * Where our BARs start before the BIOS assigns them. v86's `set_io_bars` only moves
 * ports at 0x1000 and above, and legacy ISA devices sit far below this.
 */
const FIRST_BAR_PORT = 0x8000;

/** Guest instructions per chunk while `eagerYield` is on (~0.1-0.3 ms of guest time here). */
const EAGER_CHUNK_INSTRUCTIONS = 25_000;

/** The emulator handle the rest of the project uses; wraps a `V86` instance. */
export class Emulator {
  /** Inside `main_loop` (guest code, and device handlers it calls) and not in our boundary hook. */
  #executing = false;
  #boundaryWork: (() => void)[] = [];
  /** The patched module's switch that ends `main_loop`'s slice after its current chunk (absent unpatched). */
  readonly #setYield: ((on: number) => void) | undefined;
  /** The patched module's chunk length, in guest instructions (absent unpatched). */
  readonly #setChunk: ((instructions: number) => void) | undefined;
  #eagerYield = false;
  /** performance.now() until which slices end eagerly whatever #eagerYield says (eagerYieldFor). */
  #eagerUntil = 0;
  #eagerChunk = EAGER_CHUNK_INSTRUCTIONS;
  readonly #haltListeners = new Set<() => void>();
  /** PCI functions whose INTx pin is asserted, by pci_id: ours and v86's own (its virtio-net). */
  readonly #assertedIntx = new Set<number>();

  private constructor(private readonly v86: V86) {
    const exports = (this.cpu as V86Cpu & { wm: { exports: Record<string, unknown> } }).wm.exports;
    const setYield = exports[YIELD_EXPORT];
    const setChunk = exports[CHUNK_EXPORT];
    this.#setChunk = typeof setChunk === "function" ? (setChunk as (instructions: number) => void) : undefined;
    this.#setYield = typeof setYield === "function" ? (setYield as (on: number) => void) : undefined;
    this.#hookMainLoop();
    this.#wireOrIntx();
  }

  /**
   * Pins routed to one IRQ are wired-OR (PCI interrupts are level-triggered, active while any
   * function asserts), but v86 keeps one level per IRQ and lowers it for whoever asks. Every
   * function's raise and lower, v86's own devices' too (its virtio-net shares IRQ 10 with our
   * disks), go through here: the IRQ goes low only when no function routed to it asserts.
   */
  #wireOrIntx(): void {
    const pci = this.cpu.devices.pci;
    const raise = pci.raise_irq.bind(pci);
    const lower = pci.lower_irq.bind(pci);
    // Own properties shadow the prototype's methods, which v86's devices look up at each call.
    pci.raise_irq = (pciId) => {
      this.#assertedIntx.add(pciId);
      raise(pciId);
    };
    pci.lower_irq = (pciId) => {
      this.#assertedIntx.delete(pciId);
      const irq = this.#routedIrq(pciId);
      for (const other of this.#assertedIntx) if (this.#routedIrq(other) === irq) return;
      lower(pciId);
    };
  }

  /** Creates the emulator without starting it; resolves once devices exist and RAM is laid out. */
  static async create(options: EmulatorOptions): Promise<Emulator> {
    const { wasmBytes, ...rest } = options;
    const v86 = new V86({
      ...rest,
      autostart: false,
      wasm_fn: async (imports: WebAssembly.Imports) => {
        const module = await WebAssembly.compile(wasmBytes);
        const instance = await WebAssembly.instantiate(module, imports);
        return instance.exports;
      },
    });
    await new Promise<void>((resolve) => v86.add_listener("emulator-loaded", () => resolve()));
    return new Emulator(v86);
  }

  get cpu(): V86Cpu {
    return (this.v86 as unknown as { v86: V86Inner }).v86.cpu;
  }

  /**
   * Whether the CPU stands between two instructions now. JavaScript runs one thing at a time,
   * so anything outside v86's `main_loop` does; inside it, only our boundary hook does (an I/O
   * port handler, say, runs in the middle of the instruction that called it).
   */
  get atInstructionBoundary(): boolean {
    return !this.#executing;
  }

  /**
   * Runs `work` at the next instruction boundary, without stopping the CPU: inside `main_loop`
   * at its next chunk boundary (at most ~100k guest instructions later; no wait for the slice to
   * end or for the next tick), else in a microtask. Work runs in request order, once; the
   * promise settles with its result (a throw never reaches v86's loop).
   */
  atNextBoundary<T>(work: () => T): Promise<T> {
    // Asked from inside the guest's slice: the promise's callbacks run only once the slice is
    // over, so end it right after the chunk whose boundary runs the work, and shorten that chunk.
    if (this.#executing) {
      this.#setYield?.(1);
      this.#setChunk?.(this.#eagerChunk);
    }
    return new Promise<T>((resolve, reject) => {
      this.#boundaryWork.push(() => {
        try {
          resolve(work());
        } catch (error) {
          reject(error);
        }
      });
      if (this.#boundaryWork.length === 1) queueMicrotask(() => this.#runBoundaryWork());
    });
  }

  /**
   * While on, v86's slices of guest execution end after each chunk, and chunks are a quarter
   * of v86's ~100k instructions, so that the event loop (a peer's answer the guest waits for)
   * is served within a fraction of a millisecond instead of after one or more; it costs a turn
   * of the event loop per chunk. Needs the patched module (emulator/wasm-patch/); without it
   * this does nothing.
   */
  set eagerYield(on: boolean) {
    if (on === this.#eagerYield) return;
    this.#eagerYield = on;
    this.#applyYield();
  }

  /**
   * Slices end eagerly for the next `ms` whatever `eagerYield` says. For a guest just
   * restored: v86 interprets its code until its JIT has compiled it again, and one chunk of
   * 100k instructions then takes 10-30 ms, during which the host's events (the gateway's
   * frames, a console line) wait.
   */
  eagerYieldFor(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`eagerYieldFor: expected a duration in ms, got ${ms}`);
    this.#eagerUntil = Math.max(this.#eagerUntil, performance.now() + ms);
    this.#applyYield();
  }

  #yieldingEagerly(): boolean {
    return this.#eagerYield || performance.now() < this.#eagerUntil;
  }

  #applyYield(): void {
    const on = this.#yieldingEagerly();
    this.#setYield?.(on ? 1 : 0);
    this.#setChunk?.(on ? this.#eagerChunk : V86_CHUNK_INSTRUCTIONS);
  }

  /**
   * Calls `listener` after each slice of guest execution that ended with the CPU halted (HLT:
   * the guest has nothing to run until an interrupt), outside the guest's instructions. An idle
   * guest is called about at every timer tick: keep the listener cheap.
   */
  onHalt(listener: () => void): () => void {
    this.#haltListeners.add(listener);
    return () => this.#haltListeners.delete(listener);
  }

  /**
   * Guest instructions per chunk while `eagerYield` is on (default 25k). Shorter chunks let the
   * host's events (disk completions, a peer's answers) land at more points of the guest's code,
   * at the cost of an event-loop turn each: for reproducing races with the guest (see
   * harness/stress/intx-race.ts), not for running guests.
   */
  set eagerChunkInstructions(instructions: number) {
    if (!Number.isInteger(instructions) || instructions < 1) throw new RangeError(`eagerChunkInstructions: expected a positive integer, got ${instructions}`);
    this.#eagerChunk = instructions;
    if (this.#yieldingEagerly()) this.#setChunk?.(instructions);
  }

  /** v86 looks both methods up on the CPU object at each call, so own properties wrap them. */
  #hookMainLoop(): void {
    const { cpu } = this;
    const mainLoop = cpu.main_loop.bind(cpu);
    const hardwareTimers = cpu.run_hardware_timers.bind(cpu);
    cpu.main_loop = () => {
      this.#executing = true;
      try {
        return mainLoop();
      } finally {
        this.#executing = false;
        // A yield asked for one slice is spent (and an eagerYieldFor window may have ended).
        if (!this.#eagerYield) this.#applyYield();
        // v86 ends a slice as soon as the CPU halts; an idle guest's slices end so at every timer tick.
        if (cpu.in_hlt[0] !== 0) for (const listener of this.#haltListeners) listener();
      }
    };
    cpu.run_hardware_timers = (acpiEnabled, now) => {
      if (this.#boundaryWork.length > 0) {
        this.#executing = false;
        try {
          this.#runBoundaryWork();
        } finally {
          this.#executing = true;
        }
      }
      return hardwareTimers(acpiEnabled, now);
    };
  }

  #runBoundaryWork(): void {
    if (this.#executing) return; // requested from a device handler: the hook inside main_loop runs it
    const work = this.#boundaryWork;
    this.#boundaryWork = [];
    for (const item of work) item();
  }

  get isRunning(): boolean {
    return this.v86.is_running();
  }

  /** Guest instructions executed since the emulator was created (not saved in states). */
  get instructionCounter(): number {
    return this.v86.get_instruction_counter();
  }

  run(): void {
    void this.v86.run();
  }

  /** Resolves after the current slice of `main_loop`: the guest stands on an instruction boundary. */
  async stop(): Promise<void> {
    await this.v86.stop();
  }

  async destroy(): Promise<void> {
    await this.v86.destroy();
  }

  /** Synchronous full state (RAM included); call while stopped. */
  saveState(): ArrayBuffer {
    return this.#inner.save_state();
  }

  /** Replaces the whole machine state; call while stopped. Throws on a malformed state. */
  restoreState(state: ArrayBuffer): void {
    this.#inner.restore_state(state);
    // v86 restored the IRQ levels; who holds them is ours to restore. Our transports re-assert
    // their pins as they take up their state; v86's virtio-net is read here.
    this.#assertedIntx.clear();
    const nic = (this.cpu.devices as { virtio_net?: V86VirtioNet }).virtio_net;
    if (nic !== undefined && nic.virtio.isr_status !== 0) this.#assertedIntx.add(nic.virtio.pci_id);
  }

  /** Whether a PCI function may be attached at `slot` (bus 0): v86's own devices take fixed slots. */
  isPciSlotFree(slot: number): boolean {
    return Number.isInteger(slot) && slot > 0 && slot < 32 && this.cpu.devices.pci.devices[slot << 3] === undefined;
  }

  /**
   * Adds a PCI function with I/O BARs. Call before the CPU first runs (no hotplug).
   * Each BAR starts on free ports and follows the BIOS when it relocates it, and
   * again when a saved state is restored.
   */
  attachPciFunction(spec: PciFunctionSpec): PciInterrupt {
    const { cpu } = this;
    if (!this.isPciSlotFree(spec.slot)) throw new Error(`PCI slot ${spec.slot} is taken or out of range`);
    if (spec.configSpace.length !== 256) throw new Error("PCI config space must be 256 bytes");
    const space = spec.configSpace.slice();
    const owner = { name: spec.name };
    spec.ioBars.forEach((region, bar) => {
      const base = this.#freePortRange(region.size);
      // v86 snapshots these port entries in register_device, so they must exist first.
      for (let offset = 0; offset < region.size; offset++) {
        cpu.io.register_read(
          base + offset,
          owner,
          () => region.read(offset, 1) & 0xff,
          () => region.read(offset, 2) & 0xffff,
          () => region.read(offset, 4) | 0,
        );
        cpu.io.register_write(
          base + offset,
          owner,
          (value) => region.write(offset, 1, value & 0xff),
          (value) => region.write(offset, 2, value & 0xffff),
          (value) => region.write(offset, 4, value >>> 0),
        );
      }
      new DataView(space.buffer).setUint32(0x10 + 4 * bar, base | 1, true);
    });
    const pciId = spec.slot << 3;
    cpu.devices.pci.register_device({
      name: spec.name,
      pci_id: pciId,
      pci_space: space,
      pci_bars: spec.ioBars.map((region) => ({ size: region.size })),
    });
    return {
      raise: () => cpu.devices.pci.raise_irq(pciId),
      lower: () => cpu.devices.pci.lower_irq(pciId),
      inspect: () => {
        const irq = this.#routedIrq(pciId);
        return { irq, asserted: this.#assertedIntx.has(pciId), lineHigh: (this.interruptControllers().high & (1 << irq)) !== 0 };
      },
    };
  }

  /**
   * The IRQ a function's INTx pin is routed to, the way v86's PCI bus routes it: the PIIX3's
   * PIRQ (device + pin - 2) mod 4, whose IRQ the BIOS wrote at 0x60 + n of the ISA bridge.
   */
  #routedIrq(pciId: number): number {
    const space = this.cpu.devices.pci.device_spaces[pciId];
    if (space === undefined) return -1;
    const pin = (space[15]! >> 8) & 0xff; // config space 0x3d: 1 = INTA#
    return this.cpu.devices.pci.isa_bridge_space8[0x60 + (((pciId >> 3) + pin - 2) & 3)]!;
  }

  /** The CPU's halt and interrupt flag and the PICs' registers, at an instruction boundary. */
  cpuInspection(): CpuInspection {
    return { halted: this.cpu.in_hlt[0] !== 0, interruptsEnabled: (this.cpu.flags[0]! & 0x200) !== 0, ...this.interruptControllers() };
  }

  interruptControllers(): Omit<CpuInspection, "halted" | "interruptsEnabled"> {
    // get_state_pic: [irq_mask, irq_map, isr, irr, ..., [slave], ..., elcr (10), irq_value (11), ...] per PIC.
    const master = this.cpu.get_state_pic() as number[];
    const slave = master[5] as unknown as number[];
    const both = (index: number) => (master[index]! & 0xff) | ((slave[index]! & 0xff) << 8);
    return { requested: both(3), inService: both(2), enabled: both(0), high: both(11), levelTriggered: both(10) };
  }

  /** Calls `listener` when the guest reboots (or `restart()`), before the BIOS runs again. */
  onReboot(listener: () => void): void {
    const { cpu } = this;
    const reboot = cpu.reboot_internal.bind(cpu);
    // v86 looks the method up on the CPU object at each call, so an own property wraps it.
    cpu.reboot_internal = () => {
      reboot();
      listener();
    };
  }

  #freePortRange(size: number): number {
    const { ports } = this.cpu.io;
    for (let base = FIRST_BAR_PORT; base + size <= 0x10000; base += size) {
      let free = true;
      for (let port = base; port < base + size && free; port++) free = ports[port]?.device === undefined;
      if (free) return base;
    }
    throw new Error(`no free range of ${size} I/O ports`);
  }

  onSerialByte(listener: (byte: number) => void): () => void {
    this.v86.add_listener("serial0-output-byte", listener);
    return () => this.v86.remove_listener("serial0-output-byte", listener);
  }

  sendSerial(bytes: Uint8Array): void {
    this.v86.serial_send_bytes(0, bytes);
  }

  /** The virtio-net NIC (the emulator must have been created with `net_device: {type: "virtio"}`). */
  get nic(): V86Nic {
    const device = (this.cpu.devices as { virtio_net?: V86VirtioNet }).virtio_net;
    if (device === undefined) throw new Error("this emulator has no virtio-net NIC (net_device type virtio)");
    const bus = (this.v86 as unknown as { bus: V86Bus }).bus;
    // v86's typings know only "net0-send"; the id is 0 without an ne2k, which Machine never adds.
    const sendEvent = `net${device.id}-send` as "net0-send";
    return {
      get mac() {
        return device.mac.slice();
      },
      setMac(mac) {
        device.mac = mac.slice();
      },
      receiveState() {
        const { device_status: status, queues } = device.virtio;
        const rx = queues[0];
        const up = (status & VIRTIO_STATUS_DRIVER_OK) !== 0 && (status & VIRTIO_STATUS_NEEDS_RESET) === 0;
        if (!up || rx === undefined || !rx.enabled || rx.desc_addr === 0 || rx.avail_addr === 0 || rx.used_addr === 0) return "not-ready";
        return rx.has_request() ? "ready" : "no-buffer";
      },
      deliver: (frame) => bus.send(`net${device.id}-receive`, frame),
      onTransmit: (listener) => {
        this.v86.add_listener(sendEvent, listener);
        return () => this.v86.remove_listener(sendEvent, listener);
      },
    };
  }

  get #inner(): V86Inner {
    return (this.v86 as unknown as { v86: V86Inner }).v86;
  }
}

// ---------------------------------------------------------------------------
// Memory model and memory-less state (emulator/memory/, emulator/state/).
// Kept apart from the members above; everything v86-specific these modules need.
// ---------------------------------------------------------------------------

/** v86's allocator exports (Rust `v86_malloc`/`v86_free`), which the CPU object reaches as `cpu.wm`. */
interface V86WasmHeapExports {
  wm: { exports: { v86_malloc: (size: number) => number; v86_free: (addr: number) => void } };
}

/** What the dirty-map patch (emulator/wasm-patch/) adds to v86's module, and the TLB flush it relies on. */
export interface WriteMapControls {
  /** Marks go to `map[page]` for pages below `pageCount`; `bias` is mem8's offset in pages. 0 pages: off. */
  track(map: number, bias: number, pageCount: number): void;
  /** Drops every TLB entry (global ones too), so the next write to each page walks the page tables. */
  fullClearTlb(): void;
  /** Makes every TLB entry read-only, so the next write to each page walks the page tables; reads keep their entries. */
  writeProtectTlb(): void;
}

/** The patched module's controls, or undefined when v86 runs its unpatched module. */
export function writeMapControls(emulator: Emulator, names: { track: string; writeProtect: string }): WriteMapControls | undefined {
  const exports = (emulator.cpu as V86Cpu & { wm: { exports: Record<string, unknown> } }).wm.exports;
  const track = exports[names.track];
  const writeProtect = exports[names.writeProtect];
  const fullClearTlb = exports["full_clear_tlb"];
  if (typeof track !== "function" || typeof writeProtect !== "function" || typeof fullClearTlb !== "function") return undefined;
  return {
    track: (map, bias, pageCount) => (track as (a: number, b: number, c: number) => void)(map, bias, pageCount),
    fullClearTlb: () => (fullClearTlb as () => void)(),
    writeProtectTlb: () => (writeProtect as () => void)(),
  };
}

/** A block in v86's own heap, so that our wasm code sees guest RAM and this block in one memory. */
export interface HeapBlock {
  /** Offset in `memory.buffer`, aligned as asked. */
  readonly offset: number;
  readonly size: number;
  readonly memory: WebAssembly.Memory;
  /**
   * Bytes of the block from here on lie in memory this allocation grew, which WebAssembly
   * zero-fills; below it they hold whatever earlier users of the heap left (v86's allocator
   * does not zero). Zeroing only that part spares touching fresh pages: ~3 s for a 1 GiB
   * shadow here, during which a peer heard nothing.
   */
  readonly zeroFrom: number;
  /** A view of the whole block, zeroed (only where it may not be zero already). */
  zeroed(): Uint8Array;
  free(): void;
}

/**
 * Allocates from v86's heap. It may grow the wasm memory, which detaches every view of it:
 * callers re-create their views (GuestRam does so by itself).
 */
export function allocateInV86Heap(emulator: Emulator, size: number, alignment = 64): HeapBlock {
  const cpu = emulator.cpu as V86Cpu & V86WasmHeapExports;
  const { v86_malloc, v86_free } = cpu.wm.exports;
  const grownFrom = cpu.wasm_memory.buffer.byteLength;
  // v86_malloc aligns to 16 and returns a pointer 4 bytes into its block: align it ourselves.
  const raw = v86_malloc(size + alignment) >>> 0;
  // A failed Rust allocation returns null, which v86_malloc turns into 4.
  if (raw < alignment) throw new RangeError(`v86 heap: cannot allocate ${size} bytes (wasm memory is full)`);
  const offset = Math.ceil(raw / alignment) * alignment;
  const zeroFrom = Math.min(offset + size, Math.max(offset, grownFrom));
  let freed = false;
  return {
    offset,
    size,
    memory: cpu.wasm_memory,
    zeroFrom,
    zeroed() {
      new Uint8Array(cpu.wasm_memory.buffer, offset, zeroFrom - offset).fill(0);
      return new Uint8Array(cpu.wasm_memory.buffer, offset, size);
    },
    free() {
      if (!freed) v86_free(raw);
      freed = true;
    },
  };
}

/**
 * v86's `save_state()` split in two: the JSON that describes the state, and the binary
 * buffers it refers to by offset. Keeping them apart lets a container put the buffers at a
 * fixed offset, so that a JSON that grows by a digit does not shift every byte after it.
 */
export interface V86StateParts {
  json: Uint8Array;
  buffers: Uint8Array;
}

// save_state's layout: int32 magic, version, total length, JSON length; JSON; buffers at 4-aligned offset.
const STATE_HEADER_BYTES = 16;
const STATE_MAGIC = 0x86768676 | 0;
const STATE_VERSION = 6;

/**
 * Loads CPU and device state while keeping guest RAM as it is (the caller filled it page by
 * page): `unpack_memory`, which would zero RAM first, is a no-op for the call. v86's
 * `set_state` drops the JIT cache and TLB itself. Throws v86's error on a malformed state.
 */
export function restoreStateKeepingMemory(emulator: Emulator, parts: V86StateParts): void {
  const buffersOffset = align4(STATE_HEADER_BYTES + parts.json.length);
  const total = buffersOffset + parts.buffers.length;
  const state = new ArrayBuffer(total);
  new Int32Array(state, 0, 4).set([STATE_MAGIC, STATE_VERSION, total, parts.json.length]);
  new Uint8Array(state, STATE_HEADER_BYTES).set(parts.json);
  new Uint8Array(state, buffersOffset).set(parts.buffers);
  withInstanceOverride(
    emulator.cpu,
    "unpack_memory",
    () => {},
    () => emulator.restoreState(state),
  );
}

/**
 * v86's state as a tree plus its binary buffers, the way its own `save_state` walks the CPU
 * (objects with `get_state`, arrays, Maps, typed arrays), but without copying: `buffers` are
 * views of the live arrays, valid until the guest runs again. `tree` is the JSON v86 would
 * write under "state" (typed arrays become {"__state_type__", "buffer_id"}), as UTF-8, its
 * numbers in fixed-width fields (state/aligned-json.ts) so that deltas between captures stay
 * small. RAM is left out.
 */
export interface V86StateTree {
  tree: Uint8Array;
  buffers: Uint8Array[];
}

const stateWriter = new AlignedJsonWriter();
const [OPEN_OBJECT, CLOSE_OBJECT, COMMA] = [0x7b, 0x7d, 0x2c];

/** Walks the CPU's state at the current instruction boundary (see `V86StateTree`), writing the JSON as it goes. */
export function captureStateTree(emulator: Emulator): V86StateTree {
  const cpu = emulator.cpu;
  const buffers: Uint8Array[] = [];
  const out = stateWriter;
  /** `{"__state_type__": type, field: ...}`, v86's form for what JSON has no type for. */
  const typed = (type: string, field: string, writeField: () => void): void => {
    out.char(OPEN_OBJECT);
    out.key("__state_type__");
    out.primitive(type);
    out.char(COMMA);
    out.key(field);
    writeField();
    out.char(CLOSE_OBJECT);
  };
  const write = (value: unknown): void => {
    if (typeof value !== "object" || value === null) return out.primitive(value);
    if (Array.isArray(value)) return out.array(value, write);
    if (value instanceof Map) return typed("Map", "args", () => out.array(Array.from(value.entries()), write));
    // v86 recognises typed arrays by BYTES_PER_ELEMENT, which also sees through the Proxy views
    // some devices keep (ArrayBuffer.isView does not).
    const array = value as Partial<Float64Array>;
    if (array.BYTES_PER_ELEMENT !== undefined) {
      const constructor = array.constructor.name.replace("bound ", "");
      if (!STATE_ARRAY_TYPES.has(constructor)) throw new Error(`v86 state: unexpected ${constructor} (not a type v86's restore knows)`);
      buffers.push(new Uint8Array(array.buffer!, array.byteOffset, array.length! * array.BYTES_PER_ELEMENT));
      return typed(constructor, "buffer_id", () => out.number(buffers.length - 1));
    }
    const stateful = value as { get_state?: () => unknown[] };
    if (typeof stateful.get_state !== "function") throw new Error("v86 state: an object that is neither a typed array nor has get_state");
    out.array(stateful.get_state(), write);
  };
  let tree: Uint8Array;
  try {
    withInstanceOverride(
      cpu,
      "pack_memory",
      () => ({
        bitmap: { get_buffer: () => new ArrayBuffer(0) },
        packed_memory: new Uint8Array(0),
      }),
      () => write(cpu),
    );
  } finally {
    // Also after a throw: the next capture starts from an empty writer.
    tree = out.take();
  }
  return { tree, buffers };
}

/** v86's restore table (state.js CONSTRUCTOR_TABLE): the typed arrays a state may hold. */
const STATE_ARRAY_TYPES = new Set(["Uint8Array", "Int8Array", "Uint16Array", "Int16Array", "Uint32Array", "Int32Array", "Float32Array", "Float64Array"]);

/** Packs a `V86StateTree` into the parts `restoreStateKeepingMemory` takes (v86's save_state layout). */
export function stateTreeToParts(tree: string, buffers: readonly Uint8Array[]): V86StateParts {
  const infos: { offset: number; length: number }[] = [];
  let total = 0;
  for (const buffer of buffers) {
    infos.push({ offset: total, length: buffer.length });
    total = align4(total + buffer.length);
  }
  const packed = new Uint8Array(total);
  buffers.forEach((buffer, i) => packed.set(buffer, infos[i]!.offset));
  const json = new TextEncoder().encode(`{"buffer_infos":${JSON.stringify(infos)},"state":${tree}}`);
  return { json, buffers: packed };
}

/** Runs `body` with `object[key]` replaced on the instance, then puts back what was there. */
function withInstanceOverride<T extends object, K extends keyof T, R>(object: T, key: K, replacement: unknown, body: () => R): R {
  const own = Object.getOwnPropertyDescriptor(object, key);
  Object.defineProperty(object, key, { value: replacement, configurable: true, writable: true });
  try {
    return body();
  } finally {
    if (own === undefined) delete object[key];
    else Object.defineProperty(object, key, own);
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
