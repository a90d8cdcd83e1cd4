// A disk held in memory (works in browsers): for tests, scratch disks, and
// images fetched over the network.
import { BlockBackendError, checkDiskSize, checkRange, type BlockBackend } from "./backend.ts";
import { SECTOR_SIZE } from "../units.ts";

export class MemoryBackend implements BlockBackend {
  readonly readOnly: boolean;
  #bytes: Uint8Array;
  #closed = false;

  /** A zeroed disk of `size` bytes, or one over the given bytes (used in place, not copied). */
  constructor(size: number | Uint8Array, options: { readOnly?: boolean } = {}) {
    if (typeof size === "number") checkDiskSize(size);
    else checkDiskSize(size.length);
    this.#bytes = typeof size === "number" ? new Uint8Array(size) : size;
    this.readOnly = options.readOnly ?? false;
  }

  get sizeBytes(): number {
    return this.#bytes.length;
  }

  get sectorCount(): number {
    return this.#bytes.length / SECTOR_SIZE;
  }

  /** The disk's contents (live). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  async read(offsetSectors: number, length: number): Promise<Uint8Array> {
    this.#checkOpen();
    checkRange(this.sectorCount, offsetSectors, length);
    const start = offsetSectors * SECTOR_SIZE;
    return this.#bytes.slice(start, start + length);
  }

  async write(offsetSectors: number, data: Uint8Array): Promise<void> {
    this.#checkOpen();
    if (this.readOnly) throw new BlockBackendError("read-only", "write to a read-only disk");
    checkRange(this.sectorCount, offsetSectors, data.length);
    this.#bytes.set(data, offsetSectors * SECTOR_SIZE);
  }

  async flush(): Promise<void> {
    this.#checkOpen();
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #checkOpen(): void {
    if (this.#closed) throw new BlockBackendError("closed", "disk is closed");
  }
}
