// The one module that knows v86's internal names. v86 is pinned to an exact
// version (package.json) because everything typed here is not public API:
// a v86 upgrade should need changes in this file only.
import { V86 } from "v86";
import type { V86Options } from "v86";

/** The v86 release these internals were read from; package.json pins the same version. */
export const V86_VERSION = "0.5.462";

/** One port handler set; v86 calls them with the port number already decoded. */
export type PortRead = () => number;
export type PortWrite = (value: number) => void;

/** v86's port table (`cpu.io`). Register handlers before `registerPciDevice`. */
export interface V86Io {
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
  /** Returns the live config space as 64 dwords. */
  register_device(device: V86PciDevice): Int32Array;
  raise_irq(pciId: number): void;
  lower_irq(pciId: number): void;
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
  get_state(): unknown[];
  set_state(state: unknown[]): void;
  /** Drops compiled code for a guest-physical range after a device wrote into it. */
  jit_dirty_cache(start: number, end: number): void;
  pack_memory(): unknown;
  unpack_memory(packed: unknown): void;
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
    return this.cpu.memory_size[0] >>> 0;
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

/** The emulator handle the rest of the project uses; wraps a `V86` instance. */
export class Emulator {
  private constructor(private readonly v86: V86) {}

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
  }

  onSerialByte(listener: (byte: number) => void): () => void {
    this.v86.add_listener("serial0-output-byte", listener);
    return () => this.v86.remove_listener("serial0-output-byte", listener);
  }

  sendSerial(bytes: Uint8Array): void {
    this.v86.serial_send_bytes(0, bytes);
  }

  get #inner(): V86Inner {
    return (this.v86 as unknown as { v86: V86Inner }).v86;
  }
}
