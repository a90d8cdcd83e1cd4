// A block backend that starts failing on command, as a dying disk does: wrap any backend,
// arm it to fail reads, writes or both with EIO after a number of further requests (0: at
// once). For fault-injection tests of what a failing primary disk does to a pair.
import { BlockBackendError, type BlockBackend } from "./backend.ts";

export type FailingOperation = "read" | "write" | "both";

export class FaultyBackend implements BlockBackend {
  #armed: { operation: FailingOperation; after: number } | undefined;
  /** Requests this backend failed. */
  failures = 0;

  constructor(private readonly inner: BlockBackend) {}

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  get sectorCount(): number {
    return this.inner.sectorCount;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  /** From the `after`-th next matching request on, every matching request fails with EIO. */
  failAfter(operation: FailingOperation, after = 0): void {
    this.#armed = { operation, after };
  }

  heal(): void {
    this.#armed = undefined;
  }

  read(offsetSectors: number, length: number): Promise<Uint8Array> {
    this.#maybeFail("read", offsetSectors);
    return this.inner.read(offsetSectors, length);
  }

  write(offsetSectors: number, data: Uint8Array): Promise<void> {
    this.#maybeFail("write", offsetSectors);
    return this.inner.write(offsetSectors, data);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  #maybeFail(operation: "read" | "write", sector: number): void {
    const armed = this.#armed;
    if (armed === undefined || (armed.operation !== "both" && armed.operation !== operation)) return;
    if (armed.after > 0) {
      armed.after--;
      return;
    }
    this.failures++;
    throw new BlockBackendError("io", `EIO: ${operation} at sector ${sector} failed (injected disk failure)`);
  }
}
