// The one error type of the network link, with a stable code each side can act on.

export type LinkErrorCode =
  /** The peer speaks another protocol (a replication node where a gateway was expected, or the reverse). */
  | "wrong-peer"
  /** The peer could not prove the shared secret (or its records do not authenticate). */
  | "auth-failed"
  /** No common protocol version. */
  | "version"
  /** Not decodable: bad JSON, a failed schema, a truncated frame batch. */
  | "malformed"
  /** Over a hard limit. */
  | "oversized"
  /** Valid alone, wrong at this point (a frame before attach, an id going backwards). */
  | "order"
  /** The gateway serves a higher epoch: this node was taken over. */
  | "stale-epoch"
  /** The peer refused or reported an error. */
  | "refused"
  | "timeout"
  | "closed";

export class NetworkLinkError extends Error {
  constructor(
    readonly code: LinkErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${code}: ${message}`, options);
    this.name = "NetworkLinkError";
  }
}
