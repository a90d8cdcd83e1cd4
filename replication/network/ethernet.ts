// Ethernet frames as the gateway sees them: whole frames without preamble or FCS, as
// virtio-net and passt exchange them. One place decides what a frame may be; the stack
// side and the node side drop and count what fails, they never throw on it.

import { ETHERNET_HEADER_BYTES, parseMac as parseMacOrReason } from "../../emulator/net/frame.ts";

// The guest NIC's numbers and MAC text are defined once, by the NIC (emulator/net/frame.ts).
export { ETHERNET_HEADER_BYTES, NETWORK_MTU as DEFAULT_MTU, formatMac } from "../../emulator/net/frame.ts";
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;

/** What a frame is for the gateway: usable, or dropped for one counted reason. */
export type FrameVerdict = "ok" | "oversized" | "malformed";

export function maxFrameBytes(mtu: number): number {
  return mtu + ETHERNET_HEADER_BYTES;
}

/**
 * Shorter than an Ethernet header is malformed (no addresses, no type); longer than the
 * MTU allows is oversized. Padding below the 60-byte minimum is not required: virtual NICs
 * and passt send short frames (an ARP reply is 42 bytes).
 */
export function checkFrame(frame: Uint8Array, maxBytes: number): FrameVerdict {
  if (frame.length < ETHERNET_HEADER_BYTES) return "malformed";
  if (frame.length > maxBytes) return "oversized";
  return "ok";
}

/** A MAC address as six bytes from "aa:bb:cc:dd:ee:ff"; throws RangeError naming the text otherwise. */
export function parseMac(text: string): Uint8Array {
  const parsed = parseMacOrReason(text);
  if (typeof parsed === "string") throw new RangeError(`not a NIC's MAC address: ${JSON.stringify(text)}: ${parsed}`);
  return parsed;
}

/** An IPv4 address as four bytes from dotted-decimal text; throws RangeError otherwise. */
export function parseIpv4(text: string): Uint8Array {
  const parts = text.split(".");
  const bytes = parts.map((part) => (/^\d{1,3}$/.test(part) ? Number(part) : NaN));
  if (bytes.length !== 4 || bytes.some((b) => !(b >= 0 && b <= 255))) throw new RangeError(`not an IPv4 address: ${JSON.stringify(text)}`);
  return Uint8Array.from(bytes);
}

export function formatIpv4(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 4)).join(".");
}

export function etherType(frame: Uint8Array): number {
  return ((frame[12] ?? 0) << 8) | (frame[13] ?? 0);
}
