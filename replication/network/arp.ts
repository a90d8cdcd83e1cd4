// ARP for IPv4 over Ethernet (RFC 826), just enough for the gateway's start-up probe:
// a request as the guest would send it, and reading a reply.
import { ETHERNET_HEADER_BYTES, ETHERTYPE_ARP, ETHERTYPE_IPV4, etherType, formatIpv4, formatMac, parseIpv4, parseMac } from "./ethernet.ts";

const ARP_BYTES = 28;
const OP_REQUEST = 1;
const OP_REPLY = 2;

/** "Who has `targetIp`? Tell `senderIp`" from `senderMac`, broadcast. */
export function arpRequest(senderMac: string, senderIp: string, targetIp: string): Uint8Array {
  const frame = new Uint8Array(ETHERNET_HEADER_BYTES + ARP_BYTES);
  const view = new DataView(frame.buffer);
  const mac = parseMac(senderMac);
  frame.fill(0xff, 0, 6);
  frame.set(mac, 6);
  view.setUint16(12, ETHERTYPE_ARP);
  view.setUint16(14, 1); // hardware: Ethernet
  view.setUint16(16, ETHERTYPE_IPV4);
  frame[18] = 6;
  frame[19] = 4;
  view.setUint16(20, OP_REQUEST);
  frame.set(mac, 22);
  frame.set(parseIpv4(senderIp), 28);
  frame.set(parseIpv4(targetIp), 38); // target MAC (32..37) stays zero: unknown
  return frame;
}

export interface ArpReply {
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

/** The reply a frame carries, or undefined for anything else (including a request). */
export function readArpReply(frame: Uint8Array): ArpReply | undefined {
  if (frame.length < ETHERNET_HEADER_BYTES + ARP_BYTES || etherType(frame) !== ETHERTYPE_ARP) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.getUint16(14) !== 1 || view.getUint16(16) !== ETHERTYPE_IPV4 || frame[18] !== 6 || frame[19] !== 4) return undefined;
  if (view.getUint16(20) !== OP_REPLY) return undefined;
  return {
    senderMac: formatMac(frame.subarray(22, 28)),
    senderIp: formatIpv4(frame.subarray(28, 32)),
    targetMac: formatMac(frame.subarray(32, 38)),
    targetIp: formatIpv4(frame.subarray(38, 42)),
  };
}
