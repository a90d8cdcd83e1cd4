// What a frame may hold, checked the same way before encoding (our own bugs fail here, not at
// the peer) and after decoding (a hostile or broken peer): lists in order, extents inside the
// limits, run deltas that fit a page. What depends on the session (memory and disk sizes, the
// state a delta applies to) is SessionOrder's and the replica's to check.
import { ProtocolError } from "./errors.ts";
import type { IoLogEntry, PageUpdate, PartChange } from "./frames.ts";
import {
  MAX_DEVICE_STATE_BYTES,
  MAX_DISK_BYTES,
  MAX_DISK_CHUNK_BYTES,
  MAX_DISKS,
  MAX_IO_LOG_ENTRIES,
  MAX_MEMORY_BYTES,
  MAX_PAGE_UPDATES_PER_FRAME,
  MAX_PAGES_PER_FRAME,
  MAX_SECTORS_PER_BLOCK_FRAME,
  MAX_SECTORS_PER_REQUEST,
  MAX_SEGMENTS_PER_ENTRY,
  MAX_STATE_PARTS,
} from "./limits.ts";
import { checkRunDelta } from "./run-delta.ts";
import { PAGE_SIZE, SECTOR_SIZE } from "../../emulator/units.ts";

export function checkPageIndices(indices: Uint32Array, zeroIndices: Uint32Array): void {
  if (indices.length + zeroIndices.length > MAX_PAGES_PER_FRAME) {
    throw new ProtocolError("oversized", `memory frame of ${indices.length + zeroIndices.length} pages, limit ${MAX_PAGES_PER_FRAME}`);
  }
  for (const list of [indices, zeroIndices]) {
    for (let i = 1; i < list.length; i++) {
      if (list[i]! <= list[i - 1]!) throw new ProtocolError("malformed", "page indices are not strictly increasing");
    }
  }
  // Both lists are sorted, so one merge pass finds a page that is in both.
  let a = 0;
  let b = 0;
  while (a < indices.length && b < zeroIndices.length) {
    if (indices[a] === zeroIndices[b]) throw new ProtocolError("malformed", `page ${indices[a]} is both a data page and a zero page`);
    if (indices[a]! < zeroIndices[b]!) a++;
    else b++;
  }
}

export function checkPageUpdates(updates: readonly PageUpdate[]): void {
  if (updates.length > MAX_PAGE_UPDATES_PER_FRAME)
    throw new ProtocolError("oversized", `${updates.length} page updates in a frame, limit ${MAX_PAGE_UPDATES_PER_FRAME}`);
  let last = -1;
  for (const { page, encoding, bytes } of updates) {
    if (page <= last) throw new ProtocolError("malformed", "page updates are not in strictly increasing page order");
    if (page >= MAX_MEMORY_BYTES / PAGE_SIZE) throw new ProtocolError("malformed", `page ${page} is beyond the largest memory`);
    last = page;
    const expected = encoding === "zero" ? 0 : encoding === "full" ? PAGE_SIZE : undefined;
    if (expected !== undefined && bytes.length !== expected) throw new ProtocolError("malformed", `page ${page}: ${encoding} update of ${bytes.length} bytes`);
    if (encoding === "runs") checkRunDelta(bytes, PAGE_SIZE, PAGE_SIZE, `page ${page} delta`);
  }
}

export function checkStateChanges(partCount: number, changes: readonly PartChange[]): void {
  if (partCount > MAX_STATE_PARTS) throw new ProtocolError("oversized", `${partCount} state parts, limit ${MAX_STATE_PARTS}`);
  let last = -1;
  let total = 0;
  for (const { index, encoding, length, bytes } of changes) {
    if (index <= last || index >= partCount) throw new ProtocolError("malformed", `state change for part ${index}: not increasing or not below ${partCount}`);
    last = index;
    total += length;
    if (encoding === "full" && bytes.length !== length)
      throw new ProtocolError("malformed", `part ${index}: full change of ${bytes.length} bytes for length ${length}`);
  }
  if (total > MAX_DEVICE_STATE_BYTES) throw new ProtocolError("oversized", `state changes of ${total} bytes, limit ${MAX_DEVICE_STATE_BYTES}`);
}

