// The network link's messages. Control messages are JSON, each checked against a closed
// schema (ajv) before use; frames travel as binary batches with a strict codec:
//
//   ingress batch (gateway -> node): u8 1, then per frame: u64 id, u16 length, frame
//   egress batch  (node -> gateway): u8 2, then per frame: u16 length, frame
//
// all big-endian. Structure errors (a length past the end, ids not increasing, too many
// frames) reject the whole record; a frame that is merely too short or too long for an
// Ethernet frame passes the codec and is dropped and counted by its receiver.
import { Ajv, type SchemaObject, type ValidateFunction } from "ajv";
import { NetworkLinkError } from "./link-errors.ts";
import {
  BATCH_RECORD_BYTES,
  LINK_PROTOCOL,
  MAX_FRAMES_PER_RECORD,
  MAX_INGRESS_ID,
  MAX_LINK_CONTROL_BYTES,
  MAX_LINK_EPOCH,
  MAX_LINK_FRAME_BYTES,
  MAX_LINK_RECORD_PAYLOAD,
  MAX_LINK_TEXT,
} from "./link-limits.ts";

export type LinkRole = "node" | "gateway";

/** Plaintext, before the proofs: the only messages an unauthenticated peer may send. */
export type HandshakeMessage =
  | { type: "challenge"; protocol: typeof LINK_PROTOCOL; role: LinkRole; minVersion: number; maxVersion: number; nonce: string; nodeId: string }
  | { type: "auth"; version: number; proof: string }
  | { type: "refused"; code: string; message: string };

/** Sealed, after the handshake. */
export type LinkControl =
  /** node: my guest runs at `epoch` and its state has seen ingress up to `lastIngressId` (0: none). */
  | { type: "attach"; epoch: number; lastIngressId: number }
  /** node: a secondary's link, kept open so that a takeover attaches without dialling; `attach` follows, if ever. */
  | { type: "standby" }
  /** gateway: you are the node; frames continue at `resumeFrom` (`replay` of them from the log). */
  | { type: "attached"; epoch: number; resumeFrom: number; replay: number; missing: number }
  /** gateway: a higher epoch is (or was) attached; you may not send. */
  | { type: "stale-epoch"; epoch: number; message: string }
  /** gateway: a node at `epoch` took your place. */
  | { type: "superseded"; epoch: number }
  /** node: everything up to `lastIngressId` is in the secondary's copy. */
  | { type: "committed"; lastIngressId: number }
  /** node: a question to the arbiter's witness (a gateway or `twinvm witness` that hosts one); no attach needed. `holdMs`: a hold's length (0 otherwise). */
  | { type: "witness-ask"; id: number; op: "claim" | "renew" | "hold"; epoch: number; holdMs: number }
  /** witness: the answer; `leaseMs` is 0 and `reason` says why when not granted; `holder` "" when none; `retryInMs` 0 unless a hold delays the refused claim. */
  | { type: "witness-answer"; id: number; granted: boolean; epoch: number; leaseMs: number; holder: string; reason: string; retryInMs: number }
  | { type: "ping" }
  | { type: "error"; code: string; message: string }
  | { type: "goodbye"; reason: string };

export type FrameBatch = { kind: "ingress"; frames: IngressFrame[] } | { kind: "egress"; frames: Uint8Array[] };

export interface IngressFrame {
  id: number;
  frame: Uint8Array;
}

const BATCH_INGRESS = 1;
const BATCH_EGRESS = 2;

// --- control messages ---------------------------------------------------------------

function closedObject(properties: Record<string, SchemaObject>): SchemaObject {
  return { type: "object", properties, required: Object.keys(properties), additionalProperties: false };
}
const uint = (maximum: number): SchemaObject => ({ type: "integer", minimum: 0, maximum });
const constant = (value: string): SchemaObject => ({ const: value });
const text = (maxLength: number): SchemaObject => ({ type: "string", maxLength });
const code = { type: "string", pattern: "^[a-z][a-z0-9-]{0,63}$" };
const epoch = uint(MAX_LINK_EPOCH);
const id = uint(MAX_INGRESS_ID);
const version = { type: "integer", minimum: 1, maximum: 255 };
/** Standard base64 of 32 bytes. */
const base64Of32 = { type: "string", pattern: "^[A-Za-z0-9+/]{43}=$" };

const HANDSHAKE_SCHEMAS: Record<HandshakeMessage["type"], SchemaObject> = {
  challenge: closedObject({
    type: constant("challenge"),
    protocol: constant(LINK_PROTOCOL),
    role: { enum: ["node", "gateway"] },
    minVersion: version,
    maxVersion: version,
    nonce: base64Of32,
    nodeId: text(64),
  }),
  auth: closedObject({ type: constant("auth"), version, proof: base64Of32 }),
  refused: closedObject({ type: constant("refused"), code, message: text(MAX_LINK_TEXT) }),
};

