// A guest PC: v86 plus its configuration, lifecycle, serial console and snapshots.
import { loadImages, resolveConfig, type JsonValue, type MachineConfig, type MachineDevice, type ResolvedMachineConfig } from "./config.ts";
import { BootTimeoutError, ConfigError, ConsoleTimeoutError, MachineStateError, SnapshotError } from "./errors.ts";
import { NETWORK_MTU, parseMac } from "./net/frame.ts";
import { NetworkPort } from "./net/port.ts";
import { SerialConsole, escapeRegExp, type ConsoleMatch, type ExecResult, type WaitOptions } from "./serial-console.ts";
import { decodeSnapshot, encodeSnapshot } from "./snapshot-format.ts";
import { Emulator, GuestRam, V86_VERSION, restoreStateKeepingMemory, type CpuInspection, type EmulatorOptions, type V86StateParts } from "./v86-internals.ts";

/** "blank": emulator created by `createBlank`, RAM zero, waiting for `restoreWithoutMemory`. */
export type MachineState = "created" | "blank" | "booting" | "running" | "paused" | "destroyed";

/** What the machine is doing now (see Machine.inspect); JSON-able. */
export interface MachineInspection {
  state: MachineState;
  /** Guest instructions since the emulator was created: two inspections apart tell whether the guest runs. */
  instructions: number;
  cpu: CpuInspection;
  /** Each of our devices' `inspect()`, by state key. */
  devices: Record<string, JsonValue>;
  /** The last lines the guest printed on its console (all of them, whatever output commit released). */
  consoleTail: string;
}

export interface BootResult {
  /** Wall time from starting the CPU to the guest's ready marker. */
  bootMs: number;
}

export class Machine {
  readonly config: ResolvedMachineConfig;
  #state: MachineState = "created";
  #emulator: Emulator | undefined;
  #console: SerialConsole | undefined;
  #ram: GuestRam | undefined;
  #devices: MachineDevice[] = [];
  readonly #network: NetworkPort;
  /** The stop in progress: a second pause() waits for it, and run() lets it finish first. */
  #stopping: Promise<void> | undefined;

  /** Validates the config at once (ConfigError); images are read by `boot()`. */
  constructor(config: MachineConfig) {
    this.config = resolveConfig(config);
    this.#network = new NetworkPort({ mac: parseMac(this.config.network.mac) as Uint8Array });
  }

  get state(): MachineState {
    return this.#state;
  }

  get console(): SerialConsole {
    return this.#require().console;
  }

  /** Guest RAM; valid between boot (or restore) and destroy. */
  get ram(): GuestRam {
    return this.#require().ram;
  }

  /** The wrapped emulator, for modules that attach devices or read CPU state. */
  get emulator(): Emulator {
    return this.#require().emulator;
  }

  /**
   * The guest's NIC (virtio-net): frames in and out, its MAC and counters. There from the
   * machine's construction on, so that a listener can be in place before the guest runs.
   */
  get network(): NetworkPort {
    return this.#network;
  }

  /** Our devices, in the order of `config.devices`. */
  get devices(): readonly MachineDevice[] {
    return this.#devices;
  }

