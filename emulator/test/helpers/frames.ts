// Ethernet, ARP, IPv4, ICMP and TCP frames for tests: builders that compute every checksum,
// and parsers that check them, so a test can talk to the guest's network stack byte by byte.
import { parseMac } from "../../net/frame.ts";

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const IP_PROTO_ICMP = 1;
export const IP_PROTO_TCP = 6;
export const BROADCAST_MAC = "ff:ff:ff:ff:ff:ff";

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export function macBytes(text: string): Uint8Array {
  if (text === BROADCAST_MAC) return new Uint8Array(6).fill(0xff);
  const bytes = parseMac(text);
  if (typeof bytes === "string") throw new Error(`${text}: ${bytes}`);
  return bytes;
}

export function ipBytes(text: string): Uint8Array {
  const octets = text.split(".").map(Number);
  if (octets.length !== 4 || !octets.every((o) => Number.isInteger(o) && o >= 0 && o <= 255)) throw new Error(`not an IPv4 address: ${text}`);
  return Uint8Array.from(octets);
}

export const macText = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
export const ipText = (bytes: Uint8Array): string => Array.from(bytes).join(".");

/** RFC 1071 one's-complement sum of 16-bit words, complemented. */
export function internetChecksum(...chunks: Uint8Array[]): number {
  let sum = 0;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i += 2) sum += (chunk[i]! << 8) | (chunk[i + 1] ?? 0);
    // Chunks here are all of even length but the last, so words never straddle two chunks.
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const u16 = (value: number) => Uint8Array.of(value >>> 8, value & 0xff);
const u32 = (value: number) => Uint8Array.of(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
const read16 = (bytes: Uint8Array, at: number) => (bytes[at]! << 8) | bytes[at + 1]!;
const read32 = (bytes: Uint8Array, at: number) => (read16(bytes, at) * 0x10000 + read16(bytes, at + 2)) >>> 0;

// --- Ethernet -------------------------------------------------------------------------

export function ethernet(dst: string, src: string, type: number, payload: Uint8Array): Uint8Array {
  return concat(macBytes(dst), macBytes(src), u16(type), payload);
}

export interface EthernetFrame {
  dst: string;
  src: string;
  type: number;
  payload: Uint8Array;
}

export function parseEthernet(frame: Uint8Array): EthernetFrame {
  if (frame.length < 14) throw new Error(`frame of ${frame.length} bytes is shorter than an Ethernet header`);
  return { dst: macText(frame.subarray(0, 6)), src: macText(frame.subarray(6, 12)), type: read16(frame, 12), payload: frame.subarray(14) };
}

// --- ARP (Ethernet/IPv4) ------------------------------------------------------------------

export interface Arp {
  op: 1 | 2;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

export function arp(packet: Arp): Uint8Array {
  return concat(
    u16(1), // hardware: Ethernet
    u16(ETHERTYPE_IPV4),
    Uint8Array.of(6, 4),
    u16(packet.op),
    macBytes(packet.senderMac),
    ipBytes(packet.senderIp),
    packet.targetMac === BROADCAST_MAC ? new Uint8Array(6) : macBytes(packet.targetMac),
    ipBytes(packet.targetIp),
  );
}

export function parseArp(payload: Uint8Array): Arp {
  if (payload.length < 28 || read16(payload, 0) !== 1 || read16(payload, 2) !== ETHERTYPE_IPV4) throw new Error("not an Ethernet/IPv4 ARP packet");
  const op = read16(payload, 6);
  if (op !== 1 && op !== 2) throw new Error(`ARP op ${op}`);
  return {
    op,
    senderMac: macText(payload.subarray(8, 14)),
    senderIp: ipText(payload.subarray(14, 18)),
    targetMac: macText(payload.subarray(18, 24)),
    targetIp: ipText(payload.subarray(24, 28)),
  };
}

// --- IPv4 ---------------------------------------------------------------------------------

export interface Ipv4 {
  src: string;
  dst: string;
  protocol: number;
  payload: Uint8Array;
  ttl?: number;
  id?: number;
}

export function ipv4(packet: Ipv4): Uint8Array {
  const header = concat(
    Uint8Array.of(0x45, 0),
    u16(20 + packet.payload.length),
    u16(packet.id ?? 0),
    u16(0x4000), // don't fragment
    Uint8Array.of(packet.ttl ?? 64, packet.protocol),
    u16(0),
    ipBytes(packet.src),
    ipBytes(packet.dst),
  );
  header.set(u16(internetChecksum(header)), 10);
  return concat(header, packet.payload);
}

/** Parses and checks the header checksum; `payload` is cut to the total length. */
export function parseIpv4(bytes: Uint8Array): Required<Ipv4> {
  if (bytes.length < 20 || bytes[0]! >> 4 !== 4) throw new Error("not an IPv4 packet");
  const headerLength = (bytes[0]! & 0x0f) * 4;
  if (internetChecksum(bytes.subarray(0, headerLength)) !== 0) throw new Error("bad IPv4 header checksum");
  return {
    src: ipText(bytes.subarray(12, 16)),
    dst: ipText(bytes.subarray(16, 20)),
    protocol: bytes[9]!,
    ttl: bytes[8]!,
    id: read16(bytes, 4),
    payload: bytes.subarray(headerLength, read16(bytes, 2)),
  };
}

// --- ICMP echo ----------------------------------------------------------------------------

export interface IcmpEcho {
  type: 0 | 8; // reply, request
  id: number;
  sequence: number;
  data: Uint8Array;
}

export function icmpEcho(echo: IcmpEcho): Uint8Array {
  const message = concat(Uint8Array.of(echo.type, 0), u16(0), u16(echo.id), u16(echo.sequence), echo.data);
  message.set(u16(internetChecksum(message)), 2);
  return message;
}

/** Parses and checks the checksum. */
export function parseIcmpEcho(bytes: Uint8Array): IcmpEcho & { code: number } {
  if (bytes.length < 8) throw new Error("ICMP message too short");
  if (internetChecksum(bytes) !== 0) throw new Error("bad ICMP checksum");
  const type = bytes[0]!;
  if (type !== 0 && type !== 8) throw new Error(`ICMP type ${type} is not an echo`);
  return { type, code: bytes[1]!, id: read16(bytes, 4), sequence: read16(bytes, 6), data: bytes.subarray(8) };
}

// --- TCP (no options) -----------------------------------------------------------------------

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window?: number;
  data?: Uint8Array;
}

function pseudoHeader(src: string, dst: string, length: number): Uint8Array {
  return concat(ipBytes(src), ipBytes(dst), Uint8Array.of(0, IP_PROTO_TCP), u16(length));
}

export function tcp(src: string, dst: string, segment: TcpSegment): Uint8Array {
  const data = segment.data ?? new Uint8Array(0);
  const header = concat(
    u16(segment.srcPort),
    u16(segment.dstPort),
    u32(segment.seq >>> 0),
    u32(segment.ack >>> 0),
    Uint8Array.of(5 << 4, segment.flags),
    u16(segment.window ?? 65535),
    u16(0),
    u16(0),
  );
  const bytes = concat(header, data);
  bytes.set(u16(internetChecksum(pseudoHeader(src, dst, bytes.length), bytes)), 16);
  return bytes;
}

/** Parses a TCP segment carried from `src` to `dst`, checking its checksum. */
export function parseTcp(src: string, dst: string, bytes: Uint8Array): Required<TcpSegment> {
  if (bytes.length < 20) throw new Error("TCP segment too short");
  if (internetChecksum(pseudoHeader(src, dst, bytes.length), bytes) !== 0) throw new Error("bad TCP checksum");
  return {
    srcPort: read16(bytes, 0),
    dstPort: read16(bytes, 2),
    seq: read32(bytes, 4),
    ack: read32(bytes, 8),
    flags: bytes[13]!,
    window: read16(bytes, 14),
    data: bytes.subarray((bytes[12]! >> 4) * 4),
  };
}
