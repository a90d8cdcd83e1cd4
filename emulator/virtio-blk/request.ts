// Turning a descriptor chain into a block request: every check of what the
// guest handed over happens here, in one pure function, with an enumerated error
// for each way a chain can be wrong.
import { isInRam, readU32, readU64, type GuestMemory } from "../virtio/guest-memory.ts";
import type { DescriptorChain } from "../virtio/virtqueue.ts";
import { BlkStatus, REQUEST_HEADER_BYTES, RequestType } from "./spec.ts";
import type { GuestSegment } from "../block/hook.ts";
import { SECTOR_SIZE } from "../units.ts";

export type RequestKind = "read" | "write" | "flush" | "get-id";

export interface Request {
  readonly kind: RequestKind;
  /** First sector (0 for flush and get-id). */
  readonly sector: number;
  /** The data buffers between header and status, in chain order. */
  readonly data: readonly GuestSegment[];
  readonly dataLength: number;
  /** Guest-physical address of the status byte. */
  readonly statusGpa: number;
}

export type RequestErrorKind =
  | "status-missing"
  | "status-not-writable"
  | "status-empty"
  | "header-not-readable"
  | "header-too-short"
  | "unknown-type"
  | "read-into-read-only-buffer"
  | "write-from-write-only-buffer"
  | "data-not-sector-multiple"
  | "sector-out-of-range"
  | "id-buffer-not-writable";

export interface RequestError {
  readonly error: RequestErrorKind;
  /** Where to report the failure; absent when the chain has no usable status byte. */
  readonly statusGpa?: number;
}

/**
 * Parses a chain laid out as virtio-blk requires: a readable header descriptor,
 * data descriptors, and a writable status byte last. The chain's buffers are known
 * to lie in RAM (SplitVirtqueue checked them).
 */
export function parseRequest(chain: DescriptorChain, ram: GuestMemory, capacitySectors: number): Request | RequestError {
  const { descriptors } = chain;
  if (descriptors.length < 2) return { error: "status-missing" };
  const status = descriptors[descriptors.length - 1]!;
  if (!status.writable) return { error: "status-not-writable" };
  if (status.length === 0) return { error: "status-empty" };
  // The status is the request's last byte.
  const statusGpa = status.gpa + status.length - 1;
  const fail = (error: RequestErrorKind): RequestError => ({ error, statusGpa });

  const header = descriptors[0]!;
  if (header.writable || !isInRam(ram, header.gpa, REQUEST_HEADER_BYTES)) return fail("header-not-readable");
  if (header.length < REQUEST_HEADER_BYTES) return fail("header-too-short");
  const type = readU32(ram.bytes, header.gpa);
  const sector = readU64(ram.bytes, header.gpa + 8);

  const dataDescriptors = descriptors.slice(1, -1);
  const data = dataDescriptors.map(({ gpa, length }) => ({ gpa, length }));
  const dataLength = data.reduce((sum, segment) => sum + segment.length, 0);
  const request = (kind: RequestKind, at: number): Request => ({ kind, sector: at, data, dataLength, statusGpa });

  switch (type) {
    case RequestType.IN:
    case RequestType.OUT: {
      const reading = type === RequestType.IN;
      if (dataDescriptors.some((d) => d.writable !== reading)) {
        return fail(reading ? "read-into-read-only-buffer" : "write-from-write-only-buffer");
      }
      if (dataLength % SECTOR_SIZE !== 0) return fail("data-not-sector-multiple");
      if (!(sector + dataLength / SECTOR_SIZE <= capacitySectors)) return fail("sector-out-of-range");
      return request(reading ? "read" : "write", sector);
    }
    case RequestType.FLUSH:
      return request("flush", 0);
    case RequestType.GET_ID:
      if (dataDescriptors.some((d) => !d.writable)) return fail("id-buffer-not-writable");
      return request("get-id", 0);
    default:
      return fail("unknown-type");
  }
}

export function isRequestError(parsed: Request | RequestError): parsed is RequestError {
  return "error" in parsed;
}

/** The status byte for a request the device refuses. */
export function statusFor(error: RequestError): BlkStatus {
  return error.error === "unknown-type" ? BlkStatus.UNSUPP : BlkStatus.IOERR;
}