  /** Loads the images, starts the CPU and resolves when the guest prints its ready marker. */
  async boot(): Promise<BootResult> {
    if (this.#state !== "created") throw new MachineStateError(`boot: machine is ${this.#state}, expected created`);
    this.#state = "booting";
    try {
      const images = await loadImages(this.config);
      await this.#createEmulator(images.wasm, {
        bios: { buffer: toArrayBuffer(images.bios) },
        bzimage: { buffer: toArrayBuffer(images.kernel) },
        initrd: { buffer: toArrayBuffer(images.initrd) },
        cmdline: this.config.cmdline,
        ...(this.config.ideDisk === null ? {} : { hda: { buffer: toArrayBuffer(this.config.ideDisk) } }),
      });
      const started = performance.now();
      this.#emulator!.run();
      await this.console.waitFor(new RegExp(`(^|\\n)${escapeRegExp(this.config.readyMarker)}\\r?\\n`), {
        from: 0,
        timeoutMs: this.config.bootTimeoutMs,
      });
      this.#state = "running";
      return { bootMs: performance.now() - started };
    } catch (error) {
      await this.destroy();
      if (error instanceof ConsoleTimeoutError) {
        throw new BootTimeoutError(`the ready marker ${JSON.stringify(this.config.readyMarker)}`, error.timeoutMs, error.consoleTail);
      }
      throw error;
    }
  }

  /**
   * Builds a running machine from `snapshot()` bytes. Memory and VGA sizes come from
   * the snapshot; a config that sets different ones is refused. Only the wasm image is read.
   */
  static async fromSnapshot(bytes: Uint8Array, config: MachineConfig): Promise<Machine> {
    const { meta, v86State } = decodeSnapshot(bytes);
    if (meta.v86Version !== V86_VERSION) {
      throw new SnapshotError(`snapshot: taken with v86 ${meta.v86Version}, this build runs v86 ${V86_VERSION}`);
    }
    for (const key of ["memoryMiB", "vgaMemoryKiB"] as const) {
      if (config[key] !== undefined && config[key] !== meta[key]) {
        throw new SnapshotError(`snapshot: has ${key} ${meta[key]}, config asks for ${config[key]}`);
      }
    }
    const machine = new Machine({ ...config, memoryMiB: meta.memoryMiB, vgaMemoryKiB: meta.vgaMemoryKiB });
    machine.#state = "booting";
    try {
      const wasm = await config.wasm.load();
      await machine.#createEmulator(wasm, {});
      machine.#checkDeviceStates(meta.devices);
      try {
        machine.#emulator!.restoreState(v86State);
      } catch (error) {
        throw new SnapshotError(`snapshot: v86 refused the machine state: ${(error as Error).message}`, { cause: error });
      }
      machine.#restoreDeviceStates(meta.devices);
      machine.#emulator!.run();
      machine.#state = "running";
      return machine;
    } catch (error) {
      await machine.destroy();
      throw error;
    }
  }

  /**
   * A machine whose emulator exists (zeroed RAM, devices attached) but has never run:
   * the target of a page-by-page copy. Fill `ram`, then call `restoreWithoutMemory`.
   * Only the wasm image is read.
   */
  static async createBlank(config: MachineConfig): Promise<Machine> {
    const machine = new Machine(config);
    machine.#state = "booting";
    try {
      await machine.#createEmulator(await machine.config.wasm.load(), {});
      machine.#state = "blank";
      return machine;
    } catch (error) {
      await machine.destroy();
      throw error;
    }
  }

  /**
   * Blank machines only: loads CPU and device state captured without RAM (see
   * emulator/state/), keeping RAM as the caller filled it. Leaves the machine paused:
   * call `run()` to continue the guest.
   */
  restoreWithoutMemory(v86State: V86StateParts, devices: Record<string, JsonValue>): void {
    const { emulator } = this.#require();
    if (this.#state !== "blank") throw new MachineStateError(`restoreWithoutMemory: machine is ${this.#state}, expected blank`);
    this.#checkDeviceStates(devices);
    try {
      restoreStateKeepingMemory(emulator, v86State);
    } catch (error) {
      throw new SnapshotError(`state: v86 refused the machine state: ${(error as Error).message}`, { cause: error });
    }
    this.#restoreDeviceStates(devices);
    this.#state = "paused";
  }

  /** Full machine state, RAM included. Pauses at an instruction boundary for the capture. */
  async snapshot(): Promise<Uint8Array> {
    const { emulator } = this.#require();
    const wasRunning = this.#state === "running";
    await this.pause();
    try {
      return encodeSnapshot(
        {
          v86Version: V86_VERSION,
          memoryMiB: this.config.memoryMiB,
          vgaMemoryKiB: this.config.vgaMemoryKiB,
          createdAt: new Date().toISOString(),
          devices: this.saveDeviceStates(),
        },
        emulator.saveState(),
      );
    } finally {
      if (wasRunning) this.run();
    }
  }

  /**
   * The CPU (halted? interrupts on? IRQs pending?), each device's own view (requests in flight
   * and their age, queue indices, interrupt pin) and the console's last lines, taken between two
   * instructions without stopping the guest: tells a guest that stopped from one that waits on a
   * device from one whose output did not get out.
   */
  inspect(consoleLines = 30): Promise<MachineInspection> {
    const { emulator, console } = this.#require();
    return emulator.atNextBoundary(() => ({
      state: this.#state,
      instructions: emulator.instructionCounter,
      cpu: emulator.cpuInspection(),
      devices: Object.fromEntries(this.#devices.flatMap((device) => (device.inspect === undefined ? [] : [[device.stateKey, device.inspect()]]))),
      consoleTail: console.tail(consoleLines),
    }));
  }

  /** Our devices' states by `stateKey`; call while paused for a consistent picture. */
  saveDeviceStates(): Record<string, JsonValue> {
    return Object.fromEntries(this.#allDevices().map((device) => [device.stateKey, device.saveState()]));
  }

  /** Before v86 sees the state: a state from before the NIC existed would fail there with a less useful message. */
  #checkDeviceStates(states: Record<string, JsonValue>): void {
    for (const device of this.#allDevices()) {
      if (states[device.stateKey] === undefined) {
        throw new SnapshotError(`snapshot: has no state for device ${device.stateKey} (taken by a build without it?)`);
      }
    }
  }

  /** After `#checkDeviceStates` and v86's restore. */
  #restoreDeviceStates(states: Record<string, JsonValue>): void {
    for (const device of this.#allDevices()) device.restoreState(states[device.stateKey]!);
  }

  /** The NIC, then `config.devices`. */
  #allDevices(): MachineDevice[] {
    return [this.#network, ...this.#devices];
  }

  run(): void {
    const { emulator } = this.#require();
    if (this.#state !== "paused") return;
    this.#state = "running";
    // v86 forgets a stop that run() overtakes, and its stop() would never resolve: let it land first.
    const stopping = this.#stopping;
    if (stopping === undefined) emulator.run();
    else void stopping.then(() => this.#state === "running" && this.#emulator === emulator && emulator.run());
  }

  /** Whether the CPU stands between two instructions now (see emulator/paused.ts). */
  get atInstructionBoundary(): boolean {
    return this.#require().emulator.atInstructionBoundary;
  }

  /**
   * Runs `work` at the guest's next instruction boundary without stopping it: at most ~100k
   * guest instructions after a device handler asked, or at once from outside the guest.
   */
  atNextBoundary<T>(work: () => T): Promise<T> {
    return this.#require().emulator.atNextBoundary(work);
  }

  /** Calls `listener` whenever a slice of guest execution ends with the CPU halted, waiting for an interrupt (see Emulator.onHalt). */
  onHalt(listener: () => void): () => void {
    return this.#require().emulator.onHalt(listener);
  }

  /**
   * While on, the guest runs in short slices (one chunk of ~25k instructions each), so that
   * the host's event loop answers sooner: for waits on a peer (see Emulator.eagerYield).
   */
  set eagerYield(on: boolean) {
    // A destroyed machine runs nothing: there is no slice to shorten.
    if (this.#emulator !== undefined) this.#emulator.eagerYield = on;
  }

  /** Short slices for the next `ms` whatever `eagerYield` says: a restored guest's code runs cold (see Emulator.eagerYieldFor). */
  eagerYieldFor(ms: number): void {
    this.#require().emulator.eagerYieldFor(ms);
  }

  /** Resolves once the CPU has stopped between two instructions (for every caller). */
  async pause(): Promise<void> {
    const { emulator } = this.#require();
    if (this.#state === "paused") return this.#stopping;
    if (this.#state !== "running") return;
    this.#state = "paused";
    const stopping = (this.#stopping ?? Promise.resolve()).then(() => emulator.stop());
    this.#stopping = stopping;
    try {
      await stopping;
    } finally {
      if (this.#stopping === stopping) this.#stopping = undefined;
    }
  }

  send(input: string | Uint8Array): void {
    this.console.send(input);
  }

  exec(command: string, options?: { timeoutMs?: number }): Promise<ExecResult> {
    return this.console.exec(command, options);
  }

  waitFor(pattern: string | RegExp, options?: WaitOptions): Promise<ConsoleMatch> {
    return this.console.waitFor(pattern, options);
  }

  /** Stops the CPU and frees the emulator. Safe to call more than once. */
  async destroy(): Promise<void> {
    if (this.#state === "destroyed") return;
    this.#state = "destroyed";
    this.#console?.close();
    const emulator = this.#emulator;
    this.#emulator = undefined;
    this.#console = undefined;
    this.#ram = undefined;
    const devices = this.#allDevices();
    this.#devices = [];
    await emulator?.destroy();
    await Promise.all(devices.map(async (device) => device.close?.()));
  }

  async #createEmulator(wasmBytes: Uint8Array<ArrayBuffer>, boot: Omit<EmulatorOptions, "wasmBytes">): Promise<void> {
    const emulator = await Emulator.create({
      ...boot,
      wasmBytes,
      memory_size: this.config.memoryMiB << 20,
      vga_memory_size: this.config.vgaMemoryKiB << 10,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      acpi: false,
      // virtio-net instead of v86's default ne2k: one NIC, MTU 1500, whose MAC a restore takes from the state.
      net_device: { type: "virtio", mtu: NETWORK_MTU },
      preserve_mac_from_state_image: true,
    });
    this.#emulator = emulator;
    this.#ram = new GuestRam(emulator.cpu);
    // Before the CPU first runs: the guest's driver reads the MAC once, when it binds.
    this.#network.attach(emulator);
    this.#devices = this.config.devices.map((create) => create(emulator));
    const keys = new Set(this.#allDevices().map((device) => device.stateKey));
    if (keys.size !== this.#allDevices().length) throw new ConfigError(`config.devices: two devices share a stateKey (${this.#network.stateKey} is the NIC's)`);
    this.#console = new SerialConsole({
      onByte: (listener) => emulator.onSerialByte(listener),
      send: (bytes) => emulator.sendSerial(bytes),
    });
  }

  #require(): { emulator: Emulator; console: SerialConsole; ram: GuestRam } {
    if (this.#emulator === undefined || this.#console === undefined || this.#ram === undefined) {
      throw new MachineStateError(this.#state === "destroyed" ? "machine is destroyed" : "machine has not been booted or restored yet");
    }
    return { emulator: this.#emulator, console: this.#console, ram: this.#ram };
  }
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
