// Whole-disk operations of the initial sync: a digest that both sides compute the
// same way without holding a disk in memory, and the chunking of a disk copy.
import { type BlockBackend } from "../../emulator/block/backend.ts";
import { SECTOR_SIZE } from "../../emulator/units.ts";

/** Disk copies and digests walk the disk in pieces of this size. */
export const DISK_CHUNK_BYTES = 4 << 20;

/** sha256 over (size, sha256 of each chunk): streaming without an incremental hash API. */
export function diskDigest(backend: BlockBackend): Promise<string> {
  return copyDisk(backend, async () => undefined);
}

/**
 * Reads the disk chunk by chunk, hands each chunk to `send`, and returns the digest
 * (as `diskDigest` computes it) of exactly the bytes sent, even if the disk changes meanwhile.
 */
export async function copyDisk(backend: BlockBackend, send: (offset: number, data: Uint8Array) => Promise<void>): Promise<string> {
  const chunkDigests: Uint8Array[] = [];
  for await (const { offset, data } of diskChunks(backend)) {
    chunkDigests.push(await sha256(data));
    await send(offset, data);
  }
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(backend.sizeBytes), true);
  return hex(await sha256(concat([size, ...chunkDigests])));
}

export async function* diskChunks(backend: BlockBackend): AsyncGenerator<{ offset: number; data: Uint8Array }> {
  for (let offset = 0; offset < backend.sizeBytes; offset += DISK_CHUNK_BYTES) {
    const length = Math.min(DISK_CHUNK_BYTES, backend.sizeBytes - offset);
    yield { offset, data: await backend.read(offset / SECTOR_SIZE, length) };
  }
}

/** sha256 (hex) of each `chunkBytes` piece of `bytes`, in order: how a consistency check compares ranges. */
export async function chunkDigests(bytes: Uint8Array, chunkBytes: number): Promise<string[]> {
  const digests: string[] = [];
  for (let at = 0; at < bytes.length; at += chunkBytes) digests.push(hex(await sha256(bytes.subarray(at, at + chunkBytes))));
  return digests;
}

async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