const CONTROL_SCHEMAS: Record<LinkControl["type"], SchemaObject> = {
  attach: closedObject({ type: constant("attach"), epoch, lastIngressId: id }),
  standby: closedObject({ type: constant("standby") }),
  attached: closedObject({ type: constant("attached"), epoch, resumeFrom: id, replay: id, missing: id }),
  "stale-epoch": closedObject({ type: constant("stale-epoch"), epoch, message: text(MAX_LINK_TEXT) }),
  superseded: closedObject({ type: constant("superseded"), epoch }),
  committed: closedObject({ type: constant("committed"), lastIngressId: id }),
  "witness-ask": closedObject({ type: constant("witness-ask"), id: uint(2 ** 32 - 1), op: { enum: ["claim", "renew", "hold"] }, epoch, holdMs: uint(60_000) }),
  "witness-answer": closedObject({
    type: constant("witness-answer"),
    id: uint(2 ** 32 - 1),
    granted: { type: "boolean" },
    epoch,
    leaseMs: uint(3_600_000),
    holder: text(64),
    reason: text(MAX_LINK_TEXT),
    retryInMs: uint(60_000),
  }),
  ping: closedObject({ type: constant("ping") }),
  error: closedObject({ type: constant("error"), code, message: text(MAX_LINK_TEXT) }),
  goodbye: closedObject({ type: constant("goodbye"), reason: text(MAX_LINK_TEXT) }),
};

// Compiled once per process: ajv generates code per schema.
const ajv = new Ajv({ allErrors: false, strict: true });
const handshakeValidators = compile(HANDSHAKE_SCHEMAS);
const controlValidators = compile(CONTROL_SCHEMAS);

function compile(schemas: Record<string, SchemaObject>): ReadonlyMap<string, ValidateFunction> {
  return new Map(Object.entries(schemas).map(([type, schema]) => [type, ajv.compile(schema)]));
}

/** Parses one handshake message. A challenge of another protocol is named as such: a replication peer is not a gateway. */
export function decodeHandshake(text: string): HandshakeMessage {
  const value = parseObject(text);
  if (value.type === "challenge" && typeof value.protocol === "string" && value.protocol !== LINK_PROTOCOL) {
    const what = value.protocol === "twinvm-replication" ? "a twinvm replication node" : `a peer speaking ${JSON.stringify(value.protocol.slice(0, 40))}`;
    throw new NetworkLinkError("wrong-peer", `the peer is ${what}, not an end of the network link (${LINK_PROTOCOL})`);
  }
  return validated(handshakeValidators, value) as HandshakeMessage;
}

export function encodeHandshake(message: HandshakeMessage): string {
  validated(handshakeValidators, message);
  return JSON.stringify(message);
}

export function decodeControl(bytes: Uint8Array): LinkControl {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (error) {
    throw new NetworkLinkError("malformed", "control message is not UTF-8", { cause: error });
  }
  return validated(controlValidators, parseObject(text)) as LinkControl;
}

/** Validates (our own bugs fail here, not at the peer) and encodes. */
export function encodeControl(message: LinkControl): Uint8Array {
  validated(controlValidators, message);
  return new TextEncoder().encode(JSON.stringify(message));
}

