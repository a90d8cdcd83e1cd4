// The container around a v86 state: a header that says the bytes are ours and
// which machine shape they need, so that a restore can fail with a clear reason.
import { SnapshotError } from "./errors.ts";
import type { JsonValue } from "./config.ts";

const MAGIC = "TWVMSNAP";
const FORMAT_VERSION = 1;
const HEADER_BYTES = 16; // magic (8) + version (u32) + meta length (u32)
const MAX_META_BYTES = 64 * 1024;

export interface SnapshotMeta {
  /** v86 build the state came from; states are not portable across v86 versions. */
  v86Version: string;
  memoryMiB: number;
  vgaMemoryKiB: number;
  createdAt: string;
  /** Our devices' states by `stateKey`. */
  devices: Record<string, JsonValue>;
}

export function encodeSnapshot(meta: SnapshotMeta, v86State: ArrayBuffer): Uint8Array {
  const metaBytes = new TextEncoder().encode(JSON.stringify(meta));
  const stateOffset = align4(HEADER_BYTES + metaBytes.length);
  const out = new Uint8Array(stateOffset + v86State.byteLength);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, metaBytes.length, true);
  out.set(metaBytes, HEADER_BYTES);
  out.set(new Uint8Array(v86State), stateOffset);
  return out;
}

/** Splits a snapshot into its meta and a v86 state (a fresh ArrayBuffer, as v86 requires). */
export function decodeSnapshot(bytes: Uint8Array): { meta: SnapshotMeta; v86State: ArrayBuffer } {
  if (!(bytes instanceof Uint8Array)) throw new SnapshotError("snapshot: expected a Uint8Array");
  if (bytes.length < HEADER_BYTES || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) {
    throw new SnapshotError("snapshot: not a twinvm snapshot (bad magic)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== FORMAT_VERSION) {
    throw new SnapshotError(`snapshot: format version ${version}, this build reads version ${FORMAT_VERSION}`);
  }
  const metaLength = view.getUint32(12, true);
  if (metaLength > MAX_META_BYTES || HEADER_BYTES + metaLength > bytes.length) {
    throw new SnapshotError(`snapshot: truncated or damaged header (meta length ${metaLength}, total ${bytes.length})`);
  }
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(new TextDecoder().decode(bytes.subarray(HEADER_BYTES, HEADER_BYTES + metaLength))) as SnapshotMeta;
  } catch (error) {
    throw new SnapshotError("snapshot: damaged header (meta is not JSON)", { cause: error });
  }
  if (!isMeta(meta)) throw new SnapshotError("snapshot: damaged header (meta fields missing)");
  const stateOffset = align4(HEADER_BYTES + metaLength);
  if (stateOffset >= bytes.length) throw new SnapshotError("snapshot: truncated (no machine state)");
  const start = bytes.byteOffset + stateOffset;
  return { meta, v86State: bytes.buffer.slice(start, bytes.byteOffset + bytes.length) as ArrayBuffer };
}

function isMeta(value: unknown): value is SnapshotMeta {
  const m = value as Partial<SnapshotMeta> | null;
  return (
    typeof m === "object" &&
    m !== null &&
    typeof m.v86Version === "string" &&
    Number.isInteger(m.memoryMiB) &&
    Number.isInteger(m.vgaMemoryKiB) &&
    typeof m.devices === "object" &&
    m.devices !== null
  );
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
