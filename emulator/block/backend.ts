// The block layer's driver interface: what a disk device talks to instead of a
// file. Offsets count 512-byte sectors; lengths are bytes, whole sectors.
import { TwinvmError } from "../errors.ts";
import { SECTOR_SIZE } from "../units.ts";

export interface BlockBackend {
  /** Size in bytes, a whole number of sectors. */
  readonly sizeBytes: number;
  readonly sectorCount: number;
  /** Writes fail with BlockBackendError("read-only"); a disk on it offers VIRTIO_BLK_F_RO. */
  readonly readOnly: boolean;
  /** Reads `length` bytes (whole sectors) from sector `offsetSectors`. */
  read(offsetSectors: number, length: number): Promise<Uint8Array>;
  write(offsetSectors: number, data: Uint8Array): Promise<void>;
  /** Resolves once every write that resolved before is durable. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export type BlockBackendErrorCode = "out-of-range" | "misaligned" | "read-only" | "closed" | "io";

export class BlockBackendError extends TwinvmError {
  constructor(
    readonly code: BlockBackendErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Throws unless [offsetSectors, +length) is whole sectors inside a disk of `sectorCount`. */
export function checkRange(sectorCount: number, offsetSectors: number, length: number): void {
  if (!Number.isSafeInteger(length) || length < 0 || length % SECTOR_SIZE !== 0) {
    throw new BlockBackendError("misaligned", `length ${length} is not a whole number of ${SECTOR_SIZE}-byte sectors`);
  }
  if (!Number.isSafeInteger(offsetSectors) || offsetSectors < 0 || offsetSectors + length / SECTOR_SIZE > sectorCount) {
    throw new BlockBackendError(
      "out-of-range",
      `sectors ${offsetSectors}..${offsetSectors + length / SECTOR_SIZE} are past the end of a ${sectorCount}-sector disk`,
    );
  }
}

/** Checks a size given for a new disk. */
export function checkDiskSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % SECTOR_SIZE !== 0) {
    throw new BlockBackendError("misaligned", `disk size ${sizeBytes}: expected a positive multiple of ${SECTOR_SIZE} bytes`);
  }
}