function parseObject(text: string): Record<string, unknown> {
  if (text.length > MAX_LINK_CONTROL_BYTES)
    throw new NetworkLinkError("oversized", `control message of ${text.length} characters, limit ${MAX_LINK_CONTROL_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new NetworkLinkError("malformed", "control message is not JSON", { cause: error });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new NetworkLinkError("malformed", "control message is not a JSON object");
  return value as Record<string, unknown>;
}

function validated(validators: ReadonlyMap<string, ValidateFunction>, value: object): object {
  const type = (value as { type?: unknown }).type;
  const validate = typeof type === "string" ? validators.get(type) : undefined;
  if (validate === undefined) throw new NetworkLinkError("malformed", `unknown message type ${JSON.stringify(String(type).slice(0, 40))}`);
  if (!validate(value)) {
    const error = validate.errors?.[0];
    throw new NetworkLinkError("malformed", `${type as string}: ${error ? `${error.instancePath || "message"} ${error.message ?? "is invalid"}` : "invalid"}`);
  }
  return value;
}

// --- frame batches --------------------------------------------------------------------

const INGRESS_ENTRY_HEADER = 10;
const EGRESS_ENTRY_HEADER = 2;

/**
 * Splits frames into batch payloads of at most BATCH_RECORD_BYTES (a larger single frame
 * goes alone). Frames over the 16-bit length are a caller bug and throw.
 */
export function encodeIngressBatches(frames: readonly IngressFrame[]): Uint8Array[] {
  return batches(
    frames,
    BATCH_INGRESS,
    (entry) => INGRESS_ENTRY_HEADER + entry.frame.length,
    (view, at, entry) => {
      view.setBigUint64(at, BigInt(entry.id));
      view.setUint16(at + 8, entry.frame.length);
      return { bytes: entry.frame, at: at + INGRESS_ENTRY_HEADER };
    },
  );
}

export function encodeEgressBatches(frames: readonly Uint8Array[]): Uint8Array[] {
  return batches(
    frames,
    BATCH_EGRESS,
    (frame) => EGRESS_ENTRY_HEADER + frame.length,
    (view, at, frame) => {
      view.setUint16(at, frame.length);
      return { bytes: frame, at: at + EGRESS_ENTRY_HEADER };
    },
  );
}

function batches<T>(
  entries: readonly T[],
  kind: number,
  size: (entry: T) => number,
  writeHeader: (view: DataView, at: number, entry: T) => { bytes: Uint8Array; at: number },
): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let start = 0; start < entries.length;) {
    let end = start;
    let bytes = 1;
    while (end < entries.length && end - start < MAX_FRAMES_PER_RECORD && (end === start || bytes + size(entries[end]!) <= BATCH_RECORD_BYTES)) {
      bytes += size(entries[end]!);
      end++;
    }
    const payload = new Uint8Array(bytes);
    const view = new DataView(payload.buffer);
    payload[0] = kind;
    let at = 1;
    for (let i = start; i < end; i++) {
      const { bytes: frame, at: dataAt } = writeHeader(view, at, entries[i]!);
      if (frame.length > MAX_LINK_FRAME_BYTES) throw new RangeError(`a frame of ${frame.length} bytes does not fit the link's 16-bit length`);
      payload.set(frame, dataAt);
      at = dataAt + frame.length;
    }
    out.push(payload);
    start = end;
  }
  return out;
}

/** Decodes one batch payload; frames are copies (the record's buffer is not kept alive). */
export function decodeBatch(payload: Uint8Array): FrameBatch {
  if (payload.length > MAX_LINK_RECORD_PAYLOAD)
    throw new NetworkLinkError("oversized", `frame batch of ${payload.length} bytes, limit ${MAX_LINK_RECORD_PAYLOAD}`);
  if (payload.length < 1) throw new NetworkLinkError("malformed", "empty frame batch");
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const kind = payload[0];
  if (kind !== BATCH_INGRESS && kind !== BATCH_EGRESS) throw new NetworkLinkError("malformed", `frame batch of unknown kind ${kind}`);
  const header = kind === BATCH_INGRESS ? INGRESS_ENTRY_HEADER : EGRESS_ENTRY_HEADER;
  const ingress: IngressFrame[] = [];
  const egress: Uint8Array[] = [];
  let previousId = -1;
  for (let at = 1; at < payload.length;) {
    if (ingress.length + egress.length >= MAX_FRAMES_PER_RECORD)
      throw new NetworkLinkError("oversized", `more than ${MAX_FRAMES_PER_RECORD} frames in one batch`);
    if (at + header > payload.length) throw new NetworkLinkError("malformed", `frame batch ends inside a frame header (${payload.length - at} bytes left)`);
    const length = view.getUint16(at + header - 2);
    const start = at + header;
    if (start + length > payload.length)
      throw new NetworkLinkError("malformed", `frame of ${length} bytes runs past the batch's end (${payload.length - start} left)`);
    const frame = payload.slice(start, start + length);
    if (kind === BATCH_INGRESS) {
      const big = view.getBigUint64(at);
      if (big > BigInt(MAX_INGRESS_ID)) throw new NetworkLinkError("malformed", `ingress id ${big} is not an exact integer`);
      const id = Number(big);
      if (id <= previousId) throw new NetworkLinkError("order", `ingress ids not increasing within a batch (${id} after ${previousId})`);
      previousId = id;
      ingress.push({ id, frame });
    } else {
      egress.push(frame);
    }
    at = start + length;
  }
  if (ingress.length + egress.length === 0) throw new NetworkLinkError("malformed", "frame batch without frames");
  return kind === BATCH_INGRESS ? { kind: "ingress", frames: ingress } : { kind: "egress", frames: egress };
}
