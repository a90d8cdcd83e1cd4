// A NetworkUplink for a Node process: dials the gateway over the ws transport with the
// link's message limit. The uplink itself (replication/network/uplink.ts) is browser-safe.
import { MAX_LINK_MESSAGE_BYTES } from "../../replication/network/link-limits.ts";
import { NetworkUplink, type NetworkUplinkOptions } from "../../replication/network/uplink.ts";
import { connectReplication } from "../../replication/node/ws-transport.ts";

/** Connecting gives up after this (then the uplink retries with its backoff). */
const CONNECT_TIMEOUT_MS = 2000;

export function createNodeUplink(options: Omit<NetworkUplinkOptions, "dial">): NetworkUplink {
  return new NetworkUplink({ ...options, dial: (url) => connectReplication(url, { timeoutMs: CONNECT_TIMEOUT_MS, maxMessageBytes: MAX_LINK_MESSAGE_BYTES }) });
}
