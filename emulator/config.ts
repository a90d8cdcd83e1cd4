// Machine configuration: what the caller may set, its defaults, and the
// checks that turn a bad value or a wrong image into a clear error before v86 sees it.
import { ConfigError, ImageError } from "./errors.ts";
import { DEFAULT_MAC, parseMac } from "./net/frame.ts";
import type { Emulator } from "./v86-internals.ts";
import { SECTOR_SIZE } from "./units.ts";

/** Bytes of an image, from wherever the host keeps them (a file in Node, a fetch in a browser). */
export interface ImageSource {
  /** Where the bytes come from, for error messages (a path or URL). */
  readonly location: string;
  load(): Promise<Uint8Array<ArrayBuffer>>;
}

export function bytesImage(location: string, bytes: Uint8Array<ArrayBuffer>): ImageSource {
  return { location, load: async () => bytes };
}

/** Values that survive JSON: device states are carried as JSON in snapshots and syncs. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * A device of ours attached to v86 (e.g. a virtio-blk disk). It is created after
 * v86 lays out the machine and before the CPU first runs, and carries its own state.
 */
export interface MachineDevice {
  /** Unique within a machine; names the device's state in snapshots. */
  readonly stateKey: string;
  saveState(): JsonValue;
  /** Called after v86's own state was restored (PCI config space included). */
  restoreState(state: JsonValue): void;
  /** Releases host resources (files, timers) when the machine is destroyed. */
  close?(): Promise<void>;
  /** What the device is doing now, for diagnosing a guest that waits on it (Machine.inspect). */
  inspect?(): JsonValue;
}

/** Builds a device on a created, not yet running, emulator. */
export type DeviceFactory = (emulator: Emulator) => MachineDevice;

export interface MachineConfig {
  /** v86's WebAssembly module (`v86/build/v86.wasm`). */
  wasm: ImageSource;
  bios: ImageSource;
  kernel: ImageSource;
  initrd: ImageSource;
  cmdline?: string;
  memoryMiB?: number;
  vgaMemoryKiB?: number;
  /** A line the guest prints on the serial console when it is ready for commands. */
  readyMarker?: string;
  bootTimeoutMs?: number;
  /** Our devices, attached in this order on boot and on restore. */
  devices?: readonly DeviceFactory[];
  /** Initial contents of v86's own IDE disk (hda, copied), e.g. to compare it with virtio-blk; null for none. */
  ideDisk?: Uint8Array<ArrayBuffer> | null;
  /** The guest's NIC (virtio-net, MTU 1500), which every machine has. */
  network?: NetworkConfig;
}

export interface NetworkConfig {
  /**
   * The NIC's MAC when the machine boots or is created blank, e.g. "52:54:00:12:34:56";
   * both nodes of a pair need the same. A restored machine keeps the MAC in its state.
   */
  mac?: string;
}

export type ResolvedMachineConfig = Required<Omit<MachineConfig, "network">> & { network: Required<NetworkConfig> };

/** Measured on the default guest: each option here trims boot time (see shared/notes/v86-facts.md). */
export const DEFAULT_CMDLINE =
  "console=ttyS0 tsc=reliable mitigations=off quiet cryptomgr.notests noisapnp " +
  "initcall_blacklist=init_kprobe_trace,crypto_kdf108_init,load_system_certificate_list";

export const DEFAULTS = {
  cmdline: DEFAULT_CMDLINE,
  memoryMiB: 128,
  // VGA memory rides in every device-state capture; the guest uses the serial console only.
  vgaMemoryKiB: 256,
  readyMarker: "TWINVM-READY",
  bootTimeoutMs: 90_000,
  devices: [] as readonly DeviceFactory[],
  ideDisk: null,
  network: { mac: DEFAULT_MAC },
};

export const MEMORY_MIB_RANGE = { min: 32, max: 2048 } as const;

