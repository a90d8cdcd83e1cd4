// A disk backed by a raw image file, written in place with positioned writes;
// flush is fsync. Node only.
import { open, type FileHandle } from "node:fs/promises";
import { BlockBackendError, checkDiskSize, checkRange, type BlockBackend } from "../block/backend.ts";
import { SECTOR_SIZE } from "../units.ts";

export interface FileBackendOptions {
  readOnly?: boolean;
  /** Create the file as a sparse image of this many bytes; fails if the file exists. */
  createSizeBytes?: number;
}

const OPEN_ERRORS: Record<string, string> = {
  ENOENT: "no such file",
  EEXIST: "file exists (refusing to overwrite it with a new image)",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EROFS: "read-only file system (open it with readOnly: true)",
  EISDIR: "is a directory, expected a disk image file",
  ENOTDIR: "a parent of this path is not a directory",
};

export class FileBackend implements BlockBackend {
  #handle: FileHandle | undefined;

  private constructor(
    readonly path: string,
    handle: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {
    this.#handle = handle;
  }

  static async open(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
    const readOnly = options.readOnly ?? false;
    const create = options.createSizeBytes;
    if (create !== undefined) checkDiskSize(create);
    let handle: FileHandle;
    try {
      handle = await open(path, create !== undefined ? "wx+" : readOnly ? "r" : "r+");
    } catch (error) {
      throw fileError(path, error);
    }
    try {
      if (create !== undefined) await handle.truncate(create); // sparse: no blocks written
      const { size } = await handle.stat();
      if (size === 0 || size % SECTOR_SIZE !== 0) {
        throw new BlockBackendError("misaligned", `disk image ${path}: size ${size} bytes is not a positive multiple of ${SECTOR_SIZE}`);
      }
      return new FileBackend(path, handle, size, readOnly);
    } catch (error) {
      await handle.close();
      throw error instanceof BlockBackendError ? error : fileError(path, error);
    }
  }

  get sectorCount(): number {
    return this.sizeBytes / SECTOR_SIZE;
  }

  async read(offsetSectors: number, length: number): Promise<Uint8Array> {
    const handle = this.#open();
    checkRange(this.sectorCount, offsetSectors, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#io(() => handle.read(out, done, length - done, offsetSectors * SECTOR_SIZE + done));
      if (bytesRead === 0) break; // the file shrank under us: the rest reads as zeros
      done += bytesRead;
    }
    return out;
  }

  async write(offsetSectors: number, data: Uint8Array): Promise<void> {
    const handle = this.#open();
    if (this.readOnly) throw new BlockBackendError("read-only", `disk image ${this.path} is open read-only`);
    checkRange(this.sectorCount, offsetSectors, data.length);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#io(() => handle.write(data, done, data.length - done, offsetSectors * SECTOR_SIZE + done));
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    const handle = this.#open();
    if (!this.readOnly) await this.#io(() => handle.sync());
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close();
  }

  #open(): FileHandle {
    if (this.#handle === undefined) throw new BlockBackendError("closed", `disk image ${this.path} is closed`);
    return this.#handle;
  }

  async #io<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw new BlockBackendError("io", `disk image ${this.path}: ${(error as Error).message}`, { cause: error });
    }
  }
}

function fileError(path: string, error: unknown): BlockBackendError {
  const code = (error as NodeJS.ErrnoException).code ?? "";
  return new BlockBackendError("io", `disk image ${path}: ${OPEN_ERRORS[code] ?? (error as Error).message}`, { cause: error });
}