export function checkParts(count: number, bytes: number): void {
  if (count > MAX_STATE_PARTS) throw new ProtocolError("oversized", `${count} state parts, limit ${MAX_STATE_PARTS}`);
  if (bytes > MAX_DEVICE_STATE_BYTES) throw new ProtocolError("oversized", `device state of ${bytes} bytes, limit ${MAX_DEVICE_STATE_BYTES}`);
}

export function checkIoLog(log: readonly IoLogEntry[]): void {
  if (log.length > MAX_IO_LOG_ENTRIES) throw new ProtocolError("oversized", `${log.length} I/O log entries, limit ${MAX_IO_LOG_ENTRIES}`);
  log.forEach((entry, index) => {
    if (entry.disk >= MAX_DISKS) throw new ProtocolError("malformed", `I/O log entry ${index}: disk ${entry.disk}, limit ${MAX_DISKS - 1}`);
    if (entry.type === "flush") return;
    if (entry.sectors < 1 || entry.sectors > MAX_SECTORS_PER_REQUEST) throw new ProtocolError("malformed", `I/O log entry ${index}: ${entry.sectors} sectors`);
    if (!Number.isSafeInteger(entry.sector) || (entry.sector + entry.sectors) * SECTOR_SIZE > MAX_DISK_BYTES) {
      throw new ProtocolError("malformed", `I/O log entry ${index}: sector ${entry.sector} is beyond the largest disk`);
    }
    if (entry.type === "write" && entry.inline === true) {
      if (entry.segments.length !== 0) throw new ProtocolError("malformed", `I/O log entry ${index}: an inline write with segments`);
      return;
    }
    if (entry.segments.length < 1 || entry.segments.length > MAX_SEGMENTS_PER_ENTRY)
      throw new ProtocolError("malformed", `I/O log entry ${index}: ${entry.segments.length} segments`);
    let bytes = 0;
    for (const { gpa, length } of entry.segments) {
      if (length < 1 || gpa + length > MAX_MEMORY_BYTES) throw new ProtocolError("malformed", `I/O log entry ${index}: segment ${gpa}+${length}`);
      bytes += length;
    }
    if (bytes !== entry.sectors * SECTOR_SIZE) {
      throw new ProtocolError(
        "inconsistent",
        `I/O log entry ${index}: segments hold ${bytes} bytes, ${entry.sectors} sectors need ${entry.sectors * SECTOR_SIZE}`,
      );
    }
  });
}

export function checkBlockExtent(disk: number, sector: number, byteLength: number): void {
  if (disk >= MAX_DISKS) throw new ProtocolError("malformed", `disk ${disk}, limit ${MAX_DISKS - 1}`);
  if (byteLength === 0 || byteLength % SECTOR_SIZE !== 0) throw new ProtocolError("malformed", `block data of ${byteLength} bytes is not whole sectors`);
  if (byteLength / SECTOR_SIZE > MAX_SECTORS_PER_BLOCK_FRAME) {
    throw new ProtocolError("oversized", `${byteLength / SECTOR_SIZE} sectors in a block frame, limit ${MAX_SECTORS_PER_BLOCK_FRAME}`);
  }
  if (!Number.isSafeInteger(sector) || sector < 0 || (sector + byteLength / SECTOR_SIZE) * SECTOR_SIZE > MAX_DISK_BYTES) {
    throw new ProtocolError("malformed", `sector ${sector} is beyond the largest disk`);
  }
}

export function checkChunkExtent(disk: number, offset: number, length: number): void {
  if (disk >= MAX_DISKS) throw new ProtocolError("malformed", `disk ${disk}, limit ${MAX_DISKS - 1}`);
  if (length === 0) throw new ProtocolError("malformed", "empty disk chunk");
  if (length > MAX_DISK_CHUNK_BYTES) throw new ProtocolError("oversized", `disk chunk of ${length} bytes, limit ${MAX_DISK_CHUNK_BYTES}`);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > MAX_DISK_BYTES) {
    throw new ProtocolError("malformed", `disk chunk at ${offset} is beyond the largest disk`);
  }
}
