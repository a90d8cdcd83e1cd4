// What an Ethernet frame on the guest's NIC may be, and MAC addresses as text.

/** The guest NIC's MTU: the largest IP packet, the Ethernet header not counted. */
export const NETWORK_MTU = 1500;

/** Destination MAC, source MAC, EtherType. */
export const ETHERNET_HEADER_BYTES = 14;

/** The largest frame either side may pass (no VLAN tag, no FCS: the NIC never sees those). */
export const MAX_FRAME_BYTES = NETWORK_MTU + ETHERNET_HEADER_BYTES;

/** Locally administered (bit 1 of the first octet), unicast: never a vendor's address. */
export const DEFAULT_MAC = "52:54:00:12:34:56";

const MAC_TEXT = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/**
 * Parses `aa:bb:cc:dd:ee:ff`. Returns a reason instead of the bytes when the text is not a MAC
 * a NIC can have: Linux gives a NIC whose MAC is multicast or all zeros a random one instead.
 */
export function parseMac(text: string): Uint8Array | string {
  if (!MAC_TEXT.test(text)) return "expected six hex octets separated by colons, like 52:54:00:12:34:56";
  const bytes = Uint8Array.from(text.split(":"), (octet) => parseInt(octet, 16));
  if ((bytes[0]! & 1) !== 0) return "a multicast address (the first octet is odd) cannot be a NIC's";
  if (bytes.every((b) => b === 0)) return "the all-zero address cannot be a NIC's";
  return bytes;
}

export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}
