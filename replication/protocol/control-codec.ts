// Control messages to and from JSON text. Decoding bounds the text and its
// nesting before JSON.parse, then validates against the compiled schema of the
// message's `type`, then checks what a schema cannot (sums, uniqueness).
import { Ajv, type ValidateFunction } from "ajv";
import { CONTROL_SCHEMAS } from "./control-schemas.ts";
import { ProtocolError } from "./errors.ts";
import { MAX_CONTROL_BYTES, MAX_JSON_DEPTH, MAX_VERIFY_CHUNKS } from "./limits.ts";
import type { ControlMessage, InitBeginMessage, VerifyRequestMessage } from "./messages.ts";
import { SECTOR_SIZE } from "../../emulator/units.ts";

// Compiled once per process: ajv generates code per schema, which is the slow part.
const validators: ReadonlyMap<string, ValidateFunction> = (() => {
  const ajv = new Ajv({ allErrors: false, strict: true });
  return new Map(Object.entries(CONTROL_SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]));
})();

/** Parses and validates one control message; throws only ProtocolError. */
export function decodeControl(text: string): ControlMessage {
  if (typeof text !== "string") throw new ProtocolError("malformed", "control message is not text");
  if (text.length > MAX_CONTROL_BYTES) {
    throw new ProtocolError("oversized", `control message of ${text.length} characters, limit ${MAX_CONTROL_BYTES}`);
  }
  const depth = jsonNestingDepth(text);
  if (depth > MAX_JSON_DEPTH) throw new ProtocolError("oversized", `control message nested ${depth} deep, limit ${MAX_JSON_DEPTH}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ProtocolError("malformed", "control message is not valid JSON", { cause: error });
  }
  return validateControl(value);
}

/** Validates an already-parsed value as a control message. */
export function validateControl(value: unknown): ControlMessage {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("schema", "control message must be a JSON object");
  }
  const type = (value as { type?: unknown }).type;
  if (typeof type !== "string") throw new ProtocolError("schema", "control message has no string `type`");
  const validate = validators.get(type);
  if (validate === undefined) throw new ProtocolError("unknown-type", `unknown control message type ${JSON.stringify(type.slice(0, 40))}`);
  if (!validate(value)) throw new ProtocolError("schema", `${type}: ${describeSchemaErrors(validate)}`);
  const message = value as ControlMessage;
  checkConsistency(message);
  return message;
}

/** Validates (so our own bugs fail here, not at the peer) and serialises. */
export function encodeControl(message: ControlMessage): string {
  validateControl(message);
  return JSON.stringify(message);
}

function checkConsistency(message: ControlMessage): void {
  if (message.type === "init-begin") checkInitBegin(message);
  if (message.type === "verify-request") checkVerifyRequest(message);
}

function checkInitBegin(message: InitBeginMessage): void {
  if (message.memoryBytes % message.pageSize !== 0) {
    throw new ProtocolError("inconsistent", `init-begin: memoryBytes ${message.memoryBytes} is not a multiple of the page size`);
  }
  const ids = new Set(message.disks.map((disk) => disk.id));
  if (ids.size !== message.disks.length) throw new ProtocolError("inconsistent", "init-begin: disk ids are not unique");
}

function checkVerifyRequest(message: VerifyRequestMessage): void {
  const chunks = Math.ceil(message.length / message.chunkBytes);
  if (chunks > MAX_VERIFY_CHUNKS) throw new ProtocolError("oversized", `verify-request ${message.id}: ${chunks} chunks, limit ${MAX_VERIFY_CHUNKS}`);
  if (message.offset % SECTOR_SIZE !== 0 || message.length % SECTOR_SIZE !== 0 || message.chunkBytes % SECTOR_SIZE !== 0) {
    throw new ProtocolError("inconsistent", `verify-request ${message.id}: offset, length and chunk size must be whole sectors`);
  }
}

function describeSchemaErrors(validate: ValidateFunction): string {
  const first = validate.errors?.[0];
  if (first === undefined) return "does not match its schema";
  const where = first.instancePath === "" ? "message" : first.instancePath;
  const extra = "additionalProperty" in first.params ? ` (${String(first.params.additionalProperty).slice(0, 40)})` : "";
  return `${where} ${first.message ?? "is invalid"}${extra}`;
}

/**
 * Deepest bracket nesting in JSON text, ignoring brackets inside strings. Cheap
 * (one pass, no allocation) and run before JSON.parse so deep input costs nothing.
 */
export function jsonNestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > MAX_JSON_DEPTH) return deepest; // no need to scan further
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
  }
  return deepest;
}
