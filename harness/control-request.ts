// The requests a node's control socket accepts, and the one function that turns a
// line from the socket into a typed request or a reason to refuse it. Anyone who
// can open the socket may send anything: nothing here may throw.
import type { MachineInspection } from "../emulator/machine.ts";
import type { MetricsSnapshot } from "../replication/engine/metrics.ts";

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
  switch (value.type) {
    case "status":
    case "promote":
    case "inspect":
      return { id, type: value.type };
    case "exec": {
      const { command, timeoutMs } = value;
      if (typeof command !== "string" || command.length === 0 || command.length > MAX_COMMAND_CHARS) {
        return { id, error: `exec: command must be a string of 1 to ${MAX_COMMAND_CHARS} characters` };
      }
      if (command.includes("\n") || command.includes("\r")) return { id, error: "exec: command must be a single line" };
      if (timeoutMs !== undefined && (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_EXEC_TIMEOUT_MS)) {
        return { id, error: `exec: timeoutMs must be a positive number of milliseconds up to ${MAX_EXEC_TIMEOUT_MS}` };
      }
      return timeoutMs === undefined ? { id, type: "exec", command } : { id, type: "exec", command, timeoutMs };
    }
    case "verify":
      if (value.repair !== undefined && typeof value.repair !== "boolean") return { id, error: "verify: repair must be true or false" };
      return { id, type: "verify", repair: value.repair === true };
    case "migrate":
    case "protect": {
      const url = value.type === "migrate" ? value.to : value.connect;
      const field = value.type === "migrate" ? "to" : "connect";
      if (typeof url !== "string" || url.length > MAX_URL_CHARS || !/^wss?:\/\/[^\s]+$/.test(url))
        return { id, error: `${value.type}: ${field} must be a ws:// or wss:// URL` };
      if (value.type === "protect") return { id, type: "protect", connect: url };
      if (value.stopAndCopy !== undefined && typeof value.stopAndCopy !== "boolean") return { id, error: "migrate: stopAndCopy must be true or false" };
      return { id, type: "migrate", to: url, stopAndCopy: value.stopAndCopy === true };
    }
    default:
      return { id, error: `unknown request type ${JSON.stringify(value.type)?.slice(0, 40) ?? "undefined"}` };
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
