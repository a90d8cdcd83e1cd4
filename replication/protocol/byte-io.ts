// Little-endian readers and writers over one buffer, for the frame codec: every read is
// bounds-checked and says which field of what ran short.
import { ProtocolError } from "./errors.ts";

export class ByteWriter {
  readonly #out: Uint8Array;
  readonly #view: DataView;
  length = 0;

  constructor(size: number) {
    this.#out = new Uint8Array(size);
    this.#view = new DataView(this.#out.buffer);
  }

  u8(value: number): void {
    this.#view.setUint8(this.length, value);
    this.length += 1;
  }

  u16(value: number): void {
    this.#view.setUint16(this.length, value, true);
    this.length += 2;
  }

  u32(value: number): void {
    this.#view.setUint32(this.length, value, true);
    this.length += 4;
  }

  u64(value: number): void {
    this.#view.setBigUint64(this.length, BigInt(value), true);
    this.length += 8;
  }

  bytes(data: Uint8Array): void {
    this.#out.set(data, this.length);
    this.length += data.length;
  }

  finish(): Uint8Array {
    return this.#out.subarray(0, this.length);
  }
}

export class ByteReader {
  readonly #view: DataView;
  #at = 0;

  constructor(
    private readonly data: Uint8Array,
    private readonly what: string,
  ) {
    this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  #need(bytes: number): number {
    if (this.#at + bytes > this.data.length) throw new ProtocolError("truncated", `${this.what} ends inside an entry`);
    const at = this.#at;
    this.#at += bytes;
    return at;
  }

  u8(): number {
    return this.#view.getUint8(this.#need(1));
  }

  u16(): number {
    return this.#view.getUint16(this.#need(2), true);
  }

  u32(): number {
    return this.#view.getUint32(this.#need(4), true);
  }

  u64(): number {
    const value = this.#view.getBigUint64(this.#need(8), true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError("malformed", `${this.what}: a 64-bit value beyond 2^53-1`);
    return Number(value);
  }

  bytes(length: number): Uint8Array {
    const at = this.#need(length);
    return this.data.subarray(at, at + length);
  }

  end(): void {
    if (this.#at !== this.data.length) throw new ProtocolError("inconsistent", `${this.what}: ${this.data.length - this.#at} bytes after its last entry`);
  }
}
