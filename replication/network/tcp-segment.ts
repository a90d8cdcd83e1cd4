// The TCP header of a guest's or passt's frame, read in place, and what the gateway's queues
// need from it: which segment a frame carries (two frames with the same key carry the same
// bytes of the same stream: a retransmission), and whether it is a pure ACK.
import { ETHERNET_HEADER_BYTES, ETHERTYPE_IPV4, etherType } from "./ethernet.ts";

const IP_PROTOCOL_TCP = 6;
export const TCP_FLAG = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20 } as const;

export interface TcpHeader {
  /** Addresses and ports, as text: one direction of one connection. */
  flow: string;
  seq: number;
  ack: number;
  window: number;
  flags: number;
  payloadBytes: number;
}

/** The TCP header of an IPv4 frame; undefined for anything else or a truncated frame. */
export function tcpHeader(frame: Uint8Array): TcpHeader | undefined {
  if (frame.length < ETHERNET_HEADER_BYTES + 40 || etherType(frame) !== ETHERTYPE_IPV4) return undefined;
  const ip = ETHERNET_HEADER_BYTES;
  const ipHeaderBytes = (frame[ip]! & 0x0f) * 4;
  if (frame[ip]! >> 4 !== 4 || ipHeaderBytes < 20 || frame[ip + 9] !== IP_PROTOCOL_TCP) return undefined;
  const tcp = ip + ipHeaderBytes;
  if (tcp + 20 > frame.length) return undefined;
  const ipTotal = (frame[ip + 2]! << 8) | frame[ip + 3]!;
  const tcpHeaderBytes = (frame[tcp + 12]! >> 4) * 4;
  const payloadBytes = ipTotal - ipHeaderBytes - tcpHeaderBytes;
  if (tcpHeaderBytes < 20 || payloadBytes < 0) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return {
    // Source and destination address (8 bytes from offset 12), then both ports.
    flow: `${view.getUint32(ip + 12)}.${view.getUint32(ip + 16)}.${view.getUint32(tcp)}`,
    seq: view.getUint32(tcp + 4),
    ack: view.getUint32(tcp + 8),
    window: view.getUint16(tcp + 14),
    flags: frame[tcp + 13]!,
    payloadBytes,
  };
}

const SEGMENT_FLAGS = TCP_FLAG.syn | TCP_FLAG.fin | TCP_FLAG.rst;

/**
 * The key of a segment that carries data (or SYN, FIN, RST): stream, sequence number, length
 * and those flags. Undefined for anything else (a pure ACK carries only the newest
 * acknowledgement and window: each one counts, none repeats another's content).
 */
export function tcpSegmentKey(frame: Uint8Array): string | undefined {
  const header = tcpHeader(frame);
  if (header === undefined) return undefined;
  const flags = header.flags & SEGMENT_FLAGS;
  if (header.payloadBytes === 0 && flags === 0) return undefined;
  return `${header.flow}.${header.seq}.${header.payloadBytes}.${flags}`;
}

/** A segment with no data and no flag but ACK (PSH aside): a plain acknowledgement or window update. */
export function isPureAck(header: TcpHeader): boolean {
  return header.payloadBytes === 0 && (header.flags & ~TCP_FLAG.psh) === TCP_FLAG.ack;
}