export function resolveConfig(config: MachineConfig): ResolvedMachineConfig {
  for (const role of ["wasm", "bios", "kernel", "initrd"] as const) {
    const source: unknown = config[role];
    if (typeof source !== "object" || source === null || typeof (source as ImageSource).load !== "function") {
      throw new ConfigError(`config.${role}: expected an image source ({location, load()}), got ${describe(source)}`);
    }
  }
  const network: unknown = config.network ?? {};
  if (typeof network !== "object" || network === null || Array.isArray(network)) {
    throw new ConfigError(`config.network: expected an object like {mac: "52:54:00:12:34:56"}, got ${describe(network)}`);
  }
  const resolved: ResolvedMachineConfig = {
    ...DEFAULTS,
    ...withoutUndefined(config),
    network: { ...DEFAULTS.network, ...withoutUndefined(network as NetworkConfig) },
  } as ResolvedMachineConfig;
  const { mac } = resolved.network;
  const macProblem = typeof mac === "string" ? parseMac(mac) : "expected a string";
  if (!(macProblem instanceof Uint8Array)) throw new ConfigError(`config.network.mac: ${macProblem}, got ${describe(mac)}`);
  const { memoryMiB, vgaMemoryKiB, bootTimeoutMs, cmdline, readyMarker } = resolved;
  if (!Number.isInteger(memoryMiB) || memoryMiB < MEMORY_MIB_RANGE.min || memoryMiB > MEMORY_MIB_RANGE.max) {
    throw new ConfigError(
      `config.memoryMiB: expected a whole number of MiB from ${MEMORY_MIB_RANGE.min} to ${MEMORY_MIB_RANGE.max}, got ${describe(memoryMiB)}`,
    );
  }
  if (!Number.isInteger(vgaMemoryKiB) || vgaMemoryKiB < 256 || vgaMemoryKiB > 16384 || vgaMemoryKiB % 64 !== 0) {
    throw new ConfigError(`config.vgaMemoryKiB: expected a multiple of 64 from 256 to 16384, got ${describe(vgaMemoryKiB)}`);
  }
  if (!Number.isFinite(bootTimeoutMs) || bootTimeoutMs <= 0) {
    throw new ConfigError(`config.bootTimeoutMs: expected a positive number of milliseconds, got ${describe(bootTimeoutMs)}`);
  }
  if (typeof cmdline !== "string" || cmdline.length > 2047) {
    throw new ConfigError(`config.cmdline: expected a string of at most 2047 characters, got ${describe(cmdline)}`);
  }
  if (!Array.isArray(resolved.devices) || !resolved.devices.every((f) => typeof f === "function")) {
    throw new ConfigError("config.devices: expected an array of device factories");
  }
  if (
    resolved.ideDisk !== null &&
    (!(resolved.ideDisk instanceof Uint8Array) || resolved.ideDisk.length % SECTOR_SIZE !== 0 || resolved.ideDisk.length === 0)
  ) {
    throw new ConfigError("config.ideDisk: expected a Uint8Array of whole 512-byte sectors, or null");
  }
  if (typeof readyMarker !== "string" || readyMarker.length === 0 || readyMarker.includes("\n")) {
    throw new ConfigError(`config.readyMarker: expected a non-empty single-line string, got ${describe(readyMarker)}`);
  }
  return resolved;
}

export interface LoadedImages {
  wasm: Uint8Array<ArrayBuffer>;
  bios: Uint8Array<ArrayBuffer>;
  kernel: Uint8Array<ArrayBuffer>;
  initrd: Uint8Array<ArrayBuffer>;
}

/** Loads every image and checks that each is what its role needs. */
export async function loadImages(config: ResolvedMachineConfig): Promise<LoadedImages> {
  const [wasm, bios, kernel, initrd] = await Promise.all(
    (["wasm", "bios", "kernel", "initrd"] as const).map(async (role) => {
      const source = config[role];
      let bytes: Uint8Array<ArrayBuffer>;
      try {
        bytes = await source.load();
      } catch (error) {
        throw new ImageError(role, source.location, (error as Error).message, { cause: error });
      }
      const problem = IMAGE_CHECKS[role](bytes, config);
      if (problem !== undefined) throw new ImageError(role, source.location, problem);
      return bytes;
    }),
  );
  return { wasm: wasm!, bios: bios!, kernel: kernel!, initrd: initrd! };
}

type ImageCheck = (bytes: Uint8Array, config: ResolvedMachineConfig) => string | undefined;

const IMAGE_CHECKS: Record<keyof LoadedImages, ImageCheck> = {
  wasm: (b) => (startsWith(b, 0, [0x00, 0x61, 0x73, 0x6d]) ? undefined : "not a WebAssembly module (no \\0asm header)"),
  // The BIOS is mapped just below 1 MiB and must not reach into the VGA window at 0xC0000.
  bios: (b) =>
    b.length > 0 && b.length % 0x10000 === 0 && b.length <= 0x40000
      ? undefined
      : `not a BIOS ROM: size ${b.length} bytes, expected a multiple of 64 KiB up to 256 KiB`,
  kernel: (b) => (startsWith(b, 0x202, ascii("HdrS")) ? undefined : "not a Linux bzImage (no 'HdrS' boot header at 0x202)"),
  initrd: (b, config) => {
    if (!INITRD_MAGICS.some((magic) => startsWith(b, 0, magic))) {
      return "not an initramfs (expected a cpio archive, or one compressed with gzip, xz, zstd, lz4 or bzip2)";
    }
    // The kernel unpacks the archive into RAM next to the compressed copy.
    if (b.length > (config.memoryMiB << 20) / 4) {
      return `${b.length} bytes is too large for a ${config.memoryMiB} MiB guest`;
    }
    return undefined;
  },
};

const INITRD_MAGICS: readonly number[][] = [
  [0x1f, 0x8b], // gzip
  ascii("070701"), // cpio newc
  [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], // xz
  [0x28, 0xb5, 0x2f, 0xfd], // zstd
  [0x02, 0x21, 0x4c, 0x18], // lz4 legacy
  ascii("BZh"), // bzip2
];

function ascii(text: string): number[] {
  return Array.from(text, (c) => c.charCodeAt(0));
}

function startsWith(bytes: Uint8Array, offset: number, magic: readonly number[]): boolean {
  return bytes.length >= offset + magic.length && magic.every((value, i) => bytes[offset + i] === value);
}

/** Options spread over defaults must not replace a default with an explicit undefined. */
export function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? value.slice(0, 60) + "…" : value);
  if (value === null || value === undefined) return String(value);
  if (typeof value === "object") return value.constructor?.name ?? "object";
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- only primitives and functions get here
  return `${typeof value} ${String(value)}`;
}
