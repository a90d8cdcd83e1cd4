// The requests a node's control socket accepts, and the one function that turns a
// line from the socket into a typed request (checked against its schema with ajv) or a
// reason to refuse it. Anyone who can open the socket may send anything: nothing here may throw.
import { Ajv, type SchemaObject, type ValidateFunction } from "ajv";
import type { MachineInspection } from "../emulator/machine.ts";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";
import type { GuestNetworkStatus } from "./network/guest-link.ts";

/** Longest request line accepted (an exec command is the only big field). */
export const MAX_CONTROL_LINE_BYTES = 64 * 1024;
/** The guest's shell edits at most 1024 characters a line, and exec wraps the command in markers. */
export const MAX_COMMAND_CHARS = 900;
const MAX_EXEC_TIMEOUT_MS = 24 * 3600_000;
const MAX_URL_CHARS = 2048;

export type ControlRequest =
  | { id: number; type: "status" }
  | { id: number; type: "promote" }
  /** What the guest is doing now (CPU, interrupts, each disk's requests in flight, console tail); answers a NodeInspection. */
  | { id: number; type: "inspect" }
  /** Runs a shell command in the guest (only where the guest runs); answers {output, exitCode}. */
  | { id: number; type: "exec"; command: string; timeoutMs?: number }
  /** Compares the replica with the guest (RAM and disks) and, with repair, fixes what differs; answers a VerifyReport. */
  | { id: number; type: "verify"; repair: boolean }
  /** Moves the guest to the secondary listening at `to` (live, or stop-and-copy); answers a MigrateResult, then the node exits. */
  | { id: number; type: "migrate"; to: string; stopAndCopy: boolean }
  /** A secondary that took over: protect its guest with the secondary at `connect`. */
  | { id: number; type: "protect"; connect: string };

export type ControlRequestBody = ControlRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

export type ControlReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** What `status` answers. */
export interface NodeStatus {
  name: string;
  /** What the node does now: a secondary that took over (and maybe protects its guest with a new secondary) is a primary. */
  role: "primary" | "secondary";
  /** The role it was started in. */
  startedAs: "primary" | "secondary";
  pid: number;
  /** Before the engine exists: "booting", "restoring", "connecting", "listening"... */
  phase: string;
  /** Whether the guest runs on this node (console input and exec go here). */
  runsGuest: boolean;
  /** A secondary: the ws:// URL it listens on. */
  listenUrl?: string;
  metrics?: MetricsSnapshot;
  /** The guest's link to the network gateway, where the guest runs here and a gateway was given. */
  network?: GuestNetworkStatus;
}

/**
 * What `inspect` answers: enough to tell a guest that stopped (instructions do not advance,
 * or it halted with interrupts off) from one waiting on a disk request (in flight, its age,
 * held by a gate or by the backend; an ISR set while the IRQ is low is a lost interrupt) from
 * output that did not get out (the console tail has what the released output lacks).
 */
