// The one error type the protocol layer throws: every rejection of peer input,
// whatever the cause, is a ProtocolError with a stable `code` an engine can act on.

export type ProtocolErrorCode =
  /** Not parseable at all: bad JSON, bad UTF-8, impossible field values. */
  | "malformed"
  /** Over a hard limit (frame size, page count, JSON depth, ...). */
  | "oversized"
  /** Control message `type` this version does not know. */
  | "unknown-type"
  /** Binary frame kind this version does not know. */
  | "unknown-kind"
  /** Binary frame does not start with the protocol magic. */
  | "bad-magic"
  /** Protocol version not supported (frame header or handshake negotiation). */
  | "version"
  /** Fewer bytes than the header says. */
  | "truncated"
  /** A control message that fails its JSON schema. */
  | "schema"
  /** Fields that each pass but contradict each other (e.g. segment lengths vs sector count). */
  | "inconsistent"
  /** A message that is valid alone but not at this point of the session. */
  | "order"
  /** Anything but handshake traffic before the peer has authenticated. */
  | "unauthenticated"
  /** The peer could not prove knowledge of the shared secret. */
  | "auth-failed"
  /** Both ends claim the same role, or a stale epoch meets a newer one. */
  | "role-conflict"
  /** An epoch lower than one already seen: a stale primary or a replayed message. */
  | "stale-epoch"
  /** The peer sent a refusal or an error message. */
  | "refused"
  /** The handshake did not finish in time. */
  | "timeout"
  /** The transport closed before the operation finished. */
  | "closed";

export class ProtocolError extends Error {
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${code}: ${message}`, options);
    this.name = "ProtocolError";
  }
}
