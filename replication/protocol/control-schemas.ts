// JSON schemas of the control messages, one per `type`. Every object is closed
// (additionalProperties: false) and every string, array and integer is bounded,
// so a message that passes can be used without further size checks.
import type { SchemaObject } from "ajv";
import type { ControlType } from "./messages.ts";
import {
  MAX_DISK_BYTES,
  MAX_DISKS,
  MAX_EPOCH,
  MAX_MEMORY_BYTES,
  MAX_SAFE,
  MAX_STATE_PARTS,
  MAX_VERIFY_CHUNKS,
  MAX_VERIFY_RANGE_BYTES,
  MAX_TEXT_FIELD,
  PROTOCOL_NAME,
} from "./limits.ts";
import { PAGE_SIZE } from "../../emulator/units.ts";

function closedObject(properties: Record<string, SchemaObject>, optional: string[] = []): SchemaObject {
  return {
    type: "object",
    properties,
    required: Object.keys(properties).filter((key) => !optional.includes(key)),
    additionalProperties: false,
  };
}

const uint = (maximum: number): SchemaObject => ({ type: "integer", minimum: 0, maximum });
const text = (maxLength: number): SchemaObject => ({ type: "string", maxLength });
const constant = (value: string | number | boolean): SchemaObject => ({ const: value });
const list = (items: SchemaObject, maxItems: number, minItems = 0): SchemaObject => ({ type: "array", items, minItems, maxItems });

const epoch = uint(MAX_EPOCH);
const version = { type: "integer", minimum: 1, maximum: 255 };
const diskId = uint(MAX_DISKS - 1);
const sha256Hex = { type: "string", pattern: "^[0-9a-f]{64}$" };
/** Standard base64 of 32 bytes: 43 characters and one '='. */
const base64Of32 = { type: "string", pattern: "^[A-Za-z0-9+/]{43}=$" };
const role = { enum: ["primary", "secondary"] };
const errorCode = { type: "string", pattern: "^[a-z][a-z0-9-]{0,63}$" };

export const CONTROL_SCHEMAS: Record<ControlType, SchemaObject> = {
  challenge: closedObject({
    type: constant("challenge"),
    protocol: constant(PROTOCOL_NAME),
    minVersion: version,
    maxVersion: version,
    role,
    epoch,
    nonce: base64Of32,
    nodeId: text(64),
  }),
  auth: closedObject({ type: constant("auth"), version, proof: base64Of32 }),
  welcome: closedObject({ type: constant("welcome"), version }),
  refused: closedObject({ type: constant("refused"), code: errorCode, message: text(MAX_TEXT_FIELD) }),

  "init-begin": closedObject({
    type: constant("init-begin"),
    seq: constant(0),
    epoch,
    memoryBytes: { type: "integer", minimum: PAGE_SIZE, maximum: MAX_MEMORY_BYTES },
    pageSize: constant(PAGE_SIZE),
    diskMode: { enum: ["io-log", "dirty-block-copy"] },
    disks: list(
      closedObject({ id: diskId, name: { type: "string", minLength: 1, maxLength: 64 }, sizeBytes: uint(MAX_DISK_BYTES), sha256: sha256Hex }, ["sha256"]),
      MAX_DISKS,
    ),
  }),
  "disk-digest": closedObject({ type: constant("disk-digest"), seq: constant(0), epoch, disk: diskId, sha256: sha256Hex }),
  "init-end": closedObject({
    type: constant("init-end"),
    seq: constant(0),
    epoch,
    pageCount: uint(MAX_MEMORY_BYTES / PAGE_SIZE),
    stateParts: uint(MAX_STATE_PARTS),
  }),
  "init-ack": closedObject({ type: constant("init-ack"), seq: constant(0), epoch }),

  "sync-ack": closedObject({ type: constant("sync-ack"), seq: { type: "integer", minimum: 1, maximum: MAX_SAFE }, epoch }),

  heartbeat: closedObject({ type: constant("heartbeat"), epoch, id: uint(MAX_SAFE) }),
  promoted: closedObject(
    { type: constant("promoted"), epoch: { type: "integer", minimum: 1, maximum: MAX_EPOCH }, resumedAtMs: { type: "number", minimum: 0, maximum: 1e15 } },
    ["resumedAtMs"],
  ),
  handover: closedObject({ type: constant("handover"), epoch, reason: text(MAX_TEXT_FIELD) }),
  "verify-request": closedObject({
    type: constant("verify-request"),
    id: uint(MAX_SAFE),
    seq: uint(MAX_SAFE),
    target: { enum: ["ram", "disk"] },
    disk: diskId,
    offset: uint(MAX_DISK_BYTES),
    length: { type: "integer", minimum: 512, maximum: MAX_VERIFY_RANGE_BYTES },
    chunkBytes: { type: "integer", minimum: 512, maximum: MAX_VERIFY_RANGE_BYTES },
  }),
  "verify-digests": closedObject({ type: constant("verify-digests"), id: uint(MAX_SAFE), digests: list(sha256Hex, MAX_VERIFY_CHUNKS) }),
  error: closedObject({ type: constant("error"), code: errorCode, message: text(MAX_TEXT_FIELD) }),
  goodbye: closedObject({ type: constant("goodbye"), reason: text(MAX_TEXT_FIELD) }),
};