export interface NodeInspection {
  name: string;
  /** The engine in charge now: its state, the guest requests it holds for a sync, the output it holds back. */
  engine: { state: string; heldRequests?: number; heldOutputBytes?: number };
  runsGuest: boolean;
  /** Absent while the node has no machine yet. */
  machine?: MachineInspection;
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/** Each request's fields as a schema; extra fields are ignored (older and newer clients alike). */
const REQUEST_SCHEMAS: Record<ControlRequest["type"], SchemaObject> = {
  status: { type: "object" },
  promote: { type: "object" },
  inspect: { type: "object" },
  exec: {
    type: "object",
    required: ["command"],
    properties: {
      command: { type: "string", minLength: 1, maxLength: MAX_COMMAND_CHARS, pattern: "^[^\\r\\n]*$" },
      timeoutMs: { type: "number", exclusiveMinimum: 0, maximum: MAX_EXEC_TIMEOUT_MS },
    },
  },
  verify: { type: "object", properties: { repair: { type: "boolean" } } },
  migrate: { type: "object", required: ["to"], properties: { to: wsUrl(), stopAndCopy: { type: "boolean" } } },
  protect: { type: "object", required: ["connect"], properties: { connect: wsUrl() } },
};

function wsUrl(): SchemaObject {
  return { type: "string", maxLength: MAX_URL_CHARS, pattern: "^wss?://[^\\s]+$" };
}

/** What to tell the client when a field is wrong (by field, and by field and failing keyword). */
const FIELD_ERRORS: Record<string, string> = {
  "exec.command": `exec: command must be a string of 1 to ${MAX_COMMAND_CHARS} characters`,
  "exec.command.pattern": "exec: command must be a single line",
  "exec.timeoutMs": `exec: timeoutMs must be a positive number of milliseconds up to ${MAX_EXEC_TIMEOUT_MS}`,
  "verify.repair": "verify: repair must be true or false",
  "migrate.to": "migrate: to must be a ws:// or wss:// URL",
  "migrate.stopAndCopy": "migrate: stopAndCopy must be true or false",
  "protect.connect": "protect: connect must be a ws:// or wss:// URL",
};

const validators = (() => {
  const ajv = new Ajv({ allErrors: false, strict: true });
  return new Map(Object.entries(REQUEST_SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]));
})();

function fieldError(type: string, validate: ValidateFunction): string {
  const error = validate.errors?.[0];
  const field =
    error === undefined
      ? ""
      : error.keyword === "required"
        ? String((error.params as { missingProperty: string }).missingProperty)
        : error.instancePath.slice(1);
  return (
    FIELD_ERRORS[`${type}.${field}.${error?.keyword ?? ""}`] ??
    FIELD_ERRORS[`${type}.${field}`] ??
    `${type}: ${field || "request"} ${error?.message ?? "is invalid"}`
  );
}

/** A request, or `{error}` naming what is wrong with the line (with the request's id if it had a usable one). */
export function parseControlRequest(line: string): ControlRequest | { id: number; error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { id: 0, error: "not a JSON line" };
  }
  if (!isRecord(value)) return { id: 0, error: `expected a JSON object, got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}` };
  const rawId = value.id ?? 0;
  if (typeof rawId !== "number" || !Number.isSafeInteger(rawId) || rawId < 0) return { id: 0, error: "id: expected a non-negative integer" };
  const id = rawId;
  const type = value.type;
  const validate = typeof type === "string" && Object.hasOwn(REQUEST_SCHEMAS, type) ? validators.get(type) : undefined;
  if (validate === undefined) return { id, error: `unknown request type ${JSON.stringify(type)?.slice(0, 40) ?? "undefined"}` };
  if (!validate(value)) return { id, error: fieldError(String(type), validate) };
  // Valid: build the typed request from the fields it knows (extra fields are dropped).
  switch (type as ControlRequest["type"]) {
    case "status":
    case "promote":
      return { id, type: type as "status" | "promote" };
    case "inspect":
      return { id, type: "inspect" };
    case "exec":
      return value.timeoutMs === undefined
        ? { id, type: "exec", command: value.command as string }
        : { id, type: "exec", command: value.command as string, timeoutMs: value.timeoutMs as number };
    case "verify":
      return { id, type: "verify", repair: value.repair === true };
    case "migrate":
      return { id, type: "migrate", to: value.to as string, stopAndCopy: value.stopAndCopy === true };
    case "protect":
      return { id, type: "protect", connect: value.connect as string };
  }
}

/** A reply line from a node, or an Error saying why it is not one. */
export function parseControlReply(line: string): ControlReply | Error {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return new Error("the node answered with a line that is not JSON");
  }
  if (!isRecord(value) || typeof value.ok !== "boolean" || typeof value.id !== "number") return new Error("the node answered with a malformed reply");
  if (value.ok) return { id: value.id, ok: true, result: value.result };
  return { id: value.id, ok: false, error: typeof value.error === "string" ? value.error : "unknown error" };
}
